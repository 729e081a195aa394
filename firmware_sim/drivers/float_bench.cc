// Instruction-count driver for the FLOAT baseline: the full-precision DFSMN teacher built from
// XNNPACK operators (Debian's libxnnpack-dev:arm64, 2022-02 snapshot, the f32 operator API),
// run under qemu-aarch64 with firmware_sim/qemu_plugin/insn_count.so.
//
//   float_bench [--runs N] [--layers L] [--T 8] [--C 128] [--H 256] [--left 2] [--right 2]
//               [--classes 12] [--model] [--check]
//
// One float DFSMN layer (BN folded into the conv weights/biases, as any deployment does):
//   m   = x + PReLU(dwconv_k(x) + b)                depthwise conv 5x1 over time, groups = C
//   h   = ReLU(W1 m + b1)                           fully connected C -> H (ReLU fused)
//   out = m + PReLU(W2 h + b2)                      fully connected H -> C
// = 7 XNNPACK operators: convolution2d (depthwise), prelu, add, fully_connected (relu),
// fully_connected, prelu, add. With --model also the teacher's front end and classifier:
//   conv1 5x5 s2 1 -> 16 (+ReLU), conv2 5x5 s2 16 -> 32 (+ReLU) on a 32x32 image (TF 'same'
//   padding: top/left 1, bottom/right 2), linear 256 -> 128 (+ReLU) per frame, classifier
//   1024 -> classes.
//
// Regions (summed over N runs; the warm-up run is outside every region):
//   0 backbone (L layers)   20+j layer j     40 conv1   41 conv2   42 linear   43 classifier
//   44 whole model (front end + backbone + classifier)
//   50 depthwise conv   51 prelu (both)   52 add (both)   53 fc1 (+relu)   54 fc2   (all layers)
// Weights are pseudo-random: XNNPACK's f32 kernels are data-independent, so counts do not
// depend on the values. --check compares one layer against a naive float reference.
#include <xnnpack.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "insn_region.h"

namespace {

#define CHECK_XNN(expr)                                                            \
  do {                                                                             \
    const xnn_status st_ = (expr);                                                 \
    if (st_ != xnn_status_success) {                                               \
      std::fprintf(stderr, "XNNPACK error %d at %s:%d: %s\n", static_cast<int>(st_), \
                   __FILE__, __LINE__, #expr);                                     \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

std::vector<float> Pseudo(std::size_t n, unsigned seed, float scale) {
  std::vector<float> v(n);
  unsigned st = seed * 2654435761u + 12345u;
  for (auto& e : v) {
    st = st * 1664525u + 1013904223u;
    e = scale * static_cast<float>(static_cast<int>(st >> 9) % 20000 - 10000) * 1e-4f;
  }
  return v;
}

const float kInf = INFINITY;
inline double D(float v) { return static_cast<double>(v); }

struct FloatLayer {
  int T = 0, C = 0, H = 0, K = 0, left = 0;
  std::vector<float> dw_w, dw_b, slope_m, w1, b1, w2, b2, slope_o;  // w1: [H][C], w2: [C][H]
  std::vector<float> d, m, h, p;                                      // scratch
  xnn_operator_t dw = nullptr, prelu_m = nullptr, add_m = nullptr, fc1 = nullptr, fc2 = nullptr,
                 prelu_o = nullptr, add_o = nullptr;

  void Create(int t, int c, int hid, int l, int r, unsigned seed) {
    T = t; C = c; H = hid; K = l + r + 1; left = l;
    dw_w = Pseudo(static_cast<std::size_t>(K) * C, seed + 1, 0.5f);  // [K][1][1][C] (HWGo)
    dw_b = Pseudo(C, seed + 2, 0.1f);
    slope_m = Pseudo(C, seed + 3, 0.25f);
    w1 = Pseudo(static_cast<std::size_t>(H) * C, seed + 4, 0.1f);
    b1 = Pseudo(H, seed + 5, 0.1f);
    w2 = Pseudo(static_cast<std::size_t>(C) * H, seed + 6, 0.07f);
    b2 = Pseudo(C, seed + 7, 0.1f);
    slope_o = Pseudo(C, seed + 8, 0.25f);
    d.assign(static_cast<std::size_t>(T) * C, 0.0f);
    m = d;
    p = d;
    h.assign(static_cast<std::size_t>(T) * H, 0.0f);
    // depthwise: groups = C, 1 input / 1 output channel per group, kernel K x 1 over time.
    CHECK_XNN(xnn_create_convolution2d_nhwc_f32(
        static_cast<uint32_t>(l), 0, static_cast<uint32_t>(r), 0, static_cast<uint32_t>(K), 1,
        1, 1, 1, 1, static_cast<uint32_t>(C), 1, 1, static_cast<size_t>(C),
        static_cast<size_t>(C), dw_w.data(), dw_b.data(), -kInf, kInf,
        XNN_FLAG_DEPTHWISE_CONVOLUTION, &dw));
    CHECK_XNN(xnn_create_prelu_nc_f32(C, C, C, slope_m.data(), 0, &prelu_m));
    CHECK_XNN(xnn_create_add_nd_f32(-kInf, kInf, 0, &add_m));
    CHECK_XNN(xnn_create_fully_connected_nc_f32(C, H, C, H, w1.data(), b1.data(), 0.0f, kInf, 0,
                                                &fc1));
    CHECK_XNN(xnn_create_fully_connected_nc_f32(H, C, H, C, w2.data(), b2.data(), -kInf, kInf,
                                                0, &fc2));
    CHECK_XNN(xnn_create_prelu_nc_f32(C, C, C, slope_o.data(), 0, &prelu_o));
    CHECK_XNN(xnn_create_add_nd_f32(-kInf, kInf, 0, &add_o));
  }

  // Setup binds the I/O pointers (done once per (x, out) pair, outside the counted region,
  // as a TFLite delegate does at Prepare time).
  void Setup(const float* x, float* out) {
    const size_t shape[2] = {static_cast<size_t>(T), static_cast<size_t>(C)};
    CHECK_XNN(xnn_setup_convolution2d_nhwc_f32(dw, 1, T, 1, x, d.data(), nullptr));
    CHECK_XNN(xnn_setup_prelu_nc_f32(prelu_m, T, d.data(), d.data(), nullptr));
    CHECK_XNN(xnn_setup_add_nd_f32(add_m, 2, shape, 2, shape, x, d.data(), m.data(), nullptr));
    CHECK_XNN(xnn_setup_fully_connected_nc_f32(fc1, T, m.data(), h.data(), nullptr));
    CHECK_XNN(xnn_setup_fully_connected_nc_f32(fc2, T, h.data(), p.data(), nullptr));
    CHECK_XNN(xnn_setup_prelu_nc_f32(prelu_o, T, p.data(), p.data(), nullptr));
    CHECK_XNN(xnn_setup_add_nd_f32(add_o, 2, shape, 2, shape, m.data(), p.data(), out, nullptr));
  }

  void Run() const {
    CHECK_XNN(xnn_run_operator(dw, nullptr));
    CHECK_XNN(xnn_run_operator(prelu_m, nullptr));
    CHECK_XNN(xnn_run_operator(add_m, nullptr));
    CHECK_XNN(xnn_run_operator(fc1, nullptr));
    CHECK_XNN(xnn_run_operator(fc2, nullptr));
    CHECK_XNN(xnn_run_operator(prelu_o, nullptr));
    CHECK_XNN(xnn_run_operator(add_o, nullptr));
  }

  // Same, one operator class per region (50..54).
  void RunByOp() const {
    INSN_REGION_BEGIN(50);
    CHECK_XNN(xnn_run_operator(dw, nullptr));
    INSN_REGION_END(50);
    INSN_REGION_BEGIN(51);
    CHECK_XNN(xnn_run_operator(prelu_m, nullptr));
    INSN_REGION_END(51);
    INSN_REGION_BEGIN(52);
    CHECK_XNN(xnn_run_operator(add_m, nullptr));
    INSN_REGION_END(52);
    INSN_REGION_BEGIN(53);
    CHECK_XNN(xnn_run_operator(fc1, nullptr));
    INSN_REGION_END(53);
    INSN_REGION_BEGIN(54);
    CHECK_XNN(xnn_run_operator(fc2, nullptr));
    INSN_REGION_END(54);
    INSN_REGION_BEGIN(51);
    CHECK_XNN(xnn_run_operator(prelu_o, nullptr));
    INSN_REGION_END(51);
    INSN_REGION_BEGIN(52);
    CHECK_XNN(xnn_run_operator(add_o, nullptr));
    INSN_REGION_END(52);
  }

  // Naive reference (double accumulation) of the same layer.
  void Reference(const float* x, std::vector<double>* out) const {
    std::vector<double> mm(static_cast<std::size_t>(T) * C), hh(static_cast<std::size_t>(T) * H);
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        double z = D(dw_b[c]);
        for (int k = 0; k < K; ++k) {
          const int tau = t + k - left;
          if (tau >= 0 && tau < T) z += D(dw_w[k * C + c]) * D(x[tau * C + c]);
        }
        if (z < 0) z *= D(slope_m[c]);
        mm[t * C + c] = D(x[t * C + c]) + z;
      }
    for (int t = 0; t < T; ++t)
      for (int o = 0; o < H; ++o) {
        double z = D(b1[o]);
        for (int c = 0; c < C; ++c) z += D(w1[o * C + c]) * mm[t * C + c];
        hh[t * H + o] = z > 0 ? z : 0;
      }
    out->assign(static_cast<std::size_t>(T) * C, 0.0);
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        double z = D(b2[c]);
        for (int o = 0; o < H; ++o) z += D(w2[c * H + o]) * hh[t * H + o];
        if (z < 0) z *= D(slope_o[c]);
        (*out)[t * C + c] = mm[t * C + c] + z;
      }
  }
};

void LayerBegin(int j) {
  switch (j) {
    case 0: INSN_REGION_BEGIN(20); break;
    case 1: INSN_REGION_BEGIN(21); break;
    case 2: INSN_REGION_BEGIN(22); break;
    case 3: INSN_REGION_BEGIN(23); break;
    case 4: INSN_REGION_BEGIN(24); break;
    case 5: INSN_REGION_BEGIN(25); break;
    case 6: INSN_REGION_BEGIN(26); break;
    case 7: INSN_REGION_BEGIN(27); break;
    default: break;
  }
}
void LayerEnd(int j) {
  switch (j) {
    case 0: INSN_REGION_END(20); break;
    case 1: INSN_REGION_END(21); break;
    case 2: INSN_REGION_END(22); break;
    case 3: INSN_REGION_END(23); break;
    case 4: INSN_REGION_END(24); break;
    case 5: INSN_REGION_END(25); break;
    case 6: INSN_REGION_END(26); break;
    case 7: INSN_REGION_END(27); break;
    default: break;
  }
}

double Checksum(const std::vector<float>& v) {
  double s = 0.0;
  for (std::size_t i = 0; i < v.size(); ++i) s += static_cast<double>(v[i]) * (1.0 + 1e-3 * (i % 7));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 10, L = 8, T = 8, C = 128, H = 256, left = 2, right = 2, classes = 12;
  bool model = false, check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::atoi(argv[++i]) : -1; };
    if (a == "--runs") runs = next();
    else if (a == "--layers") L = next();
    else if (a == "--T") T = next();
    else if (a == "--C") C = next();
    else if (a == "--H") H = next();
    else if (a == "--left") left = next();
    else if (a == "--right") right = next();
    else if (a == "--classes") classes = next();
    else if (a == "--model") model = true;
    else if (a == "--check") check = true;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (runs < 1 || L < 0 || L > 8 || T < 1 || C < 1 || H < 1 || left < 0 || right < 0 ||
      classes < 1) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  CHECK_XNN(xnn_initialize(nullptr));
  std::printf("runs %d\nlibrary XNNPACK (f32 operator API)\n", runs);

  std::vector<FloatLayer> layers(static_cast<std::size_t>(L));
  for (int j = 0; j < L; ++j) layers[j].Create(T, C, H, left, right, 100u * (j + 1));
  std::vector<std::vector<float>> act(static_cast<std::size_t>(L) + 1,
                                      std::vector<float>(static_cast<std::size_t>(T) * C));
  act[0] = Pseudo(static_cast<std::size_t>(T) * C, 7, 1.0f);
  for (int j = 0; j < L; ++j) layers[j].Setup(act[j].data(), act[j + 1].data());

  // Front end + classifier (teacher): shapes of models/dfsmn.py (32x32 mel image).
  const int img = 4 * T;  // 32 for T = 8
  const int f1 = 16, f2 = 32, mid = img / 2;
  std::vector<float> image = Pseudo(static_cast<std::size_t>(img) * img, 9, 1.0f);
  std::vector<float> a1(static_cast<std::size_t>(mid) * mid * f1), a2(static_cast<std::size_t>(T) * (img / 4) * f2);
  std::vector<float> c1w, c1b, c2w, c2b, lw, lb, cw, cb, logits(static_cast<std::size_t>(classes));
  xnn_operator_t conv1 = nullptr, conv2 = nullptr, linear = nullptr, classifier = nullptr;
  if (model) {
    c1w = Pseudo(25u * f1, 11, 0.2f);  // OHWI: [16][5][5][1]
    c1b = Pseudo(f1, 12, 0.1f);
    c2w = Pseudo(25u * f1 * f2, 13, 0.05f);  // [32][5][5][16]
    c2b = Pseudo(f2, 14, 0.1f);
    const int feat = (img / 4) * f2;  // 256
    lw = Pseudo(static_cast<std::size_t>(C) * feat, 15, 0.06f);
    lb = Pseudo(C, 16, 0.1f);
    cw = Pseudo(static_cast<std::size_t>(classes) * T * C, 17, 0.03f);
    cb = Pseudo(classes, 18, 0.1f);
    // TF 'same' for k=5, s=2 on an even size: pad 1 before, 2 after.
    CHECK_XNN(xnn_create_convolution2d_nhwc_f32(1, 2, 2, 1, 5, 5, 2, 2, 1, 1, 1, 1, f1, 1, f1,
                                                c1w.data(), c1b.data(), 0.0f, kInf, 0, &conv1));
    CHECK_XNN(xnn_create_convolution2d_nhwc_f32(1, 2, 2, 1, 5, 5, 2, 2, 1, 1, 1, f1, f2, f1, f2,
                                                c2w.data(), c2b.data(), 0.0f, kInf, 0, &conv2));
    CHECK_XNN(xnn_create_fully_connected_nc_f32(feat, C, feat, C, lw.data(), lb.data(), 0.0f,
                                                kInf, 0, &linear));
    CHECK_XNN(xnn_create_fully_connected_nc_f32(static_cast<size_t>(T) * C, classes,
                                                static_cast<size_t>(T) * C, classes, cw.data(),
                                                cb.data(), -kInf, kInf, 0, &classifier));
    CHECK_XNN(xnn_setup_convolution2d_nhwc_f32(conv1, 1, img, img, image.data(), a1.data(), nullptr));
    CHECK_XNN(xnn_setup_convolution2d_nhwc_f32(conv2, 1, mid, mid, a1.data(), a2.data(), nullptr));
    // conv2 output (8 x 8 x 32, HWC, H = time) is already 8 frames x 256 features.
    CHECK_XNN(xnn_setup_fully_connected_nc_f32(linear, T, a2.data(), act[0].data(), nullptr));
    CHECK_XNN(xnn_setup_fully_connected_nc_f32(classifier, 1, act[L].data(), logits.data(), nullptr));
  }

  auto backbone = [&]() {
    for (int j = 0; j < L; ++j) layers[j].Run();
  };
  auto whole = [&]() {
    CHECK_XNN(xnn_run_operator(conv1, nullptr));
    CHECK_XNN(xnn_run_operator(conv2, nullptr));
    CHECK_XNN(xnn_run_operator(linear, nullptr));
    backbone();
    CHECK_XNN(xnn_run_operator(classifier, nullptr));
  };
  if (model) whole(); else backbone();  // warm-up

  if (check && L >= 1) {
    std::vector<double> ref;
    layers[0].Reference(act[0].data(), &ref);
    double md = 0.0;
    for (std::size_t i = 0; i < ref.size(); ++i)
      md = std::fmax(md, std::fabs(D(act[1][i]) - ref[i]) / std::fmax(1.0, std::fabs(ref[i])));
    std::printf("check layer0 max_scaled_err %.3g %s\n", md, md <= 1e-4 ? "ok" : "FAIL");
  }
  for (int r = 0; r < runs; ++r) {
    INSN_REGION_BEGIN(0);
    backbone();
    INSN_REGION_END(0);
  }
  std::printf("region 0 backbone layers=%d T=%d C=%d H=%d K=%d\n", L, T, C, H, left + right + 1);
  for (int r = 0; r < runs; ++r)
    for (int j = 0; j < L; ++j) {
      LayerBegin(j);
      layers[j].Run();
      LayerEnd(j);
    }
  for (int r = 0; r < runs; ++r)
    for (int j = 0; j < L; ++j) layers[j].RunByOp();
  std::printf("region 50 dwconv\nregion 51 prelu\nregion 52 add\nregion 53 fc1_relu\nregion 54 fc2\n");
  if (model) {
    for (int r = 0; r < runs; ++r) {
      INSN_REGION_BEGIN(40);
      CHECK_XNN(xnn_run_operator(conv1, nullptr));
      INSN_REGION_END(40);
      INSN_REGION_BEGIN(41);
      CHECK_XNN(xnn_run_operator(conv2, nullptr));
      INSN_REGION_END(41);
      INSN_REGION_BEGIN(42);
      CHECK_XNN(xnn_run_operator(linear, nullptr));
      INSN_REGION_END(42);
      backbone();
      INSN_REGION_BEGIN(43);
      CHECK_XNN(xnn_run_operator(classifier, nullptr));
      INSN_REGION_END(43);
    }
    for (int r = 0; r < runs; ++r) {
      INSN_REGION_BEGIN(44);
      whole();
      INSN_REGION_END(44);
    }
    std::printf("region 40 conv1\nregion 41 conv2\nregion 42 linear\nregion 43 classifier\n"
                "region 44 model\nlogits_checksum %.9g\n", Checksum(logits));
  }
  std::printf("checksum %.9g\n", Checksum(act[L]));
  return 0;
}
