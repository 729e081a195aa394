// The firmware runner: one .tflite in TensorFlow Lite Micro (built from the pinned sources,
// firmware_sim/firmware.mk) with the project's ops (lce_kernels/tflm) and, on aarch64,
// XNNPACK float kernels. The same source for x86-64 and aarch64 (under qemu-aarch64).
//
//   firmware --model M.tflite [--inputs IN.bin --outputs OUT.bin] [--arena BYTES]
//            [--float_kernels reference|xnnpack] [--kernel_path auto|portable|neon|avx512]
//            [--count N] [--per_op] [--op_offset K] [--recording] [--info]
//            [--stream_reset N] [--final_states STATES.bin]
//
// Tensor files (firmware_sim/tensor_file.py writes and reads them; little-endian):
//   "BKWSTEN1" (8 bytes), u32 TfLiteType code (1 float32, 9 int8, 2 int32), u32 rank,
//   u32 dims[rank] (dims[0] = number of items, the rest one item's shape), raw data.
// Each item of --inputs is copied into the model's input tensor (same type and element
// count), Invoke() runs, the output tensor goes to --outputs (one item per input item).
//
// --count N (aarch64 under qemu with firmware_sim/qemu_plugin/insn_count.so): one warm-up
// Invoke (binds XNNPACK's pointers), then N Invokes of the first item, each inside region 1
// (movz xzr markers, drivers/insn_region.h; no-ops elsewhere). --per_op: then a second
// interpreter whose profiler puts op i of the graph in region 100 + i (i < 150), N more runs.
// --op_offset K: op i is region 100 + i - K instead (ops K .. K + 149; models of > 150 ops
// are counted in several runs).
// --recording: the arena through TFLM's RecordingMicroAllocator (its breakdown in the JSON).
// --info: stop after AllocateTensors.
//
// STREAMING models (pipeline/streaming_export.py): n > 1 inputs and n outputs, input 0 the hop,
// input k + 1 state k, output 0 the logits, output k + 1 the new state k (same type and size as
// input k + 1). The items of --inputs are hops of ONE stream: the states start at zero, and
// after every Invoke() each new state is copied to its state input (through a staging copy:
// TFLM's planner may place an output where a dead input was). --stream_reset N: the states go
// back to zero every N items (N hops per clip; 0: never). --final_states F: the states after
// the last item, concatenated in input order, as one tensor file [elements]. --count N: N hops
// counted from zero state (hop h = item h mod items; one warm-up hop before, then the states
// zeroed again), each Invoke() in region 1 and, for h < 64, also in region 2 + h (region 66:
// the hop regions' own marker calls, to subtract); the state copies sit outside every region.
// --per_op: the same N hops on the second interpreter.
//
// Output: ONE JSON line on stdout: "ok", arena (size, used), heap (operator new: the core's
// copies and scratch; XNNPACK: its packed weights), allocations during Invokes after the
// first (must be 0), input / output tensor types, shapes, quantization, every op with its
// kernel, the kernel path, timings. Any failure (bad flags, unreadable or malformed model,
// unsupported op, Prepare errors, wrong input file) is {"ok": false, "error": "..."} with
// exit status 1, including TFLM's last messages; nothing here aborts on bad input.
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "drivers/insn_region.h"
#include "firmware/heap.h"
#include "firmware/xnn_kernels.h"
#include "lce_kernels/core/kernel_path.h"
#include "lce_kernels/core/op_contract.h"
#include "lce_kernels/tflm/lce_tflm_ops.h"
#include "tensorflow/lite/micro/debug_log.h"
#include "tensorflow/lite/micro/kernels/micro_ops.h"
#include "tensorflow/lite/micro/micro_allocator.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/micro/recording_micro_allocator.h"
#include "tensorflow/lite/schema/schema_generated.h"

// ------------------------------------------------------------------ TFLM's log sink
// TFLM writes every message through DebugLog (tensorflow/lite/micro/debug_log.h; this file
// replaces its reference debug_log.cc): to stderr, and the last few lines are kept for the
// JSON error.
namespace {
std::string& LogTail() {
  static std::string s;
  return s;
}
}  // namespace

extern "C" void DebugLog(const char* format, va_list args) {
  char buf[512];
  va_list copy;
  va_copy(copy, args);
  std::vsnprintf(buf, sizeof buf, format, copy);
  va_end(copy);
  std::fputs(buf, stderr);
  std::string& t = LogTail();
  t += buf;
  if (t.size() > 1500) t.erase(0, t.size() - 1500);
}

extern "C" int DebugVsnprintf(char* buffer, size_t buf_size, const char* format,
                              va_list vlist) {
  return std::vsnprintf(buffer, buf_size, format, vlist);
}

namespace {

using compute_engine::core::KernelPath;

// ------------------------------------------------------------------ JSON helpers
std::string Quote(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c == '\n') {
      o += "\\n";
    } else if (c == '\r') {
      continue;
    } else if (c < 0x20 || c >= 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

// The last non-empty lines TFLM printed, joined ("" if none).
std::string LastLog(int lines) {
  std::string t = LogTail(), out;
  int n = 0;
  while (!t.empty() && n < lines) {
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
    const std::size_t cut = t.find_last_of('\n');
    std::string line = cut == std::string::npos ? t : t.substr(cut + 1);
    t.erase(cut == std::string::npos ? 0 : cut);
    while (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    out = out.empty() ? line : line + " | " + out;
    ++n;
  }
  return out;
}

[[noreturn]] void Fail(const std::string& msg) {
  std::string log = LogTail();
  while (!log.empty() && (log.back() == '\n' || log.back() == '\r')) log.pop_back();
  std::printf("{\"ok\": false, \"error\": %s, \"tflm_log\": %s}\n", Quote(msg).c_str(),
              Quote(log).c_str());
  std::fflush(stdout);
  std::exit(1);
}

// ------------------------------------------------------------------ flags
struct Flags {
  std::string model, inputs, outputs;
  long arena = 1 << 20;
  std::string float_kernels = "reference";
  KernelPath path = KernelPath::kAuto;
  int count = 0, op_offset = 0;
  long stream_reset = 0;
  std::string final_states;
  bool per_op = false, recording = false, info = false;
};

long ParseLong(const char* s, const char* flag, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != 0 || v < lo || v > hi) {
    Fail(std::string(flag) + " " + s + ": expected an integer in [" + std::to_string(lo) + ", " +
         std::to_string(hi) + "]");
  }
  return v;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) Fail(a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") {
      f.model = value();
    } else if (a == "--inputs") {
      f.inputs = value();
    } else if (a == "--outputs") {
      f.outputs = value();
    } else if (a == "--arena") {
      f.arena = ParseLong(value(), "--arena", 1, 1L << 30);
    } else if (a == "--float_kernels") {
      f.float_kernels = value();
      if (f.float_kernels != "reference" && f.float_kernels != "xnnpack") {
        Fail("--float_kernels " + f.float_kernels + ": expected reference or xnnpack");
      }
    } else if (a == "--kernel_path") {
      const char* v = value();
      if (!compute_engine::core::ParseKernelPath(v, &f.path)) {
        Fail(std::string("--kernel_path ") + v + ": expected auto, portable, neon or avx512");
      }
    } else if (a == "--count") {
      f.count = static_cast<int>(ParseLong(value(), "--count", 1, 1000));
    } else if (a == "--per_op") {
      f.per_op = true;
    } else if (a == "--op_offset") {
      f.op_offset = static_cast<int>(ParseLong(value(), "--op_offset", 0, 100000));
    } else if (a == "--stream_reset") {
      f.stream_reset = ParseLong(value(), "--stream_reset", 0, 1L << 24);
    } else if (a == "--final_states") {
      f.final_states = value();
    } else if (a == "--recording") {
      f.recording = true;
    } else if (a == "--info") {
      f.info = true;
    } else {
      Fail("unknown flag " + a);
    }
  }
  if (f.model.empty()) Fail("--model is required");
  if (f.inputs.empty() != f.outputs.empty()) Fail("--inputs and --outputs go together");
  if (f.per_op && f.count == 0) Fail("--per_op needs --count");
  if (!f.final_states.empty() && f.inputs.empty()) Fail("--final_states needs --inputs");
  return f;
}

// ------------------------------------------------------------------ files
// An aligned copy of a file (TFLM reads tensor buffers in place: 16-byte alignment).
struct Blob {
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  Blob() = default;
  Blob(const Blob&) = delete;
  Blob& operator=(const Blob&) = delete;
  ~Blob() { std::free(data); }
};

// A malloc'd byte buffer (the runner's own I/O copies stay out of the counted heap).
struct Bytes {
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  explicit Bytes(std::size_t n) : size(n) {
    data = static_cast<std::uint8_t*>(std::calloc(n ? n : 1, 1));
    if (data == nullptr) Fail("out of memory");
  }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  ~Bytes() { std::free(data); }
};

void ReadFile(const std::string& path, Blob* b, const char* what) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) Fail(std::string("cannot open ") + what + " " + path);
  std::fseek(f, 0, SEEK_END);
  const long n = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  if (n < 0 || n > (1L << 30)) {
    std::fclose(f);
    Fail(std::string(what) + " " + path + ": unreadable size");
  }
  b->size = static_cast<std::size_t>(n);
  void* p = nullptr;
  if (posix_memalign(&p, 16, b->size + 16) != 0) {
    std::fclose(f);
    Fail("out of memory reading " + path);
  }
  b->data = static_cast<std::uint8_t*>(p);
  const std::size_t got = std::fread(b->data, 1, b->size, f);
  std::fclose(f);
  if (got != b->size) Fail(std::string("short read of ") + what + " " + path);
}

constexpr char kMagic[8] = {'B', 'K', 'W', 'S', 'T', 'E', 'N', '1'};

struct TensorFile {
  std::uint32_t type = 0;
  std::vector<std::uint32_t> dims;  // dims[0] = items
  const std::uint8_t* data = nullptr;
  std::size_t item_elems = 0, items = 0;
};

std::size_t TypeBytes(std::uint32_t t) {
  switch (t) {
    case kTfLiteFloat32: case kTfLiteInt32: return 4;
    case kTfLiteInt8: case kTfLiteUInt8: case kTfLiteBool: return 1;
    case kTfLiteInt16: return 2;
    default: return 0;
  }
}

TensorFile ParseTensorFile(const Blob& b, const std::string& path) {
  TensorFile t;
  const std::uint8_t* p = b.data;
  auto u32 = [&](std::size_t off) {
    std::uint32_t v;
    std::memcpy(&v, p + off, 4);
    return v;
  };
  if (b.size < 16 || std::memcmp(p, kMagic, 8) != 0) {
    Fail(path + ": not a tensor file (magic BKWSTEN1, firmware_sim/tensor_file.py)");
  }
  t.type = u32(8);
  const std::uint32_t rank = u32(12);
  if (TypeBytes(t.type) == 0 || rank < 1 || rank > 8 || b.size < 16 + 4u * rank) {
    Fail(path + ": bad tensor file header");
  }
  std::size_t elems = 1;
  for (std::uint32_t i = 0; i < rank; ++i) {
    t.dims.push_back(u32(16 + 4 * i));
    if (t.dims.back() > (1u << 24)) Fail(path + ": dimension too large");
    if (i > 0) elems *= t.dims.back();
    if (elems > (std::size_t{1} << 28)) Fail(path + ": item too large");
  }
  t.items = t.dims[0];
  t.item_elems = elems;
  const std::size_t header = 16 + 4u * rank;
  if (b.size != header + t.items * elems * TypeBytes(t.type)) {
    Fail(path + ": size does not match its header");
  }
  t.data = p + header;
  return t;
}

void WriteTensorFile(const std::string& path, std::uint32_t type,
                     const std::vector<std::uint32_t>& dims, const Bytes& d) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) Fail("cannot write " + path);
  const std::uint32_t rank = static_cast<std::uint32_t>(dims.size());
  bool ok = std::fwrite(kMagic, 1, 8, f) == 8 && std::fwrite(&type, 4, 1, f) == 1 &&
            std::fwrite(&rank, 4, 1, f) == 1 &&
            std::fwrite(dims.data(), 4, dims.size(), f) == dims.size() &&
            (d.size == 0 || std::fwrite(d.data, 1, d.size, f) == d.size);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) Fail("cannot write " + path);
}

// ------------------------------------------------------------------ model checks
constexpr std::size_t kMaxStates = 48;  // streaming models: state tensors at most

// The flatbuffer verifier of the TFLite schema (TFLM does not verify), then the indices TFLM
// follows without checking: opcode, tensor and buffer indices of subgraph 0.
const tflite::Model* CheckModel(const Blob& b) {
  flatbuffers::Verifier verifier(b.data, b.size);
  if (!tflite::VerifyModelBuffer(verifier)) {
    Fail("the model is not a valid TFLite flatbuffer (flatbuffers verifier)");
  }
  const tflite::Model* m = tflite::GetModel(b.data);
  if (m->version() != TFLITE_SCHEMA_VERSION) {
    Fail("schema version " + std::to_string(m->version()) + ", expected " +
         std::to_string(TFLITE_SCHEMA_VERSION));
  }
  if (m->subgraphs() == nullptr || m->subgraphs()->size() != 1) {
    Fail("the model must have exactly one subgraph");
  }
  const auto* sg = m->subgraphs()->Get(0);
  const std::size_t n_codes = m->operator_codes() ? m->operator_codes()->size() : 0;
  const std::size_t n_buffers = m->buffers() ? m->buffers()->size() : 0;
  const std::size_t n_tensors = sg->tensors() ? sg->tensors()->size() : 0;
  if (sg->operators() == nullptr || sg->inputs() == nullptr || sg->outputs() == nullptr ||
      n_tensors == 0) {
    Fail("subgraph 0 has no operators, inputs, outputs or tensors");
  }
  if (sg->inputs()->size() == 0 || sg->inputs()->size() != sg->outputs()->size() ||
      sg->inputs()->size() > kMaxStates + 1) {
    Fail("the model has " + std::to_string(sg->inputs()->size()) + " inputs and " +
         std::to_string(sg->outputs()->size()) + " outputs: expected one input and one output "
         "(features -> logits) or a streaming model's n inputs and n outputs (hop + states -> "
         "logits + new states, at most " + std::to_string(kMaxStates) + " states)");
  }
  auto check_list = [&](const flatbuffers::Vector<int32_t>* v, bool allow_absent,
                        const char* what) {
    if (v == nullptr) return;
    for (int32_t i : *v) {
      if ((i < 0 && !(allow_absent && i == -1)) || (i >= 0 && static_cast<std::size_t>(i) >= n_tensors)) {
        Fail(std::string(what) + " refers to tensor " + std::to_string(i) + " of " +
             std::to_string(n_tensors));
      }
    }
  };
  check_list(sg->inputs(), false, "the subgraph's inputs");
  check_list(sg->outputs(), false, "the subgraph's outputs");
  for (const auto* t : *sg->tensors()) {
    if (t->buffer() >= n_buffers) Fail("a tensor refers to a missing buffer");
    if (t->shape() != nullptr) {
      for (int32_t d : *t->shape()) {
        if (d < 0 || d > (1 << 24)) Fail("a tensor has a negative or huge dimension");
      }
    }
  }
  for (const auto* op : *sg->operators()) {
    if (op->opcode_index() >= n_codes) Fail("an operator refers to a missing operator code");
    check_list(op->inputs(), true, "an operator's inputs");
    check_list(op->outputs(), false, "an operator's outputs");
    if (op->outputs() == nullptr || op->outputs()->size() == 0) Fail("an operator has no outputs");
  }
  return m;
}

tflite::BuiltinOperator CodeOf(const tflite::OperatorCode* c) {
  // Schema >= 3a: the larger of builtin_code and the deprecated byte field.
  const int a = c->builtin_code(), b = c->deprecated_builtin_code();
  return static_cast<tflite::BuiltinOperator>(a > b ? a : b);
}

std::string OpName(const tflite::OperatorCode* c) {
  const tflite::BuiltinOperator code = CodeOf(c);
  if (code == tflite::BuiltinOperator_CUSTOM) {
    return c->custom_code() != nullptr ? c->custom_code()->str() : std::string("CUSTOM(?)");
  }
  const char* n = tflite::EnumNameBuiltinOperator(code);
  return (n != nullptr && *n) ? n : "BUILTIN_" + std::to_string(static_cast<int>(code));
}

// ------------------------------------------------------------------ resolver
constexpr unsigned kMaxOps = 24;
using Resolver = tflite::MicroMutableOpResolver<kMaxOps>;

// TFLM's reference kernel of a builtin compiled into this firmware (firmware.mk: TFLM_KERNELS).
bool AddBuiltin(Resolver* r, tflite::BuiltinOperator op, const TFLMRegistration* custom) {
  using tflite::BuiltinOperator;
  TfLiteStatus s;
  switch (op) {
    case tflite::BuiltinOperator_ABS: s = custom ? r->AddAbs(*custom) : r->AddAbs(); break;
    case tflite::BuiltinOperator_ADD: s = custom ? r->AddAdd(*custom) : r->AddAdd(); break;
    case tflite::BuiltinOperator_SUB: s = custom ? r->AddSub(*custom) : r->AddSub(); break;
    case tflite::BuiltinOperator_MUL: s = custom ? r->AddMul(*custom) : r->AddMul(); break;
    case tflite::BuiltinOperator_MEAN: s = custom ? r->AddMean(*custom) : r->AddMean(); break;
    case tflite::BuiltinOperator_CONV_2D:
      s = custom ? r->AddConv2D(*custom) : r->AddConv2D();
      break;
    case tflite::BuiltinOperator_DEPTHWISE_CONV_2D:
      s = custom ? r->AddDepthwiseConv2D(*custom) : r->AddDepthwiseConv2D();
      break;
    case tflite::BuiltinOperator_FULLY_CONNECTED:
      s = custom ? r->AddFullyConnected(*custom) : r->AddFullyConnected();
      break;
    case tflite::BuiltinOperator_PAD: s = custom ? r->AddPad(*custom) : r->AddPad(); break;
    case tflite::BuiltinOperator_PRELU: s = custom ? r->AddPrelu(*custom) : r->AddPrelu(); break;
    case tflite::BuiltinOperator_RESHAPE: s = r->AddReshape(); break;
    // the streaming exports' state handling (reference kernels: data movement) and the
    // binary conv2's receptive-field average of its scale
    case tflite::BuiltinOperator_CONCATENATION: s = r->AddConcatenation(); break;
    case tflite::BuiltinOperator_STRIDED_SLICE: s = r->AddStridedSlice(); break;
    case tflite::BuiltinOperator_AVERAGE_POOL_2D:
      s = custom ? r->AddAveragePool2D(*custom) : r->AddAveragePool2D();
      break;
    default: return false;
  }
  return s == kTfLiteOk;
}

const char* kCompiledBuiltins =
    "ABS, ADD, AVERAGE_POOL_2D, CONCATENATION, CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, MEAN, "
    "MUL, PAD, PRELU, RESHAPE, STRIDED_SLICE, SUB";

struct OpInfo {
  std::string name;    // op code name
  std::string kernel;  // "reference" | "xnnpack" | "project:<path>"
};

// Registers what the model needs; fills per-op-code kernel names.
void BuildResolver(const tflite::Model* m, const Flags& f, Resolver* r,
                   std::vector<OpInfo>* ops, std::vector<std::string>* code_kernel) {
  const auto* sg = m->subgraphs()->Get(0);
  const auto* codes = m->operator_codes();
  const bool want_xnn = f.float_kernels == "xnnpack";
  code_kernel->assign(codes->size(), "");
  // Every instance of a builtin float32 (input 0)?
  std::vector<int> all_float(codes->size(), 1), used(codes->size(), 0);
  for (const auto* op : *sg->operators()) {
    const std::size_t ci = op->opcode_index();
    used[ci] = 1;
    const int in0 = (op->inputs() && op->inputs()->size() > 0) ? op->inputs()->Get(0) : -1;
    const bool is_float = in0 >= 0 && sg->tensors()->Get(static_cast<unsigned>(in0))->type() ==
                                          tflite::TensorType_FLOAT32;
    if (!is_float) all_float[ci] = 0;
  }
  std::vector<std::string> added, missing;
  for (std::size_t ci = 0; ci < codes->size(); ++ci) {
    if (!used[ci]) continue;
    const auto* c = codes->Get(static_cast<unsigned>(ci));
    const std::string name = OpName(c);
    bool dup = false;
    for (const auto& a : added) dup = dup || a == name;
    if (dup) {  // the same op listed twice among the codes (another version)
      for (std::size_t cj = 0; cj < ci; ++cj) {
        if (used[cj] && OpName(codes->Get(static_cast<unsigned>(cj))) == name) {
          (*code_kernel)[ci] = (*code_kernel)[cj];
        }
      }
      continue;
    }
    added.push_back(name);
    const tflite::BuiltinOperator code = CodeOf(c);
    if (code == tflite::BuiltinOperator_CUSTOM) {
      TFLMRegistration reg;
      if (!compute_engine::tflm::RegistrationFor(name.c_str(), f.path, &reg)) {
        std::string known;
        for (const char* n : compute_engine::ops::PROJECT_OPS) {
          known += (known.empty() ? "" : ", ") + std::string(n);
        }
        Fail("custom op " + name + " is not one of the project's ops (" + known + ")");
      }
      // The resolver keeps the name pointer: use the contract's static strings.
      const char* stable = nullptr;
      for (const char* n : compute_engine::ops::PROJECT_OPS) {
        if (name == n) stable = n;
      }
      if (r->AddCustom(stable, &reg) != kTfLiteOk) Fail("cannot register " + name);
      (*code_kernel)[ci] = std::string("project:") +
                           compute_engine::core::KernelPathName(
                               compute_engine::core::ResolveKernelPath(f.path));
      continue;
    }
    TFLMRegistration xreg;
    const bool use_xnn =
        want_xnn && all_float[ci] && firmware::xnn::Registration(code, &xreg);
    if (!AddBuiltin(r, code, use_xnn ? &xreg : nullptr)) {
      missing.push_back(name);  // every missing op named at once, below
      continue;
    }
    (*code_kernel)[ci] = use_xnn ? "xnnpack" : "reference";
  }
  if (!missing.empty()) {
    std::string names;
    for (const auto& n : missing) names += (names.empty() ? "" : ", ") + n;
    Fail((missing.size() == 1 ? "op " + names + " has" : "ops " + names + " have") +
         " no kernel in this firmware (compiled: " + kCompiledBuiltins +
         " and the project's ops)");
  }
  for (const auto* op : *sg->operators()) {
    const auto* c = codes->Get(op->opcode_index());
    ops->push_back({OpName(c), (*code_kernel)[op->opcode_index()]});
  }
}

// ------------------------------------------------------------------ per-op regions
constexpr int kOpRegionBase = 100;
constexpr int kOpRegions = 150;  // regions 100..249

#define FW_RB(n) \
  case n:        \
    INSN_REGION_BEGIN(n); \
    break;
#define FW_RE(n) \
  case n:        \
    INSN_REGION_END(n); \
    break;
#define FW_R10(M, b) M(b##0) M(b##1) M(b##2) M(b##3) M(b##4) M(b##5) M(b##6) M(b##7) M(b##8) M(b##9)
#define FW_R150(M)                                                                         \
  FW_R10(M, 10) FW_R10(M, 11) FW_R10(M, 12) FW_R10(M, 13) FW_R10(M, 14) FW_R10(M, 15)       \
  FW_R10(M, 16) FW_R10(M, 17) FW_R10(M, 18) FW_R10(M, 19) FW_R10(M, 20) FW_R10(M, 21)       \
  FW_R10(M, 22) FW_R10(M, 23) FW_R10(M, 24)

// Always inlined: the profiler's instructions between a marker and the op count in the op's
// region, so both profilers below keep the same (inlined) code.
__attribute__((always_inline)) inline void RegionBegin(int id) {
  switch (id) {
    FW_R150(FW_RB)
    default: break;
  }
}
__attribute__((always_inline)) inline void RegionEnd(int id) {
  switch (id) {
    FW_R150(FW_RE)
    default: break;
  }
}

// TFLM calls BeginEvent / EndEvent around every op's invoke (micro_interpreter_graph.cc):
// op i of an Invoke (counted from Reset()) is region 100 + i - offset (offset: --op_offset).
// The profiler's own instructions between a marker and the op are counted in the op's region
// (a few per op): the offset variant is a separate class so that the default one keeps the
// former code (and counts) exactly; its per-op counts are ~1-2 instructions higher per op.
class MarkerProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* /*tag*/) override {
    const uint32_t i = next_++;
    if (enabled_ && i < static_cast<uint32_t>(kOpRegions)) {
      RegionBegin(kOpRegionBase + static_cast<int>(i));
    }
    return i;
  }
  void EndEvent(uint32_t i) override {
    if (enabled_ && i < static_cast<uint32_t>(kOpRegions)) {
      RegionEnd(kOpRegionBase + static_cast<int>(i));
    }
  }
  void Reset() { next_ = 0; }
  void Enable() { enabled_ = true; }

 private:
  uint32_t next_ = 0;
  bool enabled_ = false;
};

class OffsetMarkerProfiler : public tflite::MicroProfilerInterface {
 public:
  explicit OffsetMarkerProfiler(uint32_t offset) : offset_(offset) {}
  uint32_t BeginEvent(const char* /*tag*/) override {
    const uint32_t i = next_++;
    const uint32_t j = i - offset_;  // wraps (out of range) for i < offset_
    if (enabled_ && j < static_cast<uint32_t>(kOpRegions)) {
      RegionBegin(kOpRegionBase + static_cast<int>(j));
    }
    return i;
  }
  void EndEvent(uint32_t i) override {
    const uint32_t j = i - offset_;
    if (enabled_ && j < static_cast<uint32_t>(kOpRegions)) {
      RegionEnd(kOpRegionBase + static_cast<int>(j));
    }
  }
  void Reset() { next_ = 0; }
  void Enable() { enabled_ = true; }

 private:
  uint32_t offset_;
  uint32_t next_ = 0;
  bool enabled_ = false;
};

// Streaming --count: hop h < 64 is also region 2 + h (regions 2..65, around region 1). Its
// markers are emitted by out-of-line switches, whose few instructions between the markers
// (return, call, dispatch) are measured by region 66 (the same calls around nothing, --count
// times) and subtracted by the reader (firmware_sim/model_cost.py).
constexpr int kHopRegionBase = 2;
constexpr int kHopRegions = 64;
constexpr int kHopOverheadRegion = 66;
#define FW_H8(M, a, b, c, d, e, f, g, h) M(a) M(b) M(c) M(d) M(e) M(f) M(g) M(h)
#define FW_H64(M)                                                                     \
  FW_H8(M, 2, 3, 4, 5, 6, 7, 8, 9) FW_H8(M, 10, 11, 12, 13, 14, 15, 16, 17)           \
  FW_H8(M, 18, 19, 20, 21, 22, 23, 24, 25) FW_H8(M, 26, 27, 28, 29, 30, 31, 32, 33)   \
  FW_H8(M, 34, 35, 36, 37, 38, 39, 40, 41) FW_H8(M, 42, 43, 44, 45, 46, 47, 48, 49)   \
  FW_H8(M, 50, 51, 52, 53, 54, 55, 56, 57) FW_H8(M, 58, 59, 60, 61, 62, 63, 64, 65)   \
  M(66)

__attribute__((noinline)) void HopRegionBegin(int id) {
  switch (id) {
    FW_H64(FW_RB)
    default: break;
  }
}
__attribute__((noinline)) void HopRegionEnd(int id) {
  switch (id) {
    FW_H64(FW_RE)
    default: break;
  }
}

// ------------------------------------------------------------------ interpreter
struct Arena {
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  explicit Arena(std::size_t n) : size(n) {
    void* p = nullptr;
    if (posix_memalign(&p, 16, n) != 0) Fail("cannot allocate the arena");
    data = static_cast<std::uint8_t*>(p);
    std::memset(data, 0, n);
  }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() { std::free(data); }
};

// Fixed-size (no heap: the runner's own allocations stay out of the ops' heap count).
struct TensorInfo {
  char json[256] = {0};
  TfLiteType type = kTfLiteNoType;
  std::size_t elems = 0, bytes = 0;
  std::uint32_t dims[8] = {};
  int rank = 0;
};

TensorInfo Describe(const TfLiteTensor* t) {
  TensorInfo i;
  i.type = t->type;
  i.bytes = t->bytes;
  std::size_t n = 1;
  char shape[128] = "[";
  std::size_t off = 1;
  for (int k = 0; t->dims != nullptr && k < t->dims->size && k < 8; ++k) {
    off += static_cast<std::size_t>(std::snprintf(shape + off, sizeof shape - off,
                                                  k ? ", %d" : "%d", t->dims->data[k]));
    if (off >= sizeof shape) off = sizeof shape - 1;
    n *= static_cast<std::size_t>(t->dims->data[k]);
    i.dims[k] = static_cast<std::uint32_t>(t->dims->data[k]);
    i.rank = k + 1;
  }
  std::snprintf(shape + off, sizeof shape - off, "]");
  i.elems = n;
  std::snprintf(i.json, sizeof i.json,
                "{\"type\": %d, \"shape\": %s, \"scale\": %.9g, \"zero_point\": %d}",
                static_cast<int>(t->type), shape, static_cast<double>(t->params.scale),
                static_cast<int>(t->params.zero_point));
  return i;
}

double Seconds(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  const Flags f = ParseFlags(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  Blob model_blob;
  ReadFile(f.model, &model_blob, "model");
  const tflite::Model* model = CheckModel(model_blob);
  if (f.float_kernels == "xnnpack") {
    std::string err;
    if (!firmware::xnn::Initialize(&err)) Fail(err);
  }

  Resolver resolver;
  std::vector<OpInfo> ops;
  std::vector<std::string> code_kernel;
  BuildResolver(model, f, &resolver, &ops, &code_kernel);
  std::vector<std::uint32_t> out_dims, state_dims;
  out_dims.reserve(9);
  state_dims.reserve(1);
  // TFLM does not survive every too-small arena: MicroAllocator::Create and several reference
  // kernels' Init (e.g. InitReduce) use a failed persistent allocation without checking it
  // (SIGSEGV). So an arena below 1 MiB is first checked against what the model needs: one
  // AllocateTensors on a 1 MiB probe arena; a request more than 64 B below its use fails here
  // with a message, requests closer to it reach TFLM, whose planning then fails cleanly (the
  // persistent allocations of Init come first, and they are far below the total).
  std::size_t probe_used = 0;
  if (f.arena < (1L << 20)) {
    Arena probe(std::size_t{1} << 20);
    tflite::MicroAllocator* pa = tflite::MicroAllocator::Create(probe.data, probe.size);
    if (pa == nullptr) Fail("cannot create the probe allocator");
    alignas(16) static std::uint8_t probe_storage[sizeof(tflite::MicroInterpreter)];
    auto* pi = new (probe_storage) tflite::MicroInterpreter(model, resolver, pa);
    if (pi->AllocateTensors() != kTfLiteOk) {
      Fail("AllocateTensors failed (1 MiB probe arena): " + LastLog(2));
    }
    probe_used = pi->arena_used_bytes();
    pi->~MicroInterpreter();
    if (static_cast<std::size_t>(f.arena) + 64 < probe_used) {
      Fail("arena of " + std::to_string(f.arena) + " bytes too small: the model uses " +
           std::to_string(probe_used) + " bytes of a 1 MiB arena");
    }
  }
  // The heap of the model's ops: counted from here (the interpreter's Init / Prepare).
  firmware::heap::Cpp().peak = firmware::heap::Cpp().live;
  const firmware::heap::Counter heap0 = firmware::heap::Cpp();

  Arena arena(static_cast<std::size_t>(f.arena));
  tflite::RecordingMicroAllocator* rec = nullptr;
  tflite::MicroInterpreter* interp = nullptr;
  alignas(16) static std::uint8_t interp_storage[sizeof(tflite::MicroInterpreter)];
  if (f.recording) {
    rec = tflite::RecordingMicroAllocator::Create(arena.data, arena.size);
    if (rec == nullptr) Fail("arena too small for the recording allocator");
    interp = new (interp_storage) tflite::MicroInterpreter(model, resolver, rec);
  } else {
    // Created here (not by the interpreter's constructor): TFLM's constructor uses the
    // allocator without checking it, and Create returns nullptr for a too-small arena.
    tflite::MicroAllocator* alloc = tflite::MicroAllocator::Create(arena.data, arena.size);
    if (alloc == nullptr) Fail("arena of " + std::to_string(f.arena) + " bytes too small");
    interp = new (interp_storage) tflite::MicroInterpreter(model, resolver, alloc);
  }
  if (interp->initialization_status() != kTfLiteOk) Fail("interpreter initialization failed");
  if (interp->AllocateTensors() != kTfLiteOk) {
    Fail("AllocateTensors failed (arena " + std::to_string(f.arena) + " bytes): " + LastLog(2));
  }
  const double setup_s = Seconds(t0);
  TfLiteTensor* in_t = interp->input(0);
  TfLiteTensor* out_t = interp->output(0);
  if (in_t == nullptr || out_t == nullptr) Fail("no input or output tensor");
  const TensorInfo in_i = Describe(in_t), out_i = Describe(out_t);
  const std::size_t in_esize = TypeBytes(static_cast<std::uint32_t>(in_i.type));
  const std::size_t out_esize = TypeBytes(static_cast<std::uint32_t>(out_i.type));
  if (in_esize == 0 || out_esize == 0 || in_esize * in_i.elems != in_i.bytes ||
      out_esize * out_i.elems != out_i.bytes) {
    Fail("unsupported input / output tensor types");
  }
  // Streaming: input k + 1 and output k + 1 are state k (same type and size).
  const std::size_t n_states = interp->inputs_size() - 1;
  const bool streaming = n_states > 0;
  TensorInfo state_i[kMaxStates];
  std::size_t state_bytes = 0;
  for (std::size_t k = 1; k <= n_states; ++k) {
    const TfLiteTensor* si = interp->input(k);
    const TfLiteTensor* so = interp->output(k);
    if (si == nullptr || so == nullptr) {
      Fail("streaming: no tensor for state " + std::to_string(k - 1));
    }
    state_i[k - 1] = Describe(si);
    const TensorInfo o = Describe(so);
    if (si->type != so->type || si->bytes != so->bytes || TypeBytes(si->type) == 0 ||
        TypeBytes(si->type) * state_i[k - 1].elems != si->bytes) {
      Fail("streaming: state " + std::to_string(k - 1) + " is input " + std::to_string(k) + " " +
           state_i[k - 1].json + " but output " + std::to_string(k) + " " + o.json +
           ": expected the same type and size");
    }
    state_bytes += si->bytes;
  }
  if (!streaming && (f.stream_reset > 0 || !f.final_states.empty())) {
    Fail("--stream_reset / --final_states: the model is not a streaming model (one input)");
  }
  Bytes staging(state_bytes);  // the new states on their way to the state inputs
  auto reset_states = [&](tflite::MicroInterpreter* it) {
    for (std::size_t k = 1; k <= n_states; ++k) {
      TfLiteTensor* t = it->input(k);
      std::memset(t->data.raw, 0, t->bytes);
    }
  };
  // Output k + 1 -> input k + 1 for every state, through the staging copy (an output may sit
  // where another state's input was: TFLM plans a subgraph input's buffer only up to its
  // last use).
  auto carry_states = [&](tflite::MicroInterpreter* it) {
    std::size_t off = 0;
    for (std::size_t k = 1; k <= n_states; ++k) {
      const TfLiteTensor* o = it->output(k);
      std::memcpy(staging.data + off, o->data.raw, o->bytes);
      off += o->bytes;
    }
    off = 0;
    for (std::size_t k = 1; k <= n_states; ++k) {
      TfLiteTensor* t = it->input(k);
      std::memcpy(t->data.raw, staging.data + off, t->bytes);
      off += t->bytes;
    }
  };
  const firmware::heap::Counter heap1 = firmware::heap::Cpp();
  const firmware::heap::Counter xheap1 = firmware::heap::Xnn();

  std::size_t items = 0, invokes = 0, invoke_allocs = 0;
  Bytes first_input(in_i.bytes);  // what --count / --per_op run on (windowed)
  Blob in_blob;                   // the items (streaming --count: the hops)
  const std::uint8_t* item_data = nullptr;
  auto hop = [&](std::size_t h) -> const std::uint8_t* {
    return items > 0 ? item_data + (h % items) * in_i.bytes : first_input.data;
  };
  double invoke_s = 0.0;
  auto invoke = [&](bool count_allocs) {
    const std::size_t a0 = firmware::heap::Cpp().allocations + firmware::heap::Xnn().allocations;
    const auto ti = std::chrono::steady_clock::now();
    if (interp->Invoke() != kTfLiteOk) Fail("Invoke failed: " + LastLog(2));
    invoke_s += Seconds(ti);
    ++invokes;
    const std::size_t a1 = firmware::heap::Cpp().allocations + firmware::heap::Xnn().allocations;
    if (count_allocs) invoke_allocs += a1 - a0;
  };

  if (!f.info && !f.inputs.empty()) {
    ReadFile(f.inputs, &in_blob, "inputs");
    const TensorFile tf = ParseTensorFile(in_blob, f.inputs);
    if (tf.type != static_cast<std::uint32_t>(in_i.type)) {
      Fail("inputs have type " + std::to_string(tf.type) + ", the model's input is " +
           std::to_string(static_cast<int>(in_i.type)));
    }
    if (tf.item_elems != in_i.elems) {
      Fail("one input item has " + std::to_string(tf.item_elems) + " values, the model takes " +
           std::to_string(in_i.elems));
    }
    Bytes out_data(tf.items * out_i.bytes);
    if (tf.items > 0) std::memcpy(first_input.data, tf.data, in_i.bytes);
    for (std::size_t k = 0; k < tf.items; ++k) {
      if (streaming && (k == 0 || (f.stream_reset > 0 &&
                                   k % static_cast<std::size_t>(f.stream_reset) == 0))) {
        reset_states(interp);
      }
      std::memcpy(in_t->data.raw, tf.data + k * in_i.bytes, in_i.bytes);
      invoke(k > 0);
      std::memcpy(out_data.data + k * out_i.bytes, out_t->data.raw, out_i.bytes);
      if (streaming) carry_states(interp);
    }
    items = tf.items;
    item_data = tf.data;
    if (!f.final_states.empty()) {  // the state inputs now hold the last new states
      std::size_t off = 0, elems = 0;
      for (std::size_t k = 1; k <= n_states; ++k) {
        const TfLiteTensor* t = interp->input(k);
        if (t->type != interp->input(1)->type) {
          Fail("--final_states: the states have different types");
        }
        if (tf.items == 0) std::memset(t->data.raw, 0, t->bytes);
        std::memcpy(staging.data + off, t->data.raw, t->bytes);
        off += t->bytes;
        elems += state_i[k - 1].elems;
      }
      state_dims.push_back(static_cast<std::uint32_t>(elems));
      WriteTensorFile(f.final_states, static_cast<std::uint32_t>(interp->input(1)->type),
                      state_dims, staging);
    }
    out_dims.push_back(static_cast<std::uint32_t>(tf.items));
    for (int k = 0; k < out_i.rank; ++k) out_dims.push_back(out_i.dims[k]);
    WriteTensorFile(f.outputs, static_cast<std::uint32_t>(out_i.type), out_dims, out_data);
  }

  if (f.count > 0 && streaming) {
    // N hops from zero state; the warm-up hops (XNNPACK binds its pointers) are not counted.
    reset_states(interp);
    std::memcpy(in_t->data.raw, hop(0), in_i.bytes);
    invoke(false);
    carry_states(interp);
    std::memcpy(in_t->data.raw, hop(1), in_i.bytes);
    invoke(true);  // must allocate nothing
    reset_states(interp);
    for (int h = 0; h < f.count; ++h) {  // the hop regions' own instructions
      const int id = h < kHopRegions ? kHopOverheadRegion : -1;
      HopRegionBegin(id);
      HopRegionEnd(id);
    }
    for (int h = 0; h < f.count; ++h) {
      std::memcpy(in_t->data.raw, hop(static_cast<std::size_t>(h)), in_i.bytes);
      const std::size_t a0 = firmware::heap::Cpp().allocations + firmware::heap::Xnn().allocations;
      const int id = h < kHopRegions ? kHopRegionBase + h : -1;
      HopRegionBegin(id);
      INSN_REGION_BEGIN(1);
      const TfLiteStatus s = interp->Invoke();
      INSN_REGION_END(1);
      HopRegionEnd(id);
      if (s != kTfLiteOk) Fail("Invoke failed (hop " + std::to_string(h) + ")");
      invoke_allocs +=
          firmware::heap::Cpp().allocations + firmware::heap::Xnn().allocations - a0;
      ++invokes;
      carry_states(interp);
    }
  } else if (f.count > 0) {
    std::memcpy(in_t->data.raw, first_input.data, first_input.size);
    invoke(false);  // warm-up (binds XNNPACK's pointers)
    invoke(true);   // a second one: must allocate nothing
    for (int r = 0; r < f.count; ++r) {
      const std::size_t a0 = firmware::heap::Cpp().allocations + firmware::heap::Xnn().allocations;
      INSN_REGION_BEGIN(1);
      const TfLiteStatus s = interp->Invoke();
      INSN_REGION_END(1);
      if (s != kTfLiteOk) Fail("Invoke failed");
      invoke_allocs +=
          firmware::heap::Cpp().allocations + firmware::heap::Xnn().allocations - a0;
      ++invokes;
    }
  }

  const std::size_t arena_used = interp->arena_used_bytes();
  std::string recording = "null";
  if (rec != nullptr) {
    using RT = tflite::RecordedAllocationType;
    const struct {
      RT t;
      const char* name;
    } kinds[] = {{RT::kTfLiteEvalTensorData, "eval_tensors"},
                 {RT::kPersistentTfLiteTensorData, "persistent_tensors"},
                 {RT::kPersistentTfLiteTensorQuantizationData, "quantization"},
                 {RT::kPersistentBufferData, "persistent_buffers"},
                 {RT::kTfLiteTensorVariableBufferData, "variable_buffers"},
                 {RT::kNodeAndRegistrationArray, "nodes_and_registrations"},
                 {RT::kOpData, "op_data"}};
    recording = "{";
    for (const auto& k : kinds) {
      const tflite::RecordedAllocation a = rec->GetRecordedAllocation(k.t);
      recording += Quote(k.name) + ": {\"used\": " + std::to_string(a.used_bytes) +
                   ", \"requested\": " + std::to_string(a.requested_bytes) +
                   ", \"count\": " + std::to_string(a.count) + "}, ";
    }
    recording += "\"total\": " + std::to_string(rec->GetSimpleMemoryAllocator()->GetUsedBytes()) +
                 "}";
  }
  interp->~MicroInterpreter();  // frees the ops (core objects, XNNPACK operators)
  const firmware::heap::Counter heap_end = firmware::heap::Cpp();

  // Per-op regions: a second interpreter with the marker profiler, on the same input.
  auto per_op_run = [&](auto& prof) {
    std::memset(arena.data, 0, arena.size);
    tflite::MicroAllocator* alloc2 = tflite::MicroAllocator::Create(arena.data, arena.size);
    if (alloc2 == nullptr) Fail("arena too small (per-op run)");
    tflite::MicroInterpreter* it2 = new (interp_storage)
        tflite::MicroInterpreter(model, resolver, alloc2, nullptr, &prof);
    if (it2->AllocateTensors() != kTfLiteOk) Fail("AllocateTensors failed (per-op run)");
    TfLiteTensor* in2 = it2->input(0);
    if (in2 == nullptr || in2->bytes != first_input.size) Fail("per-op run: input mismatch");
    if (streaming && it2->inputs_size() != n_states + 1) Fail("per-op run: inputs mismatch");
    if (streaming) reset_states(it2);
    std::memcpy(in2->data.raw, streaming ? hop(0) : first_input.data, first_input.size);
    if (it2->Invoke() != kTfLiteOk) Fail("Invoke failed (per-op run)");  // warm-up, no regions
    prof.Enable();
    if (streaming) reset_states(it2);
    for (int r = 0; r < f.count; ++r) {
      if (streaming) std::memcpy(in2->data.raw, hop(static_cast<std::size_t>(r)), in2->bytes);
      prof.Reset();
      if (it2->Invoke() != kTfLiteOk) Fail("Invoke failed (per-op run)");
      if (streaming) carry_states(it2);
    }
    it2->~MicroInterpreter();
  };
  if (f.per_op && f.op_offset == 0) {
    MarkerProfiler prof;
    per_op_run(prof);
  } else if (f.per_op) {
    OffsetMarkerProfiler prof(static_cast<uint32_t>(f.op_offset));
    per_op_run(prof);
  }

  std::string ops_json = "[";
  for (std::size_t i = 0; i < ops.size(); ++i) {
    ops_json += (i ? ", " : "") + std::string("[") + Quote(ops[i].name) + ", " +
                Quote(ops[i].kernel) + "]";
  }
  ops_json += "]";
  std::string states_json = "[";
  for (std::size_t k = 0; k < n_states; ++k) {
    states_json += (k ? ", " : "") + std::string(state_i[k].json);
  }
  states_json += "]";
  const firmware::heap::Counter& xh = firmware::heap::Xnn();
  std::printf(
      "{\"ok\": true, \"model\": %s, \"model_bytes\": %zu, \"arena_bytes\": %ld, "
      "\"arena_used_bytes\": %zu, \"recording\": %s, "
      "\"heap\": {\"ops_after_prepare\": %zu, \"ops_peak\": %zu, \"ops_allocations\": %zu, "
      "\"ops_after_free\": %zu, \"xnnpack_after_prepare\": %zu, \"xnnpack_peak\": %zu}, "
      "\"invokes\": %zu, \"allocations_during_invoke\": %zu, \"items\": %zu, "
      "\"input\": %s, \"output\": %s, \"ops\": %s, \"float_kernels\": %s, "
      "\"kernel_path\": %s, \"target\": %s, \"per_op_regions\": %s, "
      "\"op_region_base\": %d, \"op_offset\": %d, \"streaming\": %s, \"states\": %s, "
      "\"state_bytes\": %zu, \"stream_reset\": %ld, \"hop_region_base\": %d, "
      "\"hop_regions\": %d, \"hop_overhead_region\": %d, \"setup_seconds\": %.4f, "
      "\"invoke_seconds\": %.4f}\n",
      Quote(f.model).c_str(), model_blob.size, f.arena, arena_used, recording.c_str(),
      heap1.live - heap0.live, heap_end.peak - heap0.live, heap1.allocations - heap0.allocations,
      heap_end.live - heap0.live, xheap1.live, xh.peak, invokes, invoke_allocs, items,
      in_i.json, out_i.json, ops_json.c_str(), Quote(f.float_kernels).c_str(),
      Quote(compute_engine::core::KernelPathName(compute_engine::core::ResolveKernelPath(f.path)))
          .c_str(),
#if defined(__aarch64__)
      "\"aarch64\"",
#else
      "\"x86_64\"",
#endif
      f.per_op ? "true" : "false", kOpRegionBase, f.op_offset, streaming ? "true" : "false",
      states_json.c_str(), state_bytes, f.stream_reset, kHopRegionBase,
      streaming ? (f.count < kHopRegions ? f.count : kHopRegions) : 0, kHopOverheadRegion,
      setup_s, invoke_s);
  return 0;
}
