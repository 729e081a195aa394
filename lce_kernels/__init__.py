"""The project's ops: C++ kernels (core/), TFLite glue (tflite/) and, as in Larq Compute
Engine, the Python side of their runtime in the same package: ``lce_kernels.ops``, the one
Python statement of the op contract (names, operands, options, bit packing, op library)."""
