"""Verify a .tflite before any interpreter (or Python flatbuffer reader) touches it.

Why: TensorFlow's and LCE's Python interpreters build an interpreter from bytes nobody
verified, and corrupted files killed the tools with signals: TFLite's loader
(``InterpreterBuilder::ParseTensors``, ``ParseQuantization``, ``ParseConv2D``,
``FlatBufferModel::ReadAllMetadata``) followed offsets and indices out of the buffer, the
XNNPACK delegate crashed partitioning a graph whose op reads its own output, and our own
``lce_kernels.ops.BDFSMN`` trusted a custom-options length of ~3.77 GB. The project's Python reader
(``models/lce_census.py``) raised ``struct.error`` / ``UnicodeDecodeError`` / ``IndexError``.

What is checked (in C++, ``lce_kernels/tflite/model_verify.cc``, the first code to read the
bytes; it never reads outside them):

* structure: the flatbuffers verifier generated from the TFLite schema
  (``tflite::VerifyModelBuffer``, pinned TFLM schema + flatbuffers v25.9.23) with bounded
  depth and table count, and the file identifier ``TFL3``;
* semantics the verifier cannot know: schema version 3; every operator's opcode index, every
  input / output / intermediate tensor index, subgraph inputs / outputs, tensor buffer indices,
  metadata and signature indices in range; shapes non-negative with a bounded size; constant
  buffers exactly elements x type size (and offset/size buffers inside the file); quantization
  scale / zero-point counts consistent with each other and the quantized dimension, scales
  positive and finite, zero points inside the type's range; names valid UTF-8;
* what the TF 2.16 kernels need, each rule found by fuzzing a committed export into a crash
  (``lce_kernels/tflite/model_verify_ops.h``): builtin options of the type the opcode expects
  and present where zero defaults are divided by (CONV_2D without options: SIGFPE), strides /
  dilations / sizes >= 1, operand counts (DEPTHWISE_CONV_2D without bias, SIGN without output:
  SIGSEGV), optional (-1) inputs only where the op accepts one (RESHAPE / PADV2 reading -1:
  SIGSEGV), quantized ADD / SUB scales TFLite can turn into multipliers (else SIGABRT);
* custom ops (names, inputs and option keys: ``lce_kernels/core/op_contract.h``, twin of
  ``lce_kernels/ops.py``): ``ops.BDFSMN`` options a verified FlexBuffers map with its five
  integers; LCE's ops (``lce_kernels/tflite/lce_ops_options.h``) one output, no missing
  required input, ``ops.BCONV2D`` / ``ops.BMAXPOOL2D`` options a verified map with every key
  their kernels read (a binary conv without options crashed LCE's interpreter);
* the graph in execution order (no operator reads a tensor that it or a later operator writes,
  no tensor written twice or written although it is a constant or a subgraph input) and no
  subgraph recursion;
* the model's description (metadata ``bkws.description``, ``pipeline/tflite_metadata.py``), if
  it has one: at most one entry, a non-empty buffer of at most 64 KiB holding a JSON object
  (flatbuffers' own JSON parser, strict mode) whose ``labels`` are as many strings as the
  first output has logits. Then, in Python, ``tflite_metadata.read_verified`` validates every
  field of it (``DescriptionError``, a ModelError, naming the field).

    from pipeline.model_verify import verify_model, verify_file, ModelError
    verify_model(data, "model.tflite")   # raises ModelError("model.tflite is not a valid ...")

The library ``lce_kernels/build/libtflite_verify.so`` is built with
``make -C lce_kernels build/libtflite_verify.so`` on first use if it is missing
(``VerifierLibraryError`` if that fails, e.g. offline without the pinned sources).
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_DIR = os.path.join(ROOT, "lce_kernels")
VERIFY_LIB = os.path.join(KERNEL_DIR, "build", "libtflite_verify.so")
_ERR_SIZE = 1024

_lock = threading.Lock()
_loaded = {}


class ModelError(ValueError):
    """A model file that is damaged or not a TFLite model this project can run safely."""


class VerifierLibraryError(RuntimeError):
    """The verifier library is missing and cannot be built or loaded."""


def library(path: str = VERIFY_LIB, build: bool = True):
    """The loaded verifier library (built with make on first use when ``build``)."""
    with _lock:
        if path in _loaded:
            return _loaded[path]
        if not os.path.exists(path):
            if not build:
                raise VerifierLibraryError(
                    f"{path} does not exist (build it: make -C {KERNEL_DIR} verify)")
            target = os.path.relpath(path, KERNEL_DIR)
            try:
                proc = subprocess.run(["make", "-C", KERNEL_DIR, target], capture_output=True,
                                      text=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise VerifierLibraryError(
                    f"cannot build {path}: make -C {KERNEL_DIR} {target}: {e}") from e
            if proc.returncode != 0 or not os.path.exists(path):
                raise VerifierLibraryError(
                    f"cannot build {path} (make -C {KERNEL_DIR} {target}, exit "
                    f"{proc.returncode}):\n" + (proc.stdout[-1500:] + proc.stderr[-1500:]).strip())
        try:
            lib = ctypes.CDLL(path)
            fn = lib.lce_verify_model
        except (OSError, AttributeError) as e:
            raise VerifierLibraryError(f"cannot load lce_verify_model from {path}: {e}") from e
        fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
        fn.restype = ctypes.c_int
        _loaded[path] = lib
        return lib


def problem(model_bytes) -> str | None:
    """The reason ``model_bytes`` is not a valid TFLite model, or None if it is."""
    data = bytes(model_bytes)
    err = ctypes.create_string_buffer(_ERR_SIZE)
    if library().lce_verify_model(data, len(data), err, _ERR_SIZE) == 0:
        return None
    return err.value.decode("utf-8", "replace") or "rejected by the verifier"


def verify_model(model_bytes, name: str):
    """Raise ``ModelError("<name> is not a valid TFLite model: <reason>")`` unless the bytes
    pass every check in this module's docstring. Returns the model's description (its
    ``bkws.description`` metadata, ``pipeline.tflite_metadata``), or None if it has none; a
    malformed one raises ``tflite_metadata.DescriptionError`` (a ModelError)."""
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise TypeError(f"verify_model expects bytes, got {type(model_bytes).__name__}")
    reason = problem(model_bytes)
    if reason is not None:
        raise ModelError(f"{name} is not a valid TFLite model: {reason}")
    from pipeline import tflite_metadata  # reads only verified bytes
    return tflite_metadata.read_verified(bytes(model_bytes), name)


def verify_file(path) -> bytes:
    """Read ``path``, verify it (``verify_model``) and return its bytes; ``ModelError`` also
    when the file cannot be read (missing, a directory, no permission)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"cannot read model {path}: {e.strerror or e}") from e
    verify_model(data, str(path))
    return data
