// Registration of the LceBDfsmn custom op, in the style of LCE's lce_ops_register.h.
//
// Inside LCE (Bazel, real TFLite headers, LCE_BDFSMN_USE_TFLITE_HEADERS defined by the
// :bdfsmn_op target): call RegisterBDfsmnOp(resolver) next to RegisterLCECustomOps(resolver),
// or add the AddCustom line below to RegisterLCECustomOps itself.
// Outside (Python's InterpreterWithCustomOps): use the exported C symbol
// LceBDfsmnRegisterer from libbdfsmn_op.so (see bdfsmn_op.cc).
#ifndef LCE_KERNELS_TFLITE_BDFSMN_REGISTER_H_
#define LCE_KERNELS_TFLITE_BDFSMN_REGISTER_H_

#if defined(LCE_BDFSMN_USE_TFLITE_HEADERS)
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/mutable_op_resolver.h"
#else
#include "tflite_abi.h"
#endif

namespace compute_engine {
namespace tflite {

TfLiteRegistration* Register_BDFSMN();

inline void RegisterBDfsmnOp(::tflite::MutableOpResolver* resolver) {
  resolver->AddCustom("LceBDfsmn", compute_engine::tflite::Register_BDFSMN());
}

}  // namespace tflite
}  // namespace compute_engine

#endif  // LCE_KERNELS_TFLITE_BDFSMN_REGISTER_H_
