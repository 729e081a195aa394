"""Binarizers of BiFSMNv2: the Learning Propagation Binarizer (LPB) and its weight form.

Both are Larq quantizers (Keras layers), registered with Keras and with larq's alias
registry, so a layer built with `input_quantizer="lpb_sign"` or a saved model that contains
them loads by name.

Forward passes use `larq.math.sign` (sign(0) = +1), the op pattern
`sign(sign(x) + 0.1)` that the Larq Compute Engine converter recognises as a binarizer
(-> LCE's quantize op / input of its binary conv, `lce_kernels.ops.QUANTIZE` / `BCONV2D`).
The custom gradients never appear in the inference graph, so the converter sees exactly what
it sees for larq's `ste_sign`.
"""
import logging

import larq as lq
import tensorflow as tf

__all__ = [
    "lpb_sign",
    "LPBSign",
    "ScaledSignWeight",
    "ALPHA_NAME",
    "MIN_WEIGHT_SCALE",
    "get_activation_binarizer",
]

#: Name of every learnable LPB input scale (used by `models.quant_variables`).
ALPHA_NAME = "lpb_alpha"
_ALPHA_MIN = 1e-3

#: Floor of a binary weight's per-output-channel scale (`ScaledSignWeight`): 2^-20, 8x float32
#: epsilon. LCE's converter lowers a conv to its binary conv only when every output channel's
#: scale exceeds float32 epsilon (IsBinaryFilter, larq_compute_engine/mlir/transforms/
#: prepare_tf.cc); weight decay drives the latent weights of a channel that gets no gradient
#: (a dead channel) toward 0 (~1e-31 after 300 epochs), which would keep the whole layer in
#: float. At the floor a dead channel adds at most K * 2^-20 to its output before BN.
MIN_WEIGHT_SCALE = 2.0 ** -20


def lpb_sign(x: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    r"""Learning Propagation Binarizer as a function of the input and its scale.

    \\[
    q(x) = \operatorname{sign}(\alpha x) = \operatorname{sign}(x) \quad (\alpha > 0),
    \\]
    \\[
    \frac{\partial q}{\partial x} = \alpha\, 1_{|\alpha x| \le 1}, \qquad
    \frac{\partial q}{\partial \alpha} = x\, 1_{|\alpha x| \le 1},
    \\]

    i.e. the backward pass is that of \\(\operatorname{clip}(\alpha x, -1, 1)\\). `sign` is
    larq's sign (sign(0) = +1). Since \\(\alpha\\) is kept positive (see `LPBSign`), the
    forward is computed as the bare `sign(x)` so that the converter recognises the binarizer
    without an extra multiplication.

    # Arguments
        x: input tensor.
        alpha: scalar tensor (the learnable input scale), not a variable.

    # Returns
        A tensor of +-1 with the shape and dtype of `x`.
    """

    @tf.custom_gradient
    def _call(x, alpha):
        def grad(dy):
            ax = alpha * x
            mask = tf.cast(tf.math.less_equal(tf.math.abs(ax), 1.0), dy.dtype)
            g = dy * mask
            return g * alpha, tf.reduce_sum(g * x)

        return lq.math.sign(x), grad

    # a variable (a latent weight) is read here, outside the custom gradient: under a
    # tf.distribute strategy it is a MirroredVariable, whose per-device component read inside
    # would count as a captured variable (which tf.custom_gradient refuses without `variables`)
    return _call(tf.convert_to_tensor(x), alpha)


class _PositiveMin(tf.keras.constraints.Constraint):
    """Keeps a scale >= `min_value` (so sign(alpha * x) == sign(x))."""

    def __init__(self, min_value=_ALPHA_MIN):
        self.min_value = min_value

    def __call__(self, w):
        return tf.maximum(w, self.min_value)

    def get_config(self):
        return {"min_value": self.min_value}


def _add_alpha(layer, init: float):
    """The LPB scalar `lpb_alpha` of a quantizer layer: trainable, kept >= 1e-3."""
    return layer.add_weight(name=ALPHA_NAME, shape=(),
                            initializer=tf.keras.initializers.Constant(init),
                            constraint=_PositiveMin(), trainable=True)


tf.keras.utils.get_custom_objects()["_PositiveMin"] = _PositiveMin


@lq.utils.register_alias("lpb_sign")
@tf.keras.utils.register_keras_serializable(package="bifsmn")
class LPBSign(lq.quantizers._BaseQuantizer):
    r"""Learning Propagation Binarizer (LPB) for activations, with a learnable scale.

    \\[
    q(x) = \operatorname{sign}(\alpha x), \qquad
    \frac{\partial q}{\partial x} = \alpha\, 1_{|\alpha x| \le 1}, \qquad
    \frac{\partial q}{\partial \alpha} = x\, 1_{|\alpha x| \le 1}
    \\]

    (straight-through estimator of \\(\operatorname{clip}(\alpha x, -1, 1)\\)).
    \\(\alpha\\) is a scalar weight named `lpb_alpha`, initialised to 1 and kept
    \\(\ge 10^{-3}\\) by a constraint (applied by Keras optimizers after each update; a
    hand-written training loop must apply `var.constraint` itself), so the forward pass is
    the bare larq sign, which the LCE converter lowers to its quantize op
    (`lce_kernels.ops.QUANTIZE`).

    With `learnable=False` the layer is larq's `ste_sign` (\\(\alpha = 1\\), no weight):
    the plain-STE ablation.

    # Arguments
        learnable: learn \\(\alpha\\) (LPB) or keep it at 1 (STE).
        alpha_init: initial value of \\(\alpha\\).
    """

    precision = 1

    def __init__(self, learnable: bool = True, alpha_init: float = 1.0, **kwargs):
        self.learnable = learnable
        self.alpha_init = alpha_init
        super().__init__(**kwargs)

    def build(self, input_shape):
        if self.learnable:
            self.alpha = _add_alpha(self, self.alpha_init)
        super().build(input_shape)

    def call(self, inputs):
        if self.learnable:
            outputs = lpb_sign(inputs, tf.convert_to_tensor(self.alpha))
        else:
            outputs = lq.quantizers.ste_sign(inputs, clip_value=1.0)
        return super().call(outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "learnable": self.learnable,
            "alpha_init": self.alpha_init,
        }


@lq.utils.register_alias("scaled_sign_weight")
@tf.keras.utils.register_keras_serializable(package="bifsmn")
class ScaledSignWeight(lq.quantizers._BaseQuantizer):
    r"""1-bit weight quantizer: sign times one magnitude scale per output channel.

    \\[
    q(w)_{\dots, o} = \operatorname{sign}(w_{\dots, o}) \cdot
        \max\left(\operatorname{mean}_{\text{all axes but } o} |w_{\dots, o}|,\;
        s_{\min}\right)
    \\]

    (as larq's `magnitude_aware_sign`; the scale is treated as a constant in the backward
    pass; \\(s_{\min}\\) is `MIN_WEIGHT_SCALE`, reached only by dead channels). The sign's
    gradient is the LPB one (`learnable=True`,
    \\(\partial q / \partial w = \alpha s\, 1_{|\alpha w| \le 1}\\) with its own learnable
    `lpb_alpha`) or plain STE (`learnable=False`, \\(\alpha = 1\\)).

    Every output channel is \\(\pm s_o\\): the form the LCE converter folds into
    its binary conv (`lce_kernels.ops.BCONV2D`; the per-channel scale becomes its output
    multiplier), so the layer really is 1-bit. Deviation from the reference code: there, the
    scale is the mean of |w| over the LAST kernel axis only; for a 1x1 conv that is |w|
    itself, so sign(w) * |w| = w and its "binary" pointwise weights are in effect full
    precision.

    # Arguments
        learnable: LPB (learnable alpha) or STE.
        channel_axis: the output-channel axis of the kernel: -1 for Conv2D / Dense kernels
            (kh, kw, cin, cout); 2 for depthwise kernels (kh, kw, channels, multiplier).
    """

    precision = 1

    def __init__(self, learnable: bool = True, channel_axis: int = -1, **kwargs):
        self.learnable = learnable
        self.channel_axis = channel_axis
        super().__init__(**kwargs)

    def build(self, input_shape):
        if self.learnable:
            self.alpha = _add_alpha(self, 1.0)
        super().build(input_shape)

    def call(self, inputs):
        rank = inputs.shape.rank
        axis = self.channel_axis % rank
        reduce_axes = [i for i in range(rank) if i != axis]
        scale = tf.stop_gradient(tf.maximum(
            tf.reduce_mean(tf.abs(inputs), axis=reduce_axes, keepdims=True),
            MIN_WEIGHT_SCALE))
        if self.learnable:
            b = lpb_sign(inputs, tf.convert_to_tensor(self.alpha))
        else:
            b = lq.quantizers.ste_sign(inputs, clip_value=1.0)
        return super().call(b * scale)

    def get_config(self):
        return {
            **super().get_config(),
            "learnable": self.learnable,
            "channel_axis": self.channel_axis,
        }


def get_activation_binarizer(mode: str, name: str) -> LPBSign:
    """`mode` 'lpb' -> learnable LPB, 'ste' -> plain STE (larq ste_sign)."""
    if mode not in ("lpb", "ste"):
        raise ValueError(f"binarizer mode must be 'lpb' or 'ste', got {mode!r}")
    return LPBSign(learnable=(mode == "lpb"), name=name)


class _SilenceStarvedWeightWarning(logging.Filter):
    """larq warns for binary kernels without a kernel constraint; ours are intentional."""

    def filter(self, record):
        return "starved weights" not in record.getMessage()


logging.getLogger("larq.layers_base").addFilter(_SilenceStarvedWeightWarning())
