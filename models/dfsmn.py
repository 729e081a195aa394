"""DFSMN keyword-spotting network: front end + thinnable DFSMN backbone + classifier.

One builder for the full-precision teacher (`binary=False`, REFERENCE.md
"BiDfsmn_thinnable_pre") and the binary student (`binary=True`, "BiDfsmn_thinnable").

    features (B, T=32 frames, F=32 mels)            time first
    -> (B, 32, 32, 1)
    conv1: Conv2D 5x5 s2, 1 -> 16, BN, ReLU         always float
    conv2: Conv2D 5x5 s2, 16 -> 32, BN, ReLU        binary in the student (s per sample)
    -> (B, 8, 8, 32) -> reshape (B, 8 frames, 1, 256)   (feature index = mel * 32 + channel)
    linear: 1x1 conv 256 -> 128 (+ bias), ReLU      binary in the student (s per frame)
    8 x DFSMNLayer on (B, T, 1, C)                  thinnable depth 8 / 4 / 2 / 1
    flatten 8 * 128 -> dropout -> Dense(num_classes)     always float

Deviation: the 5x5 stride-2 convs use TensorFlow 'same' padding, i.e. (1, 2) rows/columns
(top/left, bottom/right) instead of PyTorch's padding=2 on both sides: same output size, the
sampling grid is shifted by one input pixel. It is what LCE fuses (pad value 1 for the
binary conv), and teacher and student use the same alignment.
"""
import tensorflow as tf

from models.dual_scale import QuantConvBN, build_sublayer
from models.memory_block import MemoryBlock
from models.quantizers import MIN_WEIGHT_SCALE
from models.thinnable import MAX_DEPTH_INDEX, depth_index, layer_set

__all__ = ["DFSMNLayer", "DFSMNBackbone", "build_dfsmn", "split_training_outputs"]


def _prelu(name):
    return tf.keras.layers.PReLU(
        alpha_initializer=tf.keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name
    )


@tf.keras.utils.register_keras_serializable(package="bifsmn")
class DFSMNLayer(tf.keras.layers.Layer):
    r"""One DFSMN layer with thinnable final normalisation.

    \\[
    m = \operatorname{MemoryBlock}(x), \qquad
    h = \operatorname{drop}(\sigma(\mathrm{BN}(\mathrm{pw}_1(m)))), \qquad
    y = m + \operatorname{PReLU}_d(\mathrm{BN}_d(\mathrm{pw}_2(h)))
    \\]

    pw1: 1x1 conv C -> H, pw2: 1x1 conv H -> C (no bias: a BN follows each),
    \\(\sigma\\) = ReLU (teacher) or PReLU (student), and \\(d\\) the depth index (a
    separate BN_d (`pw2/bn{d}`) and PReLU_d (`act{d}`) for d = 0..3). In the student pw1 and
    pw2 are dual-scale binary convs (`QuantConvBN`, s per sample and frame).
    """

    def __init__(self, channels=128, hidden=256, left=2, right=2, dilation=1, dropout=0.2,
                 binary=False, mode="lpb", **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.hidden = hidden
        self.left = left
        self.right = right
        self.dilation = dilation
        self.dropout = dropout
        self.binary = binary
        self.mode = mode
        nd = MAX_DEPTH_INDEX + 1
        # switchable BN: every BN of the layer has one instance per depth (see MemoryBlock)
        self.memory = MemoryBlock(channels, left, right, dilation, binary, mode, num_bn=nd,
                                  name="memory")
        self.pw1 = QuantConvBN(hidden, 1, binary=binary, mode=mode, num_bn=nd, name="pw1")
        self.pw1_act = _prelu("pw1_act") if binary else tf.keras.layers.ReLU(name="pw1_act")
        self.drop = tf.keras.layers.Dropout(dropout, name="drop")
        self.pw2 = QuantConvBN(channels, 1, binary=binary, mode=mode, num_bn=nd, name="pw2")
        self.acts = [_prelu(f"act{d}") for d in range(nd)]

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        hidden_shape = input_shape[:-1].concatenate([self.hidden])
        build_sublayer(self.memory, input_shape)
        build_sublayer(self.pw1, input_shape)
        build_sublayer(self.pw1_act, hidden_shape)
        build_sublayer(self.pw2, hidden_shape)
        for act in self.acts:
            build_sublayer(act, input_shape)
        super().build(input_shape)

    def call(self, x, depth_index=0, training=None):
        m = self.memory(x, bn_index=depth_index, training=training)
        h = self.pw1_act(self.pw1(m, bn_index=depth_index, training=training))
        h = self.drop(h, training=training)
        o = self.pw2(h, bn_index=depth_index, training=training)
        return m + self.acts[depth_index](o)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "hidden": self.hidden,
                "left": self.left, "right": self.right, "dilation": self.dilation,
                "dropout": self.dropout, "binary": self.binary, "mode": self.mode}

    def folded_params(self, depth_index=0):
        """The inference form of this binary layer at ``depth_index`` (what the bitwise op
        consumes; lce_kernels/README.md "folding"): with g = gamma / sqrt(var + eps) of the
        depth's BN of each part,

        - ``mem_weights`` / ``pw1_weights`` / ``pw2_weights``: bit-packed signs (uint32 words,
          ``lce_kernels.ops.pack_bits``; rows: taps, pw1 outputs, pw2 outputs);
        - ``mem_t0/t1/t2``, ``pw1_t0/t1``, ``pw2_t0/t1``: the dual-scale thresholds;
        - ``mem_mul = g * max(mean_k |w|, s_min)``, ``mem_bias = beta - mu * g``; for pw1 /
          pw2 ``mul = g * max(mean_i |W|, s_min)`` (``s_min``: ``MIN_WEIGHT_SCALE``, the
          quantizer's floor) and ``bias = beta - mu * g - mul * sum_i sign(W) t2``;
        - ``mem_slope``, ``pw1_slope``, ``pw2_slope``: PReLU slopes (pw2: ``act{d}``).

        float64 vectors. ``lce_kernels.ops.bdfsmn_inputs`` turns the dict into the op's
        constant inputs; ``pipeline.kernel_ref.fold`` (the test oracle) computes the same from
        raw parameters independently."""
        import numpy as np

        from lce_kernels import ops
        if not self.binary:
            raise ValueError(f"{self.name}: only a binary DFSMN layer has a bitwise form")
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before folding its parameters")
        if not 0 <= depth_index < len(self.acts):
            raise ValueError(f"{self.name}: depth index {depth_index} outside "
                             f"[0, {len(self.acts) - 1}]")

        def f64(v):
            v = getattr(v, "latent_variable", v)  # larq's QuantizedVariable: the raw kernel
            return np.asarray(v.numpy(), np.float64)

        def bn_of(bns):
            bn = bns[depth_index] if depth_index < len(bns) else bns[0]
            g = f64(bn.gamma) / np.sqrt(f64(bn.moving_variance) + bn.epsilon)
            return g, f64(bn.beta) - f64(bn.moving_mean) * g

        p = {}
        mem = self.memory
        mw = f64(mem.dwconv.depthwise_kernel)[:, 0, :, 0]                  # (K, C)
        g, shift = bn_of(mem.bns)
        p["mem_weights"] = ops.pack_bits(mw < 0, np.uint32)
        p["mem_t0"], p["mem_t1"], p["mem_t2"] = (f64(t) for t in (
            mem.dual_scale.t0, mem.dual_scale.t1, mem.dual_scale.t2))
        p["mem_mul"] = g * np.maximum(np.mean(np.abs(mw), axis=0), MIN_WEIGHT_SCALE)
        p["mem_bias"] = shift
        p["mem_slope"] = f64(mem.act.alpha).reshape(-1)
        for name, conv, act in (("pw1", self.pw1, self.pw1_act),
                                ("pw2", self.pw2, self.acts[depth_index])):
            w = f64(conv.conv.kernel)[0, 0]                                   # (in, out)
            t0, t1, t2 = (f64(t) for t in (conv.dual_scale.t0, conv.dual_scale.t1,
                                           conv.dual_scale.t2))
            g, shift = bn_of(conv.bns)
            mul = g * np.maximum(np.mean(np.abs(w), axis=0), MIN_WEIGHT_SCALE)
            p[f"{name}_weights"] = ops.pack_bits((w < 0).T, np.uint32)
            p[f"{name}_t0"], p[f"{name}_t1"] = t0, t1
            p[f"{name}_mul"] = mul
            p[f"{name}_bias"] = shift - mul * (np.where(w >= 0, 1.0, -1.0).T @ t2)
            p[f"{name}_slope"] = f64(act.alpha).reshape(-1)
        return p


@tf.keras.utils.register_keras_serializable(package="bifsmn")
class DFSMNBackbone(tf.keras.layers.Layer):
    r"""`num_layers` DFSMN layers run at one or several thinnable depths (shared weights).

    All layers (and all bn0..bn3 / act0..act3) are always built, whatever depths the
    instance runs, so a single-depth export model and the all-depth training model have the
    same variables under the same names and load each other's checkpoints.

    `depths`: the depths (numbers of layers) to run, e.g. (8,) or (8, 4, 2, 1).
    Output: with `return_features=False` and one depth, the final (B, T, 1, C) tensor;
    otherwise a list over `depths` of `[y, [layer outputs in layer_set order]]`.
    """

    def __init__(self, num_layers=8, channels=128, hidden=256, left=2, right=2, dilation=1,
                 dropout=0.2, binary=False, mode="lpb", depths=(8,), return_features=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.channels = channels
        self.hidden = hidden
        self.left = left
        self.right = right
        self.dilation = dilation
        self.dropout = dropout
        self.binary = binary
        self.mode = mode
        self.depths = tuple(int(d) for d in depths)
        self.return_features = return_features
        self.depth_indices = [depth_index(d, num_layers) for d in self.depths]
        self.blocks = [
            DFSMNLayer(channels, hidden, left, right, dilation, dropout, binary, mode,
                       name=f"layer{j}")
            for j in range(num_layers)
        ]

    def build(self, input_shape):
        for block in self.blocks:
            build_sublayer(block, input_shape)
        super().build(input_shape)

    def call(self, x, training=None):
        results = []
        for d in self.depth_indices:
            h, feats = x, []
            for j in layer_set(d, self.num_layers):
                h = self.blocks[j](h, depth_index=d, training=training)
                feats.append(h)
            results.append([h, feats])
        if not self.return_features and len(results) == 1:
            return results[0][0]
        return results

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers,
                "channels": self.channels, "hidden": self.hidden, "left": self.left,
                "right": self.right, "dilation": self.dilation, "dropout": self.dropout,
                "binary": self.binary, "mode": self.mode, "depths": list(self.depths),
                "return_features": self.return_features}


def build_dfsmn(
    binary: bool = False,
    mode: str = "lpb",
    depth: int = 8,
    training_depths=None,
    num_classes: int = 12,
    input_shape=(32, 32),
    front_channels=(16, 32),
    channels: int = 128,
    hidden: int = 256,
    num_layers: int = 8,
    left: int = 2,
    right: int = 2,
    dilation: int = 1,
    dropout: float = 0.2,
    name: str = None,
) -> tf.keras.Model:
    """Build the DFSMN teacher (`binary=False`) or BiFSMNv2 student (`binary=True`).

    `training_depths=None`: single-depth model (`depth` layers), output logits (B, classes):
    the export / evaluation model. `training_depths=(8, 4, 2, 1)` (any subset of the valid
    depths): the training model, running every listed depth on the same weights; its output
    is a flat dict `{"logits_d{D}": (B, classes), "features_d{D}_l{j}": (B, T, 1, C)}`:
    logits per depth and the output of every layer j run at depth D (see
    `split_training_outputs`). Both variants own identical variables (all layers, all
    bn_d / act_d), so weights load across them (h5 or TF checkpoint).

    `training` must be a Python bool (or None = inference): in inference the binary convs
    use their BN-folded form (see `QuantConvBN`).
    """
    frames, mels = input_shape
    f1, f2 = front_channels
    inp = tf.keras.Input(shape=(frames, mels), name="features")
    x = tf.keras.layers.Reshape((frames, mels, 1), name="add_channel")(inp)
    x = QuantConvBN(f1, 5, strides=2, padding="same", binary=False, num_bn=1, name="conv1")(x)
    x = tf.keras.layers.ReLU(name="conv1_relu")(x)
    x = QuantConvBN(f2, 5, strides=2, padding="same", binary=binary, mode=mode,
                    scale_over="sample", num_bn=1, name="conv2")(x)
    x = tf.keras.layers.ReLU(name="conv2_relu")(x)
    t, f = x.shape[1], x.shape[2]
    x = tf.keras.layers.Reshape((t, 1, f * f2), name="frames")(x)
    x = QuantConvBN(channels, 1, binary=binary, mode=mode, use_bias=True, name="linear")(x)
    x = tf.keras.layers.ReLU(name="linear_relu")(x)

    return backbone_and_classifier(
        inp, x, name, depth, training_depths, num_classes, channels, hidden, num_layers,
        left, right, dilation, dropout, binary, mode)


def backbone_and_classifier(inp, x, name, depth, training_depths, num_classes, channels,
                            hidden, num_layers, left, right, dilation, dropout, binary, mode,
                            frames=None, suffix="") -> tf.keras.Model:
    """The part of the model after the front end, shared by the windowed (`build_dfsmn`) and
    the streaming (`models.streaming.build_dfsmn_stream`) builders: the backbone on the
    front end's output ``x`` (B, T, 1, C), then flatten -> dropout -> Dense(num_classes), and
    the Model from ``inp``. ``frames``: a layer applied to the backbone's output before the
    flatten (the streaming model's ring of the last frames). With ``training_depths`` the
    training model's dict of logits and layer features (`split_training_outputs`), else the
    single-depth logits model ``{name}_d{depth}``; ``name`` None: bifsmnv2 (binary) or dfsmn,
    then _{mode} for a binary mode other than lpb, then ``suffix``."""
    if name is None:
        name = ("bifsmnv2" if binary else "dfsmn") + (
            "" if mode == "lpb" or not binary else f"_{mode}") + suffix
    depths = tuple(training_depths) if training_depths is not None else (depth,)
    backbone = DFSMNBackbone(num_layers, channels, hidden, left, right, dilation, dropout,
                             binary, mode, depths=depths,
                             return_features=training_depths is not None, name="dfsmn")
    flatten = tf.keras.layers.Flatten(name="flatten")
    drop = tf.keras.layers.Dropout(dropout, name="classifier_dropout")
    # Zero-initialised: the classifier reads 1,024 features of mean square ~20, so a random
    # init starts at logits of std ~10 (loss ~10, not ln(classes)) and SGD at the reference's
    # lr 5e-3 diverges in the first epoch.
    classifier = tf.keras.layers.Dense(num_classes, kernel_initializer="zeros", name="classifier")

    def head(y):
        return classifier(drop(flatten(frames(y) if frames is not None else y)))

    if training_depths is None:
        return tf.keras.Model(inp, head(backbone(x)), name=f"{name}_d{depth}")
    outputs = {}
    for dep, (y, feats) in zip(depths, backbone(x)):
        outputs[f"logits_d{dep}"] = head(y)
        for j, feat in zip(layer_set(depth_index(dep, num_layers), num_layers), feats):
            outputs[f"features_d{dep}_l{j}"] = feat
    return tf.keras.Model(inp, outputs, name=f"{name}_train")


def split_training_outputs(outputs):
    """Training-model output dict -> ({depth: logits}, {depth: {layer j: feature}}).

    Keys are `logits_d{D}` and `features_d{D}_l{j}`; the features are keyed by the layer
    index j, so the distillation loss at depth index op matches student layer j with
    teacher layer j exactly for the j present ((j + 1) % 2**op == 0).
    """
    logits, feats = {}, {}
    for key, value in outputs.items():
        if key.startswith("logits_d"):
            logits[int(key[len("logits_d"):])] = value
        elif key.startswith("features_d"):
            dep, j = key[len("features_d"):].split("_l")
            feats.setdefault(int(dep), {})[int(j)] = value
    for dep in feats:
        feats[dep] = dict(sorted(feats[dep].items()))
    return logits, feats
