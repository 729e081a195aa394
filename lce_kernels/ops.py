"""THE Python statement of the project's op contract (its C++ twin: lce_kernels/core/op_contract.h).

Every Python file of the project takes op names, input order, option keys and their encoding,
bit packing, the op library and its registerers, and the op-level flatbuffer helpers from
here; no other Python file spells an op name (tests/test_op_contract.py checks it).

Ops (TFLite custom ops; every one registered by ``lce_kernels/tflite/lce_ops_register.h``,
reached from Python through the op library ``build/libbdfsmn_op.so``, ``registerer()``):

===============  ===============================================  ==========================
op               inputs (in order)                                options (FlexBuffers map)
===============  ===============================================  ==========================
LceBDfsmn        x, mem_w, mem_p, pw1_w, pw1_t, pw1_p, pw2_w,     channels, hidden, left,
                 pw2_t, pw2_p (streaming: + state; outputs out,   right, dilation (ints)
                 new_state)
LceQuantize      x                                                none
LceDequantize    x                                                none
LceBconv2d       input, filter, post_activation_multiplier,       the eight ints of LCE
                 post_activation_bias, output_threshold           0.16's converter
LceDualQuantize  x, thresholds (outputs: b1, b2, scale)           none
===============  ===============================================  ==========================

``LceBDfsmn`` (``BDFSMN``): one binary DFSMN layer of the student, bitwise. Inputs
(``BDfsmnInput``; all but ``x`` constant):

- ``x``      float32 [T, C] | [B, T, C] | [B, T, 1, C]; the output is float32 of x's shape;
- ``mem_w``  int32 [K, ceil(C/32)], K = left + right + 1: bit-packed signs of the memory taps;
- ``mem_p``  float32 [6, C], rows ``MEM_P_ROWS`` (t0, t1, t2, mul, bias, slope);
- ``pw1_w``  int32 [H, ceil(C/32)]; ``pw1_t`` float32 [2, C] (t0, t1); ``pw1_p`` float32
  [3, H] (mul, bias, slope);
- ``pw2_w``  int32 [C, ceil(H/32)]; ``pw2_t`` float32 [2, H]; ``pw2_p`` float32 [3, C].

Streaming form (one hop of a stream, ``right`` = 0): a tenth input ``state`` float32 of x's
rank, [S, C] / [B, S, C] / [B, S, 1, C] with S = left * dilation (``BDFSMN_STATE_INPUT``), the
memory block's inputs a of the S frames before x (zeros at reset), and a second output
``new_state`` of the state's shape (``BDFSMN_OUTPUTS``): the layer of ``models.streaming``, math
in ``lce_kernels/core/bdfsmn.h`` (``Layer::EvalStream``) and ``pipeline.kernel_ref.layer_stream``.

Options: a FlexBuffers map (``flatbuffers.flexbuffers``, as LCE's converter writes its ops')
of the five ints ``BDFSMN_OPTION_KEYS``. The math the op computes, and the folding of the
Keras layer's parameters into these operands (BatchNorm, the t2 constant, the per-channel
weight scale), are written out in lce_kernels/README.md ("Layer math as implemented");
``models.dfsmn.DFSMNLayer.folded_params`` folds a Keras layer, ``bdfsmn_inputs`` turns the
folded parameters into the eight constant operands, and the independent NumPy reference
``pipeline.kernel_ref`` (the test oracle) folds raw parameters on its own.

``LceQuantize`` / ``LceDequantize`` / ``LceBconv2d``: larq-compute-engine 0.16's ops as its
converter emits them (lce_kernels/README.md, "LCE-compatible ops"), with LCE's input order
(``BConv2dInput``) and option keys (``BCONV2D_OPTION_KEYS``, enums ``PADDING`` and
``FUSED_ACTIVATION``). ``LceBMaxPool2d`` (``BMAXPOOL2D``) is LCE's too: the project does not
implement it; the model verifier knows its options.

``LceDualQuantize`` (``DUAL_QUANTIZE``): the project's dual-scale binarization of an activation
(``models.dual_scale.DualScaleActivation``) as one op, where LCE's converter emits a chain of
eight (SUB, ``QUANTIZE``, ``DEQUANTIZE``, SUB, SUB, ABS, MEAN, ``QUANTIZE``). Inputs
(``DualQuantizeInput``): ``x`` float32 [B, ..., C] (rank 2 to 4) and ``thresholds`` float32
[2, C] (constant; rows ``THRESH_ROWS``: t0, t1). Outputs (``DualQuantizeOutput``)::

    b1 = pack(x - t0 < 0)                 int32 [B, ..., ceil(C/32)]   (bit 1: -1)
    r  = (x - v1) - t1, v1 = b1 ? -1 : +1  (float32, in this order, as the converter's SUBs)
    b2 = pack(r < 0)                      int32 [B, ..., ceil(C/32)]
    s  = mean |r| over the reduced axes   float32, x's rank

``s``'s shape says which axes are averaged: its last dim is 1 (channels always reduced), its
first is x's batch, every other dim either x's (kept) or 1 (reduced), e.g. [B, T, F, 1] per
position (1x1 convs) or [B, 1, 1, 1] per sample (the 5x5 conv2). No options. Bits are exact;
``s`` is float32 rounding of the mean (summation order free).

Bit packing (LCE's bit-packed int32 layout): channel c is bit c % 32 of word c // 32 (LSB
first), bit 1 means -1 (sign(0) = +1), rows padded to whole 32-bit words with zero pad bits
(``pack_bits`` / ``unpack_bits``).

Only NumPy is imported at module load (``pipeline.kernel_ref`` stays TensorFlow-free);
``flatbuffers`` and the TFLite schema module are imported when a helper needs them.
"""
from __future__ import annotations

import ctypes
import enum
import os
import subprocess

import numpy as np

# -- op names (custom codes) ---------------------------------------------------------------------
BDFSMN = "LceBDfsmn"
QUANTIZE = "LceQuantize"
DEQUANTIZE = "LceDequantize"
BCONV2D = "LceBconv2d"
DUAL_QUANTIZE = "LceDualQuantize"
#: the ops the project's registerer provides, in registration order (op_contract.h PROJECT_OPS)
ALL_OPS = (QUANTIZE, DEQUANTIZE, BCONV2D, BDFSMN, DUAL_QUANTIZE)
#: Larq Compute Engine's own ops among them (LCE's interpreter runs these)
LCE_OPS = (QUANTIZE, DEQUANTIZE, BCONV2D)
#: the project's own ops (no LCE runtime has them: a model holding one needs the project's
#: registerer, ``registerer()``)
OWN_OPS = (BDFSMN, DUAL_QUANTIZE)
#: LCE's binary max pool: not implemented here, only checked by the model verifier
BMAXPOOL2D = "LceBMaxPool2d"
#: every LCE op's custom code starts with this
LCE_PREFIX = "Lce"


def is_lce_op(name) -> bool:
    """True for an op of Larq Compute Engine (needs LCE's runtime or the project's registerer);
    the project's own ops (``OWN_OPS``) are not."""
    return isinstance(name, str) and name.startswith(LCE_PREFIX) and name not in OWN_OPS


# -- bit packing --------------------------------------------------------------------------------
BITS_PER_WORD = 32


def packed_words(n: int) -> int:
    """32-bit words of a row of ``n`` bits."""
    return (int(n) + BITS_PER_WORD - 1) // BITS_PER_WORD


def pack_bits(neg, dtype=np.int32):
    """bool [..., n] (True = -1) -> words [..., ceil(n/32)], LSB first, zero pad bits, as
    ``dtype`` (int32: the tensors' type; np.uint32: the same bits unsigned)."""
    neg = np.asarray(neg, dtype=bool)
    n = neg.shape[-1]
    words = packed_words(n)
    padded = np.zeros(neg.shape[:-1] + (words * BITS_PER_WORD,), dtype=np.uint64)
    padded[..., :n] = neg
    bits = padded.reshape(neg.shape[:-1] + (words, BITS_PER_WORD))
    packed = (bits << np.arange(BITS_PER_WORD, dtype=np.uint64)).sum(axis=-1).astype(np.uint32)
    return packed.view(np.dtype(dtype))


def unpack_bits(words, n):
    """words [..., w] (int32 or uint32) -> bool [..., n] (True = -1); pad bits ignored."""
    w = np.asarray(words)
    w = w.view(np.uint32) if w.dtype == np.int32 else w.astype(np.uint32)
    bits = (w[..., None] >> np.arange(BITS_PER_WORD, dtype=np.uint32)) & 1
    return bits.reshape(w.shape[:-1] + (-1,))[..., :n].astype(bool)


# -- LceBDfsmn: inputs, parameter rows, options --------------------------------------------------
class BDfsmnInput(enum.IntEnum):
    """Input order of ``BDFSMN`` (op_contract.h ``bdfsmn::Input``)."""
    X = 0
    MEM_W = 1
    MEM_P = 2
    PW1_W = 3
    PW1_T = 4
    PW1_P = 5
    PW2_W = 6
    PW2_T = 7
    PW2_P = 8


#: input names in order (also the exporter's tensor names: ``bdfsmn_tensor_name``)
BDFSMN_INPUTS = tuple(i.name.lower() for i in BDfsmnInput)
#: the bit-packed int32 weight inputs, and the float32 parameter-row inputs
BDFSMN_BIT_INPUTS = (BDfsmnInput.MEM_W, BDfsmnInput.PW1_W, BDfsmnInput.PW2_W)
BDFSMN_VECTOR_INPUTS = (BDfsmnInput.MEM_P, BDfsmnInput.PW1_T, BDfsmnInput.PW1_P,
                        BDfsmnInput.PW2_T, BDfsmnInput.PW2_P)
#: rows of mem_p; of pw1_t / pw2_t; of pw1_p / pw2_p
MEM_P_ROWS = ("t0", "t1", "t2", "mul", "bias", "slope")
THRESH_ROWS = ("t0", "t1")
PW_P_ROWS = ("mul", "bias", "slope")
BDFSMN_OPTION_KEYS = ("channels", "hidden", "left", "right", "dilation")
#: the streaming form's extra input (after the nine of ``BDfsmnInput``), its name, and the
#: streaming form's outputs (op_contract.h ``bdfsmn::kState``, ``kStateName``, ``kOutputNames``)
BDFSMN_STATE_INPUT = len(BDfsmnInput)
BDFSMN_STATE = "state"
BDFSMN_OUTPUTS = ("out", "new_state")


def bdfsmn_state_frames(left: int, dilation: int = 1) -> int:
    """Rows S of the streaming form's state: ``left * dilation``."""
    return int(left) * int(dilation)
#: tensor names of the exporter: ``{scope}/bdfsmn/{input name}`` and ``{scope}/bdfsmn/out``
TENSOR_TAG = "bdfsmn"


def bdfsmn_inputs(p):
    """The op's constant inputs 1..8, in input order, from the inference form ``p`` (a dict:
    ``mem_weights`` / ``pw1_weights`` / ``pw2_weights`` bit words (uint32 or int32, from
    ``pack_bits``) and the float vectors ``mem_t0`` ... ``pw2_slope``, as
    ``DFSMNLayer.folded_params`` and ``pipeline.kernel_ref.fold`` give them): int32 bit words,
    float32 parameter rows."""
    def words(a):
        a = np.asarray(a)
        return a if a.dtype == np.int32 else np.asarray(a, np.uint32).view(np.int32)

    def rows(prefix, names):
        return np.stack([np.asarray(p[f"{prefix}_{r}"], np.float32) for r in names])

    by_input = {
        BDfsmnInput.MEM_W: words(p["mem_weights"]),
        BDfsmnInput.MEM_P: rows("mem", MEM_P_ROWS),
        BDfsmnInput.PW1_W: words(p["pw1_weights"]),
        BDfsmnInput.PW1_T: rows("pw1", THRESH_ROWS),
        BDfsmnInput.PW1_P: rows("pw1", PW_P_ROWS),
        BDfsmnInput.PW2_W: words(p["pw2_weights"]),
        BDfsmnInput.PW2_T: rows("pw2", THRESH_ROWS),
        BDfsmnInput.PW2_P: rows("pw2", PW_P_ROWS),
    }
    return [by_input[i] for i in list(BDfsmnInput)[1:]]


def bdfsmn_options(channels, hidden, left, right, dilation, **extra) -> bytes:
    """custom_options of ``BDFSMN``: a FlexBuffers map of the five ints; ``extra`` adds (or
    replaces) entries as given (tests feed malformed ones)."""
    from flatbuffers import flexbuffers
    opts = dict(zip(BDFSMN_OPTION_KEYS, (int(channels), int(hidden), int(left), int(right),
                                         int(dilation))))
    opts.update(extra)
    return bytes(flexbuffers.Dumps(opts))


def read_options(options: bytes) -> dict:
    """A FlexBuffers map of ints (any op's custom_options here) -> {key: int}."""
    from flatbuffers import flexbuffers
    return {k: int(v) for k, v in flexbuffers.Loads(bytes(options)).items()}


# -- LceDualQuantize: inputs, outputs --------------------------------------------------------
class DualQuantizeInput(enum.IntEnum):
    """Input order of ``DUAL_QUANTIZE`` (op_contract.h ``dual_quantize::Input``)."""
    X = 0
    THRESHOLDS = 1  # float32 [2, C], rows THRESH_ROWS (t0, t1); constant


class DualQuantizeOutput(enum.IntEnum):
    """Output order of ``DUAL_QUANTIZE`` (op_contract.h ``dual_quantize::Output``)."""
    B1 = 0
    B2 = 1
    SCALE = 2


DUAL_QUANTIZE_INPUTS = tuple(i.name.lower() for i in DualQuantizeInput)
DUAL_QUANTIZE_OUTPUTS = tuple(o.name.lower() for o in DualQuantizeOutput)
#: tensor names of the exporter: ``{scope}/dual_quantize/thresholds``
TENSOR_TAG_DUAL = "dual_quantize"


def dual_quantize_scale_shape(x_shape, reduce_axes):
    """Shape of ``DUAL_QUANTIZE``'s ``s`` output for an ``x`` of ``x_shape`` averaged over
    ``reduce_axes`` (axes >= 1; the channel axis is always reduced)."""
    rank = len(x_shape)
    axes = {a % rank for a in reduce_axes} | {rank - 1}
    if 0 in axes:
        raise ValueError("the batch axis is never reduced")
    return [1 if a in axes else int(d) for a, d in enumerate(x_shape)]


# -- LceBconv2d / LceBMaxPool2d: inputs and options (LCE 0.16) -----------------------------------
class BConv2dInput(enum.IntEnum):
    """Input order of ``BCONV2D`` (op_contract.h ``bconv2d::Input``). Float output: multiplier
    and bias, no threshold (-1); bit-packed output: threshold, no multiplier / bias (-1)."""
    INPUT = 0
    FILTER = 1
    POST_ACTIVATION_MULTIPLIER = 2
    POST_ACTIVATION_BIAS = 3
    OUTPUT_THRESHOLD = 4


BCONV2D_INPUTS = tuple(i.name.lower() for i in BConv2dInput)
BCONV2D_BIT_INPUTS = (BConv2dInput.FILTER,)
BCONV2D_VECTOR_INPUTS = (BConv2dInput.POST_ACTIVATION_MULTIPLIER,
                         BConv2dInput.POST_ACTIVATION_BIAS, BConv2dInput.OUTPUT_THRESHOLD)
BCONV2D_OPTION_KEYS = ("stride_height", "stride_width", "dilation_height_factor",
                       "dilation_width_factor", "padding", "pad_values", "channels_in",
                       "fused_activation_function")
BMAXPOOL2D_OPTION_KEYS = ("filter_height", "filter_width", "stride_height", "stride_width",
                          "padding")
#: the TFLite schema's enums as LCE's options hold them (TANH / SIGN_BIT: not supported by
#: the project's BCONV2D, which fails Prepare naming them)
PADDING = {"SAME": 0, "VALID": 1}
FUSED_ACTIVATION = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4,
                    "SIGN_BIT": 5}


def bconv2d_options(cin, stride=(1, 1), dilation=(1, 1), padding="VALID",
                    pad_values=1, activation="NONE", drop=(), **override) -> bytes:
    """custom_options of ``BCONV2D`` as LCE's converter writes them (FlexBuffers map of
    ints; ``cin``: channels_in; ``padding`` / ``activation`` by name or value); ``override``
    replaces values by key (any key, ``channels_in`` too), ``drop`` leaves keys out
    (malformed-model tests)."""
    from flatbuffers import flexbuffers
    opts = {"channels_in": int(cin), "stride_height": int(stride[0]),
            "stride_width": int(stride[1]), "dilation_height_factor": int(dilation[0]),
            "dilation_width_factor": int(dilation[1]),
            "padding": PADDING.get(padding, padding), "pad_values": int(pad_values),
            "fused_activation_function": FUSED_ACTIVATION.get(activation, activation)}
    opts.update(override)
    return bytes(flexbuffers.Dumps({k: v for k, v in opts.items() if k not in drop}))


# -- the op library (build/libbdfsmn_op.so) and its registerers -----------------------------------
KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))
OP_LIB = os.path.join(KERNEL_DIR, "build", "libbdfsmn_op.so")
#: the same library built with ASan/UBSan (``make -C lce_kernels op-asan``)
ASAN_OP_LIB = os.path.join(KERNEL_DIR, "build", "asan", "libbdfsmn_op.so")
#: C registerers of the op library, one per kernel path, each registering EVERY op of
#: ``ALL_OPS`` through the one registration point (tflite/lce_ops_register.h; symbols in
#: tflite/lce_ops_capi.cc); the path is chosen by the registerer, never by the environment.
REGISTERERS = {"auto": "LceOpsRegisterer", "portable": "LceOpsRegistererPortable",
               "neon": "LceOpsRegistererNeon", "avx512": "LceOpsRegistererAvx512"}
REGISTERER = REGISTERERS["auto"]
#: ``LceOpsKernelPath(name)``: the path a registerer of that name runs here
KERNEL_PATH_FN = "LceOpsKernelPath"

_loaded = {}


class OpLibraryError(RuntimeError):
    """The project's op library is missing (or stale) and cannot be built / loaded."""


def _stale(path) -> bool:
    """True if a source of the op library (lce_kernels/core, lce_kernels/tflite but the
    model verifier's) is newer than the library at ``path``: it must be rebuilt before it is
    loaded (a process cannot reload a shared object it already loaded)."""
    built = os.path.getmtime(path)
    for sub in ("core", "tflite"):
        d = os.path.join(KERNEL_DIR, sub)
        for name in os.listdir(d) if os.path.isdir(d) else ():
            if (name.endswith((".h", ".cc")) and not name.startswith("model_verify")
                    and os.path.getmtime(os.path.join(d, name)) > built):
                return True
    return False


def op_library(path=OP_LIB, build=True):
    """Load (building it with ``make -C lce_kernels op`` if missing, or if it is the default
    library and older than its sources) the op library, with RTLD_GLOBAL so that
    InterpreterWithCustomOps finds the registerers (``REGISTERERS``) by name."""
    if path in _loaded:
        return _loaded[path]
    if not os.path.exists(path) or (build and path == OP_LIB and _stale(path)):
        if not build:
            raise OpLibraryError(f"{path} does not exist (build it: make -C {KERNEL_DIR} op)")
        try:
            proc = subprocess.run(["make", "-C", KERNEL_DIR, "op"], capture_output=True,
                                  text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise OpLibraryError(f"cannot build {path}: make -C {KERNEL_DIR} op: {e}") from e
        if proc.returncode != 0 or not os.path.exists(path):
            raise OpLibraryError(
                f"cannot build {path} (make -C {KERNEL_DIR} op, exit {proc.returncode}):\n"
                + (proc.stdout[-1500:] + proc.stderr[-1500:]).strip())
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        getattr(lib, REGISTERER)
    except (OSError, AttributeError) as e:
        raise OpLibraryError(f"cannot load {REGISTERER} from {path}: {e}") from e
    _loaded[path] = lib
    return lib


def loaded_libraries():
    """Paths of the op libraries this process has loaded (sorted)."""
    return sorted(_loaded)


def registerer(kernel="auto", path=OP_LIB) -> str:
    """The op library's registerer (a symbol name for InterpreterWithCustomOps'
    ``custom_op_registerers``) of every project op with kernel path ``kernel`` ("auto",
    "portable", "neon", "avx512"; a path the build or CPU lacks runs as portable). Loads /
    builds the library."""
    if kernel not in REGISTERERS:
        raise ValueError(f"kernel path {kernel!r}: expected one of {', '.join(REGISTERERS)}")
    lib = op_library(path)
    try:
        getattr(lib, REGISTERERS[kernel])
    except AttributeError as e:
        raise OpLibraryError(f"{path} has no {REGISTERERS[kernel]} (stale build? "
                             f"make -C {KERNEL_DIR} op): {e}") from e
    return REGISTERERS[kernel]


def registerers(path=OP_LIB, kernel="auto"):
    """``custom_op_registerers`` for InterpreterWithCustomOps (loads / builds the library):
    every op of ``ALL_OPS``, kernel path ``kernel``."""
    return [registerer(kernel, path)]


def kernel_path(kernel="auto", path=OP_LIB) -> str:
    """The kernel path the ops of registerer ``kernel`` run here ("avx512", "portable",
    "neon"), from the op library's ``KERNEL_PATH_FN``."""
    if kernel not in REGISTERERS:
        raise ValueError(f"kernel path {kernel!r}: expected one of {', '.join(REGISTERERS)}")
    fn = getattr(op_library(path), KERNEL_PATH_FN)
    fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_char_p]
    return fn(kernel.encode()).decode()


# -- op-level flatbuffer helpers (the TFLite schema's generated object API) -----------------------
def schema():
    """``tensorflow.lite.python.schema_py_generated`` (Keras 2 selected first, as ``models``
    does, in case this is the first TensorFlow import of the process)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from tensorflow.lite.python import schema_py_generated as S
    return S


def custom_code(code):
    """The custom code of an ``OperatorCodeT`` as str, or None for a builtin."""
    c = code.customCode
    if not c:
        return None
    return c.decode() if isinstance(c, (bytes, bytearray)) else str(c)


def custom_opcode(name):
    """An ``OperatorCodeT`` of the custom op ``name`` (version 1)."""
    S = schema()
    code = S.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.CUSTOM
    code.customCode, code.version = name, 1
    return code


def bdfsmn_tensor_name(scope, what):
    """Name of a ``BDFSMN`` operand / output tensor of layer ``scope`` (``what``: an input
    name of ``BDFSMN_INPUTS`` or "out")."""
    return f"{scope}/{TENSOR_TAG}/{what}"


def bdfsmn_scope(tensor_name):
    """The layer scope of a tensor named by ``bdfsmn_tensor_name`` (else the name itself)."""
    return tensor_name.split(f"/{TENSOR_TAG}/")[0]


class Graph:
    """Appends tensors / buffers / opcodes / ops to a ModelT's first subgraph."""

    def __init__(self, model):
        S = schema()
        self.S, self.m = S, model
        self.sg = model.subgraphs[0]
        if self.sg.tensors is None:
            self.sg.tensors = []
        if self.sg.operators is None:
            self.sg.operators = []
        if model.operatorCodes is None:
            model.operatorCodes = []
        if not model.buffers:
            model.buffers = [S.BufferT()]

    def opcode(self, code):
        """Index of ``code`` (OperatorCodeT) in the model's operator codes (appended if new)."""
        def key(c):
            return max(c.builtinCode, c.deprecatedBuiltinCode), custom_code(c), c.version

        for i, c in enumerate(self.m.operatorCodes):
            if key(c) == key(code):
                return i
        self.m.operatorCodes.append(code)
        return len(self.m.operatorCodes) - 1

    def custom_opcode(self, name):
        return self.opcode(custom_opcode(name))

    def buffer(self, data=None):
        b = self.S.BufferT()
        if data is not None:
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8).copy()
        self.m.buffers.append(b)
        return len(self.m.buffers) - 1

    def tensor(self, name, shape, dtype, data=None):
        S = self.S
        t = S.TensorT()
        t.name, t.shape = name, list(int(s) for s in shape)
        t.type = {np.dtype(np.float32): S.TensorType.FLOAT32,
                  np.dtype(np.int32): S.TensorType.INT32}[np.dtype(dtype)]
        t.buffer = self.buffer(data) if data is not None else 0
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def add_bdfsmn(self, x, scope, inputs, options, state=None):
        """One ``BDFSMN`` op on tensor index x (constant ``inputs`` 1..8, custom ``options``)
        appended to the subgraph; returns its output tensor index. ``state``: a tensor index,
        the streaming form (input ``BDFSMN_STATE_INPUT``; a second output ``new_state`` of the
        state's shape is added)."""
        S = self.S
        shape = list(self.sg.tensors[x].shape)
        ins = [x] + [self.tensor(bdfsmn_tensor_name(scope, n), a.shape, a.dtype, a)
                     for n, a in zip(BDFSMN_INPUTS[1:], inputs)]
        out = self.tensor(bdfsmn_tensor_name(scope, "out"), shape, np.float32)
        outs = [out]
        if state is not None:
            ins.append(state)
            outs.append(self.tensor(bdfsmn_tensor_name(scope, BDFSMN_OUTPUTS[1]),
                                    list(self.sg.tensors[state].shape), np.float32))
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.custom_opcode(BDFSMN), ins, outs
        op.customOptions = np.frombuffer(options, np.uint8).copy()
        op.customOptionsFormat = S.CustomOptionsFormat.FLEXBUFFERS
        self.sg.operators.append(op)
        return out

    def append_subgraph(self, other, input_map):
        """Append the first subgraph of ModelT ``other``; its tensors named in ``input_map``
        (other's index -> our index) are replaced. Returns other's tensor index -> ours."""
        osg = other.subgraphs[0]
        bmap = {0: 0}
        tmap = dict(input_map)
        for i, t in enumerate(osg.tensors):
            if i in tmap:
                continue
            if t.buffer not in bmap:
                ob = other.buffers[t.buffer]
                if ob.data is not None and len(ob.data):
                    self.m.buffers.append(ob)
                    bmap[t.buffer] = len(self.m.buffers) - 1
                else:
                    bmap[t.buffer] = self.buffer()
            t.buffer = bmap[t.buffer]
            self.sg.tensors.append(t)
            tmap[i] = len(self.sg.tensors) - 1
        for op in osg.operators or []:
            op.opcodeIndex = self.opcode(other.operatorCodes[op.opcodeIndex])
            op.inputs = [tmap[int(i)] if i >= 0 else -1 for i in op.inputs]
            op.outputs = [tmap[int(i)] for i in op.outputs]
            if op.intermediates is not None:
                op.intermediates = [tmap[int(i)] for i in op.intermediates]
            self.sg.operators.append(op)
        return tmap


def bdfsmn_model(x_shape, params, options, const_inputs=True, state_shape=None,
                 new_state_shape=None):
    """A ModelT with one subgraph holding one ``BDFSMN`` op (serialize it with
    ``pipeline.tflite_metadata.write_model``).

    x_shape: input shape (e.g. (B, T, 1, C)); params: the 8 arrays of ``bdfsmn_inputs`` (any
    dtype float32/int32, any shape: malformed ones are allowed on purpose); options: bytes
    (empty / None: no custom_options). const_inputs=False makes the parameters graph inputs
    instead of constants. ``state_shape``: the streaming form (graph input 1 ``state``, output
    1 ``new_state`` of ``new_state_shape``, default the state's)."""
    S = schema()
    ttype = {np.dtype(np.float32): S.TensorType.FLOAT32, np.dtype(np.int32): S.TensorType.INT32}
    buffers = [S.BufferT()]
    tensors = []

    def add(name, shape, dtype, data=None):
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), ttype[np.dtype(dtype)], 0
        if data is not None:
            b = S.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            buffers.append(b)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    inputs = [add(BDFSMN_INPUTS[0], x_shape, np.float32)]
    for name, arr in zip(BDFSMN_INPUTS[1:], params):
        arr = np.asarray(arr)
        inputs.append(add(name, arr.shape, arr.dtype, arr if const_inputs else None))
    outs = [add("y", x_shape, np.float32)]
    if state_shape is not None:
        inputs.append(add(BDFSMN_STATE, state_shape, np.float32))
        outs.append(add(BDFSMN_OUTPUTS[1], state_shape if new_state_shape is None
                        else new_state_shape, np.float32))

    op = S.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, inputs, outs
    op.customOptions = np.frombuffer(options, np.uint8).copy() if options else None
    op.customOptionsFormat = S.CustomOptionsFormat.FLEXBUFFERS
    sg = S.SubGraphT()
    sg.tensors, sg.operators, sg.name = tensors, [op], "main"
    sg.inputs = inputs if not const_inputs else (
        [inputs[0]] + ([inputs[-1]] if state_shape is not None else []))
    sg.outputs = outs
    model = S.ModelT()
    model.version, model.description = 3, f"{BDFSMN} test model"
    model.operatorCodes, model.subgraphs, model.buffers = [custom_opcode(BDFSMN)], [sg], buffers
    return model


def extract_bdfsmn_layers(flatbuffer: bytes):
    """([(scope, inputs, options)], input shape) of the ``BDFSMN`` ops of a model (subgraph
    0): the constant inputs 1..8 as arrays and the custom_options bytes, e.g. to rebuild a
    backbone-only model from an export. Only for bytes this project wrote or verified."""
    S = schema()
    m = S.Model.GetRootAs(bytearray(flatbuffer), 0)
    sg = m.Subgraphs(0)
    names = []
    for i in range(m.OperatorCodesLength()):
        c = m.OperatorCodes(i).CustomCode()
        names.append(c.decode() if c else None)
    types = {S.TensorType.FLOAT32: np.float32, S.TensorType.INT32: np.int32}
    layers, x_shape = [], None
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        if names[op.OpcodeIndex()] != BDFSMN:
            continue
        idx = list(op.InputsAsNumpy())
        if x_shape is None:
            x_shape = list(sg.Tensors(idx[BDfsmnInput.X]).ShapeAsNumpy())
        arrays = []
        for t_i in idx[1:]:
            t = sg.Tensors(int(t_i))
            data = m.Buffers(t.Buffer()).DataAsNumpy()
            arrays.append(np.frombuffer(data.tobytes(), types[t.Type()]).reshape(
                t.ShapeAsNumpy()).copy())
        scope = bdfsmn_scope(sg.Tensors(int(idx[BDfsmnInput.MEM_W])).Name().decode())
        layers.append((scope, arrays, bytes(op.CustomOptionsAsNumpy().tobytes())))
    return layers, x_shape
