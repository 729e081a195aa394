// Verification of a .tflite flatbuffer BEFORE any interpreter is built from it.
//
// TFLite's Python interpreter (and LCE's) build an interpreter from bytes nobody verified:
// corrupted files crashed InterpreterBuilder::ParseTensors / ParseQuantization / ParseConv2D,
// FlatBufferModel::ReadAllMetadata, the XNNPACK delegate's partitioning (an op reading its own
// output) and our own op's Init (a custom_options length of ~3.77 GB). VerifyModel is the
// first code to touch the bytes and never reads outside them:
//   1. structure: the generated flatbuffers verifier of the TFLite schema
//      (tflite::VerifyModelBuffer semantics, tensorflow/lite/schema/schema_generated.h of the
//      pinned TFLM revision, flatbuffers v25.9.23) with bounded depth / table count and the
//      file identifier "TFL3";
//   2. semantics the verifier cannot know, each failure naming subgraph / operator / tensor:
//      schema version, opcode and tensor / buffer / subgraph indices, shapes and element
//      counts, constant buffer sizes (inline or at an offset inside the file), quantization
//      array lengths and ranges, metadata and signature entries (the model's description,
//      metadata 'bkws.description': strict JSON, parsed with flatbuffers' idl_parser, whose
//      "labels" count matches the first output's last dimension), strings that are valid
//      UTF-8 (Python decodes them), what the TF 2.16 kernels need (model_verify_ops.h:
//      options type and values, operand counts, where -1 inputs are allowed, quantized
//      ADD/SUB scales), LCE's and our custom ops' FlexBuffers options (lce_ops_options.h,
//      bdfsmn_options.h), and the graph order: no operator reads a tensor that it or a
//      later operator writes, no tensor has two writers, constants and subgraph inputs are
//      never written, no subgraph recursion.
#ifndef LCE_KERNELS_TFLITE_MODEL_VERIFY_H_
#define LCE_KERNELS_TFLITE_MODEL_VERIFY_H_

#include <cstddef>
#include <cstdint>

#ifdef __cplusplus
#include <string>

namespace compute_engine {
namespace tflite {

// True if [data, data + size) is a TFLite model this project may hand to an interpreter;
// otherwise false with a one-line reason in *error.
bool VerifyModel(const std::uint8_t* data, std::size_t size, std::string* error);

}  // namespace tflite
}  // namespace compute_engine

extern "C" {
#endif

// C entry point (ctypes: pipeline/model_verify.py). Returns 0 if the model is valid, 1 if
// it is not (reason, NUL-terminated and truncated to err_size, in err when err_size > 0).
int lce_verify_model(const uint8_t* data, size_t size, char* err, size_t err_size);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // LCE_KERNELS_TFLITE_MODEL_VERIFY_H_
