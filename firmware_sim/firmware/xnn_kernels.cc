// XNNPACK-backed float kernels for TFLM (xnn_kernels.h).
#include "firmware/xnn_kernels.h"

#if defined(FIRMWARE_HAVE_XNNPACK)

#include <xnnpack.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "firmware/heap.h"
#include "lce_kernels/tflm/tflm_op_common.h"
#include "tensorflow/lite/c/builtin_op_data.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"

namespace firmware {
namespace xnn {
namespace {

namespace cm = ::compute_engine::tflm::common;

enum class Kind { kConv, kFc, kBinary, kPrelu, kPad, kAbs, kMean, kAvgPool };
enum class Binary { kAdd, kSub, kMul };

constexpr int kMaxDims = XNN_MAX_TENSOR_DIMS;

struct OpData {
  Kind kind = Kind::kConv;
  Binary binary = Binary::kAdd;
  const char* name = "";
  xnn_operator_t op = nullptr;
  bool prepared = false;
  // Pointers of the last setup (rebound when the arena moves them).
  const void* bound_in0 = nullptr;
  const void* bound_in1 = nullptr;
  void* bound_out = nullptr;
  // Setup shapes.
  std::size_t batch = 0, height = 0, width = 0;     // conv / pool: N, H, W; fc/prelu/abs: batch
  std::size_t rank0 = 0, rank1 = 0, shape0[kMaxDims] = {}, shape1[kMaxDims] = {};
  std::size_t pre[kMaxDims] = {}, post[kMaxDims] = {};  // pad
};

#define X_ENSURE(d, cond, ...) \
  LCE_TFLM_ENSURE((d) != nullptr ? (d)->name : "XNNPACK kernel", cond, __VA_ARGS__)

template <const char* kName, Kind kKind, Binary kBinary = Binary::kAdd>
void* Init(TfLiteContext* ctx, const char* /*buffer*/, size_t /*length*/) {
  OpData* d = cm::NewOpData<OpData>(ctx);
  if (d != nullptr) {
    d->name = kName;
    d->kind = kKind;
    d->binary = kBinary;
  }
  return d;
}

void Free(TfLiteContext* /*ctx*/, void* data) {
  auto* d = static_cast<OpData*>(data);
  if (d != nullptr && d->op != nullptr) {
    xnn_delete_operator(d->op);
    d->op = nullptr;
  }
  cm::DeleteOpData<OpData>(data);
}

// Output clamp of a fused activation; false if XNNPACK cannot express it.
bool ActivationRange(TfLiteFusedActivation a, float* lo, float* hi) {
  switch (a) {
    case kTfLiteActNone: *lo = -INFINITY; *hi = INFINITY; return true;
    case kTfLiteActRelu: *lo = 0.0f; *hi = INFINITY; return true;
    case kTfLiteActReluN1To1: *lo = -1.0f; *hi = 1.0f; return true;
    case kTfLiteActRelu6: *lo = 0.0f; *hi = 6.0f; return true;
    default: return false;
  }
}

// TFLite's output size and leading padding of one spatial axis.
bool SpatialPadding(TfLitePadding padding, int in, int filter, int stride, int dilation,
                    int* out, int* before, int* after) {
  if (in < 1 || filter < 1 || stride < 1 || dilation < 1) return false;
  const int eff = (filter - 1) * dilation + 1;
  if (padding == kTfLitePaddingSame) {
    *out = (in + stride - 1) / stride;
    const int total = std::max((*out - 1) * stride + eff - in, 0);
    *before = total / 2;
    *after = total - *before;
  } else if (padding == kTfLitePaddingValid) {
    *out = in >= eff ? (in - eff + stride) / stride : 0;
    *before = *after = 0;
  } else {
    return false;
  }
  return *out >= 1;
}

TfLiteStatus CheckFloat(OpData* d, const TfLiteTensor* t, const char* what) {
  X_ENSURE(d, t != nullptr, "%s missing", what);
  X_ENSURE(d, t->type == kTfLiteFloat32, "%s is %s: the XNNPACK kernel takes float32 only", what,
           cm::TypeName(t->type));
  std::size_t n = 0;
  X_ENSURE(d, cm::NumElements(t->dims, &n) && cm::HasBytes(t, n, 4u),
           "%s byte size does not match its shape", what);
  return kTfLiteOk;
}

TfLiteStatus CheckConstFloat(OpData* d, const TfLiteTensor* t, const char* what) {
  if (CheckFloat(d, t, what) != kTfLiteOk) return kTfLiteError;
  X_ENSURE(d, cm::IsConst(t) && t->data.data != nullptr, "%s must be a constant tensor", what);
  return kTfLiteOk;
}

TfLiteStatus Status(OpData* d, xnn_status s, const char* call) {
  X_ENSURE(d, s == xnn_status_success, "%s failed (xnn_status %d)", call, static_cast<int>(s));
  return kTfLiteOk;
}

// What every Prepare starts with: the op data, its last preparation forgotten; between
// `min_inputs` and `max_inputs` inputs; builtin options where `options`; input 0 and output 0
// float32 tensors of consistent byte sizes (in `*in`, `*out`).
TfLiteStatus Begin(TfLiteNode* node, cm::TempTensors& tt, int min_inputs, int max_inputs,
                   bool options, OpData** op_data, const TfLiteTensor** in,
                   const TfLiteTensor** out) {
  auto* d = static_cast<OpData*>(node->user_data);
  *op_data = d;
  X_ENSURE(d, d != nullptr, "no op data");
  d->prepared = false;
  const bool count_ok = node->inputs != nullptr && node->inputs->size >= min_inputs &&
                        node->inputs->size <= max_inputs;
  X_ENSURE(d, count_ok || min_inputs != max_inputs, "expected %d input%s", min_inputs,
           min_inputs == 1 ? "" : "s");
  X_ENSURE(d, count_ok, "expected %d or %d inputs", min_inputs, max_inputs);
  X_ENSURE(d, !options || node->builtin_data != nullptr, "no builtin options");
  *in = tt.Input(node, 0);
  *out = tt.Output(node, 0);
  if (CheckFloat(d, *in, "input") != kTfLiteOk || CheckFloat(d, *out, "output") != kTfLiteOk) {
    return kTfLiteError;
  }
  return kTfLiteOk;
}

TfLiteStatus CheckConstInt32(OpData* d, const TfLiteTensor* t, const char* what) {
  X_ENSURE(d, t != nullptr && t->type == kTfLiteInt32 && cm::IsConst(t) &&
                  t->data.data != nullptr,
           "%s must be a constant int32 tensor", what);
  return kTfLiteOk;
}

// ------------------------------------------------------------------ CONV_2D / DEPTHWISE
TfLiteStatus ConvPrepare(TfLiteContext* ctx, TfLiteNode* node, bool depthwise) {
  cm::TempTensors tt(ctx);
  OpData* d = nullptr;
  const TfLiteTensor *in = nullptr, *out = nullptr;
  if (Begin(node, tt, 2, 3, true, &d, &in, &out) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* filter = tt.Input(node, 1);
  const TfLiteTensor* bias = node->inputs->size == 3 ? tt.Input(node, 2) : nullptr;
  if (CheckConstFloat(d, filter, "filter") != kTfLiteOk) return kTfLiteError;
  if (bias != nullptr && CheckConstFloat(d, bias, "bias") != kTfLiteOk) return kTfLiteError;
  X_ENSURE(d, cm::Rank(in) == 4 && cm::Rank(filter) == 4 && cm::Rank(out) == 4,
           "input, filter and output must have rank 4");
  TfLitePadding padding;
  int sh, sw, dh, dw, mult = 1;
  TfLiteFusedActivation act;
  if (depthwise) {
    const auto* p = static_cast<const TfLiteDepthwiseConvParams*>(node->builtin_data);
    padding = p->padding;
    sh = p->stride_height;
    sw = p->stride_width;
    dh = p->dilation_height_factor;
    dw = p->dilation_width_factor;
    act = p->activation;
    mult = p->depth_multiplier;
  } else {
    const auto* p = static_cast<const TfLiteConvParams*>(node->builtin_data);
    padding = p->padding;
    sh = p->stride_height;
    sw = p->stride_width;
    dh = p->dilation_height_factor;
    dw = p->dilation_width_factor;
    act = p->activation;
  }
  float lo, hi;
  X_ENSURE(d, ActivationRange(act, &lo, &hi), "fused activation %d not supported",
           static_cast<int>(act));
  const int* id = in->dims->data;
  const int* fd = filter->dims->data;
  const int cin = id[3];
  int cout, fh, fw, groups, gin, gout;
  if (depthwise) {
    X_ENSURE(d, fd[0] == 1, "depthwise filter must be [1, Fh, Fw, Cout]");
    cout = fd[3];
    fh = fd[1];
    fw = fd[2];
    X_ENSURE(d, mult >= 1 && cout == cin * mult, "depthwise: Cout %d != Cin %d x multiplier %d",
             cout, cin, mult);
    groups = cin;
    gin = 1;
    gout = mult;
  } else {
    cout = fd[0];
    fh = fd[1];
    fw = fd[2];
    X_ENSURE(d, fd[3] == cin, "filter depth %d != input channels %d (grouped conv not taken)",
             fd[3], cin);
    groups = 1;
    gin = cin;
    gout = cout;
  }
  if (bias != nullptr) {
    X_ENSURE(d, cm::Rank(bias) == 1 && bias->dims->data[0] == cout, "bias must be [%d]", cout);
  }
  int oh, ow, top, bottom, left, right;
  X_ENSURE(d, SpatialPadding(padding, id[1], fh, sh, dh, &oh, &top, &bottom) &&
                  SpatialPadding(padding, id[2], fw, sw, dw, &ow, &left, &right),
           "unsupported padding / strides / sizes");
  const int want[4] = {id[0], oh, ow, cout};
  char a[96];
  X_ENSURE(d, cm::SameDims(out->dims, want, 4), "output shape %s, expected [%d, %d, %d, %d]",
           cm::ShapeString(out->dims, a, sizeof a), want[0], want[1], want[2], want[3]);
  const xnn_status s = xnn_create_convolution2d_nhwc_f32(
      static_cast<uint32_t>(top), static_cast<uint32_t>(right), static_cast<uint32_t>(bottom),
      static_cast<uint32_t>(left), static_cast<uint32_t>(fh), static_cast<uint32_t>(fw),
      static_cast<uint32_t>(sh), static_cast<uint32_t>(sw), static_cast<uint32_t>(dh),
      static_cast<uint32_t>(dw), static_cast<uint32_t>(groups), static_cast<size_t>(gin),
      static_cast<size_t>(gout), static_cast<size_t>(cin), static_cast<size_t>(cout),
      filter->data.f, bias != nullptr ? bias->data.f : nullptr, lo, hi,
      depthwise ? XNN_FLAG_DEPTHWISE_CONVOLUTION : 0, &d->op);
  if (Status(d, s, "xnn_create_convolution2d_nhwc_f32") != kTfLiteOk) return kTfLiteError;
  d->batch = static_cast<std::size_t>(id[0]);
  d->height = static_cast<std::size_t>(id[1]);
  d->width = static_cast<std::size_t>(id[2]);
  d->prepared = true;
  return kTfLiteOk;
}

TfLiteStatus Conv2DPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  return ConvPrepare(ctx, node, false);
}
TfLiteStatus DepthwisePrepare(TfLiteContext* ctx, TfLiteNode* node) {
  return ConvPrepare(ctx, node, true);
}

// ---------------------------------------------------------------------- FULLY_CONNECTED
TfLiteStatus FcPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  cm::TempTensors tt(ctx);
  OpData* d = nullptr;
  const TfLiteTensor *in = nullptr, *out = nullptr;
  if (Begin(node, tt, 2, 3, true, &d, &in, &out) != kTfLiteOk) {
    return kTfLiteError;
  }
  const auto* p = static_cast<const TfLiteFullyConnectedParams*>(node->builtin_data);
  X_ENSURE(d, p->weights_format == kTfLiteFullyConnectedWeightsFormatDefault,
           "shuffled weights not supported");
  const TfLiteTensor* w = tt.Input(node, 1);
  const TfLiteTensor* bias = node->inputs->size == 3 ? tt.Input(node, 2) : nullptr;
  if (CheckConstFloat(d, w, "weights") != kTfLiteOk) return kTfLiteError;
  if (bias != nullptr && CheckConstFloat(d, bias, "bias") != kTfLiteOk) return kTfLiteError;
  X_ENSURE(d, cm::Rank(w) == 2, "weights must be [out, in]");
  const int n_out = w->dims->data[0], n_in = w->dims->data[1];
  X_ENSURE(d, n_out >= 1 && n_in >= 1, "weights shape invalid");
  if (bias != nullptr) {
    X_ENSURE(d, cm::Rank(bias) == 1 && bias->dims->data[0] == n_out, "bias must be [%d]", n_out);
  }
  std::size_t in_elems = 0, out_elems = 0;
  cm::NumElements(in->dims, &in_elems);
  cm::NumElements(out->dims, &out_elems);
  X_ENSURE(d, in_elems % static_cast<std::size_t>(n_in) == 0,
           "input of %zu values is not a whole number of rows of %d", in_elems, n_in);
  const std::size_t batch = in_elems / static_cast<std::size_t>(n_in);
  X_ENSURE(d, out_elems == batch * static_cast<std::size_t>(n_out),
           "output has %zu values, expected %zu", out_elems, batch * n_out);
  float lo, hi;
  X_ENSURE(d, ActivationRange(p->activation, &lo, &hi), "fused activation %d not supported",
           static_cast<int>(p->activation));
  const xnn_status s = xnn_create_fully_connected_nc_f32(
      static_cast<size_t>(n_in), static_cast<size_t>(n_out), static_cast<size_t>(n_in),
      static_cast<size_t>(n_out), w->data.f, bias != nullptr ? bias->data.f : nullptr, lo, hi, 0,
      &d->op);
  if (Status(d, s, "xnn_create_fully_connected_nc_f32") != kTfLiteOk) return kTfLiteError;
  d->batch = batch;
  d->prepared = true;
  return kTfLiteOk;
}

// ------------------------------------------------------------------------ ADD / SUB / MUL
bool ShapeOf(const TfLiteTensor* t, std::size_t* rank, std::size_t* shape) {
  if (t->dims == nullptr || t->dims->size > kMaxDims) return false;
  *rank = static_cast<std::size_t>(t->dims->size);
  for (int i = 0; i < t->dims->size; ++i) {
    if (t->dims->data[i] < 0) return false;
    shape[i] = static_cast<std::size_t>(t->dims->data[i]);
  }
  if (*rank == 0) {  // a scalar: [1]
    *rank = 1;
    shape[0] = 1;
  }
  return true;
}

TfLiteStatus BinaryPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  cm::TempTensors tt(ctx);
  OpData* d = nullptr;
  const TfLiteTensor *a = nullptr, *out = nullptr;
  if (Begin(node, tt, 2, 2, true, &d, &a, &out) != kTfLiteOk) {
    return kTfLiteError;
  }
  TfLiteFusedActivation act = kTfLiteActNone;
  if (d->binary == Binary::kAdd) {
    act = static_cast<const TfLiteAddParams*>(node->builtin_data)->activation;
  } else if (d->binary == Binary::kSub) {
    act = static_cast<const TfLiteSubParams*>(node->builtin_data)->activation;
  } else {
    act = static_cast<const TfLiteMulParams*>(node->builtin_data)->activation;
  }
  float lo, hi;
  X_ENSURE(d, ActivationRange(act, &lo, &hi), "fused activation %d not supported",
           static_cast<int>(act));
  const TfLiteTensor* b = tt.Input(node, 1);
  if (CheckFloat(d, b, "input 1") != kTfLiteOk) return kTfLiteError;
  X_ENSURE(d, ShapeOf(a, &d->rank0, d->shape0) && ShapeOf(b, &d->rank1, d->shape1),
           "inputs of rank > %d not supported", kMaxDims);
  // Broadcast shape (numpy rules, right-aligned) must be the output's.
  const std::size_t r = d->rank0 > d->rank1 ? d->rank0 : d->rank1;
  int want[kMaxDims];
  for (std::size_t i = 0; i < r; ++i) {
    const std::size_t ia = i + d->rank0 >= r ? d->shape0[i + d->rank0 - r] : 1;
    const std::size_t ib = i + d->rank1 >= r ? d->shape1[i + d->rank1 - r] : 1;
    X_ENSURE(d, ia == ib || ia == 1 || ib == 1, "shapes do not broadcast");
    want[i] = static_cast<int>(ia > ib ? ia : ib);
  }
  std::size_t out_elems = 0, want_elems = 1;
  for (std::size_t i = 0; i < r; ++i) want_elems *= static_cast<std::size_t>(want[i]);
  X_ENSURE(d, cm::NumElements(out->dims, &out_elems) && out_elems == want_elems,
           "output size does not match the broadcast of the inputs");
  xnn_status s;
  if (d->binary == Binary::kAdd) {
    s = xnn_create_add_nd_f32(lo, hi, 0, &d->op);
  } else if (d->binary == Binary::kSub) {
    s = xnn_create_subtract_nd_f32(lo, hi, 0, &d->op);
  } else {
    s = xnn_create_multiply_nd_f32(lo, hi, 0, &d->op);
  }
  if (Status(d, s, "xnn_create_*_nd_f32") != kTfLiteOk) return kTfLiteError;
  d->prepared = true;
  return kTfLiteOk;
}

// -------------------------------------------------------------------------------- PRELU
TfLiteStatus PreluPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  cm::TempTensors tt(ctx);
  OpData* d = nullptr;
  const TfLiteTensor *in = nullptr, *out = nullptr;
  if (Begin(node, tt, 2, 2, false, &d, &in, &out) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* alpha = tt.Input(node, 1);
  if (CheckConstFloat(d, alpha, "alpha") != kTfLiteOk) return kTfLiteError;
  X_ENSURE(d, cm::Rank(in) >= 1 && cm::Rank(alpha) >= 1, "input and alpha need rank >= 1");
  const int c = in->dims->data[cm::Rank(in) - 1];
  std::size_t na = 0, n = 0, no = 0;
  cm::NumElements(alpha->dims, &na);
  cm::NumElements(in->dims, &n);
  cm::NumElements(out->dims, &no);
  X_ENSURE(d, c >= 1 && na == static_cast<std::size_t>(c) &&
                  alpha->dims->data[cm::Rank(alpha) - 1] == c,
           "alpha must hold one slope per channel of the last axis (%d)", c);
  X_ENSURE(d, no == n, "output size differs from the input's");
  const xnn_status s = xnn_create_prelu_nc_f32(static_cast<size_t>(c), static_cast<size_t>(c),
                                               static_cast<size_t>(c), alpha->data.f, 0, &d->op);
  if (Status(d, s, "xnn_create_prelu_nc_f32") != kTfLiteOk) return kTfLiteError;
  d->batch = n / static_cast<std::size_t>(c);
  d->prepared = true;
  return kTfLiteOk;
}

// ---------------------------------------------------------------------------------- PAD
TfLiteStatus PadPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  cm::TempTensors tt(ctx);
  OpData* d = nullptr;
  const TfLiteTensor *in = nullptr, *out = nullptr;
  if (Begin(node, tt, 2, 2, false, &d, &in, &out) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* pads = tt.Input(node, 1);
  if (CheckConstInt32(d, pads, "paddings") != kTfLiteOk) return kTfLiteError;
  X_ENSURE(d, ShapeOf(in, &d->rank0, d->shape0), "input of rank > %d not supported", kMaxDims);
  X_ENSURE(d, cm::Rank(pads) == 2 && pads->dims->data[0] == cm::Rank(in) &&
                  pads->dims->data[1] == 2 && cm::HasBytes(pads, 2u * d->rank0, 4u),
           "paddings must be [rank, 2]");
  int want[kMaxDims];
  for (std::size_t i = 0; i < d->rank0; ++i) {
    const int32_t b = pads->data.i32[2 * i], e = pads->data.i32[2 * i + 1];
    X_ENSURE(d, b >= 0 && e >= 0 && b <= (1 << 20) && e <= (1 << 20), "bad padding");
    d->pre[i] = static_cast<std::size_t>(b);
    d->post[i] = static_cast<std::size_t>(e);
    want[i] = static_cast<int>(d->shape0[i] + d->pre[i] + d->post[i]);
  }
  X_ENSURE(d, cm::SameDims(out->dims, want, static_cast<int>(d->rank0)),
           "output shape does not match input + paddings");
  const uint32_t zero = 0;
  const xnn_status s = xnn_create_constant_pad_nd_x32(&zero, 0, &d->op);
  if (Status(d, s, "xnn_create_constant_pad_nd_x32") != kTfLiteOk) return kTfLiteError;
  d->prepared = true;
  return kTfLiteOk;
}

// ---------------------------------------------------------------------------------- ABS
TfLiteStatus AbsPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  cm::TempTensors tt(ctx);
  OpData* d = nullptr;
  const TfLiteTensor *in = nullptr, *out = nullptr;
  if (Begin(node, tt, 1, 1, false, &d, &in, &out) != kTfLiteOk) {
    return kTfLiteError;
  }
  std::size_t n = 0, no = 0;
  cm::NumElements(in->dims, &n);
  cm::NumElements(out->dims, &no);
  X_ENSURE(d, n == no && n >= 1, "output size differs from the input's");
  // One row of n values.
  const xnn_status s = xnn_create_abs_nc_f32(n, n, n, 0, &d->op);
  if (Status(d, s, "xnn_create_abs_nc_f32") != kTfLiteOk) return kTfLiteError;
  d->batch = 1;
  d->prepared = true;
  return kTfLiteOk;
}

// --------------------------------------------------------------------------------- MEAN
// Reduced axes must be one contiguous run [a, b] of the input's axes: [outer, W, C] with
// outer = prod(dims < a), W = prod(dims a..b), C = prod(dims > b) is then a global average
// pooling (NWC) of batch `outer`, width W, C channels.
TfLiteStatus MeanPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  cm::TempTensors tt(ctx);
  OpData* d = nullptr;
  const TfLiteTensor *in = nullptr, *out = nullptr;
  if (Begin(node, tt, 2, 2, false, &d, &in, &out) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* axes = tt.Input(node, 1);
  if (CheckConstInt32(d, axes, "axes") != kTfLiteOk) return kTfLiteError;
  const int rank = cm::Rank(in);
  std::size_t na = 0;
  X_ENSURE(d, rank >= 1 && rank <= kMaxDims && cm::NumElements(axes->dims, &na) &&
                  cm::HasBytes(axes, na, 4u) && na >= 1,
           "bad input rank or axes");
  bool reduced[kMaxDims] = {};
  for (std::size_t i = 0; i < na; ++i) {
    int a = axes->data.i32[i];
    if (a < 0) a += rank;
    X_ENSURE(d, a >= 0 && a < rank, "axis %d out of range", axes->data.i32[i]);
    reduced[a] = true;
  }
  int first = -1, last = -1;
  for (int i = 0; i < rank; ++i) {
    if (reduced[i]) {
      if (first < 0) first = i;
      last = i;
    }
  }
  for (int i = first; i <= last; ++i) {
    X_ENSURE(d, reduced[i], "reduced axes must be contiguous for the XNNPACK kernel");
  }
  std::size_t outer = 1, w = 1, c = 1;
  for (int i = 0; i < rank; ++i) {
    const std::size_t v = static_cast<std::size_t>(in->dims->data[i]);
    if (i < first) {
      outer *= v;
    } else if (i <= last) {
      w *= v;
    } else {
      c *= v;
    }
  }
  std::size_t no = 0;
  X_ENSURE(d, cm::NumElements(out->dims, &no) && no == outer * c && w >= 1,
           "output size does not match the reduction");
  const xnn_status s =
      xnn_create_global_average_pooling_nwc_f32(c, c, c, -INFINITY, INFINITY, 0, &d->op);
  if (Status(d, s, "xnn_create_global_average_pooling_nwc_f32") != kTfLiteOk) {
    return kTfLiteError;
  }
  d->batch = outer;
  d->width = w;
  d->prepared = true;
  return kTfLiteOk;
}

// ---------------------------------------------------------------------- AVERAGE_POOL_2D
// VALID windows only (and SAME where it pads nothing): TFLite averages a padded window over
// its valid pixels; the streaming exports' pool (the binary conv2's scale) is VALID.
TfLiteStatus AvgPoolPrepare(TfLiteContext* ctx, TfLiteNode* node) {
  cm::TempTensors tt(ctx);
  OpData* d = nullptr;
  const TfLiteTensor *in = nullptr, *out = nullptr;
  if (Begin(node, tt, 1, 1, true, &d, &in, &out) != kTfLiteOk) {
    return kTfLiteError;
  }
  X_ENSURE(d, cm::Rank(in) == 4 && cm::Rank(out) == 4, "input and output must have rank 4");
  const auto* p = static_cast<const TfLitePoolParams*>(node->builtin_data);
  float lo, hi;
  X_ENSURE(d, ActivationRange(p->activation, &lo, &hi), "fused activation %d not supported",
           static_cast<int>(p->activation));
  const int* id = in->dims->data;
  int oh, ow, top, bottom, left, right;
  X_ENSURE(d, SpatialPadding(p->padding, id[1], p->filter_height, p->stride_height, 1, &oh,
                             &top, &bottom) &&
                  SpatialPadding(p->padding, id[2], p->filter_width, p->stride_width, 1, &ow,
                                 &left, &right),
           "unsupported padding / strides / sizes");
  X_ENSURE(d, top == 0 && bottom == 0 && left == 0 && right == 0,
           "padded windows not taken (TFLite averages them over their valid pixels)");
  X_ENSURE(d, p->filter_height * p->filter_width > 1, "a 1x1 pool is not taken");
  const int want[4] = {id[0], oh, ow, id[3]};
  char a[96];
  X_ENSURE(d, cm::SameDims(out->dims, want, 4), "output shape %s, expected [%d, %d, %d, %d]",
           cm::ShapeString(out->dims, a, sizeof a), want[0], want[1], want[2], want[3]);
  const std::size_t c = static_cast<std::size_t>(id[3]);
  const xnn_status s = xnn_create_average_pooling2d_nhwc_f32(
      0, 0, 0, 0, static_cast<uint32_t>(p->filter_height), static_cast<uint32_t>(p->filter_width),
      static_cast<uint32_t>(p->stride_height), static_cast<uint32_t>(p->stride_width), c, c, c,
      lo, hi, 0, &d->op);
  if (Status(d, s, "xnn_create_average_pooling2d_nhwc_f32") != kTfLiteOk) return kTfLiteError;
  d->batch = static_cast<std::size_t>(id[0]);
  d->height = static_cast<std::size_t>(id[1]);
  d->width = static_cast<std::size_t>(id[2]);
  d->prepared = true;
  return kTfLiteOk;
}

// --------------------------------------------------------------------------------- Eval
TfLiteStatus Setup(OpData* d, const void* in0, const void* in1, void* out) {
  xnn_status s = xnn_status_success;
  const float* a = static_cast<const float*>(in0);
  float* o = static_cast<float*>(out);
  switch (d->kind) {
    case Kind::kConv:
      s = xnn_setup_convolution2d_nhwc_f32(d->op, d->batch, d->height, d->width, a, o, nullptr);
      break;
    case Kind::kFc:
      s = xnn_setup_fully_connected_nc_f32(d->op, d->batch, a, o, nullptr);
      break;
    case Kind::kBinary: {
      const float* b = static_cast<const float*>(in1);
      if (d->binary == Binary::kAdd) {
        s = xnn_setup_add_nd_f32(d->op, d->rank0, d->shape0, d->rank1, d->shape1, a, b, o,
                                 nullptr);
      } else if (d->binary == Binary::kSub) {
        s = xnn_setup_subtract_nd_f32(d->op, d->rank0, d->shape0, d->rank1, d->shape1, a, b, o,
                                      nullptr);
      } else {
        s = xnn_setup_multiply_nd_f32(d->op, d->rank0, d->shape0, d->rank1, d->shape1, a, b, o,
                                      nullptr);
      }
      break;
    }
    case Kind::kPrelu:
      s = xnn_setup_prelu_nc_f32(d->op, d->batch, a, o, nullptr);
      break;
    case Kind::kPad:
      s = xnn_setup_constant_pad_nd_x32(d->op, d->rank0, d->shape0, d->pre, d->post, in0, out,
                                        nullptr);
      break;
    case Kind::kAbs:
      s = xnn_setup_abs_nc_f32(d->op, d->batch, a, o, nullptr);
      break;
    case Kind::kMean:
      s = xnn_setup_global_average_pooling_nwc_f32(d->op, d->batch, d->width, a, o, nullptr);
      break;
    case Kind::kAvgPool:
      s = xnn_setup_average_pooling2d_nhwc_f32(d->op, d->batch, d->height, d->width, a, o,
                                               nullptr);
      break;
  }
  if (Status(d, s, "xnn_setup") != kTfLiteOk) return kTfLiteError;
  d->bound_in0 = in0;
  d->bound_in1 = in1;
  d->bound_out = out;
  return kTfLiteOk;
}

TfLiteStatus Eval(TfLiteContext* ctx, TfLiteNode* node) {
  auto* d = static_cast<OpData*>(node->user_data);
  if (d == nullptr || !d->prepared || d->op == nullptr) {
    MicroPrintf("XNNPACK kernel: Eval before a successful Prepare");
    return kTfLiteError;
  }
  const TfLiteEvalTensor* in0 = tflite::micro::GetEvalInput(ctx, node, 0);
  const TfLiteEvalTensor* in1 =
      d->kind == Kind::kBinary ? tflite::micro::GetEvalInput(ctx, node, 1) : nullptr;
  TfLiteEvalTensor* out = tflite::micro::GetEvalOutput(ctx, node, 0);
  X_ENSURE(d, in0 != nullptr && out != nullptr && (d->kind != Kind::kBinary || in1 != nullptr),
           "unallocated tensors");
  const void* p1 = in1 != nullptr ? in1->data.data : nullptr;
  if (in0->data.data != d->bound_in0 || p1 != d->bound_in1 || out->data.data != d->bound_out) {
    if (Setup(d, in0->data.data, p1, out->data.data) != kTfLiteOk) return kTfLiteError;
  }
  return Status(d, xnn_run_operator(d->op, nullptr), "xnn_run_operator");
}

// ------------------------------------------------------------------ allocator, registry
void* XAlloc(void*, size_t size) { return heap::Allocate(heap::Xnn(), size, 16); }
void* XRealloc(void*, void* p, size_t size) { return heap::Reallocate(heap::Xnn(), p, size); }
void XFree(void*, void* p) { heap::Free(heap::Xnn(), p); }
void* XAlignedAlloc(void*, size_t alignment, size_t size) {
  return heap::Allocate(heap::Xnn(), size, alignment);
}
void XAlignedFree(void*, void* p) { heap::Free(heap::Xnn(), p); }

constexpr char kConvName[] = "CONV_2D (XNNPACK)";
constexpr char kDwName[] = "DEPTHWISE_CONV_2D (XNNPACK)";
constexpr char kFcName[] = "FULLY_CONNECTED (XNNPACK)";
constexpr char kAddName[] = "ADD (XNNPACK)";
constexpr char kSubName[] = "SUB (XNNPACK)";
constexpr char kMulName[] = "MUL (XNNPACK)";
constexpr char kPreluName[] = "PRELU (XNNPACK)";
constexpr char kPadName[] = "PAD (XNNPACK)";
constexpr char kAbsName[] = "ABS (XNNPACK)";
constexpr char kMeanName[] = "MEAN (XNNPACK)";
constexpr char kAvgPoolName[] = "AVERAGE_POOL_2D (XNNPACK)";

// The float ops the firmware can run on XNNPACK: each one's Init (its name and kind) and Prepare;
// Eval and Free are common.
struct Entry {
  tflite::BuiltinOperator op;
  void* (*init)(TfLiteContext*, const char*, size_t);
  TfLiteStatus (*prepare)(TfLiteContext*, TfLiteNode*);
};

constexpr Entry kOps[] = {
    {tflite::BuiltinOperator_CONV_2D, Init<kConvName, Kind::kConv>, Conv2DPrepare},
    {tflite::BuiltinOperator_DEPTHWISE_CONV_2D, Init<kDwName, Kind::kConv>, DepthwisePrepare},
    {tflite::BuiltinOperator_FULLY_CONNECTED, Init<kFcName, Kind::kFc>, FcPrepare},
    {tflite::BuiltinOperator_ADD, Init<kAddName, Kind::kBinary, Binary::kAdd>, BinaryPrepare},
    {tflite::BuiltinOperator_SUB, Init<kSubName, Kind::kBinary, Binary::kSub>, BinaryPrepare},
    {tflite::BuiltinOperator_MUL, Init<kMulName, Kind::kBinary, Binary::kMul>, BinaryPrepare},
    {tflite::BuiltinOperator_PRELU, Init<kPreluName, Kind::kPrelu>, PreluPrepare},
    {tflite::BuiltinOperator_PAD, Init<kPadName, Kind::kPad>, PadPrepare},
    {tflite::BuiltinOperator_ABS, Init<kAbsName, Kind::kAbs>, AbsPrepare},
    {tflite::BuiltinOperator_MEAN, Init<kMeanName, Kind::kMean>, MeanPrepare},
    {tflite::BuiltinOperator_AVERAGE_POOL_2D, Init<kAvgPoolName, Kind::kAvgPool>, AvgPoolPrepare},
};

}  // namespace

bool Available() { return true; }

bool Initialize(std::string* error) {
  static const xnn_allocator allocator = {nullptr,       XAlloc, XRealloc, XFree,
                                          XAlignedAlloc, XAlignedFree};
  const xnn_status s = xnn_initialize(&allocator);
  if (s != xnn_status_success) {
    *error = "xnn_initialize failed (status " + std::to_string(static_cast<int>(s)) + ")";
    return false;
  }
  return true;
}

bool Registration(tflite::BuiltinOperator op, TFLMRegistration* out) {
  for (const Entry& e : kOps) {
    if (e.op == op) {
      *out = tflite::micro::RegisterOp(e.init, e.prepare, Eval, Free);
      return true;
    }
  }
  return false;
}

}  // namespace xnn
}  // namespace firmware

#else  // !FIRMWARE_HAVE_XNNPACK

namespace firmware {
namespace xnn {
bool Available() { return false; }
bool Initialize(std::string* error) {
  *error = "this firmware build has no XNNPACK (x86-64, or libxnnpack-dev:arm64 missing)";
  return false;
}
bool Registration(tflite::BuiltinOperator, TFLMRegistration*) { return false; }
}  // namespace xnn
}  // namespace firmware

#endif  // FIRMWARE_HAVE_XNNPACK
