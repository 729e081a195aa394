"""The `bdfsmn` export: every binary DFSMN layer as ONE `LceBDfsmn` custom op, the rest builtin.

Why this construction (see lce_kernels/README.md for the op itself):

* No prebuilt Python runtime runs LCE ops (LceBconv2d...) and our own custom op in one
  model, so the model must hold only BUILTIN ops besides `LceBDfsmn`; TensorFlow's
  ``InterpreterWithCustomOps`` then runs it with ``LceBDfsmnRegisterer`` from
  ``lce_kernels/build/libbdfsmn_op.so``.
* The front end (conv1, binary conv2, binary linear) and the classifier are converted with
  the PLAIN ``tf.lite.TFLiteConverter`` from the Keras student itself in inference mode: the
  Keras binary layers are already float ops computing the exact trained function (larq's
  sign -> SIGN, the dual-scale planes and scale -> SUB/ABS/MEAN/MUL/ADD, the quantized
  kernel sign(w)*mean|w| constant-folded into a float CONV_2D kernel, pad value 1 for the
  5x5 conv -> PAD). No LCE converter is involved, so no Lce* op appears.
* The custom ops are SPLICED in with the flatbuffer schema module
  (``tensorflow.lite.python.schema_py_generated`` object API + ``flatbuffers``): front end
  subgraph, then one `LceBDfsmn` per active DFSMN layer (bit-packed int32 weights, float
  per-channel vectors, FlexBuffers options: exactly ``pipeline/kernel_ref.op_inputs/op_options``),
  then the classifier subgraph with its input tensor replaced by the last layer's output.
  The alternative (a TF op the converter cannot lower, emitted as a custom op of the same
  name with ``allow_custom_ops=True``) would still need a flatbuffer rewrite (the emitted
  op carries a TF NodeDef as options and graph inputs, not our constants and FlexBuffers
  map), and keeping an opaque placeholder alive through the converter's optimisations is
  fragile; two plain conversions + one deterministic merge are simpler and testable.

Parameter folding (BN, t2 constant, per-channel weight scale) is the README's; the same code
as ``pipeline/kernel_ref.fold`` (a test checks both give identical arrays).
"""
from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np

# the schema's object API, read and written with constant data 16-byte aligned: one
# implementation for every tool that edits a flatbuffer (it lives with the model description)
from pipeline.tflite_metadata import read_model, write_model  # noqa: F401

OP_NAME = "LceBDfsmn"
#: C registerers of the op library, one per kernel path, each registering EVERY op of the
#: project (LceQuantize, LceDequantize, LceBconv2d, LceBDfsmn) through its one registration
#: point, lce_kernels/tflite/lce_ops_register.h (symbols: lce_kernels/tflite/lce_ops_capi.cc).
#: "auto" still honours the deprecated LCE_BDFSMN_PATH environment variable.
REGISTERERS = {"auto": "LceOpsRegisterer", "portable": "LceOpsRegistererPortable",
               "neon": "LceOpsRegistererNeon", "avx512": "LceOpsRegistererAvx512"}
REGISTERER = REGISTERERS["auto"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_DIR = os.path.join(ROOT, "lce_kernels")
OP_LIB = os.path.join(KERNEL_DIR, "build", "libbdfsmn_op.so")
EPS = 1e-5
NUM_DEPTHS = 4
OP_INPUT_NAMES = ["x", "mem_w", "mem_p", "pw1_w", "pw1_t", "pw1_p", "pw2_w", "pw2_t", "pw2_p"]
OPTION_KEYS = ("channels", "hidden", "left", "right", "dilation")

_loaded = {}


class OpLibraryError(RuntimeError):
    """The project's op library is missing (or stale) and cannot be built / loaded."""


# -- the op library ----------------------------------------------------------------------------
def kernel_path(path=OP_LIB) -> str:
    """The kernel path the op runs by default here ("avx512", "portable", "neon"; honours
    LCE_BDFSMN_PATH), from the op library's ``LceBDfsmnKernelPath``."""
    fn = op_library(path).LceBDfsmnKernelPath
    fn.restype = ctypes.c_char_p
    return fn().decode()


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
    every project op (LceQuantize, LceDequantize, LceBconv2d, LceBDfsmn), kernel path
    ``kernel``."""
    return [registerer(kernel, path)]


def has_bdfsmn_ops(flatbuffer: bytes) -> bool:
    from models.lce_census import has_bdfsmn_ops as has
    return has(flatbuffer)


# -- folding (README "folding"; = pipeline/kernel_ref.fold) ----------------------------------------
def pack_bits(neg):
    """bool [..., n] (True = -1) -> uint32 [..., ceil(n/32)], LSB first, zero pad bits."""
    neg = np.asarray(neg, dtype=bool)
    n = neg.shape[-1]
    words = (n + 31) // 32
    padded = np.zeros(neg.shape[:-1] + (words * 32,), dtype=np.uint64)
    padded[..., :n] = neg
    bits = padded.reshape(neg.shape[:-1] + (words, 32))
    return (bits << np.arange(32, dtype=np.uint64)).sum(axis=-1).astype(np.uint32)


def _sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def keras_params(model):
    """{variable name without ':0': float64 array} of a Keras model."""
    return {w.name.split(":")[0]: np.asarray(w.numpy(), np.float64) for w in model.weights}


def _bn(P, prefix, d):
    for key in (f"{prefix}/bn{d}", f"{prefix}/bn0", f"{prefix}/bn"):
        if f"{key}/gamma" in P:
            return {k: P[f"{key}/{k}"] for k in ("gamma", "beta", "moving_mean",
                                                  "moving_variance")}
    raise KeyError(f"no BatchNorm under {prefix}")


def fold_layer(P, j, d, eps=EPS):
    """Inference form of student layer j at depth index d (float64 vectors, uint32 words)."""
    pre = f"dfsmn/layer{j}"
    g_of = lambda bn: bn["gamma"] / np.sqrt(bn["moving_variance"] + eps)  # noqa: E731
    p = {}
    mw = P[f"{pre}/memory/dwconv/depthwise_kernel"][:, 0, :, 0]            # (K, C)
    mt = [P[f"{pre}/memory/dual_scale/threshold_t{i}"] for i in range(3)]
    mbn = _bn(P, f"{pre}/memory", d)
    g = g_of(mbn)
    p["mem_weights"] = pack_bits(mw < 0)
    p["mem_t0"], p["mem_t1"], p["mem_t2"] = mt
    p["mem_mul"] = g * np.mean(np.abs(mw), axis=0)
    p["mem_bias"] = mbn["beta"] - mbn["moving_mean"] * g
    p["mem_slope"] = P[f"{pre}/memory/act/alpha"].reshape(-1)
    for name, slope in (("pw1", P[f"{pre}/pw1_act/alpha"].reshape(-1)),
                        ("pw2", P[f"{pre}/act{d}/alpha"].reshape(-1))):
        w = P[f"{pre}/{name}/conv/kernel"][0, 0]                           # (in, out)
        t = [P[f"{pre}/{name}/dual_scale/threshold_t{i}"] for i in range(3)]
        bn = _bn(P, f"{pre}/{name}", d)
        g = g_of(bn)
        mul = g * np.mean(np.abs(w), axis=0)
        k = _sign(w).T @ t[2]
        p[f"{name}_weights"] = pack_bits((w < 0).T)
        p[f"{name}_t0"], p[f"{name}_t1"] = t[0], t[1]
        p[f"{name}_mul"] = mul
        p[f"{name}_bias"] = bn["beta"] - bn["moving_mean"] * g - mul * k
        p[f"{name}_slope"] = slope
    return p


def op_inputs(p):
    """The op's constant inputs 1..8 (int32 bit words, float32 parameter rows)."""
    f = lambda keys: np.stack([np.asarray(p[k], np.float32) for k in keys])  # noqa: E731
    return [
        np.asarray(p["mem_weights"], np.uint32).view(np.int32),
        f(["mem_t0", "mem_t1", "mem_t2", "mem_mul", "mem_bias", "mem_slope"]),
        np.asarray(p["pw1_weights"], np.uint32).view(np.int32),
        f(["pw1_t0", "pw1_t1"]),
        f(["pw1_mul", "pw1_bias", "pw1_slope"]),
        np.asarray(p["pw2_weights"], np.uint32).view(np.int32),
        f(["pw2_t0", "pw2_t1"]),
        f(["pw2_mul", "pw2_bias", "pw2_slope"]),
    ]


def op_options(channels, hidden, left, right, dilation, **extra):
    """custom_options: a FlexBuffers map (flatbuffers.flexbuffers, as LCE's converter) of the
    five int options; ``extra`` adds entries as given (tests feed malformed ones)."""
    from flatbuffers import flexbuffers
    opts = {"channels": int(channels), "hidden": int(hidden), "left": int(left),
            "right": int(right), "dilation": int(dilation), **extra}
    return bytes(flexbuffers.Dumps(opts))


def student_layers(model, depth, num_layers, channels, hidden, left, right, dilation):
    """[(scope, inputs, options)] of the DFSMN layers the student runs at ``depth``."""
    import models
    d = models.depth_index(depth, num_layers)
    P = keras_params(model)
    opts = op_options(channels, hidden, left, right, dilation)
    return [(f"dfsmn/layer{j}", op_inputs(fold_layer(P, j, d)), opts)
            for j in models.layer_set(d, num_layers)]


# -- flatbuffer surgery -------------------------------------------------------------------------
def _schema():
    from tensorflow.lite.python import schema_py_generated as S
    return S


class _Graph:
    """Appends tensors / buffers / opcodes / ops to a ModelT's first subgraph."""

    def __init__(self, model):
        S = _schema()
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
        key = (max(code.builtinCode, code.deprecatedBuiltinCode),
               code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode,
               code.version)
        for i, c in enumerate(self.m.operatorCodes):
            ck = (max(c.builtinCode, c.deprecatedBuiltinCode),
                  c.customCode.decode() if isinstance(c.customCode, bytes) else c.customCode,
                  c.version)
            if ck == key:
                return i
        self.m.operatorCodes.append(code)
        return len(self.m.operatorCodes) - 1

    def custom_opcode(self, name):
        S = self.S
        code = S.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.CUSTOM
        code.customCode, code.version = name, 1
        return self.opcode(code)

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

    def add_bdfsmn(self, x, scope, inputs, options):
        """One LceBDfsmn op on tensor index x; returns its output tensor index."""
        S = self.S
        shape = list(self.sg.tensors[x].shape)
        ins = [x] + [self.tensor(f"{scope}/bdfsmn/{n}", a.shape, a.dtype, a)
                     for n, a in zip(OP_INPUT_NAMES[1:], inputs)]
        out = self.tensor(f"{scope}/bdfsmn/out", shape, np.float32)
        op = S.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.custom_opcode(OP_NAME), ins, [out]
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


def splice(front: bytes, layers, head: bytes) -> bytes:
    """front end .tflite -> LceBDfsmn per layer -> classifier .tflite, one flatbuffer."""
    m = read_model(front)
    if len(m.subgraphs) != 1 or len(m.subgraphs[0].outputs) != 1:
        raise ValueError("front end must have one subgraph with one output")
    g = _Graph(m)
    x = int(g.sg.outputs[0])
    for scope, inputs, options in layers:
        x = g.add_bdfsmn(x, scope, inputs, options)
    h = read_model(head)
    hsg = h.subgraphs[0]
    if len(hsg.inputs) != 1 or list(hsg.tensors[hsg.inputs[0]].shape) != list(
            g.sg.tensors[x].shape):
        raise ValueError(f"classifier input {list(hsg.tensors[hsg.inputs[0]].shape)} != "
                         f"backbone output {list(g.sg.tensors[x].shape)}")
    tmap = g.append_subgraph(h, {int(hsg.inputs[0]): x})
    y = tmap[int(hsg.outputs[0])]
    g.sg.outputs = [y]
    for sig in m.signatureDefs or []:
        for o in sig.outputs or []:
            o.tensorIndex = y
    m.description = "bdfsmn: TFLiteConverter front end + LceBDfsmn layers + classifier"
    return write_model(m)


def backbone_model(layers, x_shape) -> bytes:
    """A .tflite holding only the LceBDfsmn layers (input / output x_shape, float32)."""
    S = _schema()
    m = S.ModelT()
    m.version = 3
    m.description = "bdfsmn backbone: LceBDfsmn layers only"
    sg = S.SubGraphT()
    sg.name, sg.tensors, sg.operators = "main", [], []
    m.subgraphs, m.buffers, m.operatorCodes = [sg], [S.BufferT()], []
    g = _Graph(m)
    x0 = g.tensor("backbone_input", x_shape, np.float32)
    x = x0
    for scope, inputs, options in layers:
        x = g.add_bdfsmn(x, scope, inputs, options)
    sg.inputs, sg.outputs = [x0], [x]
    return write_model(m)


def extract_layers(flatbuffer: bytes):
    """[(scope, inputs, options)] and the input shape of the LceBDfsmn ops of a model (to
    rebuild a backbone-only model from a bdfsmn export)."""
    S = _schema()
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
        if names[op.OpcodeIndex()] != OP_NAME:
            continue
        idx = list(op.InputsAsNumpy())
        if x_shape is None:
            x_shape = list(sg.Tensors(idx[0]).ShapeAsNumpy())
        arrays = []
        for t_i in idx[1:]:
            t = sg.Tensors(int(t_i))
            data = m.Buffers(t.Buffer()).DataAsNumpy()
            arrays.append(np.frombuffer(data.tobytes(), types[t.Type()]).reshape(
                t.ShapeAsNumpy()).copy())
        scope = sg.Tensors(int(idx[1])).Name().decode().split("/bdfsmn/")[0]
        layers.append((scope, arrays, bytes(op.CustomOptionsAsNumpy().tobytes())))
    return layers, x_shape


def read_options(options: bytes):
    from flatbuffers import flexbuffers
    return {k: int(v) for k, v in flexbuffers.Loads(options).items()}


def packed_bytes(layers):
    """Backbone weight storage of LceBDfsmn layers: bit words and per-channel vectors."""
    bits = sum(a.nbytes for _, ins, _ in layers for a in (ins[0], ins[2], ins[5]))
    vectors = sum(a.nbytes for _, ins, _ in layers for a in (ins[1], ins[3], ins[4], ins[6],
                                                             ins[7]))
    return {"bit_weights": int(bits), "per_channel_vectors": int(vectors),
            "total": int(bits + vectors)}


def float_weight_bytes(layers):
    """float32 storage of the same layers' weight matrices (K*C + 2*C*H floats each)."""
    n = 0
    for _, _, options in layers:
        o = read_options(options)
        n += (o["left"] + o["right"] + 1) * o["channels"] + 2 * o["channels"] * o["hidden"]
    return 4 * n


# -- conversion of the float parts --------------------------------------------------------------
def _convert(fn_model, input_shape):
    import tensorflow as tf
    spec = tf.TensorSpec([1] + list(input_shape), tf.float32, name="x")
    fn = tf.function(lambda x: fn_model(x, training=False), input_signature=[spec],
                     autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], fn_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def front_and_head(model):
    """(front end .tflite, classifier .tflite, backbone input shape) from the Keras student
    (built at one depth). Plain TFLiteConverter: builtin float ops only."""
    import tensorflow as tf
    feat = model.get_layer("linear_relu").output
    front = tf.keras.Model(model.input, feat, name="front_end")
    shape = list(feat.shape[1:])
    inp = tf.keras.Input(shape, batch_size=1, name="backbone_out")
    out = model.get_layer("classifier")(model.get_layer("flatten")(inp))
    head = tf.keras.Model(inp, out, name="classifier_head")
    return (_convert(front, list(model.input_shape[1:])), _convert(head, shape), shape)


def build(model, depth, spec):
    """Keras student at ``depth`` -> (bdfsmn .tflite bytes, layers)."""
    kw = spec["model_kwargs"]
    front, head, shape = front_and_head(model)
    layers = student_layers(model, depth, kw.get("num_layers", 8), kw.get("channels", 128),
                            kw.get("hidden", 256), kw.get("left", 2), kw.get("right", 2),
                            kw.get("dilation", 1))
    return splice(front, layers, head), layers


def call_overhead_model(x_shape) -> bytes:
    """A one-op float .tflite (ABS) with the backbone's input / output shape: timed beside the
    backbones, it measures what one interpreter call costs from Python (set the input,
    invoke, read the output) apart from the layers' work."""
    import tensorflow as tf
    shape = [int(d) for d in x_shape[1:]]
    inp = tf.keras.Input(shape, batch_size=1)
    return _convert(tf.keras.Model(inp, tf.keras.layers.Lambda(tf.abs)(inp)), shape)


def float_backbone(layers, x_shape, teacher=None, seed=0) -> bytes:
    """Float .tflite of the full-precision DFSMN backbone with the same shapes as ``layers``
    (depthwise conv + 1x1 convs, BN folded by the converter, ReLU / PReLU, residuals).
    Weights: the teacher checkpoint's if given, else random non-degenerate values (latency
    does not depend on them)."""
    import tensorflow as tf
    from models.dfsmn import DFSMNBackbone
    o = read_options(layers[0][2])
    n = len(layers)
    T, C = int(x_shape[1]), int(x_shape[-1])
    bb = DFSMNBackbone(n, o["channels"], o["hidden"], o["left"], o["right"],
                                    o["dilation"], binary=False, depths=(n,), name="dfsmn")
    inp = tf.keras.Input((T, 1, C), batch_size=1)
    keras_bb = tf.keras.Model(inp, bb(inp))
    if teacher is not None:
        t_model, _ = teacher
        key = lambda name: name.split("/", 1)[-1]  # noqa: E731  (drop the outer scope)
        src = {key(w.name): w for w in t_model.get_layer("dfsmn").weights}
        matched = 0
        for w in keras_bb.weights:
            v = src.get(key(w.name))
            if v is not None and tuple(v.shape) == tuple(w.shape):
                w.assign(v)
                matched += 1
        if matched != len(keras_bb.weights):
            raise ValueError(f"teacher backbone weights match {matched} of "
                             f"{len(keras_bb.weights)} float backbone variables")
    else:
        rng = np.random.default_rng(seed)
        for w in keras_bb.weights:
            nm = w.name.split(":")[0].rsplit("/", 1)[-1]
            if nm in ("gamma", "moving_variance"):
                w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
            elif nm in ("beta", "moving_mean"):
                w.assign(rng.normal(0, 0.2, w.shape).astype(np.float32))
            elif nm == "alpha":
                w.assign(rng.uniform(0, 0.5, w.shape).astype(np.float32))
    return _convert(keras_bb, [T, 1, C])
