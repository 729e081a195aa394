// Self-checking runner of the LCE-compatible kernels (core/bitpack.h, core/bconv2d.h); no
// TFLite, no Python, so it runs under qemu-aarch64 too.
//
// Deterministic random cases (own splitmix64 generator, same cases on every machine):
//   * bit packing (float with -0.0 / NaN / inf, int8 with any zero point, bool bytes) and
//     unpacking, every path, against a naive per-element reference;
//   * binary convolutions over random shapes, strides, dilations, SAME / VALID, pad values
//     0 / 1, fused activations, float and bit-packed outputs, with garbage in every pad bit
//     of the inputs and filters: every kernel path against a naive reference computed from
//     the op's definition on +-1 integers (bconv2d.h), exactly (bit-identical floats);
//   * invalid specs are refused by Init with a message;
//   * the dual-scale binarization (ops::DUAL_QUANTIZE, core/dual_quantize.h) over random
//     ranks, channel counts and s layouts, with values at the thresholds, +-0, NaN, +-inf,
//     huge and denormal: the portable path against a scalar re-statement of the math (bit by
//     bit packing, s accumulated in double), every other path against the portable one
//     (identical bits, s within 1e-6 relative); its shared Prepare checks
//     (core/op_validate.h: ValidateDualQuantize) refuse every malformed node with a message;
//   * the streaming form of the binary DFSMN layer (core/bdfsmn.h Layer::EvalStream) over
//     random layers (right = 0, left 1..4, dilation 1..2) and sequences fed in hops of 1..3
//     frames from zero state: every path and every hop size bit-identical (outputs and final
//     state), the memory block's m within float rounding of the windowed Eval's on the same
//     sequence (zero state = the windowed layer's zero padding), the state = the last S rows
//     of a, and the streaming node's Prepare checks (ValidateBdfsmn) refusing malformed ones.
// Prints one line with the number of cases and an FNV-1a checksum of every output; equal
// checksums on x86-64 and aarch64 mean the builds are bit-identical. The dual-scale cases
// print their own line and checksum before it (the first line's checksum covers the
// packing and convolution cases only).
//
// Usage: lce_ops_test [--cases N] [--seed S] [--verbose]    exit 0 = all passed
//        lce_ops_test --bench   times the kernels of the project's lce exports per path
//                               (median of repeated calls; a throw-away timing, not a test).
//                               On aarch64 one call per kernel and path is also marked as a
//                               region for firmware_sim's qemu plugin (insn_count.c; region
//                               id = 10 * kernel + path index): instruction counts per path,
//   qemu-aarch64 -plugin ../firmware_sim/build/insn_count.so,out=c.json build/aarch64/lce_ops_test --bench
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../core/bconv2d.h"
#include "../core/bdfsmn.h"
#include "../core/bitpack.h"
#include "../core/dual_quantize.h"
#include "../core/op_contract.h"
#include "../core/op_validate.h"
#include "../core/simd.h"

namespace {

using compute_engine::core::KernelPath;
namespace bp = compute_engine::core::bitpack;
namespace bc = compute_engine::core::bconv2d;
namespace dq = compute_engine::core::dual_quantize;
namespace bd = compute_engine::core::bdfsmn;
namespace ov = compute_engine::core::op_validate;

struct Rng {
  std::uint64_t s;
  std::uint64_t Next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int Int(int lo, int hi) {  // [lo, hi]
    return lo + static_cast<int>(Next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  float Float(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(Next() >> 40) / static_cast<float>(1 << 24);
  }
  std::int32_t Word() { return static_cast<std::int32_t>(static_cast<std::uint32_t>(Next())); }
};

struct Fnv {
  std::uint64_t h = 1469598103934665603ull;
  void Add(const void* p, std::size_t n) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
};

int g_failures = 0;
bool g_verbose = false;

void Fail(const std::string& what) {
  if (++g_failures <= 20) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
}

std::vector<KernelPath> Paths() {
  std::vector<KernelPath> p = {KernelPath::kPortable};
  if (compute_engine::core::BuildHasNeon()) p.push_back(KernelPath::kNeon);
  if (compute_engine::core::CpuHasAvx512()) p.push_back(KernelPath::kAvx512);
  return p;
}

inline bool Bit(const std::int32_t* words, int c) {
  std::uint32_t w;
  std::memcpy(&w, words + c / 32, sizeof w);
  return ((w >> (c % 32)) & 1u) != 0u;
}

// ------------------------------------------------------------------------- bit packing
void PackCase(Rng& rng, int id, Fnv* fnv) {
  const int n = rng.Int(1, 100);
  const std::size_t rows = static_cast<std::size_t>(rng.Int(1, 5));
  const int words = bp::PackedWords(n);
  std::vector<float> x(rows * static_cast<std::size_t>(n));
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 1e-38f, -1e-38f};
  for (float& v : x) v = rng.Int(0, 7) == 0 ? specials[rng.Int(0, 6)] : rng.Float(-2.0f, 2.0f);
  std::vector<std::int32_t> want(rows * static_cast<std::size_t>(words), 0);
  for (std::size_t r = 0; r < rows; ++r) {
    for (int c = 0; c < n; ++c) {
      if (x[r * n + c] < 0.0f) {
        want[r * words + c / 32] = static_cast<std::int32_t>(
            static_cast<std::uint32_t>(want[r * words + c / 32]) | (1u << (c % 32)));
      }
    }
  }
  fnv->Add(want.data(), want.size() * 4);
  for (KernelPath p : Paths()) {
    std::vector<std::int32_t> got(want.size(), 0x5A5A5A5A);
    bp::PackFloat(x.data(), rows, n, got.data(), p);
    if (got != want) Fail("PackFloat case " + std::to_string(id) + " path " +
                          compute_engine::core::KernelPathName(p));
    std::vector<float> back(x.size(), 7.0f);
    bp::UnpackFloat(want.data(), rows, n, back.data(), p);
    for (std::size_t i = 0; i < x.size(); ++i) {
      const int c = static_cast<int>(i % static_cast<std::size_t>(n));
      const float e = Bit(want.data() + (i / n) * words, c) ? -1.0f : 1.0f;
      if (back[i] != e) {
        Fail("UnpackFloat case " + std::to_string(id) + " path " +
             compute_engine::core::KernelPathName(p));
        break;
      }
    }
  }
  // int8 with a zero point anywhere (also outside the int8 range), bool bytes.
  const std::int32_t zp = rng.Int(-200, 200);
  std::vector<std::int8_t> q(x.size());
  std::vector<std::uint8_t> bq(x.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = static_cast<std::int8_t>(rng.Int(-128, 127));
    bq[i] = static_cast<std::uint8_t>(rng.Int(0, 3) == 0 ? 0 : rng.Int(1, 255));
  }
  std::vector<std::int32_t> gq(want.size()), gb(want.size());
  bp::PackInt8(q.data(), rows, n, zp, gq.data());
  bp::PackBool(bq.data(), rows, n, gb.data());
  for (std::size_t r = 0; r < rows; ++r) {
    for (int c = 0; c < words * 32; ++c) {
      const bool pad = c >= n;
      const bool eq = !pad && static_cast<std::int32_t>(q[r * n + c]) < zp;
      const bool eb = !pad && bq[r * n + c] == 0;
      if (Bit(gq.data() + r * words, c) != eq) Fail("PackInt8 case " + std::to_string(id));
      if (Bit(gb.data() + r * words, c) != eb) Fail("PackBool case " + std::to_string(id));
    }
  }
  std::vector<std::int8_t> uq(x.size());
  std::vector<std::uint8_t> ub(x.size());
  bp::UnpackInt8(gq.data(), rows, n, 11, -13, uq.data());
  bp::UnpackBool(gq.data(), rows, n, ub.data());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const bool b = Bit(gq.data() + (i / n) * words, static_cast<int>(i % n));
    if (uq[i] != (b ? -13 : 11) || ub[i] != (b ? 0 : 1)) {
      Fail("Unpack int8/bool case " + std::to_string(id));
      break;
    }
  }
  fnv->Add(gq.data(), gq.size() * 4);
  fnv->Add(gb.data(), gb.size() * 4);
}

// ------------------------------------------------------------------ binary convolution
struct Conv {
  int batch, h, w, cin, cout, fh, fw, sh, sw, dh, dw, pad_value, act;
  bool same, bitpacked;
  std::vector<std::int32_t> input, filter, thresholds;
  std::vector<float> mul, bias;
};

// The op's definition on +-1 integers (bconv2d.h), one output pixel at a time.
bool Reference(const Conv& c, std::vector<float>* fout, std::vector<std::int32_t>* bout,
               int* oh_out, int* ow_out) {
  const int eh = (c.fh - 1) * c.dh + 1, ew = (c.fw - 1) * c.dw + 1;
  const int oh = c.same ? (c.h + c.sh - 1) / c.sh : (c.h - eh) / c.sh + 1;
  const int ow = c.same ? (c.w + c.sw - 1) / c.sw : (c.w - ew) / c.sw + 1;
  if (c.h < eh && !c.same) return false;
  if (c.w < ew && !c.same) return false;
  if (oh < 1 || ow < 1) return false;
  const int pt = c.same ? std::max(0, ((oh - 1) * c.sh + eh - c.h)) / 2 : 0;
  const int pl = c.same ? std::max(0, ((ow - 1) * c.sw + ew - c.w)) / 2 : 0;
  const int wc = bp::PackedWords(c.cin), wo = bp::PackedWords(c.cout);
  const std::int64_t K = static_cast<std::int64_t>(c.fh) * c.fw * c.cin;
  std::int64_t lo = std::numeric_limits<std::int32_t>::min(), hi = std::numeric_limits<std::int32_t>::max();
  if (c.act == 1) lo = 0;
  if (c.act == 2) { lo = -1; hi = 1; }
  if (c.act == 3) { lo = 0; hi = 6; }
  lo = std::max(lo, -K);
  hi = std::min(hi, K);
  *oh_out = oh;
  *ow_out = ow;
  fout->assign(static_cast<std::size_t>(c.batch) * oh * ow * c.cout, 0.0f);
  bout->assign(static_cast<std::size_t>(c.batch) * oh * ow * wo, 0);
  for (int b = 0; b < c.batch; ++b) {
    for (int y = 0; y < oh; ++y) {
      for (int x = 0; x < ow; ++x) {
        const std::size_t px = (static_cast<std::size_t>(b) * oh + y) * ow + x;
        for (int o = 0; o < c.cout; ++o) {
          std::int64_t conv = 0;
          for (int i = 0; i < c.fh; ++i) {
            for (int j = 0; j < c.fw; ++j) {
              const int iy = y * c.sh - pt + i * c.dh, ix = x * c.sw - pl + j * c.dw;
              const bool inside = iy >= 0 && iy < c.h && ix >= 0 && ix < c.w;
              if (!inside && c.pad_value == 0) continue;
              const std::int32_t* fw =
                  c.filter.data() + ((static_cast<std::size_t>(o) * c.fh + i) * c.fw + j) * wc;
              const std::int32_t* iw =
                  inside ? c.input.data() + ((static_cast<std::size_t>(b) * c.h + iy) * c.w + ix) * wc
                         : nullptr;
              for (int ch = 0; ch < c.cin; ++ch) {
                const int a = inside && Bit(iw, ch) ? -1 : 1;
                const int wv = Bit(fw, ch) ? -1 : 1;
                conv += a * wv;
              }
            }
          }
          const std::int64_t x2 = K - conv;  // LCE's 2 * accumulator
          if (c.bitpacked) {
            if (x2 > 2 * static_cast<std::int64_t>(c.thresholds[o])) {
              std::int32_t& word = (*bout)[px * wo + o / 32];
              word = static_cast<std::int32_t>(static_cast<std::uint32_t>(word) | (1u << (o % 32)));
            }
          } else {
            const std::int64_t cc = std::min(std::max(conv, lo), hi);
            const float m = static_cast<float>(-static_cast<double>(c.mul[o]));
            const float bb = static_cast<float>(static_cast<double>(c.bias[o]) +
                                                static_cast<double>(K) * static_cast<double>(c.mul[o]));
            (*fout)[px * c.cout + o] = static_cast<float>(K - cc) * m + bb;
          }
        }
      }
    }
  }
  return true;
}

void ConvCase(Rng& rng, int id, Fnv* fnv) {
  Conv c;
  c.batch = rng.Int(1, 2);
  c.h = rng.Int(1, 9);
  c.w = rng.Int(1, 9);
  const int cins[] = {1, 5, 16, 31, 32, 33, 64, 100, 128, 256};
  c.cin = rng.Int(0, 2) == 0 ? rng.Int(1, 70) : cins[rng.Int(0, 9)];
  c.cout = rng.Int(0, 2) == 0 ? rng.Int(1, 70) : cins[rng.Int(0, 9)];
  c.fh = rng.Int(1, 5);
  c.fw = rng.Int(1, 5);
  c.sh = rng.Int(1, 3);
  c.sw = rng.Int(1, 3);
  c.dh = rng.Int(0, 3) == 0 ? rng.Int(2, 3) : 1;
  c.dw = rng.Int(0, 3) == 0 ? rng.Int(2, 3) : 1;
  c.same = rng.Int(0, 1) == 1;
  c.pad_value = rng.Int(0, 1);
  c.act = rng.Int(0, 3);
  c.bitpacked = rng.Int(0, 2) == 0;
  const int wc = bp::PackedWords(c.cin);
  c.input.resize(static_cast<std::size_t>(c.batch) * c.h * c.w * wc);
  c.filter.resize(static_cast<std::size_t>(c.cout) * c.fh * c.fw * wc);
  for (auto& v : c.input) v = rng.Word();   // garbage pad bits on purpose
  for (auto& v : c.filter) v = rng.Word();
  const int K = c.fh * c.fw * c.cin;
  c.mul.resize(static_cast<std::size_t>(c.cout));
  c.bias.resize(static_cast<std::size_t>(c.cout));
  c.thresholds.resize(static_cast<std::size_t>(c.cout));
  for (int o = 0; o < c.cout; ++o) {
    c.mul[o] = rng.Float(-0.3f, 0.3f);
    c.bias[o] = rng.Float(-2.0f, 2.0f);
    const int extreme = rng.Int(0, 15);
    c.thresholds[o] = extreme == 0   ? std::numeric_limits<std::int32_t>::max()
                      : extreme == 1 ? std::numeric_limits<std::int32_t>::min()
                                     : rng.Int(-2, K + 2) / 2 + rng.Int(-1, 1);
  }

  bc::Spec s;
  s.input_height = c.h;
  s.input_width = c.w;
  s.channels_in = c.cin;
  s.channels_out = c.cout;
  s.filter_height = c.fh;
  s.filter_width = c.fw;
  s.stride_height = c.sh;
  s.stride_width = c.sw;
  s.dilation_height = c.dh;
  s.dilation_width = c.dw;
  s.padding = c.same ? bc::Padding::kSame : bc::Padding::kValid;
  s.pad_value = c.pad_value;
  s.activation = static_cast<bc::Activation>(c.act);
  s.output = c.bitpacked ? bc::Output::kBitpacked : bc::Output::kFloat;
  s.filter = c.filter.data();
  s.multiplier = c.mul.data();
  s.bias = c.bias.data();
  s.thresholds = c.thresholds.data();
  if (!c.same) c.pad_value = 1;  // VALID: no outside taps; the value is irrelevant

  std::vector<float> wf;
  std::vector<std::int32_t> wb;
  int oh = 0, ow = 0;
  const bool fits = Reference(c, &wf, &wb, &oh, &ow);
  bc::BConv2D conv;
  std::string err;
  const bool ok = conv.Init(s, &err);
  const std::string name = "Bconv2d case " + std::to_string(id);
  if (ok != fits) {
    Fail(name + ": Init " + (ok ? "accepted" : "refused (" + err + ")") + ", reference " +
         (fits ? "fits" : "does not fit"));
    return;
  }
  if (!ok) return;
  if (conv.output_height() != oh || conv.output_width() != ow) {
    Fail(name + ": output size");
    return;
  }
  if (g_verbose) {
    std::printf("case %d: B%d %dx%d cin %d cout %d f %dx%d s %d,%d d %d,%d %s pad %d act %d %s\n",
                id, c.batch, c.h, c.w, c.cin, c.cout, c.fh, c.fw, c.sh, c.sw, c.dh, c.dw,
                c.same ? "SAME" : "VALID", c.pad_value, c.act, c.bitpacked ? "bitpacked" : "float");
  }
  for (KernelPath p : Paths()) {
    const std::string pn = name + " path " + compute_engine::core::KernelPathName(p);
    if (c.bitpacked) {
      std::vector<std::int32_t> got(wb.size(), 0x3C3C3C3C);
      conv.Eval(c.input.data(), c.batch, got.data(), p);
      if (got != wb) Fail(pn + ": bit-packed output differs from the reference");
    } else {
      std::vector<float> got(wf.size(), 1234.5f);
      conv.Eval(c.input.data(), c.batch, got.data(), p);
      if (std::memcmp(got.data(), wf.data(), wf.size() * sizeof(float)) != 0) {
        std::size_t i = 0;
        while (i < wf.size() && std::memcmp(&got[i], &wf[i], sizeof(float)) == 0) ++i;
        Fail(pn + ": float output differs at " + std::to_string(i) + ": " +
             std::to_string(got[i]) + " vs " + std::to_string(wf[i]));
      }
    }
  }
  if (c.bitpacked) {
    fnv->Add(wb.data(), wb.size() * 4);
  } else {
    fnv->Add(wf.data(), wf.size() * 4);
  }
}

void InvalidSpecs() {
  std::vector<std::int32_t> f(64, 0);
  std::vector<float> m(4, 1.0f);
  bc::Spec ok;
  ok.input_height = ok.input_width = 4;
  ok.channels_in = 8;
  ok.channels_out = 4;
  ok.filter_height = ok.filter_width = 3;
  ok.filter = f.data();
  ok.multiplier = ok.bias = m.data();
  bc::BConv2D conv;
  std::string err;
  if (!conv.Init(ok, &err)) Fail("valid spec refused: " + err);
  struct Bad {
    const char* what;
    void (*edit)(bc::Spec*);
  };
  const Bad bad[] = {
      {"null filter", [](bc::Spec* s) { s->filter = nullptr; }},
      {"null multiplier", [](bc::Spec* s) { s->multiplier = nullptr; }},
      {"bit-packed without thresholds",
       [](bc::Spec* s) { s->output = bc::Output::kBitpacked; }},
      {"pad value 2", [](bc::Spec* s) { s->pad_value = 2; }},
      {"stride 0", [](bc::Spec* s) { s->stride_height = 0; }},
      {"dilation -1", [](bc::Spec* s) { s->dilation_width = -1; }},
      {"channels_in 0", [](bc::Spec* s) { s->channels_in = 0; }},
      {"filter larger than the input (VALID)", [](bc::Spec* s) { s->filter_height = 5; }},
      {"depth too large", [](bc::Spec* s) {
         s->channels_in = 1 << 20;
         s->filter_height = s->filter_width = 5;
         s->padding = bc::Padding::kSame;
       }},
  };
  for (const Bad& b : bad) {
    bc::Spec s = ok;
    b.edit(&s);
    err.clear();
    if (conv.Init(s, &err) || err.empty()) Fail(std::string("Init accepted: ") + b.what);
  }
}

// ------------------------------------------------------------ dual-scale binarization
// The op's math restated per element (op_contract.h): float subtractions one statement at a
// time, the bits collected one by one, s accumulated in double per s element (its index
// computed from the full multi-index), then rounded to float.
void DualReference(const std::vector<float>& x, const std::vector<int>& xd,
                   const std::vector<int>& sd, const std::vector<float>& t0,
                   const std::vector<float>& t1, std::vector<std::int32_t>* b1,
                   std::vector<std::int32_t>* b2, std::vector<float>* s) {
  const int rank = static_cast<int>(xd.size()), C = xd[rank - 1];
  const int words = (C + 31) / 32;
  std::size_t positions = 1, scales = 1;
  for (int i = 0; i + 1 < rank; ++i) positions *= static_cast<std::size_t>(xd[i]);
  for (int i = 0; i < rank; ++i) scales *= static_cast<std::size_t>(sd[i]);
  b1->assign(positions * words, 0);
  b2->assign(positions * words, 0);
  std::vector<double> sum(scales, 0.0);
  std::vector<double> cnt(scales, 0.0);
  for (std::size_t p = 0; p < positions; ++p) {
    // multi-index of p over x's leading axes -> s's flat index
    std::size_t rest = p, si = 0, sstride = 1;
    std::vector<int> idx(static_cast<std::size_t>(rank - 1));
    for (int i = rank - 2; i >= 0; --i) {
      idx[static_cast<std::size_t>(i)] = static_cast<int>(rest % static_cast<std::size_t>(xd[i]));
      rest /= static_cast<std::size_t>(xd[i]);
    }
    for (int i = rank - 2; i >= 0; --i) {
      const int k = sd[i] == 1 ? 0 : idx[static_cast<std::size_t>(i)];
      si += static_cast<std::size_t>(k) * sstride;
      sstride *= static_cast<std::size_t>(sd[i]);
    }
    for (int c = 0; c < C; ++c) {
      const float xv = x[p * C + c];
      float d = xv;
      d -= t0[c];
      const bool bit1 = d < 0.0f;
      float r = xv;
      r -= bit1 ? -1.0f : 1.0f;
      r -= t1[c];
      const bool bit2 = r < 0.0f;
      const std::uint32_t mask = 1u << (c % 32);
      std::uint32_t* w1 = reinterpret_cast<std::uint32_t*>(&(*b1)[p * words + c / 32]);
      std::uint32_t* w2 = reinterpret_cast<std::uint32_t*>(&(*b2)[p * words + c / 32]);
      if (bit1) *w1 |= mask;
      if (bit2) *w2 |= mask;
      sum[si] += std::fabs(static_cast<double>(r));
      cnt[si] += 1.0;
    }
  }
  s->resize(scales);
  for (std::size_t i = 0; i < scales; ++i) (*s)[i] = static_cast<float>(sum[i] / cnt[i]);
}

// |got - want| within rel * |want| (NaN and inf must match exactly).
bool Close(float got, float want, double rel) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(static_cast<double>(got) - static_cast<double>(want)) <=
         rel * std::fabs(static_cast<double>(want)) + 1e-37;
}

void DualCase(Rng& rng, int id, Fnv* fnv) {
  const int channels[] = {1, 5, 16, 31, 32, 33, 64, 100, 256};
  const int C = channels[rng.Int(0, 8)];
  const int rank = rng.Int(2, 4);
  const int layout = rng.Int(0, 2);  // 0 per sample, 1 per position, 2 mixed
  dq::Geometry g;
  g.rank = rank;
  std::vector<int> xd(static_cast<std::size_t>(rank)), sd(static_cast<std::size_t>(rank));
  for (int i = 0; i < rank; ++i) {
    xd[i] = i == rank - 1 ? C : rng.Int(1, i == 0 ? 3 : 5);
    g.dims[i] = xd[i];
    const bool red = i == rank - 1 || (i > 0 && (layout == 0 || (layout == 2 && rng.Int(0, 1))));
    g.reduced[i] = red;
    sd[i] = red ? 1 : xd[i];
  }
  std::vector<int> sd_core(static_cast<std::size_t>(rank));
  dq::ScaleDims(g, sd_core.data());
  if (sd_core != sd) Fail("ScaleDims case " + std::to_string(id));
  const std::size_t positions = dq::Positions(g);
  std::vector<float> t0(static_cast<std::size_t>(C)), t1(static_cast<std::size_t>(C));
  for (int c = 0; c < C; ++c) {
    t0[c] = rng.Int(0, 7) == 0 ? (rng.Int(0, 1) ? 0.0f : -0.0f) : rng.Float(-1.0f, 1.0f);
    t1[c] = rng.Int(0, 7) == 0 ? (rng.Int(0, 1) ? 0.0f : -0.0f) : rng.Float(-1.0f, 1.0f);
  }
  const float inf = std::numeric_limits<float>::infinity();
  const bool finite_only = rng.Int(0, 3) != 0;  // most cases: s finite, compared closely
  std::vector<float> x(positions * static_cast<std::size_t>(C));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const int c = static_cast<int>(i % static_cast<std::size_t>(C));
    float v = rng.Float(-3.0f, 3.0f);
    switch (rng.Int(0, 15)) {
      case 0: v = t0[c]; break;             // d == 0 exactly: bit 0
      case 1: v = t1[c] + 1.0f; break;      // r at (or next to) 0
      case 2: v = t1[c] - 1.0f; break;
      case 3: v = rng.Int(0, 1) ? 0.0f : -0.0f; break;
      case 4: v = rng.Int(0, 1) ? 1e30f : -1e30f; break;      // huge
      case 5: v = rng.Int(0, 1) ? 1e-40f : -1e-40f; break;    // denormal
      case 6:
        if (!finite_only) {
          const float sp[] = {std::numeric_limits<float>::quiet_NaN(), inf, -inf};
          v = sp[rng.Int(0, 2)];
        }
        break;
      default: break;
    }
    x[i] = v;
  }
  std::vector<std::int32_t> w1, w2;
  std::vector<float> ws;
  DualReference(x, xd, sd, t0, t1, &w1, &w2, &ws);
  if (ws.size() != dq::ScaleElements(g)) Fail("ScaleElements case " + std::to_string(id));
  const double rel = static_cast<double>(dq::ScaleCount(g) + 32) * 1.2e-7;
  std::vector<float> portable_s;
  for (KernelPath p : Paths()) {
    const std::string where = "dual case " + std::to_string(id) + " path " +
                              compute_engine::core::KernelPathName(p) + " C " +
                              std::to_string(C) + " rank " + std::to_string(rank);
    std::vector<std::int32_t> g1(w1.size(), 0x5A5A5A5A), g2(w2.size(), 0x5A5A5A5A);
    std::vector<float> gs(ws.size(), 123.0f);
    dq::DualQuantize(x.data(), g, t0.data(), t1.data(), g1.data(), g2.data(), gs.data(), p);
    if (g1 != w1) Fail(where + ": b1 differs");
    if (g2 != w2) Fail(where + ": b2 differs");
    for (std::size_t i = 0; i < ws.size(); ++i) {
      if (!Close(gs[i], ws[i], rel)) {
        Fail(where + ": s[" + std::to_string(i) + "] " + std::to_string(gs[i]) + " vs " +
             std::to_string(ws[i]));
        break;
      }
    }
    if (p == KernelPath::kPortable) {
      portable_s = gs;
    } else {
      for (std::size_t i = 0; i < ws.size(); ++i) {
        if (!Close(gs[i], portable_s[i], 1e-6)) {
          Fail(where + ": s differs from the portable path");
          break;
        }
      }
      // finite inputs: s bit-identical too (every path adds in the portable order)
      if (finite_only && std::memcmp(gs.data(), portable_s.data(), gs.size() * 4) != 0) {
        Fail(where + ": s not bit-identical to the portable path");
      }
    }
  }
  fnv->Add(w1.data(), w1.size() * 4);
  fnv->Add(w2.data(), w2.size() * 4);
  fnv->Add(portable_s.data(), portable_s.size() * 4);
}

// ------------------------------------------------------------ streaming binary DFSMN layer
struct RandomLayer {
  int C, H, left, dil;
  std::vector<std::uint32_t> mem_w, pw1_w, pw2_w;
  std::vector<float> v[17];  // mem t0 t1 t2 mul bias slope, pw1 t0 t1 mul bias slope, pw2 ...
  bd::LayerSpec spec;
};

void MakeLayer(Rng& rng, RandomLayer* r) {
  const int channels[] = {5, 16, 33, 64, 128}, hidden[] = {7, 32, 70, 256};
  r->C = channels[rng.Int(0, 4)];
  r->H = hidden[rng.Int(0, 3)];
  r->left = rng.Int(1, 4);
  r->dil = rng.Int(1, 2);
  const int C = r->C, H = r->H, K = r->left + 1;
  auto words = [&](std::vector<std::uint32_t>* w, int rows, int n) {
    w->resize(static_cast<std::size_t>(rows) * bd::PackedWords32(n));
    for (auto& x : *w) x = static_cast<std::uint32_t>(rng.Next());
  };
  words(&r->mem_w, K, C);
  words(&r->pw1_w, H, C);
  words(&r->pw2_w, C, H);
  const int n[17] = {C, C, C, C, C, C, C, C, H, H, H, H, H, C, C, C, 0};
  for (int i = 0; i < 16; ++i) {
    r->v[i].resize(static_cast<std::size_t>(n[i]));
    for (float& f : r->v[i]) f = rng.Float(-0.5f, 0.5f);
  }
  for (int i : {3, 10, 15}) {  // the muls: positive scales
    for (float& f : r->v[i]) f = rng.Float(0.05f, 0.5f);
  }
  // the slopes (mem 5, pw1 9, pw2 14) are <= 1, where the NEON passes compute PReLU as
  // max(z, a z) (Layer::MaxPreluExact); in half of the layers one slope above 1 and one bias
  // of -0 switch a stage back to the select form
  if (rng.Int(0, 1) == 0) {
    for (int i : {5, 9, 14}) r->v[i][static_cast<std::size_t>(rng.Int(0, n[i] - 1))] = 1.5f;
    r->v[13][static_cast<std::size_t>(rng.Int(0, C - 1))] = -0.0f;
  }
  bd::LayerSpec& s = r->spec;
  s.channels = C;
  s.hidden = H;
  s.left = r->left;
  s.right = 0;
  s.dilation = r->dil;
  s.mem_weights = r->mem_w.data();
  s.mem_t0 = r->v[0].data();
  s.mem_t1 = r->v[1].data();
  s.mem_t2 = r->v[2].data();
  s.mem_mul = r->v[3].data();
  s.mem_bias = r->v[4].data();
  s.mem_slope = r->v[5].data();
  s.pw1_weights = r->pw1_w.data();
  s.pw1_t0 = r->v[6].data();
  s.pw1_t1 = r->v[7].data();
  s.pw1_mul = r->v[10].data();
  s.pw1_bias = r->v[8].data();
  s.pw1_slope = r->v[9].data();
  s.pw2_weights = r->pw2_w.data();
  s.pw2_t0 = r->v[11].data();
  s.pw2_t1 = r->v[12].data();
  s.pw2_mul = r->v[15].data();
  s.pw2_bias = r->v[13].data();
  s.pw2_slope = r->v[14].data();
}

void StreamCase(Rng& rng, int id, Fnv* fnv) {
  RandomLayer r;
  MakeLayer(rng, &r);
  bd::Layer L;
  std::string err;
  const std::string where = "stream case " + std::to_string(id);
  if (!L.Init(r.spec, &err)) return Fail(where + ": Init: " + err);
  const int C = r.C, S = L.state_frames(), N = rng.Int(1, 9);
  if (S != r.left * r.dil) Fail(where + ": state_frames");
  std::vector<float> x(static_cast<std::size_t>(N) * C);
  for (float& v : x) v = rng.Float(-2.0f, 2.0f);
  const std::size_t Cz = static_cast<std::size_t>(C);
  // windowed Eval on the whole sequence: its m (zero padding of a) is the reference for m
  bd::Workspace wws;
  L.Prepare(N, &wws);
  std::vector<float> wout(x.size());
  if (!L.Eval(x.data(), N, wout.data(), &wws, KernelPath::kPortable)) {
    return Fail(where + ": windowed Eval refused");
  }
  std::vector<float> ref_out, ref_state;
  for (KernelPath p : Paths()) {
    for (int hop = 1; hop <= 3; ++hop) {
      const std::string w = where + " path " + compute_engine::core::KernelPathName(p) +
                            " hop " + std::to_string(hop);
      bd::Workspace ws;
      L.Prepare(hop, &ws);
      std::vector<float> state(static_cast<std::size_t>(S) * Cz, 0.0f), out(x.size(), 7.0f);
      std::vector<float> m(x.size());
      for (int t = 0; t < N; t += hop) {
        const int n = N - t < hop ? N - t : hop;
        // state and new_state aliased (allowed)
        if (!L.EvalStream(x.data() + t * Cz, n, state.data(), out.data() + t * Cz,
                          state.data(), &ws, p)) {
          return Fail(w + ": EvalStream refused");
        }
        std::memcpy(m.data() + t * Cz, ws.m.data(), static_cast<std::size_t>(n) * Cz * 4);
      }
      if (ref_out.empty()) {
        ref_out = out;
        ref_state = state;
        // m against the windowed layer's (a different float order: rounding only)
        for (std::size_t i = 0; i < m.size(); ++i) {
          const double d = std::fabs(static_cast<double>(m[i]) - static_cast<double>(wws.m[i]));
          if (d > 1e-5 * (1.0 + std::fabs(static_cast<double>(wws.m[i])))) {
            Fail(w + ": m[" + std::to_string(i) + "] " + std::to_string(m[i]) +
                 " vs windowed " + std::to_string(wws.m[i]));
            break;
          }
        }
        // the state: a of the last S frames (zero rows for frames before the stream)
        for (int j = 0; j < S; ++j) {
          const int t = N - S + j;
          for (int c = 0; c < C; ++c) {
            float want = 0.0f;
            if (t >= 0) {  // a = (v1 + s v2) - t2 from the binarization of x[t]
              const float* xt = x.data() + static_cast<std::size_t>(t) * Cz;
              double acc = 0.0;
              for (int k = 0; k < C; ++k) {
                const float b = xt[k] - r.v[0][k] < 0.0f ? -1.0f : 1.0f;
                acc += std::fabs(static_cast<double>((xt[k] - b) - r.v[1][k]));
              }
              const float sv = static_cast<float>(acc / C);
              const float v1 = xt[c] - r.v[0][c] < 0.0f ? -1.0f : 1.0f;
              const float v2 = (xt[c] - v1) - r.v[1][c] < 0.0f ? -sv : sv;
              want = (v1 + v2) - r.v[2][c];
            }
            const float got = state[static_cast<std::size_t>(j) * Cz + c];
            const double dw = static_cast<double>(want);
            if (std::fabs(static_cast<double>(got) - dw) > 1e-5 * (1.0 + std::fabs(dw))) {
              Fail(w + ": state[" + std::to_string(j) + "][" + std::to_string(c) + "]");
              j = S;
              break;
            }
          }
        }
      } else if (out != ref_out || state != ref_state) {
        Fail(w + ": differs from the portable path with one-frame hops");
      }
    }
  }
  // windowed Eval refuses nothing here; EvalStream refuses right != 0
  fnv->Add(ref_out.data(), ref_out.size() * 4);
  fnv->Add(ref_state.data(), ref_state.size() * 4);
}

// EvalStream refuses a layer with look-ahead, a small workspace and zero frames.
void StreamRefusals() {
  Rng rng{99};
  RandomLayer r;
  MakeLayer(rng, &r);
  std::vector<std::uint32_t> mw(static_cast<std::size_t>(r.left + 2) * bd::PackedWords32(r.C));
  r.spec.right = 1;
  r.spec.mem_weights = mw.data();
  bd::Layer L;
  std::string err;
  if (!L.Init(r.spec, &err)) return Fail("stream refusals: Init: " + err);
  bd::Workspace ws;
  L.Prepare(2, &ws);
  std::vector<float> x(2 * static_cast<std::size_t>(r.C)), st(16 * static_cast<std::size_t>(r.C));
  std::vector<float> out(x.size());
  if (L.EvalStream(x.data(), 1, st.data(), out.data(), st.data(), &ws, KernelPath::kPortable)) {
    Fail("EvalStream accepted right = 1");
  }
  r.spec.right = 0;
  bd::Layer L0;
  if (!L0.Init(r.spec, &err)) return Fail("stream refusals: Init: " + err);
  bd::Workspace ws0;
  L0.Prepare(1, &ws0);
  if (L0.EvalStream(x.data(), 2, st.data(), out.data(), st.data(), &ws0, KernelPath::kPortable)) {
    Fail("EvalStream accepted 2 frames with a 1-frame workspace");
  }
  if (L0.EvalStream(x.data(), 0, st.data(), out.data(), st.data(), &ws0, KernelPath::kPortable)) {
    Fail("EvalStream accepted 0 frames");
  }
}

// simd::ScopedFlushDenormals: inside the scope a product that underflows is +-0 and a
// denormal operand counts as 0 (x86 FTZ + DAZ, AArch64 FZ); after it, IEEE again.
void FlushDenormalsScope() {
  volatile float tiny = 1e-30f, small = 1e-10f, denormal = 1e-40f, one = 1.0f;
  const auto product = [&] { return tiny * small; };  // 1e-40: denormal in IEEE
  if (!(product() > 0.0f)) Fail("IEEE mode expected before the flush scope");
  {
    const compute_engine::core::simd::ScopedFlushDenormals ftz;
    if (product() != 0.0f) Fail("ScopedFlushDenormals: an underflowing product is not flushed");
    if (denormal * one != 0.0f) Fail("ScopedFlushDenormals: a denormal operand is not flushed");
  }
  if (!(product() > 0.0f)) Fail("ScopedFlushDenormals: the previous mode is not restored");
}

// The shared Prepare checks of ops::DUAL_QUANTIZE: a valid node passes in both runtimes'
// modes; every malformed variant is refused with a message (and never crashes).
void DualValidate() {
  namespace c = compute_engine::ops::dual_quantize;
  struct Fixture {
    int xd[4] = {2, 3, 4, 40}, td[2] = {2, 40}, bd[4] = {2, 3, 4, 2}, sd[4] = {2, 1, 4, 1};
    std::vector<float> xv = std::vector<float>(2 * 3 * 4 * 40, 0.5f);
    std::vector<float> tv = std::vector<float>(80, 0.25f);
    std::vector<std::int32_t> b1 = std::vector<std::int32_t>(2 * 3 * 4 * 2),
                              b2 = std::vector<std::int32_t>(2 * 3 * 4 * 2);
    std::vector<float> sv = std::vector<float>(8);
    ov::Node n;
    Fixture() {
      n.num_inputs = c::kNumInputs;
      n.num_outputs = c::kNumOutputs;
      auto set = [](ov::Tensor* t, ov::DType type, const int* d, int r, std::size_t bytes,
                    const void* data, bool cst) {
        t->present = true;
        t->type = type;
        t->dims = d;
        t->rank = r;
        t->bytes = bytes;
        t->data = data;
        t->is_const = cst;
      };
      set(&n.inputs[c::kX], ov::DType::kFloat32, xd, 4, xv.size() * 4, xv.data(), false);
      set(&n.inputs[c::kThresholds], ov::DType::kFloat32, td, 2, tv.size() * 4, tv.data(), true);
      set(&n.outputs[c::kB1], ov::DType::kInt32, bd, 4, b1.size() * 4, b1.data(), false);
      set(&n.outputs[c::kB2], ov::DType::kInt32, bd, 4, b2.size() * 4, b2.data(), false);
      set(&n.outputs[c::kScale], ov::DType::kFloat32, sd, 4, sv.size() * 4, sv.data(), false);
      n.output = n.outputs[0];
    }
  };
  const ov::OutputShape modes[] = {ov::OutputShape::kResize, ov::OutputShape::kFixed};
  for (ov::OutputShape mode : modes) {
    Fixture f;
    ov::DualQuantizePlan plan;
    std::string err;
    if (!ov::ValidateDualQuantize(f.n, mode, &plan, &err)) {
      Fail("valid dual-quantize node refused: " + err);
    } else {
      const bool want[4] = {false, true, false, true};
      for (int i = 0; i < 4; ++i) {
        if (plan.geometry.reduced[i] != want[i] || plan.bits_dims[i] != f.bd[i] ||
            plan.scale_dims[i] != f.sd[i]) {
          Fail("dual-quantize plan wrong");
        }
      }
      if (plan.thresholds != f.tv.data()) Fail("dual-quantize plan thresholds");
    }
  }
  static const int kRank1[1] = {40}, kRank5[5] = {2, 3, 4, 1, 40}, kZero[4] = {2, 0, 4, 40},
                   kNeg[4] = {2, -3, 4, 40}, kT1[1] = {80}, kT3[2] = {3, 40}, kT39[2] = {2, 39},
                   kS3[3] = {2, 1, 1}, kSLast[4] = {2, 1, 4, 40}, kSFirst[4] = {1, 1, 4, 1},
                   kSMid[4] = {2, 2, 4, 1}, kBBad[4] = {2, 3, 4, 1};
  struct Bad {
    const char* what;
    void (*edit)(ov::Node*);
    bool fixed_only;
  };
  const Bad bad[] = {
      {"1 input", [](ov::Node* n) { n->num_inputs = 1; }, false},
      {"3 inputs", [](ov::Node* n) { n->num_inputs = 3; }, false},
      {"no input list", [](ov::Node* n) { n->num_inputs = -1; }, false},
      {"1 output", [](ov::Node* n) { n->num_outputs = 1; }, false},
      {"2 outputs", [](ov::Node* n) { n->num_outputs = 2; }, false},
      {"4 outputs", [](ov::Node* n) { n->num_outputs = 4; }, false},
      {"x absent", [](ov::Node* n) { n->inputs[c::kX].present = false; }, false},
      {"x int32", [](ov::Node* n) { n->inputs[c::kX].type = ov::DType::kInt32; }, false},
      {"x int8", [](ov::Node* n) { n->inputs[c::kX].type = ov::DType::kInt8; }, false},
      {"x no shape", [](ov::Node* n) { n->inputs[c::kX].dims = nullptr; }, false},
      {"x rank 1", [](ov::Node* n) { n->inputs[c::kX].dims = kRank1; n->inputs[c::kX].rank = 1; },
       false},
      {"x rank 5", [](ov::Node* n) { n->inputs[c::kX].dims = kRank5; n->inputs[c::kX].rank = 5; },
       false},
      {"x dim 0", [](ov::Node* n) { n->inputs[c::kX].dims = kZero; }, false},
      {"x dim -3", [](ov::Node* n) { n->inputs[c::kX].dims = kNeg; }, false},
      {"x truncated", [](ov::Node* n) { n->inputs[c::kX].bytes -= 4; }, false},
      {"x constant", [](ov::Node* n) { n->inputs[c::kX].is_const = true; }, false},
      {"thresholds absent", [](ov::Node* n) { n->inputs[c::kThresholds].present = false; },
       false},
      {"thresholds int32",
       [](ov::Node* n) { n->inputs[c::kThresholds].type = ov::DType::kInt32; }, false},
      {"thresholds rank 1",
       [](ov::Node* n) { n->inputs[c::kThresholds].dims = kT1; n->inputs[c::kThresholds].rank = 1; },
       false},
      {"thresholds [3, C]", [](ov::Node* n) { n->inputs[c::kThresholds].dims = kT3; }, false},
      {"thresholds [2, C-1]", [](ov::Node* n) { n->inputs[c::kThresholds].dims = kT39; }, false},
      {"thresholds truncated", [](ov::Node* n) { n->inputs[c::kThresholds].bytes -= 1; }, false},
      {"thresholds no data", [](ov::Node* n) { n->inputs[c::kThresholds].data = nullptr; },
       false},
      {"thresholds not constant",
       [](ov::Node* n) { n->inputs[c::kThresholds].is_const = false; }, false},
      {"b1 absent", [](ov::Node* n) { n->outputs[c::kB1].present = false; }, false},
      {"b1 float32", [](ov::Node* n) { n->outputs[c::kB1].type = ov::DType::kFloat32; }, false},
      {"b2 int8", [](ov::Node* n) { n->outputs[c::kB2].type = ov::DType::kInt8; }, false},
      {"s absent", [](ov::Node* n) { n->outputs[c::kScale].present = false; }, false},
      {"s int32", [](ov::Node* n) { n->outputs[c::kScale].type = ov::DType::kInt32; }, false},
      {"s no shape", [](ov::Node* n) { n->outputs[c::kScale].dims = nullptr; }, false},
      {"s rank 3",
       [](ov::Node* n) { n->outputs[c::kScale].dims = kS3; n->outputs[c::kScale].rank = 3; },
       false},
      {"s last dim C", [](ov::Node* n) { n->outputs[c::kScale].dims = kSLast; }, false},
      {"s batch reduced", [](ov::Node* n) { n->outputs[c::kScale].dims = kSFirst; }, false},
      {"s dim neither x's nor 1", [](ov::Node* n) { n->outputs[c::kScale].dims = kSMid; },
       false},
      {"s truncated", [](ov::Node* n) { n->outputs[c::kScale].bytes -= 4; }, false},
      {"b1 shape", [](ov::Node* n) { n->outputs[c::kB1].dims = kBBad; }, true},
      {"b2 truncated", [](ov::Node* n) { n->outputs[c::kB2].bytes -= 4; }, true},
  };
  int refused = 0;
  for (const Bad& b : bad) {
    for (ov::OutputShape mode : modes) {
      Fixture f;
      b.edit(&f.n);
      f.n.output = f.n.outputs[0];
      ov::DualQuantizePlan plan;
      std::string err;
      const bool ok = ov::ValidateDualQuantize(f.n, mode, &plan, &err);
      const bool expect_refused = !b.fixed_only || mode == ov::OutputShape::kFixed;
      if (expect_refused && (ok || err.empty())) {
        Fail(std::string("dual-quantize Prepare accepted: ") + b.what);
      } else if (!expect_refused && !ok) {
        Fail(std::string("dual-quantize Prepare (resize) refused: ") + b.what + ": " + err);
      }
      if (!ok) ++refused;
      if (g_verbose && !ok) std::printf("  %s: %s\n", b.what, err.c_str());
    }
  }
  if (g_verbose) std::printf("dual-quantize Prepare: %d malformed nodes refused\n", refused);
}

// One instruction-count region of firmware_sim/qemu_plugin/insn_count.c around fn() (its
// markers: movz xzr, #(0xB000 | id) / #(0xE000 | id), no-ops on hardware); on other hosts
// just fn().
template <int kId, typename Fn>
void Region(Fn fn) {
#if defined(__aarch64__)
  __asm__ __volatile__(".inst (0xD296001F | (%c0 << 5))" ::"i"(kId) : "memory");
  fn();
  __asm__ __volatile__(".inst (0xD29C001F | (%c0 << 5))" ::"i"(kId) : "memory");
#else
  fn();
#endif
}

template <typename Fn>
void RegionById(int id, Fn fn) {
  switch (id) {
#define LCE_REGION_CASE(k) \
  case k: return Region<k>(fn);
    LCE_REGION_CASE(10) LCE_REGION_CASE(11) LCE_REGION_CASE(12) LCE_REGION_CASE(20)
    LCE_REGION_CASE(21) LCE_REGION_CASE(22) LCE_REGION_CASE(30) LCE_REGION_CASE(31)
    LCE_REGION_CASE(32) LCE_REGION_CASE(40) LCE_REGION_CASE(41) LCE_REGION_CASE(42)
    LCE_REGION_CASE(50) LCE_REGION_CASE(51) LCE_REGION_CASE(52) LCE_REGION_CASE(60)
    LCE_REGION_CASE(61) LCE_REGION_CASE(62) LCE_REGION_CASE(70) LCE_REGION_CASE(71)
    LCE_REGION_CASE(72) LCE_REGION_CASE(80) LCE_REGION_CASE(81) LCE_REGION_CASE(82)
#undef LCE_REGION_CASE
    default: fn();
  }
}

// Median microseconds of fn() over `reps` calls (after a warm-up).
template <typename Fn>
double MedianMicros(Fn fn, int reps) {
  for (int i = 0; i < 20; ++i) fn();
  std::vector<double> t(static_cast<std::size_t>(reps));
  for (double& v : t) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    v = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The configurations of pretrained/real8/exports/bifsmnv2_lce_d*.tflite (float output) and
// of the streaming binary exports (pretrained/real8/stream_exports).
int Bench() {
  struct Cfg {
    const char* name;
    int h, w, cin, cout, f, s;
    bool same;
  };
  const Cfg cfgs[] = {{"5x5/2 SAME 16x16x16 -> 32", 16, 16, 16, 32, 5, 2, true},
                      {"1x1 8x1x256 -> 128", 8, 1, 256, 128, 1, 1, false},
                      {"1x1 8x1x128 -> 256", 8, 1, 128, 256, 1, 1, false},
                      // the streaming binary export's (256 ms hop): conv2, linear
                      {"5x5/2 VALID 7x19x16 -> 32", 7, 19, 16, 32, 5, 2, false},
                      {"1x1 2x1x256 -> 128", 2, 1, 256, 128, 1, 1, false}};
  Rng rng{7};
  const std::vector<KernelPath> paths = Paths();
  int kernel = 0;
  auto mark = [&](auto fn) {  // one counted call per path: region 10 * kernel + path index
    ++kernel;
    for (std::size_t i = 0; i < paths.size(); ++i) {
      RegionById(10 * kernel + static_cast<int>(i), [&] { fn(paths[i]); });
    }
  };
  std::printf("%-40s", "kernel (us, median)");
  for (KernelPath p : Paths()) std::printf(" %10s", compute_engine::core::KernelPathName(p));
  std::printf("\n");
  for (const Cfg& c : cfgs) {
    const int wc = bp::PackedWords(c.cin);
    std::vector<std::int32_t> in(static_cast<std::size_t>(c.h) * c.w * wc),
        filt(static_cast<std::size_t>(c.cout) * c.f * c.f * wc);
    for (auto& v : in) v = rng.Word();
    for (auto& v : filt) v = rng.Word();
    std::vector<float> m(static_cast<std::size_t>(c.cout), 0.1f), b(m.size(), 0.5f);
    bc::Spec s;
    s.input_height = c.h;
    s.input_width = c.w;
    s.channels_in = c.cin;
    s.channels_out = c.cout;
    s.filter_height = s.filter_width = c.f;
    s.stride_height = s.stride_width = c.s;
    s.padding = c.same ? bc::Padding::kSame : bc::Padding::kValid;
    s.filter = filt.data();
    s.multiplier = m.data();
    s.bias = b.data();
    bc::BConv2D conv;
    std::string err;
    if (!conv.Init(s, &err)) return 1;
    std::vector<float> out(static_cast<std::size_t>(conv.output_height()) * conv.output_width() *
                           c.cout);
    mark([&](KernelPath p) { conv.Eval(in.data(), 1, out.data(), p); });
    std::printf("%-40s", (std::string(compute_engine::ops::BCONV2D) + " " + c.name).c_str());
    for (KernelPath p : Paths()) {
      std::printf(" %10.2f", MedianMicros([&] { conv.Eval(in.data(), 1, out.data(), p); }, 2000));
    }
    std::printf("\n");
  }
  std::vector<float> x(8 * 256);
  for (float& v : x) v = rng.Float(-1.0f, 1.0f);
  std::vector<std::int32_t> q(8 * 8);
  mark([&](KernelPath p) { bp::PackFloat(x.data(), 8, 256, q.data(), p); });
  mark([&](KernelPath p) { bp::UnpackFloat(q.data(), 8, 256, x.data(), p); });
  std::printf("%-40s", (std::string(compute_engine::ops::QUANTIZE) + " 8 x 256 floats").c_str());
  for (KernelPath p : Paths()) {
    std::printf(" %10.2f", MedianMicros([&] { bp::PackFloat(x.data(), 8, 256, q.data(), p); }, 5000));
  }
  std::printf("\n");
  // the streaming binary export's conv2 input: [1, 7, 19, 16], s per position
  dq::Geometry dg;
  dg.rank = 4;
  const int ddims[4] = {1, 7, 19, 16};
  for (int i = 0; i < 4; ++i) dg.dims[i] = ddims[i];
  dg.reduced[3] = true;
  std::vector<float> dx(7 * 19 * 16), dt(32, 0.1f), dsc(7 * 19);
  for (float& v : dx) v = rng.Float(-1.0f, 1.0f);
  std::vector<std::int32_t> db1(7 * 19), db2(7 * 19);
  mark([&](KernelPath p) {
    dq::DualQuantize(dx.data(), dg, dt.data(), dt.data() + 16, db1.data(), db2.data(), dsc.data(), p);
  });
  std::printf("%-40s", (std::string(compute_engine::ops::DUAL_QUANTIZE) + " 7x19x16 per position").c_str());
  for (KernelPath p : Paths()) {
    std::printf(" %10.2f", MedianMicros([&] {
      dq::DualQuantize(dx.data(), dg, dt.data(), dt.data() + 16, db1.data(), db2.data(), dsc.data(), p);
    }, 2000));
  }
  std::printf("\n%-40s",
              (std::string(compute_engine::ops::DEQUANTIZE) + " 8 x 256 floats").c_str());
  for (KernelPath p : Paths()) {
    std::printf(" %10.2f", MedianMicros([&] { bp::UnpackFloat(q.data(), 8, 256, x.data(), p); }, 5000));
  }
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int cases = 400;
  std::uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cases") == 0 && i + 1 < argc) {
      cases = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--verbose") == 0) {
      g_verbose = true;
    } else if (std::strcmp(argv[i], "--bench") == 0) {
      return Bench();
    } else {
      std::fprintf(stderr, "usage: %s [--cases N] [--seed S] [--verbose] | --bench\n", argv[0]);
      return 2;
    }
  }
  Rng rng{seed};
  Fnv fnv;
  for (int i = 0; i < cases; ++i) PackCase(rng, i, &fnv);
  for (int i = 0; i < cases; ++i) ConvCase(rng, i, &fnv);
  InvalidSpecs();
  FlushDenormalsScope();
  {  // own generator and checksum: the cases and checksum above stay as they were
    Rng drng{seed ^ 0xD0A1D0A1D0A1D0A1ull};
    Fnv dfnv;
    const int failures_before = g_failures;
    for (int i = 0; i < cases; ++i) DualCase(drng, i, &dfnv);
    DualValidate();
    std::printf("lce_ops_test: %d %s cases + Prepare checks, %s, dual checksum %016" PRIx64 "\n",
                cases, compute_engine::ops::DUAL_QUANTIZE,
                g_failures == failures_before ? "passed" : "FAILED", dfnv.h);
  }
  {  // own generator and checksum, as the dual-scale cases
    Rng srng{seed ^ 0x5743A11B5743A11Bull};
    Fnv sfnv;
    const int failures_before = g_failures;
    const int n = cases / 8 > 0 ? cases / 8 : 1;
    for (int i = 0; i < n; ++i) StreamCase(srng, i, &sfnv);
    StreamRefusals();
    std::printf("lce_ops_test: %d %s streaming cases, %s, stream checksum %016" PRIx64 "\n", n,
                compute_engine::ops::BDFSMN,
                g_failures == failures_before ? "passed" : "FAILED", sfnv.h);
  }
  std::string paths;
  for (KernelPath p : Paths()) paths += std::string(paths.empty() ? "" : ",") +
                                        compute_engine::core::KernelPathName(p);
  std::printf("lce_ops_test: %d pack + %d conv cases, paths %s, %s, checksum %016" PRIx64 "\n",
              cases, cases, paths.c_str(), g_failures == 0 ? "all passed" : "FAILED", fnv.h);
  return g_failures == 0 ? 0 : 1;
}
