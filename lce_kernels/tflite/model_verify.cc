// Verification of a .tflite flatbuffer before any interpreter is built (see model_verify.h).
//
// Order matters: nothing reads the bytes before the flatbuffers verifier has accepted them
// (after that, the generated accessors only follow offsets the verifier checked), and the
// semantic checks then use only those accessors plus explicit index / size checks.
#include "model_verify.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../core/op_contract.h"
#include "bdfsmn_options.h"
#include "lce_ops_options.h"
#include "model_verify_ops.h"
#include "flatbuffers/flatbuffers.h"
#include "flatbuffers/flexbuffers.h"
#include "flatbuffers/idl.h"
#include "flatbuffers/util.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace compute_engine {
namespace tflite {
namespace {

namespace fb = ::flatbuffers;
namespace tfl = ::tflite;
namespace ops = ::compute_engine::ops;
using verify_ops::FindArity;
using verify_ops::FindRule;
using verify_ops::MayHaveNoOutput;
using verify_ops::OptionalInputAllowed;
using verify_ops::OptionsRequired;
using verify_ops::OptionsRule;
using verify_ops::QuantizedAddScalesOk;
using verify_ops::TakesHandles;

constexpr std::uint32_t kSchemaVersion = 3;  // TFLITE_SCHEMA_VERSION
// Verifier limits: the schema nests at most ~6 tables deep; a model of ours has a few
// hundred tables. Generous bounds that still stop pathological inputs early.
constexpr fb::uoffset_t kMaxDepth = 32;
constexpr fb::uoffset_t kMaxTables = 1u << 20;
// Largest tensor (bytes) accepted. The keyword spotter's largest tensor is < 1 MiB; a
// corrupted dimension must not make the interpreter allocate gigabytes.
constexpr std::uint64_t kMaxTensorBytes = std::uint64_t{1} << 28;
constexpr int kMaxRank = 8;
// The model's own description (metadata entry, pipeline/tflite_metadata.py) and its size cap.
constexpr const char* kDescriptionKey = "bkws.description";
constexpr std::uint64_t kMaxDescriptionBytes = std::uint64_t{1} << 16;

// ---- small helpers -------------------------------------------------------------------------

// True for the custom code of an LCE op (and ours): it starts with ops::LCE_PREFIX.
bool IsLceOp(const std::string& name) {
  const std::size_t n = std::strlen(ops::LCE_PREFIX);
  return name.compare(0, n, ops::LCE_PREFIX) == 0;
}

// True for the project's own ops (ops::OWN_OPS): they share LCE's prefix but check their own
// operands (Prepare) and are verified by their own rules here.
bool IsOwnOp(const std::string& name) {
  for (const char* own : ops::OWN_OPS) {
    if (name == own) return true;
  }
  return false;
}

std::string Quote(const fb::String* s) {
  if (s == nullptr) return "''";
  std::string v(s->c_str(), s->size());
  if (v.size() > 60) v = v.substr(0, 57) + "...";
  return "'" + v + "'";
}

// Valid UTF-8 (Python decodes names and keys; the verifier only checks the terminator).
// A flatbuffer string is NUL-terminated, so flatbuffers::FromUTF8 never reads past it.
bool IsUtf8(const fb::String* s) {
  if (s == nullptr) return true;
  const char* p = s->c_str();
  const char* end = p + s->size();
  while (p < end) {
    if (fb::FromUTF8(&p) < 0) return false;
  }
  return p == end;
}

// Bytes per element of a fixed-size type; 0 for types whose constant size is checked
// differently (sub-byte, string) or not at all (resource, variant: refused as constants).
std::uint64_t ElementBytes(tfl::TensorType t) {
  switch (t) {
    case tfl::TensorType_BOOL:
    case tfl::TensorType_INT8:
    case tfl::TensorType_UINT8:
    case tfl::TensorType_FLOAT8_E4M3FN:
    case tfl::TensorType_FLOAT8_E5M2:
      return 1;
    case tfl::TensorType_INT16:
    case tfl::TensorType_UINT16:
    case tfl::TensorType_FLOAT16:
    case tfl::TensorType_BFLOAT16:
      return 2;
    case tfl::TensorType_FLOAT32:
    case tfl::TensorType_INT32:
    case tfl::TensorType_UINT32:
      return 4;
    case tfl::TensorType_INT64:
    case tfl::TensorType_UINT64:
    case tfl::TensorType_FLOAT64:
    case tfl::TensorType_COMPLEX64:
      return 8;
    case tfl::TensorType_COMPLEX128:
      return 16;
    default:
      return 0;
  }
}

// Bits per element of the packed sub-byte types (0 otherwise).
unsigned SubByteBits(tfl::TensorType t) {
  switch (t) {
    case tfl::TensorType_INT4:
    case tfl::TensorType_UINT4:
      return 4;
    case tfl::TensorType_INT2:
      return 2;
    default:
      return 0;
  }
}

std::uint32_t ReadU32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return fb::EndianScalar(v);
}

// A constant STRING tensor: int32 count, int32 offsets[count + 1], bytes; offsets
// non-decreasing from the header end to the buffer end (what TFLite's GetString assumes).
bool StringBufferOk(const std::uint8_t* p, std::uint64_t size, std::uint64_t count,
                    std::string* why) {
  if (size < 8 || ReadU32(p) != count || (count + 2) * 4 > size) {
    *why = "string buffer header does not match the element count";
    return false;
  }
  std::uint64_t prev = (count + 2) * 4;
  for (std::uint64_t i = 0; i <= count; ++i) {
    const std::uint64_t off = ReadU32(p + 4 + 4 * i);
    if (off < prev || off > size || (i == count && off != size)) {
      *why = "string buffer offsets out of order or out of range";
      return false;
    }
    prev = off;
  }
  return true;
}

// ---- the checker ---------------------------------------------------------------------------

class Checker {
 public:
  Checker(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  bool Run(std::string* error) {
    if (!Structure() || !Model()) {
      *error = error_;
      return false;
    }
    return true;
  }

 private:
  bool Fail(const std::string& msg) {
    error_ = msg;
    return false;
  }

  bool Structure() {
    if (data_ == nullptr || size_ < 8) {
      return Fail("file too short (" + std::to_string(size_) + " bytes) for a flatbuffer");
    }
    // flatbuffers' Verifier asserts size < FLATBUFFERS_MAX_BUFFER_SIZE (2 GiB): check first.
    if (size_ >= static_cast<std::size_t>(FLATBUFFERS_MAX_BUFFER_SIZE)) {
      return Fail("file of " + std::to_string(size_) + " bytes is larger than 2 GiB");
    }
    if (!tfl::ModelBufferHasIdentifier(data_)) {
      std::string id(reinterpret_cast<const char*>(data_) + 4, 4);
      for (char& c : id) {
        if (static_cast<unsigned char>(c) < 32 || static_cast<unsigned char>(c) > 126) c = '?';
      }
      return Fail("file identifier is '" + id + "', expected 'TFL3'");
    }
    fb::Verifier::Options opts;
    opts.max_depth = kMaxDepth;
    opts.max_tables = kMaxTables;
    opts.check_alignment = true;
    fb::Verifier verifier(data_, size_, opts);
    if (!tfl::VerifyModelBuffer(verifier)) {
      return Fail(
          "flatbuffer structure invalid (tflite::VerifyModelBuffer failed: truncated, an "
          "offset or length outside the file, or nesting too deep)");
    }
    model_ = tfl::GetModel(data_);
    return true;
  }

  bool Model() {
    if (model_->version() != kSchemaVersion) {
      return Fail("schema version " + std::to_string(model_->version()) + ", expected " +
                  std::to_string(kSchemaVersion));
    }
    if (!IsUtf8(model_->description())) return Fail("description is not valid UTF-8");
    buffers_ = model_->buffers();
    if (buffers_ == nullptr) return Fail("model has no buffers vector");
    const auto* subgraphs = model_->subgraphs();
    if (subgraphs == nullptr || subgraphs->size() == 0) return Fail("model has no subgraph");
    if (!OperatorCodes() || !Buffers()) return false;
    callees_.assign(subgraphs->size(), {});
    for (fb::uoffset_t s = 0; s < subgraphs->size(); ++s) {
      if (!SubGraph(s, subgraphs->Get(s))) return false;
    }
    return SubgraphCalls() && Metadata() && Signatures();
  }

  bool OperatorCodes() {
    const auto* codes = model_->operator_codes();
    if (codes == nullptr) return true;
    for (fb::uoffset_t i = 0; i < codes->size(); ++i) {
      const auto* c = codes->Get(i);
      // tflite::GetBuiltinCode: the larger of the deprecated int8 code and the new field.
      const int code = std::max(static_cast<int>(c->builtin_code()),
                                static_cast<int>(c->deprecated_builtin_code()));
      const std::string where = "operator code " + std::to_string(i);
      if (code < 0 || code > static_cast<int>(tfl::BuiltinOperator_MAX)) {
        return Fail(where + ": unknown builtin code " + std::to_string(code));
      }
      if (code == tfl::BuiltinOperator_CUSTOM) {
        if (c->custom_code() == nullptr || c->custom_code()->size() == 0) {
          return Fail(where + ": CUSTOM operator without a custom_code");
        }
        if (!IsUtf8(c->custom_code())) return Fail(where + ": custom_code is not valid UTF-8");
      }
    }
    return true;
  }

  // Every buffer: inline data, or (large-model layout) [offset, offset + size) in the file.
  bool Buffers() {
    for (fb::uoffset_t b = 0; b < buffers_->size(); ++b) {
      const auto* buf = buffers_->Get(b);
      const std::string where = "buffer " + std::to_string(b);
      const bool inline_data = buf->data() != nullptr && buf->data()->size() > 0;
      if (inline_data && (buf->offset() > 1 || buf->size() != 0)) {
        return Fail(where + ": has both inline data and an offset/size");
      }
      if (!inline_data && buf->offset() > 1 && !InFile(buf->offset(), buf->size())) {
        return Fail(where + ": offset " + std::to_string(buf->offset()) + " + size " +
                    std::to_string(buf->size()) + " lies outside the file (" +
                    std::to_string(size_) + " bytes)");
      }
    }
    return true;
  }

  bool InFile(std::uint64_t offset, std::uint64_t size) const {
    return offset <= size_ && size <= size_ - offset;
  }

  // (pointer, size) of a buffer's bytes, {nullptr, 0} when it holds none. Buffer 0 is the
  // schema's empty sentinel: TFLite never reads data from it, so neither do we.
  void BufferBytes(std::uint32_t b, const std::uint8_t** p, std::uint64_t* n) const {
    *p = nullptr;
    *n = 0;
    if (b == 0 || b >= buffers_->size()) return;
    const auto* buf = buffers_->Get(b);
    const auto* inline_data = buf->data();
    if (inline_data != nullptr && inline_data->size() > 0) {
      *p = inline_data->data();
      *n = inline_data->size();
    } else if (buf->offset() > 1) {  // checked by Buffers()
      *p = data_ + buf->offset();
      *n = buf->size();
    }
  }

  bool SubGraph(fb::uoffset_t s, const tfl::SubGraph* sg) {
    const std::string where = "subgraph " + std::to_string(s);
    if (!IsUtf8(sg->name())) return Fail(where + ": name is not valid UTF-8");
    const auto* tensors = sg->tensors();
    if (tensors == nullptr) return Fail(where + ": no tensors vector");
    tensors_ = tensors;
    const std::int64_t nt = tensors->size();
    std::vector<char> constant(static_cast<std::size_t>(nt), 0);
    for (fb::uoffset_t t = 0; t < tensors->size(); ++t) {
      bool is_const = false;
      if (!Tensor(where, t, tensors->Get(t), &is_const)) return false;
      constant[t] = is_const ? 1 : 0;
    }
    std::vector<char> is_input(static_cast<std::size_t>(nt), 0);
    const struct { const fb::Vector<std::int32_t>* v; const char* name; } io[] = {
        {sg->inputs(), "input"}, {sg->outputs(), "output"}};
    for (const auto& x : io) {
      if (x.v == nullptr) continue;
      for (fb::uoffset_t i = 0; i < x.v->size(); ++i) {
        const std::int64_t t = x.v->Get(i);
        if (t < 0 || t >= nt) {
          return Fail(where + ": " + x.name + " " + std::to_string(i) + " is tensor " +
                      std::to_string(t) + ", out of range [0, " + std::to_string(nt) + ")");
        }
        if (x.v == sg->inputs()) is_input[static_cast<std::size_t>(t)] = 1;
      }
    }
    const auto* ops = sg->operators();
    if (ops == nullptr) return true;
    // Writers first, then every read is checked against them (graph order).
    std::vector<std::int64_t> writer(static_cast<std::size_t>(nt), -1);
    for (fb::uoffset_t i = 0; i < ops->size(); ++i) {
      if (!Operator(s, where, i, ops->Get(i), nt)) return false;
      const auto* outs = ops->Get(i)->outputs();
      if (outs == nullptr) continue;
      for (fb::uoffset_t k = 0; k < outs->size(); ++k) {
        const auto t = static_cast<std::size_t>(outs->Get(k));
        const std::string ow = OpWhere(where, i, ops->Get(i)) + ": output " +
                               std::to_string(k) + " (tensor " + std::to_string(t) + ")";
        if (writer[t] >= 0) {
          return Fail(ow + " is also written by operator " + std::to_string(writer[t]));
        }
        if (constant[t]) return Fail(ow + " is a constant tensor");
        if (is_input[t]) return Fail(ow + " is a subgraph input");
        writer[t] = i;
      }
    }
    for (fb::uoffset_t i = 0; i < ops->size(); ++i) {
      const auto* ins = ops->Get(i)->inputs();
      if (ins == nullptr) continue;
      for (fb::uoffset_t k = 0; k < ins->size(); ++k) {
        const std::int32_t t = ins->Get(k);
        if (t < 0) continue;
        const std::int64_t w = writer[static_cast<std::size_t>(t)];
        if (w >= static_cast<std::int64_t>(i)) {
          return Fail(OpWhere(where, i, ops->Get(i)) + ": input " + std::to_string(k) +
                      " (tensor " + std::to_string(t) + ") is written by " +
                      (w == static_cast<std::int64_t>(i)
                           ? std::string("this operator itself")
                           : "the later operator " + std::to_string(w)) +
                      " (the graph must be acyclic and in execution order)");
        }
      }
    }
    return true;
  }

  bool Tensor(const std::string& sg_where, fb::uoffset_t t, const tfl::Tensor* tensor,
              bool* is_const) {
    const std::string where = sg_where + " tensor " + std::to_string(t) + " " +
                              (IsUtf8(tensor->name()) ? Quote(tensor->name()) : "''");
    if (!IsUtf8(tensor->name())) return Fail(where + ": name is not valid UTF-8");
    const auto type = tensor->type();
    if (type < tfl::TensorType_MIN || type > tfl::TensorType_MAX) {
      return Fail(where + ": unknown type " + std::to_string(static_cast<int>(type)));
    }
    if (tensor->buffer() >= buffers_->size()) {
      return Fail(where + ": buffer index " + std::to_string(tensor->buffer()) +
                  " out of range (model has " + std::to_string(buffers_->size()) + " buffers)");
    }
    // Shape: rank, non-negative dimensions, bounded element count (no overflow).
    const auto* shape = tensor->shape();
    const std::size_t rank = shape ? shape->size() : 0;
    if (rank > static_cast<std::size_t>(kMaxRank)) {
      return Fail(where + ": rank " + std::to_string(rank) + " exceeds " +
                  std::to_string(kMaxRank));
    }
    const std::uint64_t elem = ElementBytes(type);
    const std::uint64_t limit = kMaxTensorBytes / (elem ? elem : 1);
    std::uint64_t count = 1;
    std::vector<std::int64_t> dims;
    for (std::size_t d = 0; d < rank; ++d) {
      const std::int32_t v = shape->Get(static_cast<fb::uoffset_t>(d));
      if (v < 0) return Fail(where + ": negative dimension " + std::to_string(v));
      dims.push_back(v);
      if (v != 0 && count > limit / static_cast<std::uint64_t>(v)) {
        return Fail(where + ": more than " + std::to_string(kMaxTensorBytes) +
                    " bytes (corrupted shape?)");
      }
      count *= static_cast<std::uint64_t>(v);
    }
    if (const auto* sig = tensor->shape_signature()) {
      if (sig->size() != 0 && sig->size() != rank) {
        return Fail(where + ": shape_signature rank " + std::to_string(sig->size()) +
                    " differs from shape rank " + std::to_string(rank));
      }
      for (fb::uoffset_t d = 0; d < sig->size(); ++d) {
        if (sig->Get(d) < -1) return Fail(where + ": shape_signature entry below -1");
      }
    }
    if (tensor->sparsity() != nullptr) return Fail(where + ": sparse tensors are not supported");
    if (!Quantization(where, tensor->quantization(), dims, type)) return false;
    // Constant data: its size must be exactly what the shape and type need.
    const std::uint8_t* p = nullptr;
    std::uint64_t n = 0;
    BufferBytes(tensor->buffer(), &p, &n);
    *is_const = p != nullptr;
    if (p == nullptr) return true;
    if (tensor->is_variable()) return Fail(where + ": variable tensor with constant data");
    const std::string got = " (buffer " + std::to_string(tensor->buffer()) + " holds " +
                            std::to_string(n) + " bytes)";
    if (elem != 0) {
      if (n != count * elem) {
        return Fail(where + ": constant data of " + std::to_string(n) + " bytes, expected " +
                    std::to_string(count) + " x " + std::to_string(elem) + " = " +
                    std::to_string(count * elem) + got);
      }
    } else if (const unsigned bits = SubByteBits(type)) {
      // Packed (TFLite's int4 layout) or one element per byte (unpacked): nothing else.
      if (n != (count * bits + 7) / 8 && n != count) {
        return Fail(where + ": constant sub-byte data of unexpected size" + got);
      }
    } else if (type == tfl::TensorType_STRING) {
      std::string why;
      if (!StringBufferOk(p, n, count, &why)) return Fail(where + ": " + why + got);
    } else {
      return Fail(where + ": constant tensor of type " +
                  std::string(tfl::EnumNameTensorType(type)) + " is not supported");
    }
    return true;
  }

  bool Quantization(const std::string& where, const tfl::QuantizationParameters* q,
                    const std::vector<std::int64_t>& dims, tfl::TensorType type) {
    if (q == nullptr) return true;
    if (q->details_type() != tfl::QuantizationDetails_NONE) {
      return Fail(where + ": custom / blockwise quantization details are not supported");
    }
    const std::size_t ns = q->scale() ? q->scale()->size() : 0;
    const std::size_t nz = q->zero_point() ? q->zero_point()->size() : 0;
    if (ns == 0 && nz == 0) return true;
    if (ns != nz) {
      return Fail(where + ": quantization has " + std::to_string(ns) + " scales and " +
                  std::to_string(nz) + " zero points");
    }
    const std::int32_t qd = q->quantized_dimension();
    if (qd < 0 || (!dims.empty() && static_cast<std::size_t>(qd) >= dims.size())) {
      return Fail(where + ": quantized_dimension " + std::to_string(qd) + " out of range [0, " +
                  std::to_string(dims.size()) + ")");
    }
    if (ns != 1 && (dims.empty() || static_cast<std::int64_t>(ns) != dims[qd])) {
      return Fail(where + ": " + std::to_string(ns) +
                  " quantization scales, expected 1 or the size of dimension " +
                  std::to_string(qd));
    }
    for (fb::uoffset_t i = 0; i < ns; ++i) {
      const float sc = q->scale()->Get(i);
      if (!std::isfinite(sc) || !(sc > 0.0f)) {
        return Fail(where + ": quantization scale " + std::to_string(i) +
                    " is not a positive finite number");
      }
    }
    // Zero points must be values of the tensor's type (TFLite stores them as int32).
    std::int64_t lo = std::numeric_limits<std::int32_t>::min();
    std::int64_t hi = std::numeric_limits<std::int32_t>::max();
    switch (type) {
      case tfl::TensorType_INT8: lo = -128; hi = 127; break;
      case tfl::TensorType_UINT8: lo = 0; hi = 255; break;
      case tfl::TensorType_INT16: lo = -32768; hi = 32767; break;
      case tfl::TensorType_INT4: lo = -8; hi = 7; break;
      default: break;
    }
    for (fb::uoffset_t i = 0; i < nz; ++i) {
      const std::int64_t z = q->zero_point()->Get(i);
      if (z < lo || z > hi) {
        return Fail(where + ": zero point " + std::to_string(z) + " outside [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "]");
      }
    }
    return true;
  }

  static std::string Range(int lo, int hi) {
    if (hi < 0) return std::to_string(lo) + "+";
    return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
  }

  std::string OpWhere(const std::string& sg_where, fb::uoffset_t i,
                      const tfl::Operator* op) const {
    return sg_where + " operator " + std::to_string(i) + " (" + OpName(op) + ")";
  }

  // Builtin name or custom code of an operator whose opcode_index is already known valid
  // (or "opcode N" if not).
  std::string OpName(const tfl::Operator* op) const {
    const auto* codes = model_->operator_codes();
    if (codes == nullptr || op->opcode_index() >= codes->size()) {
      return "opcode " + std::to_string(op->opcode_index());
    }
    const auto* c = codes->Get(op->opcode_index());
    const int code = std::max(static_cast<int>(c->builtin_code()),
                              static_cast<int>(c->deprecated_builtin_code()));
    if (code == tfl::BuiltinOperator_CUSTOM && c->custom_code() != nullptr) {
      std::string name(c->custom_code()->c_str(), c->custom_code()->size());
      return name.size() > 40 ? name.substr(0, 40) : name;
    }
    const char* n = tfl::EnumNameBuiltinOperator(static_cast<tfl::BuiltinOperator>(code));
    return (n && *n) ? n : "builtin " + std::to_string(code);
  }

  bool Operator(fb::uoffset_t s, const std::string& sg_where, fb::uoffset_t i,
                const tfl::Operator* op, std::int64_t nt) {
    const auto* codes = model_->operator_codes();
    const std::size_t ncodes = codes ? codes->size() : 0;
    const std::string where = OpWhere(sg_where, i, op);
    if (op->opcode_index() >= ncodes) {
      return Fail(where + ": opcode_index " + std::to_string(op->opcode_index()) +
                  " out of range (model has " + std::to_string(ncodes) + " operator codes)");
    }
    struct IndexList {
      const fb::Vector<std::int32_t>* v;
      const char* name;
      std::int64_t lo;
    };
    const IndexList lists[] = {{op->inputs(), "input", -1},
                               {op->outputs(), "output", 0},
                               {op->intermediates(), "intermediate", -1}};
    for (const auto& l : lists) {
      if (l.v == nullptr) continue;
      for (fb::uoffset_t k = 0; k < l.v->size(); ++k) {
        const std::int64_t t = l.v->Get(k);
        if (t < l.lo || t >= nt) {
          return Fail(where + ": " + l.name + " " + std::to_string(k) + " is tensor " +
                      std::to_string(t) + ", out of range [" + std::to_string(l.lo) + ", " +
                      std::to_string(nt) + ")");
        }
      }
    }
    const auto* c = codes->Get(op->opcode_index());
    const int code = std::max(static_cast<int>(c->builtin_code()),
                              static_cast<int>(c->deprecated_builtin_code()));
    if (!TakesHandles(static_cast<tfl::BuiltinOperator>(code)) && !NoHandles(where, op)) {
      return false;
    }
    if (code == tfl::BuiltinOperator_CUSTOM) {
      return CustomIo(where, op, c) && CustomOptions(where, op, c);
    }
    const auto bop = static_cast<tfl::BuiltinOperator>(code);
    const int nin = op->inputs() ? static_cast<int>(op->inputs()->size()) : 0;
    const int nout = op->outputs() ? static_cast<int>(op->outputs()->size()) : 0;
    if (const auto* a = FindArity(bop)) {
      if (nin < a->min_in || (a->max_in >= 0 && nin > a->max_in) || nout < a->min_out ||
          nout > a->max_out) {
        return Fail(where + ": " + std::to_string(nin) + " inputs / " + std::to_string(nout) +
                    " outputs, expected " + Range(a->min_in, a->max_in) + " / " +
                    Range(a->min_out, a->max_out));
      }
    } else if (nout == 0 && !MayHaveNoOutput(bop)) {
      return Fail(where + ": no outputs");
    }
    if (const auto* ins = op->inputs()) {
      for (fb::uoffset_t k = 0; k < ins->size(); ++k) {
        if (ins->Get(k) < 0 && !OptionalInputAllowed(bop, k)) {
          return Fail(where + ": input " + std::to_string(k) +
                      " is -1 (no tensor), which this operator does not accept there");
        }
      }
    }
    if (const OptionsRule* rule = FindRule(bop)) {
      const auto got = op->builtin_options_type();
      if (got == tfl::BuiltinOptions_NONE && OptionsRequired(bop)) {
        return Fail(where + ": no builtin options (expected " +
                    std::string(tfl::EnumNameBuiltinOptions(rule->options)) +
                    "; TFLite's defaults are zero strides / sizes)");
      }
      if (got != tfl::BuiltinOptions_NONE && got != rule->options) {
        const char* gn = tfl::EnumNameBuiltinOptions(got);
        return Fail(where + ": builtin options of type " +
                    std::string(gn && *gn ? gn : std::to_string(static_cast<int>(got))) +
                    ", expected " +
                    (rule->options == tfl::BuiltinOptions_NONE
                         ? std::string("none")
                         : std::string(tfl::EnumNameBuiltinOptions(rule->options))));
      }
      if (op->builtin_options_2_type() != tfl::BuiltinOptions2_NONE) {
        return Fail(where + ": unexpected builtin_options_2");
      }
    }
    return OptionValues(where, op) && QuantizedAdd(where, op, bop) &&
           ControlFlow(s, where, op, bop);
  }

  // No input or output of the operator is a RESOURCE / VARIANT handle (see TakesHandles).
  bool NoHandles(const std::string& where, const tfl::Operator* op) {
    const struct { const fb::Vector<std::int32_t>* v; const char* name; } lists[] = {
        {op->inputs(), "input"}, {op->outputs(), "output"}};
    for (const auto& l : lists) {
      if (l.v == nullptr) continue;
      for (fb::uoffset_t k = 0; k < l.v->size(); ++k) {
        const std::int32_t t = l.v->Get(k);
        if (t < 0) continue;
        const auto type = tensors_->Get(static_cast<fb::uoffset_t>(t))->type();
        if (type == tfl::TensorType_RESOURCE || type == tfl::TensorType_VARIANT) {
          return Fail(where + ": " + l.name + " " + std::to_string(k) + " (tensor " +
                      std::to_string(t) + ") is a " + tfl::EnumNameTensorType(type) +
                      " handle, which this operator does not take");
        }
      }
    }
    return true;
  }

  // The first quantization scale of a tensor as TFLite's params.scale sees it (0 if none).
  double Scale(std::int32_t t) const {
    const auto* q = tensors_->Get(static_cast<fb::uoffset_t>(t))->quantization();
    if (q == nullptr || q->scale() == nullptr || q->scale()->size() == 0) return 0.0;
    return static_cast<double>(q->scale()->Get(0));
  }

  bool QuantizedAdd(const std::string& where, const tfl::Operator* op,
                    tfl::BuiltinOperator bop) {
    if (bop != tfl::BuiltinOperator_ADD && bop != tfl::BuiltinOperator_SUB) return true;
    const auto* ins = op->inputs();
    const auto* outs = op->outputs();
    // Counts and indices are already checked (2 inputs >= 0 here: no optional input).
    if (ins == nullptr || outs == nullptr || ins->size() != 2 || outs->size() != 1) return true;
    const auto type = tensors_->Get(static_cast<fb::uoffset_t>(outs->Get(0)))->type();
    int shift = 20;
    if (type == tfl::TensorType_INT16) {
      bool pot = true;  // AddOptions / SubOptions pot_scale_int16 defaults to true
      if (const auto* a = op->builtin_options_as_AddOptions()) pot = a->pot_scale_int16();
      if (const auto* b = op->builtin_options_as_SubOptions()) pot = b->pot_scale_int16();
      if (pot) return true;
      shift = 15;
    } else if (type != tfl::TensorType_INT8 && type != tfl::TensorType_UINT8) {
      return true;
    }
    if (!QuantizedAddScalesOk(Scale(ins->Get(0)), Scale(ins->Get(1)), Scale(outs->Get(0)),
                              shift)) {
      return Fail(where + ": quantized scales must be positive with 2 x max(input scales) < "
                  "2^" + std::to_string(shift) + " x output scale (TFLite aborts otherwise)");
    }
    return true;
  }

  // Option values that kernels divide by or step with: they must be >= 1 (measured: an int8
  // DEPTHWISE_CONV_2D with stride 0, or a CONV_2D without options, dies with SIGFPE).
  bool OptionValues(const std::string& where, const tfl::Operator* op) {
    const char* names[4] = {nullptr, nullptr, nullptr, nullptr};
    std::int64_t values[4] = {1, 1, 1, 1};
    auto set = [&](int k, const char* name, std::int64_t v) {
      names[k] = name;
      values[k] = v;
    };
    if (const auto* o = op->builtin_options_as_Conv2DOptions()) {
      set(0, "stride_w", o->stride_w());
      set(1, "stride_h", o->stride_h());
      set(2, "dilation_w_factor", o->dilation_w_factor());
      set(3, "dilation_h_factor", o->dilation_h_factor());
    } else if (const auto* d = op->builtin_options_as_DepthwiseConv2DOptions()) {
      set(0, "stride_w", d->stride_w());
      set(1, "stride_h", d->stride_h());
      set(2, "dilation_w_factor", d->dilation_w_factor());
      set(3, "dilation_h_factor", d->dilation_h_factor());
    } else if (const auto* t = op->builtin_options_as_TransposeConvOptions()) {
      set(0, "stride_w", t->stride_w());
      set(1, "stride_h", t->stride_h());
    } else if (const auto* p = op->builtin_options_as_Pool2DOptions()) {
      set(0, "stride_w", p->stride_w());
      set(1, "stride_h", p->stride_h());
      set(2, "filter_width", p->filter_width());
      set(3, "filter_height", p->filter_height());
    } else if (const auto* sd = op->builtin_options_as_SpaceToDepthOptions()) {
      set(0, "block_size", sd->block_size());
    } else if (const auto* ds = op->builtin_options_as_DepthToSpaceOptions()) {
      set(0, "block_size", ds->block_size());
    } else if (const auto* sp = op->builtin_options_as_SplitOptions()) {
      set(0, "num_splits", sp->num_splits());
    }
    for (int k = 0; k < 4; ++k) {
      if (names[k] != nullptr && values[k] < 1) {
        return Fail(where + ": option " + names[k] + " = " + std::to_string(values[k]) +
                    ", expected >= 1");
      }
    }
    return true;
  }

  // Subgraph indices named by control-flow ops: in range; calls recorded for the cycle check.
  bool ControlFlow(fb::uoffset_t s, const std::string& where, const tfl::Operator* op,
                   tfl::BuiltinOperator bop) {
    std::vector<std::int32_t> idx;
    if (bop == tfl::BuiltinOperator_WHILE) {
      if (const auto* o = op->builtin_options_as_WhileOptions()) {
        idx = {o->cond_subgraph_index(), o->body_subgraph_index()};
      } else {
        return Fail(where + ": WHILE without WhileOptions");
      }
    } else if (bop == tfl::BuiltinOperator_IF) {
      if (const auto* o = op->builtin_options_as_IfOptions()) {
        idx = {o->then_subgraph_index(), o->else_subgraph_index()};
      } else {
        return Fail(where + ": IF without IfOptions");
      }
    } else if (bop == tfl::BuiltinOperator_CALL_ONCE) {
      if (const auto* o = op->builtin_options_as_CallOnceOptions()) {
        idx = {o->init_subgraph_index()};
      } else {
        return Fail(where + ": CALL_ONCE without CallOnceOptions");
      }
    }
    const auto n = static_cast<std::int64_t>(callees_.size());  // one entry per subgraph
    for (std::int32_t k : idx) {
      if (k < 0 || k >= n) {
        return Fail(where + ": subgraph index " + std::to_string(k) + " out of range [0, " +
                    std::to_string(n) + ")");
      }
      callees_[s].push_back(k);
    }
    return true;
  }

  // LCE's kernels (larq compute-engine 0.16: ops::BCONV2D, QUANTIZE, DEQUANTIZE, BMAXPOOL2D)
  // read their inputs and output 0 through GetInput / GetOutput without a null check: they
  // need exactly one output and no -1 input, except the bconv2d op's optional
  // post_activation_multiplier / bias (unused for a bitpacked int32 output) or thresholds
  // (used only then). Our ops::BDFSMN checks its own inputs in Prepare; ops::DUAL_QUANTIZE
  // reads three outputs: DualQuantizeIo.
  bool CustomIo(const std::string& where, const tfl::Operator* op,
                const tfl::OperatorCode* code) {
    const fb::String* custom = code->custom_code();
    const std::string name = custom ? std::string(custom->c_str(), custom->size()) : "";
    if (name == ops::DUAL_QUANTIZE) return DualQuantizeIo(where, op);
    if (!IsLceOp(name) || IsOwnOp(name)) return true;
    const auto* outs = op->outputs();
    if (outs == nullptr || outs->size() != 1) {
      return Fail(where + ": expected exactly one output");
    }
    const auto* ins = op->inputs();
    if (ins == nullptr) return true;
    bool int32_out = false;
    const auto* tensors = tensors_;
    if (tensors != nullptr && outs->Get(0) >= 0 &&
        static_cast<fb::uoffset_t>(outs->Get(0)) < tensors->size()) {
      int32_out = tensors->Get(static_cast<fb::uoffset_t>(outs->Get(0)))->type() ==
                  tfl::TensorType_INT32;
    }
    for (fb::uoffset_t k = 0; k < ins->size(); ++k) {
      if (ins->Get(k) >= 0) continue;
      namespace bc = ops::bconv2d;
      const auto i = static_cast<std::int64_t>(k);
      const bool optional =
          name == ops::BCONV2D &&
          (int32_out ? (i == bc::kPostActivationMultiplier || i == bc::kPostActivationBias)
                     : i == bc::kThreshold);
      if (!optional) {
        return Fail(where + ": input " + std::to_string(k) + " is -1 (no tensor), which " +
                    name + " does not accept there");
      }
    }
    return true;
  }

  // ops::DUAL_QUANTIZE (op_contract.h): 2 inputs, 3 outputs, none -1; x float32 of rank 2..4,
  // thresholds float32 [2, C], b1 / b2 int32 [x dims..., PackedWords(C)], s float32 of x's
  // rank, last dim 1, first dim x's, every other x's or 1. Dims the shape_signature marks
  // dynamic (-1) are not compared.
  bool DualQuantizeIo(const std::string& where, const tfl::Operator* op) {
    namespace c = ops::dual_quantize;
    const std::string& op_where = where;  // names the op already
    const auto* ins = op->inputs();
    const auto* outs = op->outputs();
    if (ins == nullptr || ins->size() != c::kNumInputs) {
      return Fail(op_where + ": expected " + std::to_string(c::kNumInputs) + " inputs");
    }
    if (outs == nullptr || outs->size() != c::kNumOutputs) {
      return Fail(op_where + ": expected " + std::to_string(c::kNumOutputs) + " outputs");
    }
    if (tensors_ == nullptr) return Fail(op_where + ": subgraph has no tensors");
    struct Operand {
      const tfl::Tensor* t;
      const char* name;
      tfl::TensorType type;
    };
    Operand v[c::kNumInputs + c::kNumOutputs];
    for (int k = 0; k < c::kNumInputs + c::kNumOutputs; ++k) {
      const bool in = k < c::kNumInputs;
      const std::int32_t idx = in ? ins->Get(static_cast<fb::uoffset_t>(k))
                                  : outs->Get(static_cast<fb::uoffset_t>(k - c::kNumInputs));
      const char* nm = in ? c::kInputNames[k] : c::kOutputNames[k - c::kNumInputs];
      if (idx < 0 || static_cast<fb::uoffset_t>(idx) >= tensors_->size()) {
        return Fail(op_where + ": " + nm + " is tensor " + std::to_string(idx) +
                    " (no tensor)");
      }
      const bool bits = !in && (k - c::kNumInputs == c::kB1 || k - c::kNumInputs == c::kB2);
      v[k] = {tensors_->Get(static_cast<fb::uoffset_t>(idx)), nm,
              bits ? tfl::TensorType_INT32 : tfl::TensorType_FLOAT32};
      if (v[k].t->type() != v[k].type) {
        return Fail(op_where + ": " + nm + " is " + tfl::EnumNameTensorType(v[k].t->type()) +
                    ", expected " + tfl::EnumNameTensorType(v[k].type));
      }
    }
    // Static dim i of a tensor, or -1 (dynamic: shape_signature -1, or no such dim).
    auto dim = [](const tfl::Tensor* t, int i) -> std::int64_t {
      const auto* sh = t->shape();
      if (sh == nullptr || i < 0 || static_cast<fb::uoffset_t>(i) >= sh->size()) return -1;
      const auto* sig = t->shape_signature();
      if (sig != nullptr && static_cast<fb::uoffset_t>(i) < sig->size() &&
          sig->Get(static_cast<fb::uoffset_t>(i)) == -1) {
        return -1;
      }
      return sh->Get(static_cast<fb::uoffset_t>(i));
    };
    auto rank = [](const tfl::Tensor* t) -> int {
      return t->shape() == nullptr ? 0 : static_cast<int>(t->shape()->size());
    };
    const tfl::Tensor* x = v[c::kX].t;
    const int r = rank(x);
    if (r < 2 || r > 4) {
      return Fail(op_where + ": x must have rank 2, 3 or 4, has " + std::to_string(r));
    }
    const std::int64_t C = dim(x, r - 1);
    const tfl::Tensor* th = v[c::kThresholds].t;
    if (rank(th) != 2 || th->shape()->Get(0) != ops::bdfsmn::kThreshRows ||
        (C > 0 && th->shape()->Get(1) != C)) {
      return Fail(op_where + ": thresholds must have shape [" +
                  std::to_string(ops::bdfsmn::kThreshRows) + ", " + std::to_string(C) + "]");
    }
    for (int o = c::kB1; o <= c::kB2; ++o) {
      const tfl::Tensor* b = v[c::kNumInputs + o].t;
      bool ok = rank(b) == r;
      for (int i = 0; ok && i < r; ++i) {
        const std::int64_t want = i == r - 1 ? (C > 0 ? ops::PackedWords(C) : -1) : dim(x, i);
        const std::int64_t got = dim(b, i);
        ok = want < 0 || got < 0 || got == want;
      }
      if (!ok) {
        return Fail(op_where + ": " + c::kOutputNames[o] +
                    " must have x's shape with the last dim PackedWords(C)");
      }
    }
    const tfl::Tensor* sc = v[c::kNumInputs + c::kScale].t;
    bool ok = rank(sc) == r && dim(sc, r - 1) == 1;
    for (int i = 0; ok && i + 1 < r; ++i) {
      const std::int64_t got = dim(sc, i), want = dim(x, i);
      ok = got < 0 || want < 0 || got == want || (i > 0 && got == 1);
    }
    if (!ok) {
      return Fail(op_where + ": scale must have x's rank, last dim 1, first dim x's and every "
                  "other dim x's or 1");
    }
    return true;
  }

  // Custom ops: options inside the file; ours (ops::BDFSMN) and LCE's are FlexBuffers
  // maps that must verify (their Init reads them without checking).
  bool CustomOptions(const std::string& where, const tfl::Operator* op,
                     const tfl::OperatorCode* code) {
    const fb::String* custom = code->custom_code();  // non-null: OperatorCodes() checked it
    const std::string name = custom ? std::string(custom->c_str(), custom->size()) : "";
    const std::uint8_t* p = nullptr;
    std::uint64_t n = 0;
    if (op->custom_options() != nullptr) {
      p = op->custom_options()->data();
      n = op->custom_options()->size();
    } else if (op->large_custom_options_offset() > 1) {
      if (!InFile(op->large_custom_options_offset(), op->large_custom_options_size())) {
        return Fail(where + ": large custom options offset/size lie outside the file");
      }
      p = data_ + op->large_custom_options_offset();
      n = op->large_custom_options_size();
    }
    if (name == ops::DUAL_QUANTIZE) {
      if (n != 0) {
        return Fail(where + ": " + name + " takes no options (custom_options not empty)");
      }
    } else if (name == ops::BDFSMN) {
      bdfsmn_options::Options o;
      std::string why;
      if (!bdfsmn_options::Parse(p, static_cast<std::size_t>(n), &o, &why)) {
        return Fail(where + ": " + why);
      }
    } else if (IsLceOp(name)) {
      const std::string why = lce_ops_options::Problem(name, p, static_cast<std::size_t>(n));
      if (!why.empty()) return Fail(where + ": " + why);
    }
    return true;
  }

  // No subgraph may (directly or indirectly) call itself: TFLite would recurse forever.
  bool SubgraphCalls() {
    const std::size_t n = callees_.size();
    std::vector<int> state(n, 0);  // 0 new, 1 on the stack, 2 done
    for (std::size_t root = 0; root < n; ++root) {
      if (state[root]) continue;
      std::vector<std::pair<std::size_t, std::size_t>> stack = {{root, 0}};
      state[root] = 1;
      while (!stack.empty()) {
        auto& top = stack.back();
        if (top.second < callees_[top.first].size()) {
          const auto next = static_cast<std::size_t>(callees_[top.first][top.second++]);
          if (state[next] == 1) {
            return Fail("subgraph " + std::to_string(top.first) + " calls subgraph " +
                        std::to_string(next) + ", which leads back to it (recursion)");
          }
          if (state[next] == 0) {
            state[next] = 1;
            stack.push_back({next, 0});
          }
        } else {
          state[top.first] = 2;
          stack.pop_back();
        }
      }
    }
    return true;
  }

  bool Metadata() {
    if (const auto* mb = model_->metadata_buffer()) {
      for (fb::uoffset_t i = 0; i < mb->size(); ++i) {
        if (mb->Get(i) < 0 || static_cast<std::uint32_t>(mb->Get(i)) >= buffers_->size()) {
          return Fail("metadata_buffer " + std::to_string(i) + " names buffer " +
                      std::to_string(mb->Get(i)) + ", out of range");
        }
      }
    }
    const auto* md = model_->metadata();
    if (md == nullptr) return true;
    int descriptions = 0;
    for (fb::uoffset_t i = 0; i < md->size(); ++i) {
      const auto* m = md->Get(i);
      const std::string where = "metadata " + std::to_string(i);
      if (m->name() == nullptr) return Fail(where + ": no name");
      if (!IsUtf8(m->name())) return Fail(where + ": name is not valid UTF-8");
      if (m->buffer() >= buffers_->size()) {
        return Fail(where + " " + Quote(m->name()) + ": buffer index " +
                    std::to_string(m->buffer()) + " out of range (model has " +
                    std::to_string(buffers_->size()) + " buffers)");
      }
      const std::string name(m->name()->c_str(), m->name()->size());
      // FlatBufferModel::GetMinimumRuntime reads this buffer's data without a null check.
      if (name == "min_runtime_version") {
        const auto* data = buffers_->Get(m->buffer())->data();
        if (data == nullptr || data->size() == 0) {
          return Fail(where + " 'min_runtime_version': buffer " + std::to_string(m->buffer()) +
                      " holds no data");
        }
      }
      if (name == kDescriptionKey) {
        if (++descriptions > 1) {
          return Fail(where + ": a second '" + std::string(kDescriptionKey) +
                      "' entry; expected one");
        }
        if (!Description(where + " '" + kDescriptionKey + "'", m->buffer())) return false;
      }
    }
    return true;
  }

  // The model's description (pipeline/tflite_metadata.py): a JSON object whose "labels" are
  // as many strings as the first output has logits. Parsed with flatbuffers' own JSON parser
  // (strict JSON, nesting bounded by FLATBUFFERS_MAX_PARSING_DEPTH) into a FlexBuffer; the
  // other fields are validated in Python (tflite_metadata.validate).
  bool Description(const std::string& where, std::uint32_t buffer) {
    const std::string expected = "; expected the JSON description pipeline.export writes";
    const std::uint8_t* p = nullptr;
    std::uint64_t n = 0;
    BufferBytes(buffer, &p, &n);
    if (p == nullptr || n == 0) {
      return Fail(where + ": buffer " + std::to_string(buffer) + " holds no data" + expected);
    }
    if (n > kMaxDescriptionBytes) {
      return Fail(where + ": " + std::to_string(n) + " bytes, more than " +
                  std::to_string(kMaxDescriptionBytes) + expected);
    }
    const std::string json(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
    if (json.find('\0') != std::string::npos) {
      return Fail(where + ": holds a NUL byte, not JSON text" + expected);
    }
    fb::IDLOptions options;
    options.strict_json = true;
    fb::Parser parser(options);
    flexbuffers::Builder fbb;
    if (!parser.ParseFlexBuffer(json.c_str(), nullptr, &fbb)) {
      std::string why = parser.error_.substr(0, parser.error_.find('\n'));
      if (why.size() > 160) why = why.substr(0, 157) + "...";
      return Fail(where + ": not valid JSON (" + why + ")" + expected);
    }
    const auto root = flexbuffers::GetRoot(fbb.GetBuffer());
    if (!root.IsMap()) return Fail(where + ": not a JSON object" + expected);
    const auto labels = root.AsMap()["labels"];
    if (!labels.IsUntypedVector() || labels.AsVector().size() == 0) {
      return Fail(where + ": no list of class names 'labels'" + expected);
    }
    const auto names = labels.AsVector();
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (!names[i].IsString()) {
        return Fail(where + ": labels[" + std::to_string(i) + "] is not a string" + expected);
      }
    }
    const std::int64_t classes = OutputClasses();
    if (classes >= 0 && static_cast<std::int64_t>(names.size()) != classes) {
      return Fail(where + ": " + std::to_string(names.size()) + " labels but the model's "
                  "output has " + std::to_string(classes) + " logits; expected one class "
                  "name per logit");
    }
    return true;
  }

  // Last dimension of subgraph 0's first output (indices checked by SubGraph), -1 if none.
  std::int64_t OutputClasses() const {
    const auto* subgraphs = model_->subgraphs();
    if (subgraphs == nullptr || subgraphs->size() == 0) return -1;
    const auto* sg = subgraphs->Get(0);
    const auto* outputs = sg->outputs();
    const auto* tensors = sg->tensors();
    if (outputs == nullptr || outputs->size() == 0 || tensors == nullptr) return -1;
    const auto index = static_cast<fb::uoffset_t>(outputs->Get(0));
    if (index >= tensors->size()) return -1;
    const auto* t = tensors->Get(index);
    if (t == nullptr || t->shape() == nullptr || t->shape()->size() == 0) return -1;
    return t->shape()->Get(t->shape()->size() - 1);
  }

  bool Signatures() {
    const auto* defs = model_->signature_defs();
    if (defs == nullptr) return true;
    const auto* subgraphs = model_->subgraphs();
    for (fb::uoffset_t i = 0; i < defs->size(); ++i) {
      const auto* d = defs->Get(i);
      const std::string where = "signature " + std::to_string(i);
      if (d->signature_key() == nullptr || !IsUtf8(d->signature_key())) {
        return Fail(where + ": missing or non-UTF-8 signature_key");
      }
      if (d->subgraph_index() >= subgraphs->size()) {
        return Fail(where + ": subgraph index " + std::to_string(d->subgraph_index()) +
                    " out of range");
      }
      if (d->inputs() == nullptr || d->outputs() == nullptr) {
        return Fail(where + ": missing inputs or outputs");
      }
      const auto* tensors = subgraphs->Get(d->subgraph_index())->tensors();
      const std::uint32_t nt = tensors ? tensors->size() : 0;
      for (const auto* maps : {d->inputs(), d->outputs()}) {
        for (fb::uoffset_t k = 0; k < maps->size(); ++k) {
          const auto* m = maps->Get(k);
          if (m->name() == nullptr || !IsUtf8(m->name())) {
            return Fail(where + ": tensor map entry without a (UTF-8) name");
          }
          if (m->tensor_index() >= nt) {
            return Fail(where + " " + Quote(m->name()) + ": tensor index " +
                        std::to_string(m->tensor_index()) + " out of range");
          }
        }
      }
    }
    return true;
  }

  const std::uint8_t* data_;
  std::size_t size_;
  const tfl::Model* model_ = nullptr;
  const fb::Vector<fb::Offset<tfl::Buffer>>* buffers_ = nullptr;
  std::vector<std::vector<std::int32_t>> callees_;
  const fb::Vector<fb::Offset<tfl::Tensor>>* tensors_ = nullptr;  // of the current subgraph
  std::string error_;
};

}  // namespace

bool VerifyModel(const std::uint8_t* data, std::size_t size, std::string* error) {
  // The generated accessors read scalars in place: work on a 16-byte aligned copy if the
  // caller's pointer is not aligned (offsets inside the buffer are verified as aligned).
  if (data != nullptr && size < static_cast<std::size_t>(FLATBUFFERS_MAX_BUFFER_SIZE) &&
      reinterpret_cast<std::uintptr_t>(data) % 16 != 0) {
    std::vector<std::uint64_t> copy((size + 15) / 8);
    std::memcpy(copy.data(), data, size);
    return Checker(reinterpret_cast<const std::uint8_t*>(copy.data()), size).Run(error);
  }
  return Checker(data, size).Run(error);
}

}  // namespace tflite
}  // namespace compute_engine

extern "C" __attribute__((visibility("default"))) int lce_verify_model(const uint8_t* data,
                                                                      size_t size, char* err,
                                                                      size_t err_size) {
  std::string error;
  bool ok = false;
  try {
    ok = compute_engine::tflite::VerifyModel(data, size, &error);
  } catch (const std::exception& e) {  // std::bad_alloc from a huge vector: not a valid model
    error = std::string("verifier error: ") + e.what();
  }
  if (err != nullptr && err_size > 0) {
    const std::size_t n = ok ? 0 : std::min(error.size(), err_size - 1);
    std::memcpy(err, error.data(), n);
    err[n] = '\0';
  }
  return ok ? 0 : 1;
}
