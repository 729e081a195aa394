// Test runner for the binary DFSMN kernel core. Reads test vectors (.bdv files written by
// tests/kernel_ref.py) and checks, for every path available (portable; NEON on aarch64;
// AVX-512 on x86-64 CPUs with AVX512F + VPOPCNTDQ):
//   - integer parts EXACTLY: the packed bit planes of all three binarizations (after a full
//     Eval), the memory-block accumulators D1 / W and the pw1 / pw2 popcount accumulators
//     P1 / P2 (stage functions fed with the reference bit planes, same code as Eval);
//   - floats: s, m, h, out within |got - ref| <= tol * max(1, |ref|) (tol = 1e-5 default);
//   - paths agree bit for bit (floats and integers) when more than one is compiled in;
//   - garbage in the weights' pad bits changes nothing (bit-identical output);
//   - malformed specs make Layer::Init fail cleanly.
// No Python needed at run time, so the same binary runs under qemu-aarch64.
//
// Usage: bdfsmn_test [--tol 1e-5] [--quiet] FILE_OR_DIR...
// Prints one SUMMARY line (with a checksum of all outputs and accumulators, to compare
// builds bit for bit) and exits non-zero on any failure.
#include <dirent.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "../core/bdfsmn.h"
#include "../core/op_contract.h"
#include "../tflite/bdfsmn_options.h"
#include "bdv_reader.h"

namespace bd = compute_engine::core::bdfsmn;

namespace {

using Blob = bdv::Record;
using Case = bdv::File;

struct Stats {
  int failures = 0;
  int int_mismatches = 0;
  std::size_t ints_checked = 0, floats_checked = 0;
  double max_abs_out = 0, max_scaled_out = 0, max_scaled_all = 0;
  std::uint64_t checksum = 1469598103934665603ull;
  void Hash(const void* p, std::size_t n) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) checksum = (checksum ^ c[i]) * 1099511628211ull;
  }
};

double g_tol = 1e-5;
bool g_quiet = false;

struct Checker {
  Stats* st;
  std::string where;
  bool ok = true;
  void Fail(const std::string& msg) {
    if (ok || !g_quiet) std::printf("  FAIL %s: %s\n", where.c_str(), msg.c_str());
    ok = false;
  }
  template <class A, class B>
  void Ints(const char* what, const A* got, const B* ref, std::size_t n) {
    std::size_t bad = 0, first = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (static_cast<long long>(got[i]) != static_cast<long long>(ref[i])) {
        if (bad++ == 0) first = i;
      }
    }
    st->ints_checked += n;
    if (bad) {
      st->int_mismatches += static_cast<int>(bad);
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s: %zu of %zu integers differ (first at %zu: %lld vs %lld)",
                    what, bad, n, first, static_cast<long long>(got[first]),
                    static_cast<long long>(ref[first]));
      Fail(buf);
    }
  }
  double Floats(const char* what, const float* got, const double* ref, std::size_t n,
                double* max_abs_out = nullptr) {
    double worst = 0, worst_abs = 0;
    std::size_t wi = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double e = std::fabs(static_cast<double>(got[i]) - ref[i]);
      const double sc = e / std::max(1.0, std::fabs(ref[i]));
      if (!(sc <= worst)) { worst = sc; wi = i; }  // also catches NaN
      worst_abs = std::max(worst_abs, e);
    }
    st->floats_checked += n;
    st->max_scaled_all = std::max(st->max_scaled_all, worst);
    if (max_abs_out) *max_abs_out = worst_abs;
    if (!(worst <= g_tol)) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s: scaled error %.3g at %zu (got %.9g ref %.9g)", what,
                    worst, wi, static_cast<double>(got[wi]), ref[wi]);
      Fail(buf);
    }
    return worst;
  }
};

const float* F(const Case& c, const char* k) { return c.at(k).as<float>(); }

bd::LayerSpec SpecFrom(const Case& c, const std::vector<std::uint32_t>* mw = nullptr,
                       const std::vector<std::uint32_t>* w1 = nullptr,
                       const std::vector<std::uint32_t>* w2 = nullptr) {
  const std::int32_t* sh = c.at("shape").as<std::int32_t>();
  bd::LayerSpec s;
  s.channels = sh[1];
  s.hidden = sh[2];
  s.left = sh[3];
  s.right = sh[4];
  s.dilation = sh[5];
  s.mem_weights = mw ? mw->data() : c.at("mem_weights").as<std::uint32_t>();
  s.pw1_weights = w1 ? w1->data() : c.at("pw1_weights").as<std::uint32_t>();
  s.pw2_weights = w2 ? w2->data() : c.at("pw2_weights").as<std::uint32_t>();
  s.mem_t0 = F(c, "mem_t0"); s.mem_t1 = F(c, "mem_t1"); s.mem_t2 = F(c, "mem_t2");
  s.mem_mul = F(c, "mem_mul"); s.mem_bias = F(c, "mem_bias"); s.mem_slope = F(c, "mem_slope");
  s.pw1_t0 = F(c, "pw1_t0"); s.pw1_t1 = F(c, "pw1_t1");
  s.pw1_mul = F(c, "pw1_mul"); s.pw1_bias = F(c, "pw1_bias"); s.pw1_slope = F(c, "pw1_slope");
  s.pw2_t0 = F(c, "pw2_t0"); s.pw2_t1 = F(c, "pw2_t1");
  s.pw2_mul = F(c, "pw2_mul"); s.pw2_bias = F(c, "pw2_bias"); s.pw2_slope = F(c, "pw2_slope");
  return s;
}

// 32-bit reference rows -> the kernel's 64-bit padded rows.
std::vector<std::uint64_t> Rows64(const Blob& b, int n) {
  const int rows = static_cast<int>(b.dims[0]);
  const int w64 = bd::PaddedWords64(n);
  std::vector<std::uint64_t> out(static_cast<std::size_t>(rows) * w64);
  bd::RepackRows(b.as<std::uint32_t>(), rows, n, w64, out.data());
  return out;
}

// Copy of packed weights with every pad bit set to 1.
std::vector<std::uint32_t> WithGarbagePads(const Blob& b, int n) {
  std::vector<std::uint32_t> w(b.as<std::uint32_t>(), b.as<std::uint32_t>() + b.count());
  const std::size_t wpr = b.dims[1];
  if (n % 32 != 0) {
    for (std::size_t r = 0; r < b.dims[0]; ++r) w[r * wpr + wpr - 1] |= ~((1u << (n % 32)) - 1);
  }
  return w;
}

struct PathResult {
  std::vector<float> out;
  std::vector<std::int32_t> ints;  // all accumulators, for cross-path comparison
};

// Every path that runs as itself on this build and CPU; portable first (the reference the
// others are compared with bit for bit).
std::vector<bd::Path> AvailablePaths() {
  std::vector<bd::Path> paths = {bd::Path::kPortable};
  if (bd::PathAvailable(bd::Path::kNeon)) paths.push_back(bd::Path::kNeon);
  if (bd::PathAvailable(bd::Path::kAvx512)) paths.push_back(bd::Path::kAvx512);
  return paths;
}

std::string PathsLabel() {
  std::string label;
  for (bd::Path p : AvailablePaths()) label += (label.empty() ? "" : "+") + std::string(bd::PathName(p));
  return label;
}

bool RunCase(const std::string& path, Stats* st) {
  Case c;
  std::string err;
  if (!bdv::Load(path, &c, &err)) {
    std::printf("FAIL %s: cannot read (%s)\n", path.c_str(), err.c_str());
    return false;
  }
  const std::int32_t* sh = c.at("shape").as<std::int32_t>();
  const int T = sh[0], C = sh[1], H = sh[2];
  const std::string name = path.substr(path.find_last_of('/') + 1);
  Checker ck{st, name};

  bd::Layer layer;
  if (!layer.Init(SpecFrom(c), &err)) {
    ck.Fail("Init: " + err);
    return false;
  }
  const std::vector<bd::Path> paths = AvailablePaths();

  const std::size_t TC = static_cast<std::size_t>(T) * C, TH = static_cast<std::size_t>(T) * H;
  const auto mem_b1 = Rows64(c.at("ref_mem_b1"), C), mem_b2 = Rows64(c.at("ref_mem_b2"), C);
  const auto pw1_b1 = Rows64(c.at("ref_pw1_b1"), C), pw1_b2 = Rows64(c.at("ref_pw1_b2"), C);
  const auto pw2_b1 = Rows64(c.at("ref_pw2_b1"), H), pw2_b2 = Rows64(c.at("ref_pw2_b2"), H);
  std::vector<float> mem_s(static_cast<std::size_t>(T));
  for (int t = 0; t < T; ++t) mem_s[t] = static_cast<float>(c.at("ref_mem_s").as<double>()[t]);

  std::vector<PathResult> results;
  double case_abs = 0, case_scaled = 0;
  for (bd::Path p : paths) {
    ck.where = name + " [" + bd::PathName(p) + "]";
    PathResult r;
    bd::Workspace ws;
    layer.Prepare(T, &ws);
    r.out.assign(TC, 0.0f);
    if (!layer.Eval(c.at("x").as<float>(), T, r.out.data(), &ws, p)) ck.Fail("Eval false");
    // exact: bit planes of the three binarizations (full Eval)
    ck.Ints("mem_b1", ws.mem_b1.data(), mem_b1.data(), mem_b1.size());
    ck.Ints("mem_b2", ws.mem_b2.data(), mem_b2.data(), mem_b2.size());
    ck.Ints("pw1_b1", ws.pw1_b1.data(), pw1_b1.data(), pw1_b1.size());
    ck.Ints("pw1_b2", ws.pw1_b2.data(), pw1_b2.data(), pw1_b2.size());
    ck.Ints("pw2_b1", ws.pw2_b1.data(), pw2_b1.data(), pw2_b1.size());
    ck.Ints("pw2_b2", ws.pw2_b2.data(), pw2_b2.data(), pw2_b2.size());
    // floats
    ck.Floats("mem_s", ws.mem_s.data(), c.at("ref_mem_s").as<double>(), static_cast<std::size_t>(T));
    ck.Floats("pw1_s", ws.pw1_s.data(), c.at("ref_pw1_s").as<double>(), static_cast<std::size_t>(T));
    ck.Floats("pw2_s", ws.pw2_s.data(), c.at("ref_pw2_s").as<double>(), static_cast<std::size_t>(T));
    ck.Floats("m", ws.m.data(), c.at("ref_m").as<double>(), TC);
    ck.Floats("h", ws.h.data(), c.at("ref_h").as<double>(), TH);
    double abs_out = 0;
    const double sc = ck.Floats("out", r.out.data(), c.at("ref_out").as<double>(), TC, &abs_out);
    case_abs = std::max(case_abs, abs_out);
    case_scaled = std::max(case_scaled, sc);
    // exact: accumulators of the stage functions on the reference bit planes
    std::vector<std::int32_t> d1(TC), wsum(TC), p1(TH), p2(TH), q1(TC), q2(TC);
    std::vector<float> s2(TC);
    layer.MemoryCounts(mem_b1.data(), mem_b2.data(), mem_s.data(), T, d1.data(), wsum.data(),
                       s2.data(), p);
    layer.PointwiseCounts(1, pw1_b1.data(), pw1_b2.data(), T, p1.data(), p2.data(), p);
    layer.PointwiseCounts(2, pw2_b1.data(), pw2_b2.data(), T, q1.data(), q2.data(), p);
    ck.Ints("mem_d1", d1.data(), c.at("ref_mem_d1").as<std::int32_t>(), TC);
    ck.Ints("mem_wsum", wsum.data(), c.at("ref_mem_wsum").as<std::int32_t>(), TC);
    ck.Ints("pw1_p1", p1.data(), c.at("ref_pw1_p1").as<std::int32_t>(), TH);
    ck.Ints("pw1_p2", p2.data(), c.at("ref_pw1_p2").as<std::int32_t>(), TH);
    ck.Ints("pw2_p1", q1.data(), c.at("ref_pw2_p1").as<std::int32_t>(), TC);
    ck.Ints("pw2_p2", q2.data(), c.at("ref_pw2_p2").as<std::int32_t>(), TC);
    for (auto* v : {&d1, &wsum, &p1, &p2, &q1, &q2}) r.ints.insert(r.ints.end(), v->begin(), v->end());
    // S2 accumulators: floats, check against a double recomputation from the ref bits
    {
      std::vector<double> s2ref(TC, 0.0);
      const auto& mw = c.at("mem_weights");
      const std::uint32_t* w = mw.as<std::uint32_t>();
      const std::size_t wpr = mw.dims[1], apr = c.at("ref_mem_b2").dims[1];
      const std::uint32_t* a2 = c.at("ref_mem_b2").as<std::uint32_t>();
      for (int t = 0; t < T; ++t)
        for (int k = 0; k < sh[3] + sh[4] + 1; ++k) {
          const int tau = t + (k - sh[3]) * sh[5];
          if (tau < 0 || tau >= T) continue;
          for (int ch = 0; ch < C; ++ch) {
            const unsigned wb = (w[k * wpr + ch / 32] >> (ch % 32)) & 1u;
            const unsigned ab = (a2[tau * apr + ch / 32] >> (ch % 32)) & 1u;
            s2ref[static_cast<std::size_t>(t) * C + ch] +=
                (wb ^ ab) ? -static_cast<double>(mem_s[tau]) : static_cast<double>(mem_s[tau]);
          }
        }
      ck.Floats("mem_s2", s2.data(), s2ref.data(), TC);
    }
    results.push_back(std::move(r));
  }
  if (results.empty()) return false;  // (the portable path always runs)
  // checksum of the portable path only: comparable between host and aarch64 builds (the
  // NEON path is checked bit-identical to it below)
  st->Hash(results[0].out.data(), TC * sizeof(float));
  st->Hash(results[0].ints.data(), results[0].ints.size() * sizeof(std::int32_t));
  // paths agree bit for bit
  for (std::size_t i = 1; i < results.size(); ++i) {
    ck.where = name + " [paths]";
    if (std::memcmp(results[i].out.data(), results[0].out.data(), TC * sizeof(float)) != 0)
      ck.Fail(std::string("float output differs between portable and ") +
              bd::PathName(paths[i]) + " paths");
    ck.Ints("accumulators portable vs SIMD path", results[i].ints.data(), results[0].ints.data(),
            results[0].ints.size());
  }
  // garbage pad bits in the stored weights change nothing
  {
    ck.where = name + " [pad bits]";
    auto gm = WithGarbagePads(c.at("mem_weights"), C);
    auto g1 = WithGarbagePads(c.at("pw1_weights"), C);
    auto g2 = WithGarbagePads(c.at("pw2_weights"), H);
    bd::Layer dirty;
    if (!dirty.Init(SpecFrom(c, &gm, &g1, &g2), &err)) {
      ck.Fail("Init with garbage pads: " + err);
    } else {
      for (bd::Path p : paths) {
        bd::Workspace ws;
        dirty.Prepare(T, &ws);
        std::vector<float> out(TC);
        dirty.Eval(c.at("x").as<float>(), T, out.data(), &ws, p);
        if (std::memcmp(out.data(), results[0].out.data(), TC * sizeof(float)) != 0)
          ck.Fail(std::string("garbage pad bits changed the output (") + bd::PathName(p) + ")");
      }
    }
  }
  st->max_abs_out = std::max(st->max_abs_out, case_abs);
  st->max_scaled_out = std::max(st->max_scaled_out, case_scaled);
  if (!g_quiet || !ck.ok)
    std::printf("%s %s T=%d C=%d H=%d l=%d r=%d dil=%d depth=%d max_abs_out=%.3g scaled=%.3g\n",
                ck.ok ? "ok  " : "FAIL", name.c_str(), T, C, H, sh[3], sh[4], sh[5], sh[6],
                case_abs, case_scaled);
  return ck.ok;
}

// Malformed specs must be rejected by Init (no crash, an error message).
bool InitRejects(Stats* st) {
  // sized for the largest weight matrix of the spec below (50 rows x 2 words)
  std::vector<std::uint32_t> w(256, 0);
  std::vector<float> v(64, 0.5f);
  bd::LayerSpec good;
  good.channels = 40; good.hidden = 50; good.left = 1; good.right = 1; good.dilation = 1;
  good.mem_weights = good.pw1_weights = good.pw2_weights = w.data();
  const float** fs[] = {&good.mem_t0, &good.mem_t1, &good.mem_t2, &good.mem_mul, &good.mem_bias,
                        &good.mem_slope, &good.pw1_t0, &good.pw1_t1, &good.pw1_mul,
                        &good.pw1_bias, &good.pw1_slope, &good.pw2_t0, &good.pw2_t1,
                        &good.pw2_mul, &good.pw2_bias, &good.pw2_slope};
  for (auto f : fs) *f = v.data();
  bool ok = true;
  std::string err;
  bd::Layer L;
  if (!L.Init(good, &err)) { std::printf("FAIL Init rejected a good spec: %s\n", err.c_str()); ok = false; }
  bd::Workspace ws;
  std::vector<float> x(40 * 3, 0.25f), out(40 * 3);
  L.Prepare(2, &ws);
  if (L.Eval(x.data(), 3, out.data(), &ws)) { std::printf("FAIL Eval accepted frames > prepared\n"); ok = false; }
  if (L.Eval(x.data(), 0, out.data(), &ws)) { std::printf("FAIL Eval accepted 0 frames\n"); ok = false; }
  struct Bad { const char* what; bd::LayerSpec s; };
  std::vector<Bad> bads;
  bd::LayerSpec s = good; s.channels = 0; bads.push_back({"channels=0", s});
  s = good; s.hidden = -3; bads.push_back({"hidden<0", s});
  s = good; s.channels = 70000; bads.push_back({"channels too big", s});
  s = good; s.left = -1; bads.push_back({"left<0", s});
  s = good; s.left = 10; s.right = 10; bads.push_back({"too many taps", s});
  s = good; s.dilation = 0; bads.push_back({"dilation=0", s});
  s = good; s.pw2_weights = nullptr; bads.push_back({"null weights", s});
  s = good; s.pw1_slope = nullptr; bads.push_back({"null vector", s});
  std::vector<float> nan = v; nan[7] = std::nanf("");
  s = good; s.mem_mul = nan.data(); bads.push_back({"NaN", s});
  std::vector<float> inf = v; inf[3] = INFINITY;
  s = good; s.pw2_t1 = inf.data(); bads.push_back({"Inf", s});
  for (auto& b : bads) {
    bd::Layer l2;
    std::string e;
    if (l2.Init(b.s, &e) || e.empty()) {
      std::printf("FAIL Init accepted a malformed spec (%s)\n", b.what);
      ok = false;
    }
  }
  if (!ok) st->failures++;
  return ok;
}

// The binary DFSMN op's options parser (bdfsmn_options.h: flexbuffers::VerifyBuffer, then the map;
// TFLite-free): a map written by Python's flatbuffers.flexbuffers.Dumps({'channels': 128,
// 'hidden': 256, 'left': 2, 'right': 2, 'dilation': 1, 'big': 70000, 'neg': -3, 'f': 1.5})
// parses to those five values (extra keys ignored); maps built with flexbuffers::Builder
// with a missing, float or huge entry, a non-map root and an over-long length are refused;
// and 20000 random corruptions / truncations never read out of bounds (run this under ASan).
bool OptionsChecks(Stats* st) {
  static const unsigned char kMap[] = {
      0x63, 0x68, 0x61, 0x6e, 0x6e, 0x65, 0x6c, 0x73, 0x00, 0x68, 0x69, 0x64, 0x64, 0x65,
      0x6e, 0x00, 0x6c, 0x65, 0x66, 0x74, 0x00, 0x72, 0x69, 0x67, 0x68, 0x74, 0x00, 0x64,
      0x69, 0x6c, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x00, 0x62, 0x69, 0x67, 0x00, 0x6e, 0x65,
      0x67, 0x00, 0x66, 0x00, 0x08, 0x0b, 0x30, 0x16, 0x06, 0x2a, 0x24, 0x0d, 0x21, 0x00,
      0x09, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x70, 0x11,
      0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x3f,
      0x00, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xff, 0xff, 0xff, 0x02, 0x00,
      0x00, 0x00, 0x06, 0x06, 0x06, 0x0e, 0x06, 0x06, 0x06, 0x06, 0x28, 0x26, 0x01};
  namespace bo = compute_engine::tflite::bdfsmn_options;
  bool ok = true;
  bo::Options o;
  std::string err;
  if (!bo::Parse(kMap, sizeof kMap, &o, &err)) {
    std::printf("FAIL options: %s\n", err.c_str());
    ok = false;
  } else if (o.channels != 128 || o.hidden != 256 || o.left != 2 || o.right != 2 ||
             o.dilation != 1) {
    std::printf("FAIL options: wrong values\n");
    ok = false;
  }
  // Maps that verify as FlexBuffers but are not valid options.
  auto build = [](int variant) {
    flexbuffers::Builder fbb;
    if (variant == 4) {
      fbb.Vector([&]() { fbb.Int(1); fbb.Int(2); });
    } else {
      fbb.Map([&]() {
        namespace keys = compute_engine::ops::bdfsmn;
        fbb.Int(keys::kChannels, variant == 3 ? (std::int64_t{1} << 40) : 128);
        fbb.Int(keys::kHidden, 256);
        fbb.Int(keys::kLeft, 2);
        fbb.Int(keys::kRight, 2);
        if (variant == 1) fbb.Double(keys::kDilation, 1.5);
        if (variant == 2) fbb.Int(keys::kDilation, 1);
        if (variant == 0) fbb.Int("other", 1);
      });
    }
    fbb.Finish();
    return fbb.GetBuffer();
  };
  for (int variant = 0; variant < 5; ++variant) {
    const std::vector<std::uint8_t> b = build(variant);
    bo::Options oo;
    std::string e;
    const bool parsed = bo::Parse(b.data(), b.size(), &oo, &e);
    if (parsed != (variant == 2)) {  // only variant 2 is complete and well-typed
      std::printf("FAIL options: variant %d parsed=%d (%s)\n", variant, parsed, e.c_str());
      ok = false;
    }
  }
  {  // a length beyond the bound is refused before anything is read
    bo::Options oo;
    std::string e;
    if (bo::Parse(kMap, bo::kMaxOptionsBytes + 1, &oo, &e) ||
        e.find("exceeds") == std::string::npos) {
      std::printf("FAIL options: over-long length not refused (%s)\n", e.c_str());
      ok = false;
    }
  }
  std::uint32_t rng = 12345u;
  auto next = [&rng]() { rng = rng * 1664525u + 1013904223u; return rng >> 8; };
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<unsigned char> b(kMap, kMap + sizeof kMap);
    if (i % 2 == 0) {
      for (int k = 0; k < 1 + i % 3; ++k) b[next() % b.size()] = static_cast<unsigned char>(next());
    } else {
      b.resize(next() % b.size());
    }
    bo::Options oo;
    std::string e;
    parsed += bo::Parse(b.data(), b.size(), &oo, &e) ? 1 : 0;
  }
  if (!ok) st->failures++;
  if (!g_quiet) {
    std::printf("options: reference map ok=%d, %d of 20000 corrupted maps parsed\n", ok, parsed);
  }
  return ok;
}

void Collect(const std::string& p, std::vector<std::string>* files) {
  DIR* d = opendir(p.c_str());
  if (!d) {
    files->push_back(p);
    return;
  }
  std::vector<std::string> found;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".bdv") == 0) found.push_back(p + "/" + n);
  }
  closedir(d);
  std::sort(found.begin(), found.end());
  files->insert(files->end(), found.begin(), found.end());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tol" && i + 1 < argc) {
      g_tol = std::atof(argv[++i]);
    } else if (a == "--quiet") {
      g_quiet = true;
    } else {
      Collect(a, &files);
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "usage: %s [--tol 1e-5] [--quiet] FILE_OR_DIR...\n", argv[0]);
    return 2;
  }
  Stats st;
  InitRejects(&st);
  OptionsChecks(&st);
  int ok = 0;
  for (const auto& f : files) {
    if (RunCase(f, &st)) ++ok; else st.failures++;
  }
  std::printf(
      "SUMMARY paths=%s cases=%zu passed=%d failures=%d ints_checked=%zu int_mismatches=%d "
      "floats_checked=%zu max_abs_out=%.3g max_scaled_out=%.3g max_scaled_all=%.3g tol=%.1g "
      "checksum=%016llx\n",
      PathsLabel().c_str(), files.size(), ok, st.failures,
      st.ints_checked, st.int_mismatches, st.floats_checked, st.max_abs_out, st.max_scaled_out,
      st.max_scaled_all, g_tol, static_cast<unsigned long long>(st.checksum));
  return st.failures == 0 ? 0 : 1;
}
