// Instruction-count driver for the bitwise BiFSMNv2 kernels (lce_kernels/core, NEON path on
// aarch64), run under qemu-aarch64 with firmware_sim/qemu_plugin/insn_count.so.
//
//   bdfsmn_bench [--runs N] [--stages] [--check] [--linear F.bdv] [--conv2 F.bdv] L0.bdv [L1.bdv ...]
//
// Layer files: one DFSMN layer each, as tests/kernel_ref.py::case_records writes them (the
// lce_kernels test-vector format; `x` of the first file is the input, and its ref_out is
// checked against layer 0's output with --check). The layers are chained: L1 runs on the output of L0...
// Every computation runs once for warm-up outside any region, then N times inside:
//
//   region  0        the whole backbone: Layer::Eval of every layer in order (the real entry)
//   region 20 + j    layer j alone (Layer::Eval), summed over the N runs
//   regions 10..13   (--stages) the same layers evaluated pass by pass with Layer::EvalStage
//                    (the passes of Layer::Eval; each binarization fused into the pass that
//                    produces its input): 10 binarization of x, 11 memory block + pw1
//                    binarization, 12 pw1 popcount GEMM + post-processing + pw2 binarization,
//                    13 pw2 popcount GEMM + post-processing + residual, each summed over all
//                    layers. Every layer's Workspace skips storing h, as the TFLite op does.
//   region 30        (--linear) the student's binary `linear` 256 -> 128 on T frames: kernel
//                    Binarize + Pointwise (s per frame, ReLU = PReLU slope 0, bias folded)
//   region 31        (--conv2) a PROXY of the student's binary conv2 (5x5 stride 2, 16 -> 32,
//                    16x16 -> 8x8): Binarize per input position (the model uses one s per
//                    sample: here s is averaged over positions afterwards), an im2col bit
//                    gather written for this driver (32 sub-regions: 32 binarize, 33 im2col,
//                    34 popcount GEMM via the kernel's Pointwise with K = 400 input bits)
//
// Output (stdout): `runs N`, per-region descriptions, an output checksum (so the work cannot be
// optimised away) and, with --check, the max error against ref_out.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../lce_kernels/core/bdfsmn.h"  // linked: build/aarch64/obj/core/bdfsmn.o
#include "../../lce_kernels/tests/bdv_reader.h"
#include "insn_region.h"

namespace bd = compute_engine::core::bdfsmn;

namespace {

// Region markers need compile-time ids; dispatch a runtime id (layers 0..15) by switch.
#define CASE_BEGIN(i) \
  case i:             \
    INSN_REGION_BEGIN(i); \
    break;
#define CASE_END(i) \
  case i:           \
    INSN_REGION_END(i); \
    break;
void LayerBegin(int j) {
  switch (20 + j) {
    CASE_BEGIN(20) CASE_BEGIN(21) CASE_BEGIN(22) CASE_BEGIN(23) CASE_BEGIN(24) CASE_BEGIN(25)
    CASE_BEGIN(26) CASE_BEGIN(27) CASE_BEGIN(28) CASE_BEGIN(29)
    default: break;
  }
}
void LayerEnd(int j) {
  switch (20 + j) {
    CASE_END(20) CASE_END(21) CASE_END(22) CASE_END(23) CASE_END(24) CASE_END(25)
    CASE_END(26) CASE_END(27) CASE_END(28) CASE_END(29)
    default: break;
  }
}

std::vector<float> Padded(const float* src, int n) {
  std::vector<float> v(static_cast<std::size_t>((n + 3) & ~3), 0.0f);
  std::memcpy(v.data(), src, sizeof(float) * static_cast<std::size_t>(n));
  return v;
}

// One DFSMN layer: the kernel's Layer, its workspace, layer 0's input and reference output.
struct BenchLayer {
  bd::Layer layer;
  bd::Workspace ws;
  int T = 0, C = 0, H = 0;
  std::vector<float> x, ref_out;
};

bool LoadLayer(const std::string& path, BenchLayer* L, std::string* err) {
  bdv::File f;
  if (!bdv::Load(path, &f, err)) return false;
  const std::int32_t* shape = bdv::I32(f, "shape");
  if (shape == nullptr || f.at("shape").count() < 6) {
    *err = path + ": no shape record";
    return false;
  }
  bd::LayerSpec s;
  L->T = shape[0];
  s.channels = L->C = shape[1];
  s.hidden = L->H = shape[2];
  s.left = shape[3];
  s.right = shape[4];
  s.dilation = shape[5];
  s.mem_weights = bdv::U32(f, "mem_weights");
  s.pw1_weights = bdv::U32(f, "pw1_weights");
  s.pw2_weights = bdv::U32(f, "pw2_weights");
#define GETF(name) s.name = bdv::F32(f, #name)
  GETF(mem_t0); GETF(mem_t1); GETF(mem_t2); GETF(mem_mul); GETF(mem_bias); GETF(mem_slope);
  GETF(pw1_t0); GETF(pw1_t1); GETF(pw1_mul); GETF(pw1_bias); GETF(pw1_slope);
  GETF(pw2_t0); GETF(pw2_t1); GETF(pw2_mul); GETF(pw2_bias); GETF(pw2_slope);
#undef GETF
  if (!L->layer.Init(s, err)) {
    *err = path + ": " + *err;
    return false;
  }
  L->layer.Prepare(L->T, &L->ws);
  L->ws.keep_h = false;  // as the TFLite op (lce_kernels/tflite/bdfsmn_op.cc)
  const int C = L->C;
  if (const float* x = bdv::F32(f, "x")) L->x.assign(x, x + static_cast<std::size_t>(L->T) * C);
  auto it = f.find("ref_out");
  if (it != f.end() && it->second.dtype == 'd') {
    const double* r = reinterpret_cast<const double*>(it->second.data.data());
    L->ref_out.assign(r, r + it->second.count());
  }
  return true;
}

// Layer::Eval, stage by stage (Layer::EvalStage: the same passes), with a region per stage.
void EvalStaged(BenchLayer* B, const float* x, float* out) {
  using S = bd::Layer::Stage;
  const int T = B->T;
  bd::Workspace* ws = &B->ws;
  INSN_REGION_BEGIN(10);
  B->layer.EvalStage(S::kBinarize, x, T, out, ws);
  INSN_REGION_END(10);
  INSN_REGION_BEGIN(11);
  B->layer.EvalStage(S::kMemory, x, T, out, ws);
  INSN_REGION_END(11);
  INSN_REGION_BEGIN(12);
  B->layer.EvalStage(S::kPw1, x, T, out, ws);
  INSN_REGION_END(12);
  INSN_REGION_BEGIN(13);
  B->layer.EvalStage(S::kPw2, x, T, out, ws);
  INSN_REGION_END(13);
}

// A binary pointwise layer (front-end `linear`, or conv2's GEMM): packed weights and vectors.
struct BinPointwise {
  int frames = 0, in = 0, out = 0;  // for conv2: frames = output positions, in = k*k*Cin
  int H = 0, W = 0, cin = 0, k = 0, stride = 0;  // conv2 only
  std::vector<std::uint64_t> w;
  std::vector<float> t0, t1, mul, bias, slope;
};

bool LoadPointwise(const std::string& path, bool conv, BinPointwise* P, std::string* err) {
  bdv::File f;
  if (!bdv::Load(path, &f, err)) return false;
  const std::int32_t* shape = bdv::I32(f, "shape");
  const std::uint32_t* w = bdv::U32(f, "weights");
  const float *t0 = bdv::F32(f, "t0"), *t1 = bdv::F32(f, "t1"), *mul = bdv::F32(f, "mul"),
              *bias = bdv::F32(f, "bias"), *slope = bdv::F32(f, "slope");
  if (shape == nullptr || w == nullptr || !t0 || !t1 || !mul || !bias || !slope) {
    *err = path + ": missing records (shape, weights, t0, t1, mul, bias, slope)";
    return false;
  }
  int n_act;  // length of t0/t1 (channels that are binarized)
  if (conv) {  // shape = (H, W, Cin, Cout, k, stride)
    P->H = shape[0]; P->W = shape[1]; P->cin = shape[2]; P->out = shape[3];
    P->k = shape[4]; P->stride = shape[5];
    const int oh = (P->H + P->stride - 1) / P->stride, ow = (P->W + P->stride - 1) / P->stride;
    P->frames = oh * ow;
    P->in = P->k * P->k * P->cin;
    n_act = P->cin;
    if (P->cin > 64) {
      *err = "conv2 proxy supports Cin <= 64";
      return false;
    }
  } else {  // shape = (frames, in, out)
    P->frames = shape[0]; P->in = shape[1]; P->out = shape[2];
    n_act = P->in;
  }
  const int wi = bd::PaddedWords64(P->in);
  P->w.assign(static_cast<std::size_t>(P->out) * wi, 0);
  bd::RepackRows(w, P->out, P->in, wi, P->w.data());
  P->t0 = Padded(t0, n_act);
  P->t1 = Padded(t1, n_act);
  P->mul = Padded(mul, P->out);
  P->bias = Padded(bias, P->out);
  P->slope = Padded(slope, P->out);
  return true;
}

struct PointwiseScratch {
  std::vector<std::uint64_t> b1, b2, c1, c2;
  std::vector<float> s, s_out;
};

void RunLinear(const BinPointwise& P, const float* x, float* out, PointwiseScratch* S) {
  using K = bd::Layer;
  const int wi = bd::PaddedWords64(P.in);
  K::Binarize(x, P.frames, P.in, P.t0.data(), P.t1.data(), S->b1.data(), S->b2.data(),
              S->s.data(), bd::Path::kAuto);
  K::Pointwise(P.w.data(), P.out, P.in, wi, S->b1.data(), S->b2.data(), S->s.data(),
               P.frames, P.mul.data(), P.bias.data(), P.slope.data(), nullptr, out,
               bd::Path::kAuto);
}

// im2col of packed bit rows: input rows (one per position, Cin bits in word 0 of a
// PaddedWords64(Cin) row) -> output rows of k*k*Cin bits; padding taps stay 0 (= +1, LCE's
// pad value for binary convs). TF 'same' padding for stride 2: (k-1)/2 - ... = top/left 1.
void Im2colBits(const BinPointwise& P, const std::uint64_t* in, std::uint64_t* col,
                bool allow_fast = true) {
  const int wi = bd::PaddedWords64(P.cin), wo = bd::PaddedWords64(P.in);
  const int oh = (P.H + P.stride - 1) / P.stride, ow = (P.W + P.stride - 1) / P.stride;
  const int pad_total = (oh - 1) * P.stride + P.k - P.H;
  const int pad0 = pad_total / 2;
  const std::uint64_t mask = P.cin == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << P.cin) - 1;
  if (P.cin == 16 && allow_fast) {  // the model's conv2: whole 16-bit chunks, halfword copies
    for (int oy = 0; oy < oh; ++oy) {
      for (int ox = 0; ox < ow; ++ox) {
        std::uint64_t* row = col + static_cast<std::size_t>(oy * ow + ox) * wo;
        for (int j = 0; j < wo; ++j) row[j] = 0;
        auto* half = reinterpret_cast<std::uint16_t*>(row);
        const int y0 = oy * P.stride - pad0, x0 = ox * P.stride - pad0;
        const int ky0 = y0 < 0 ? -y0 : 0, ky1 = P.H - y0 < P.k ? P.H - y0 : P.k;
        const int kx0 = x0 < 0 ? -x0 : 0, kx1 = P.W - x0 < P.k ? P.W - x0 : P.k;
        for (int ky = ky0; ky < ky1; ++ky) {
          const std::uint64_t* src = in + static_cast<std::size_t>((y0 + ky) * P.W + x0) * wi;
          for (int kx = kx0; kx < kx1; ++kx) {
            half[ky * P.k + kx] = static_cast<std::uint16_t>(src[static_cast<std::size_t>(kx) * wi]);
          }
        }
      }
    }
    return;
  }
  for (int oy = 0; oy < oh; ++oy) {
    for (int ox = 0; ox < ow; ++ox) {
      std::uint64_t* row = col + static_cast<std::size_t>(oy * ow + ox) * wo;
      for (int j = 0; j < wo; ++j) row[j] = 0;
      int bit = 0;
      for (int ky = 0; ky < P.k; ++ky) {
        const int iy = oy * P.stride - pad0 + ky;
        for (int kx = 0; kx < P.k; ++kx, bit += P.cin) {
          const int ix = ox * P.stride - pad0 + kx;
          if (iy < 0 || iy >= P.H || ix < 0 || ix >= P.W) continue;
          const std::uint64_t v = in[static_cast<std::size_t>(iy * P.W + ix) * wi] & mask;
          row[bit >> 6] |= v << (bit & 63);
          if ((bit & 63) + P.cin > 64) row[(bit >> 6) + 1] |= v >> (64 - (bit & 63));
        }
      }
    }
  }
}

void RunConv2(const BinPointwise& P, const float* x, float* out, PointwiseScratch* S) {
  using K = bd::Layer;
  const int npos = P.H * P.W, wo = bd::PaddedWords64(P.in);
  INSN_REGION_BEGIN(32);
  K::Binarize(x, npos, P.cin, P.t0.data(), P.t1.data(), S->b1.data(), S->b2.data(),
              S->s.data(), bd::Path::kAuto);
  float acc = 0.0f;  // one s per sample, as the model (scale_over="sample")
  for (int i = 0; i < npos; ++i) acc += S->s[static_cast<std::size_t>(i)];
  const float s = acc / static_cast<float>(npos);
  for (int i = 0; i < P.frames; ++i) S->s_out[static_cast<std::size_t>(i)] = s;
  INSN_REGION_END(32);
  INSN_REGION_BEGIN(33);
  Im2colBits(P, S->b1.data(), S->c1.data());
  Im2colBits(P, S->b2.data(), S->c2.data());
  INSN_REGION_END(33);
  INSN_REGION_BEGIN(34);
  K::Pointwise(P.w.data(), P.out, P.in, wo, S->c1.data(), S->c2.data(), S->s_out.data(),
               P.frames, P.mul.data(), P.bias.data(), P.slope.data(), nullptr, out,
               bd::Path::kAuto);
  INSN_REGION_END(34);
}

void Scratch(const BinPointwise& P, bool conv, PointwiseScratch* S) {
  const int rows = conv ? P.H * P.W : P.frames;
  const int wa = bd::PaddedWords64(conv ? P.cin : P.in);
  S->b1.assign(static_cast<std::size_t>(rows) * wa, 0);
  S->b2.assign(static_cast<std::size_t>(rows) * wa, 0);
  S->c1.assign(static_cast<std::size_t>(P.frames) * bd::PaddedWords64(P.in), 0);
  S->c2.assign(S->c1.size(), 0);
  S->s.assign(static_cast<std::size_t>(rows), 0.0f);
  S->s_out.assign(static_cast<std::size_t>(P.frames), 0.0f);
}

double Checksum(const std::vector<float>& v) {
  double s = 0.0;
  for (std::size_t i = 0; i < v.size(); ++i) s += static_cast<double>(v[i]) * (1.0 + 1e-3 * (i % 7));
  return s;
}

std::vector<float> Pseudo(std::size_t n, unsigned seed) {
  std::vector<float> v(n);
  unsigned st = seed * 2654435761u + 12345u;
  for (auto& e : v) {
    st = st * 1664525u + 1013904223u;
    e = static_cast<float>(static_cast<int>(st >> 9) % 20000 - 10000) * 1e-4f;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 10;
  bool stages = false, check = false;
  std::string linear_path, conv2_path;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else if (a == "--stages") {
      stages = true;
    } else if (a == "--check") {
      check = true;
    } else if (a == "--linear" && i + 1 < argc) {
      linear_path = argv[++i];
    } else if (a == "--conv2" && i + 1 < argc) {
      conv2_path = argv[++i];
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    } else {
      files.push_back(a);
    }
  }
  if (runs < 1 || (files.empty() && linear_path.empty() && conv2_path.empty()) ||
      files.size() > 10) {
    std::fprintf(stderr,
                 "usage: bdfsmn_bench [--runs N] [--stages] [--check] [--linear F] [--conv2 F] "
                 "L0.bdv [... up to 10 layers]\n");
    return 2;
  }
  std::string err;
  std::vector<BenchLayer> layers(files.size());
  for (std::size_t j = 0; j < files.size(); ++j) {
    if (!LoadLayer(files[j], &layers[j], &err)) {
      std::fprintf(stderr, "error: %s\n", err.c_str());
      return 1;
    }
    if (j > 0 && (layers[j].T != layers[0].T || layers[j].C != layers[0].C)) {
      std::fprintf(stderr, "error: layer %zu shape differs from layer 0\n", j);
      return 1;
    }
  }
  std::printf("runs %d\npath %s\n", runs, bd::PathName(bd::Path::kAuto));

  if (!layers.empty()) {
    const int T = layers[0].T, C = layers[0].C;
    const std::size_t n = static_cast<std::size_t>(T) * C;
    std::vector<float> x = layers[0].x.size() == n ? layers[0].x : Pseudo(n, 1);
    std::vector<std::vector<float>> act(layers.size() + 1, std::vector<float>(n, 0.0f));
    act[0] = x;
    auto backbone = [&]() {
      for (std::size_t j = 0; j < layers.size(); ++j)
        layers[j].layer.Eval(act[j].data(), T, act[j + 1].data(), &layers[j].ws);
    };
    backbone();  // warm-up (outside every region)
    if (check && layers[0].ref_out.size() == n) {  // act[1] = layer 0 on its own x
      double md = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        const double r = layers[0].ref_out[i];
        const double d = std::fabs(static_cast<double>(act[1][i]) - r) / std::fmax(1.0, std::fabs(r));
        md = std::fmax(md, d);
      }
      std::printf("check max_scaled_err %.3g %s\n", md, md <= 1e-5 ? "ok" : "FAIL");
    }
    for (int r = 0; r < runs; ++r) {
      INSN_REGION_BEGIN(0);
      backbone();
      INSN_REGION_END(0);
    }
    std::printf("region 0 backbone layers=%zu T=%d C=%d H=%d\n", layers.size(), T, C,
                layers[0].H);
    for (int r = 0; r < runs; ++r) {
      for (std::size_t j = 0; j < layers.size(); ++j) {
        LayerBegin(static_cast<int>(j));
        layers[j].layer.Eval(act[j].data(), T, act[j + 1].data(), &layers[j].ws);
        LayerEnd(static_cast<int>(j));
      }
    }
    for (std::size_t j = 0; j < layers.size(); ++j) std::printf("region %zu layer%zu\n", 20 + j, j);
    double cs = Checksum(act.back());
    if (stages) {
      std::vector<float> y(n);
      for (std::size_t j = 0; j < layers.size(); ++j) EvalStaged(&layers[j], act[j].data(), y.data());
      double maxd = 0.0;  // staged == Eval, bit for bit
      for (std::size_t i = 0; i < n; ++i)
        maxd = std::fmax(maxd, std::fabs(static_cast<double>(y[i]) - static_cast<double>(act.back()[i])));
      for (int r = 0; r < runs; ++r)
        for (std::size_t j = 0; j < layers.size(); ++j)
          EvalStaged(&layers[j], act[j].data(), act[j + 1].data());
      std::printf("stages staged_vs_eval_maxdiff %.3g\n", maxd);
      std::printf("region 10 mem_binarize\nregion 11 memory_block_pw1_binarize\n"
                  "region 12 pw1_gemm_post_pw2_binarize\nregion 13 pw2_gemm_post_residual\n");
    }
    std::printf("checksum %.9g\n", cs);
  }

  if (!linear_path.empty()) {
    BinPointwise P;
    if (!LoadPointwise(linear_path, false, &P, &err)) {
      std::fprintf(stderr, "error: %s\n", err.c_str());
      return 1;
    }
    PointwiseScratch S;
    Scratch(P, false, &S);
    const std::vector<float> x = Pseudo(static_cast<std::size_t>(P.frames) * P.in, 2);
    std::vector<float> y(static_cast<std::size_t>(P.frames) * P.out);
    RunLinear(P, x.data(), y.data(), &S);
    for (int r = 0; r < runs; ++r) {
      INSN_REGION_BEGIN(30);
      RunLinear(P, x.data(), y.data(), &S);
      INSN_REGION_END(30);
    }
    std::printf("region 30 linear frames=%d in=%d out=%d checksum %.9g\n", P.frames, P.in,
                P.out, Checksum(y));
  }
  if (!conv2_path.empty()) {
    BinPointwise P;
    if (!LoadPointwise(conv2_path, true, &P, &err)) {
      std::fprintf(stderr, "error: %s\n", err.c_str());
      return 1;
    }
    PointwiseScratch S;
    Scratch(P, true, &S);
    const std::vector<float> x = Pseudo(static_cast<std::size_t>(P.H) * P.W * P.cin, 3);
    std::vector<float> y(static_cast<std::size_t>(P.frames) * P.out);
    RunConv2(P, x.data(), y.data(), &S);  // warm-up: its sub-regions open/close once here
    for (int r = 0; r < runs; ++r) {
      INSN_REGION_BEGIN(31);
      RunConv2(P, x.data(), y.data(), &S);
      INSN_REGION_END(31);
    }
    if (check) {  // the halfword im2col against the generic bit-shifting one
      const std::size_t n = S.c1.size();
      std::vector<std::uint64_t> fast(n, ~std::uint64_t{0}), generic(n, 0);
      Im2colBits(P, S.b1.data(), fast.data(), true);
      Im2colBits(P, S.b1.data(), generic.data(), false);
      const bool same = std::memcmp(fast.data(), generic.data(), n * sizeof(std::uint64_t)) == 0;
      std::printf("check conv2_im2col fast_vs_generic %s\n", same ? "ok" : "MISMATCH");
      if (!same) return 1;
    }
    std::printf("region 31 conv2_proxy H=%d W=%d cin=%d cout=%d k=%d stride=%d checksum %.9g\n",
                P.H, P.W, P.cin, P.out, P.k, P.stride, Checksum(y));
    std::printf("region 32 conv2_binarize\nregion 33 conv2_im2col\nregion 34 conv2_gemm\n");
  }
  return 0;
}
