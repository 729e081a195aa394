// The TFLite glue of ops::DUAL_QUANTIZE (tflite/lce_ops.cc, Register_LCE_DUAL_QUANTIZE) driven
// directly, without an interpreter: a hand-made TfLiteContext (tensors, ResizeTensor,
// ReportError) and TfLiteNode. A valid node prepares (b1 / b2 resized, s kept) and evaluates
// to the kernel's own output on every registered path; every malformed node (counts, absent
// or out-of-range operands, types, ranks, shapes, the s shape rule, non-constant or
// truncated thresholds, missing data, options) fails Prepare with a report prefixed by the
// op's name, never crashes (run under ASan/UBSan too), and Eval before a successful Prepare
// fails. Compiled against either TFLite header variant (tflite/tflite_c.h).
//
// Usage: dual_quantize_glue_test [--verbose]    exit 0 = all passed
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../core/bitpack.h"
#include "../core/dual_quantize.h"
#include "../core/op_contract.h"
#include "../tflite/lce_ops_register.h"

namespace {

namespace ops = compute_engine::ops;
namespace dq = compute_engine::core::dual_quantize;
namespace dqc = compute_engine::ops::dual_quantize;
using compute_engine::core::KernelPath;

int g_failures = 0;
bool g_verbose = false;
std::string g_report;

void Fail(const std::string& what) {
  if (++g_failures <= 20) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
}

TfLiteIntArray* NewArray(const std::vector<int>& v) {
  auto* a = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (1 + v.size())));
  a->size = static_cast<int>(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) a->data[i] = v[i];
  return a;
}

void ReportError(TfLiteContext* /*ctx*/, const char* fmt, ...) {
  char msg[2048];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  g_report = msg;
}

TfLiteStatus ResizeTensor(TfLiteContext* /*ctx*/, TfLiteTensor* t, TfLiteIntArray* new_size) {
  std::free(t->dims);
  t->dims = new_size;
  std::size_t n = 1;
  for (int i = 0; i < new_size->size; ++i) n *= static_cast<std::size_t>(new_size->data[i]);
  t->bytes = n * 4u;
  return kTfLiteOk;
}

// x [2, 3, 4, 40], thresholds [2, 40], b1 / b2 [2, 3, 4, 2], s [2, 1, 4, 1] (per position
// of axes 0 and 2). Buffers large enough for any edit below.
struct Graph {
  std::vector<float> x = std::vector<float>(2 * 3 * 4 * 40);
  std::vector<float> t = std::vector<float>(80);
  std::vector<std::int32_t> b1 = std::vector<std::int32_t>(256), b2 = std::vector<std::int32_t>(256);
  std::vector<float> s = std::vector<float>(256);
  TfLiteTensor tensors[5];
  TfLiteContext ctx;
  TfLiteNode node;
  std::vector<int> inputs = {0, 1}, outputs = {2, 3, 4};

  Graph() {
    for (std::size_t i = 0; i < x.size(); ++i) {
      x[i] = static_cast<float>(static_cast<int>((i * 7919u) % 61u) - 30) / 10.0f;
    }
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(i % 7) / 10.0f - 0.3f;
    std::memset(static_cast<void*>(tensors), 0, sizeof tensors);
    Set(0, kTfLiteFloat32, {2, 3, 4, 40}, x.data(), kTfLiteArenaRw);
    Set(1, kTfLiteFloat32, {2, 40}, t.data(), kTfLiteMmapRo);
    Set(2, kTfLiteInt32, {2, 3, 4, 2}, b1.data(), kTfLiteArenaRw);
    Set(3, kTfLiteInt32, {2, 3, 4, 2}, b2.data(), kTfLiteArenaRw);
    Set(4, kTfLiteFloat32, {2, 1, 4, 1}, s.data(), kTfLiteArenaRw);
    std::memset(static_cast<void*>(&ctx), 0, sizeof ctx);
    ctx.tensors = tensors;
    ctx.tensors_size = 5;
    ctx.ReportError = ReportError;
    ctx.ResizeTensor = ResizeTensor;
    std::memset(static_cast<void*>(&node), 0, sizeof node);
  }
  ~Graph() {
    for (TfLiteTensor& tt : tensors) std::free(tt.dims);
    std::free(node.inputs);
    std::free(node.outputs);
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  void Set(int i, TfLiteType type, const std::vector<int>& dims, void* data,
           TfLiteAllocationType alloc) {
    TfLiteTensor& tt = tensors[i];
    tt.type = type;
    std::free(tt.dims);
    tt.dims = NewArray(dims);
    std::size_t n = 1;
    for (int d : dims) n *= static_cast<std::size_t>(d < 0 ? 0 : d);
    tt.bytes = n * 4u;
    tt.data.data = data;
    tt.allocation_type = alloc;
  }
  void Dims(int i, const std::vector<int>& dims) {
    const std::size_t bytes = tensors[i].bytes;
    Set(i, tensors[i].type, dims, tensors[i].data.data, tensors[i].allocation_type);
    tensors[i].bytes = bytes;
  }
  void Wire() {
    std::free(node.inputs);
    std::free(node.outputs);
    node.inputs = NewArray(inputs);
    node.outputs = NewArray(outputs);
  }
};

struct Op {
  TfLiteRegistration* reg;
  void* data = nullptr;
  Op(TfLiteRegistration* r, Graph* g, const char* options, std::size_t length) : reg(r) {
    data = reg->init(&g->ctx, options, length);
    g->node.user_data = data;
  }
  ~Op() { reg->free(nullptr, data); }
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;
};

void Valid(KernelPath path) {
  const std::string where = std::string("valid node, path ") +
                            compute_engine::core::KernelPathName(path);
  Graph g;
  g.Dims(2, {1});  // b1 / b2 sized by Prepare
  g.Dims(3, {7, 7});
  g.Wire();
  Op op(compute_engine::tflite::Register_LCE_DUAL_QUANTIZE(path), &g, nullptr, 0);
  g_report.clear();
  if (op.reg->invoke(&g.ctx, &g.node) != kTfLiteError) Fail(where + ": Eval before Prepare ran");
  if (op.reg->prepare(&g.ctx, &g.node) != kTfLiteOk) {
    Fail(where + ": Prepare failed: " + g_report);
    return;
  }
  for (int o = 2; o <= 3; ++o) {
    const TfLiteIntArray* d = g.tensors[o].dims;
    if (d->size != 4 || d->data[0] != 2 || d->data[1] != 3 || d->data[2] != 4 || d->data[3] != 2) {
      Fail(where + ": b1 / b2 not resized to [2, 3, 4, 2]");
    }
  }
  if (op.reg->invoke(&g.ctx, &g.node) != kTfLiteOk) Fail(where + ": Eval failed: " + g_report);
  dq::Geometry geo;
  geo.rank = 4;
  const int dims[4] = {2, 3, 4, 40};
  const bool reduced[4] = {false, true, false, true};
  for (int i = 0; i < 4; ++i) {
    geo.dims[i] = dims[i];
    geo.reduced[i] = reduced[i];
  }
  std::vector<std::int32_t> w1(48), w2(48);
  std::vector<float> ws(8);
  dq::DualQuantize(g.x.data(), geo, g.t.data(), g.t.data() + 40, w1.data(), w2.data(),
                   ws.data(), KernelPath::kPortable);
  if (!std::equal(w1.begin(), w1.end(), g.b1.begin()) ||
      !std::equal(w2.begin(), w2.end(), g.b2.begin()) ||
      !std::equal(ws.begin(), ws.end(), g.s.begin())) {
    Fail(where + ": Eval differs from the kernel");
  }
}

void Malformed() {
  struct Bad {
    const char* what;
    std::function<void(Graph*)> edit;
  };
  static float spare[4];
  const std::vector<Bad> bad = {
      {"no inputs", [](Graph* g) { g->inputs = {}; }},
      {"1 input", [](Graph* g) { g->inputs = {0}; }},
      {"3 inputs", [](Graph* g) { g->inputs = {0, 1, 1}; }},
      {"2 outputs", [](Graph* g) { g->outputs = {2, 3}; }},
      {"4 outputs", [](Graph* g) { g->outputs = {2, 3, 4, 4}; }},
      {"x index -1", [](Graph* g) { g->inputs[0] = -1; }},
      {"thresholds index 99", [](Graph* g) { g->inputs[1] = 99; }},
      {"b1 index -1", [](Graph* g) { g->outputs[0] = -1; }},
      {"s index 5", [](Graph* g) { g->outputs[2] = 5; }},
      {"x int32", [](Graph* g) { g->tensors[0].type = kTfLiteInt32; }},
      {"x rank 5", [](Graph* g) { g->Dims(0, {2, 3, 4, 1, 40}); }},
      {"x rank 1", [](Graph* g) { g->Dims(0, {960}); }},
      {"x dim 0", [](Graph* g) { g->Dims(0, {2, 0, 4, 40}); }},
      {"x truncated", [](Graph* g) { g->tensors[0].bytes -= 4; }},
      {"x constant", [](Graph* g) { g->tensors[0].allocation_type = kTfLiteMmapRo; }},
      {"thresholds float16", [](Graph* g) { g->tensors[1].type = kTfLiteFloat16; }},
      {"thresholds [80]", [](Graph* g) { g->Dims(1, {80}); }},
      {"thresholds [1, 80]", [](Graph* g) { g->Dims(1, {1, 80}); }},
      {"thresholds [2, 39]", [](Graph* g) { g->Dims(1, {2, 39}); }},
      {"thresholds not constant", [](Graph* g) { g->tensors[1].allocation_type = kTfLiteArenaRw; }},
      {"thresholds truncated", [](Graph* g) { g->tensors[1].bytes = 12; g->tensors[1].data.data = spare; }},
      {"thresholds no data", [](Graph* g) { g->tensors[1].data.data = nullptr; }},
      {"b1 float32", [](Graph* g) { g->tensors[2].type = kTfLiteFloat32; }},
      {"b2 int8", [](Graph* g) { g->tensors[3].type = kTfLiteInt8; }},
      {"s int32", [](Graph* g) { g->tensors[4].type = kTfLiteInt32; }},
      {"s rank 3", [](Graph* g) { g->Dims(4, {2, 1, 1}); }},
      {"s last dim 40", [](Graph* g) { g->Dims(4, {2, 1, 4, 40}); }},
      {"s batch reduced", [](Graph* g) { g->Dims(4, {1, 1, 1, 1}); }},
      {"s dim 2 of 3", [](Graph* g) { g->Dims(4, {2, 2, 4, 1}); }},
      {"s no dims", [](Graph* g) { std::free(g->tensors[4].dims); g->tensors[4].dims = nullptr; }},
  };
  const KernelPath paths[] = {KernelPath::kPortable, KernelPath::kAuto};
  for (KernelPath path : paths) {
    for (const Bad& b : bad) {
      Graph g;
      b.edit(&g);
      g.Wire();
      Op op(compute_engine::tflite::Register_LCE_DUAL_QUANTIZE(path), &g, nullptr, 0);
      g_report.clear();
      const TfLiteStatus st = op.reg->prepare(&g.ctx, &g.node);
      if (st != kTfLiteError || g_report.rfind(std::string(ops::DUAL_QUANTIZE) + ": ", 0) != 0) {
        Fail(std::string("Prepare accepted (or reported nothing): ") + b.what);
      } else if (g_verbose && path == KernelPath::kPortable) {
        std::printf("  %s: %s\n", b.what, g_report.c_str());
      }
      if (op.reg->invoke(&g.ctx, &g.node) != kTfLiteError) {
        Fail(std::string("Eval ran after a failed Prepare: ") + b.what);
      }
    }
  }
  {  // options: absent or empty accepted, anything else refused in Prepare
    Graph g;
    g.Wire();
    const char opts[4] = {1, 2, 3, 4};
    Op op(compute_engine::tflite::Register_LCE_DUAL_QUANTIZE(), &g, opts, sizeof opts);
    g_report.clear();
    if (op.reg->prepare(&g.ctx, &g.node) != kTfLiteError || g_report.empty()) {
      Fail("Prepare accepted custom options");
    } else if (g_verbose) {
      std::printf("  options: %s\n", g_report.c_str());
    }
  }
  {
    Graph g;
    g.Wire();
    Op op(compute_engine::tflite::Register_LCE_DUAL_QUANTIZE(), &g, "", 0);
    if (op.reg->prepare(&g.ctx, &g.node) != kTfLiteOk) Fail("empty options refused: " + g_report);
  }
  if (g_verbose) std::printf("%zu malformed nodes x 2 paths refused\n", bad.size());
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--verbose") == 0) {
      g_verbose = true;
    } else {
      std::fprintf(stderr, "usage: %s [--verbose]\n", argv[0]);
      return 2;
    }
  }
  const KernelPath paths[] = {KernelPath::kAuto, KernelPath::kPortable, KernelPath::kNeon,
                              KernelPath::kAvx512};
  for (KernelPath p : paths) Valid(p);
  Malformed();
  std::printf("dual_quantize_glue_test (%s headers): %s\n", LCE_KERNELS_TFLITE_HEADERS,
              g_failures == 0 ? "all passed" : "FAILED");
  return g_failures == 0 ? 0 : 1;
}
