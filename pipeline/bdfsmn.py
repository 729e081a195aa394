"""The `bdfsmn` export: every binary DFSMN layer as ONE ``ops.BDFSMN`` custom op, the rest builtin.

Why this construction (lce_kernels/ops.py states the op's contract, lce_kernels/README.md its
math):

* No prebuilt Python runtime runs LCE's ops (``ops.LCE_OPS``) and our own custom op in one
  model, so the model must hold only BUILTIN ops besides ``ops.BDFSMN``; TensorFlow's
  ``InterpreterWithCustomOps`` then runs it with the op library's registerer
  (``ops.registerers()``, ``lce_kernels/build/libbdfsmn_op.so``).
* The front end (conv1, binary conv2, binary linear) and the classifier are converted with
  the PLAIN ``tf.lite.TFLiteConverter`` from the Keras student itself in inference mode: the
  Keras binary layers are already float ops computing the exact trained function (larq's
  sign -> SIGN, the dual-scale planes and scale -> SUB/ABS/MEAN/MUL/ADD, the quantized
  kernel sign(w)*mean|w| constant-folded into a float CONV_2D kernel, pad value 1 for the
  5x5 conv -> PAD). No LCE converter is involved, so no LCE op appears.
* The custom ops are SPLICED in with the flatbuffer schema module
  (``tensorflow.lite.python.schema_py_generated`` object API + ``flatbuffers``): front end
  subgraph, then one ``ops.BDFSMN`` per active DFSMN layer (bit-packed int32 weights, float
  per-channel vectors, FlexBuffers options: ``ops.bdfsmn_inputs`` / ``ops.bdfsmn_options``,
  added by ``ops.Graph.add_bdfsmn``), then the classifier subgraph with its input tensor
  replaced by the last layer's output.
  The alternative (a TF op the converter cannot lower, emitted as a custom op of the same
  name with ``allow_custom_ops=True``) would still need a flatbuffer rewrite (the emitted
  op carries a TF NodeDef as options and graph inputs, not our constants and FlexBuffers
  map), and keeping an opaque placeholder alive through the converter's optimisations is
  fragile; two plain conversions + one deterministic merge are simpler and testable.

Parameter folding (BN, t2 constant, per-channel weight scale) is the layer's own
(``models.dfsmn.DFSMNLayer.folded_params``, lce_kernels/README.md "folding"); the independent
NumPy reference ``pipeline.kernel_ref.fold`` gives identical arrays (tests/test_export_bdfsmn.py).
"""
from __future__ import annotations

import numpy as np

from lce_kernels import ops

# the schema's object API, read and written with constant data 16-byte aligned: one
# implementation for every tool that edits a flatbuffer (it lives with the model description)
from pipeline.tflite_metadata import read_model, write_model  # noqa: F401

def has_bdfsmn_ops(flatbuffer: bytes) -> bool:
    from models.lce_census import has_bdfsmn_ops as has
    return has(flatbuffer)


def student_layers(model, depth, num_layers, channels, hidden, left, right, dilation):
    """[(scope, inputs, options)] of the DFSMN layers the student runs at ``depth``: each
    layer's folded parameters (``DFSMNLayer.folded_params``) as the op's constant inputs."""
    import models
    d = models.depth_index(depth, num_layers)
    backbone = model.get_layer("dfsmn")
    opts = ops.bdfsmn_options(channels, hidden, left, right, dilation)
    return [(f"dfsmn/layer{j}", ops.bdfsmn_inputs(backbone.blocks[j].folded_params(d)), opts)
            for j in models.layer_set(d, num_layers)]


# -- flatbuffer surgery -------------------------------------------------------------------------
def splice(front: bytes, layers, head: bytes) -> bytes:
    """front end .tflite -> one ``ops.BDFSMN`` per layer -> classifier .tflite, one
    flatbuffer."""
    m = read_model(front)
    if len(m.subgraphs) != 1 or len(m.subgraphs[0].outputs) != 1:
        raise ValueError("front end must have one subgraph with one output")
    g = ops.Graph(m)
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
    m.description = f"bdfsmn: TFLiteConverter front end + {ops.BDFSMN} layers + classifier"
    return write_model(m)


def backbone_model(layers, x_shape) -> bytes:
    """A .tflite holding only the ``ops.BDFSMN`` layers (input / output x_shape, float32)."""
    S = ops.schema()
    m = S.ModelT()
    m.version = 3
    m.description = f"bdfsmn backbone: {ops.BDFSMN} layers only"
    sg = S.SubGraphT()
    sg.name, sg.tensors, sg.operators = "main", [], []
    m.subgraphs, m.buffers, m.operatorCodes = [sg], [S.BufferT()], []
    g = ops.Graph(m)
    x0 = g.tensor("backbone_input", x_shape, np.float32)
    x = x0
    for scope, inputs, options in layers:
        x = g.add_bdfsmn(x, scope, inputs, options)
    sg.inputs, sg.outputs = [x0], [x]
    return write_model(m)


def packed_bytes(layers):
    """Backbone weight storage of ``ops.BDFSMN`` layers ([(scope, inputs 1..8, options)]):
    bit words and per-channel vectors."""
    bits = sum(ins[k - 1].nbytes for _, ins, _ in layers for k in ops.BDFSMN_BIT_INPUTS)
    vectors = sum(ins[k - 1].nbytes for _, ins, _ in layers for k in ops.BDFSMN_VECTOR_INPUTS)
    return {"bit_weights": int(bits), "per_channel_vectors": int(vectors),
            "total": int(bits + vectors)}


def float_weight_bytes(layers):
    """float32 storage of the same layers' weight matrices (K*C + 2*C*H floats each)."""
    n = 0
    for _, _, options in layers:
        o = ops.read_options(options)
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
    o = ops.read_options(layers[0][2])
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
