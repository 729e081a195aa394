"""Dual-scale activation binarization and the binary convolution built on it.

Two layers:

- `DualScaleActivation`: x -> (b1, b2, s), the two bit planes and the on-the-fly scale,
  with per-input-channel learnable thresholds t0, t1, t2.
- `QuantConvBN`: one convolution (Larq `QuantConv2D`) with an optional bias and an optional
  set of BatchNorms (one per thinnable depth index). Full precision (`binary=False`) it is
  `BN(conv(x) + bias)`; binary it is

      BN( conv(b1) + s * conv(b2) - conv_const(t2) + bias )

  with ONE shared binary kernel, the form the LCE converter lowers to two binary convs
  (`lce_kernels.ops.BCONV2D`).
"""
import larq as lq
import tensorflow as tf

from models.quantizers import ScaledSignWeight, get_activation_binarizer

__all__ = ["DualScaleActivation", "QuantConvBN", "THRESHOLD_PREFIX", "build_sublayer"]

#: Prefix of the threshold weight names (`threshold_t0`, `threshold_t1`, `threshold_t2`).
THRESHOLD_PREFIX = "threshold_t"

_SCALE_AXES = {
    # mean over channels, one scale per sample and position (frame): factors out of 1x1
    # convs and is what the memory block uses.
    "channels": [-1],
    # one scalar per sample (mean over T, F, C): factors out of a k x k conv.
    "sample": None,
}


def build_sublayer(layer: tf.keras.layers.Layer, input_shape) -> None:
    """Build `layer` now, under its own name scope (for sublayers that a given call may skip,
    so that every model variant owns the same variables under the same names)."""
    if not layer.built:
        with tf.name_scope(layer.name):
            layer.build(tf.TensorShape(input_shape))
        layer.built = True


@tf.keras.utils.register_keras_serializable(package="bifsmn")
class DualScaleActivation(tf.keras.layers.Layer):
    r"""Dual-scale binarization of an activation with learnable per-channel thresholds.

    For an input \\(x\\) with channels \\(c\\) (last axis):

    \\[
    b_1 = \operatorname{sign}(x - t_0), \quad
    r = x - b_1 - t_1, \quad
    b_2 = \operatorname{sign}(r), \quad
    s = \operatorname{mean}|r|, \quad
    a = b_1 + s\, b_2 - t_2
    \\]

    with \\(t_0, t_1, t_2 \in \mathbb{R}^{C}\\) learnable (weights `threshold_t0/1/2`,
    initialised to 0) and `sign` the LPB (`mode='lpb'`, each plane with its own learnable
    \\(\alpha\\)) or plain STE (`mode='ste'`). \\(s\\) is computed on the fly (it is not a
    weight; the gradient flows through it).

    Deviation from the reference (documented choice): the reference averages \\(|r|\\)
    over TIME per channel in its conv layers and over features per frame in its linear
    layers. A per-channel scale does not factor out of a convolution, so here the average
    is taken so that \\(s\\) is constant over the input channels of the conv that consumes it:

    - `scale_over='channels'`: \\(s_{b,t,f} = \frac{1}{C}\sum_c |r_{b,t,f,c}|\\) (per
      sample and frame) for 1x1 (pointwise / linear) convs and the memory block;
    - `scale_over='sample'`: \\(s_b = \operatorname{mean}_{t,f,c}|r_{b,t,f,c}|\\), one
      scalar per sample, for the 5x5 front-end conv whose receptive field spans frames.

    Then \\(\operatorname{conv}(b_1 + s b_2) = \operatorname{conv}(b_1) +
    s\, \operatorname{conv}(b_2)\\): two binary convolutions with one kernel.

    `call` returns `(b1, b2, s)` (`s` keeps dims so it broadcasts); `combine` gives
    \\(a\\).
    """

    def __init__(self, mode: str = "lpb", scale_over: str = "channels", **kwargs):
        super().__init__(**kwargs)
        if scale_over not in _SCALE_AXES:
            raise ValueError(f"scale_over must be one of {list(_SCALE_AXES)}")
        self.mode = mode
        self.scale_over = scale_over
        self.sign1 = get_activation_binarizer(mode, name="sign1")
        self.sign2 = get_activation_binarizer(mode, name="sign2")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        zeros = tf.keras.initializers.Zeros()
        self.t0 = self.add_weight(f"{THRESHOLD_PREFIX}0", (channels,), initializer=zeros)
        self.t1 = self.add_weight(f"{THRESHOLD_PREFIX}1", (channels,), initializer=zeros)
        self.t2 = self.add_weight(f"{THRESHOLD_PREFIX}2", (channels,), initializer=zeros)
        build_sublayer(self.sign1, input_shape)
        build_sublayer(self.sign2, input_shape)
        super().build(input_shape)

    def call(self, x):
        b1 = self.sign1(x - self.t0)
        r = x - b1 - self.t1
        b2 = self.sign2(r)
        axes = _SCALE_AXES[self.scale_over]
        if axes is None:
            axes = list(range(1, x.shape.rank))
        s = tf.reduce_mean(tf.abs(r), axis=axes, keepdims=True)
        return b1, b2, s

    def combine(self, b1, b2, s):
        """a = b1 + s * b2 - t2."""
        return b1 + s * b2 - self.t2

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "scale_over": self.scale_over}


@tf.keras.utils.register_keras_serializable(package="bifsmn")
class QuantConvBN(tf.keras.layers.Layer):
    r"""A (binary or float) 2-D convolution, optional bias, optional BatchNorm(s).

    Full precision (`binary=False`): \\(y = \mathrm{BN}_d(W * x + b)\\).

    Binary (`binary=True`), with \\((b_1, b_2, s)\\) from `DualScaleActivation` and
    \\(\hat W = \operatorname{sign}(W)\cdot \operatorname{mean}|W|\\) per output channel
    (`ScaledSignWeight`):

    \\[
    y = \mathrm{BN}_d\big(\hat W * b_1 + s\,(\hat W * b_2) - k + b\big), \qquad
    k_o = \sum_{i,j,c} \hat W_{i,j,c,o}\, t_{2,c}
    \\]

    i.e. the convolution of \\(a = b_1 + s b_2 - t_2\\) with \\(-t_2\\) entering as the
    constant bias \\(-k\\). The same `QuantConv2D` (one kernel) is called on both planes.
    For 1x1 convs this is exact. For the 5x5 front-end conv with `padding='same'` the bit
    planes are padded with +1 (`pad_values=1.0`, which LCE needs) and \\(k\\) sums the whole
    kernel, so this layer DEFINES the padded value of \\(a\\) as \\(1 + s - t_2\\) (not 0
    as a zero-padded conv of \\(a\\) would): the model is trained with, and the NumPy
    reference implements, this edge behaviour.

    In inference (`training` falsy) the BatchNorm is folded (\\(g = \gamma /
    \sqrt{\sigma^2+\epsilon}\\), \\(\beta' = \beta - \mu g\\)):

    \\[
    y = \big(g \odot (\hat W * b_1) + \beta' + g\odot(b - k)\big) + s\,\big(g \odot (\hat W * b_2)\big)
    \\]

    so the converter fuses \\(g\\) and the constant into each binary conv's output
    multiplier / bias, leaving one MUL (by \\(s\\)) and one ADD in float.

    # Arguments
        filters, kernel_size, strides, padding: as `Conv2D` (padding 'same' or 'valid').
        binary: dual-scale binary activations and 1-bit weights, or full precision.
        mode: 'lpb' or 'ste' (binarizer of activations and weights).
        scale_over: 'channels' (1x1 convs) or 'sample' (k x k convs), see
            `DualScaleActivation`.
        use_bias: add a learnable bias (only where no BatchNorm follows).
        num_bn: number of BatchNorms (0: none; 4 for the thinnable final BN bn0..bn3).
        bn_epsilon, bn_momentum: BatchNorm settings (PyTorch defaults 1e-5 / 0.1).
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=1,
        padding: str = "valid",
        binary: bool = False,
        mode: str = "lpb",
        scale_over: str = "channels",
        use_bias: bool = False,
        num_bn: int = 0,
        bn_epsilon: float = 1e-5,
        bn_momentum: float = 0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.binary = binary
        self.mode = mode
        self.scale_over = scale_over
        self.use_bias = use_bias
        self.num_bn = num_bn
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        if binary:
            self.dual_scale = DualScaleActivation(mode, scale_over, name="dual_scale")
            kq = ScaledSignWeight(learnable=(mode == "lpb"), name="weight_sign")
        else:
            kq = None
        self.conv = lq.layers.QuantConv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            pad_values=1.0 if (binary and padding == "same") else 0.0,
            use_bias=False,
            input_quantizer=None,
            kernel_quantizer=kq,
            kernel_initializer="glorot_uniform",
            name="conv",
        )
        self.bns = [
            tf.keras.layers.BatchNormalization(
                epsilon=bn_epsilon, momentum=bn_momentum, name=f"bn{d}"
            )
            for d in range(num_bn)
        ]

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if self.binary:
            build_sublayer(self.dual_scale, input_shape)
        build_sublayer(self.conv, input_shape)
        if self.binary:
            build_sublayer(self.conv.kernel_quantizer, self.conv.kernel.shape)
        out_shape = self.conv.compute_output_shape(input_shape)
        if self.use_bias:
            self.bias = self.add_weight(
                "bias", (self.filters,), initializer=tf.keras.initializers.Zeros()
            )
        for bn in self.bns:
            build_sublayer(bn, out_shape)
        super().build(input_shape)

    def quantized_kernel(self) -> tf.Tensor:
        """The kernel as used in the forward pass (sign * per-channel scale if binary)."""
        if self.binary:
            return self.conv.kernel_quantizer(self.conv.kernel.latent_variable)
        return tf.convert_to_tensor(self.conv.kernel)

    def call(self, x, bn_index: int = 0, training=None):
        bn = self.bns[bn_index] if self.bns else None
        if not self.binary:
            return self._float(x, bn, training)
        b1, b2, s = self.dual_scale(x)
        return self._combine(self.conv(b1), self.conv(b2), s, bn, training)

    def _float(self, x, bn, training):
        """Full precision: conv (+ bias) (+ BN)."""
        y = self.conv(x)
        if self.use_bias:
            y = y + self.bias
        return bn(y, training=training) if bn is not None else y

    def _combine(self, c1, c2, s, bn, training):
        """y = BN(c1 + s c2 - sum_i w_i t2_i (+ bias)) from the two binary convs c1 = conv(b1),
        c2 = conv(b2). Outside training BN is folded as c1 g + shift + s (c2 g), the order
        the exports compute (two binary convs, a multiply and an add)."""
        const = -tf.einsum("hwio,i->o", self.quantized_kernel(), self.dual_scale.t2)
        if self.use_bias:
            const = const + self.bias
        if bn is None:
            return (c1 + const) + s * c2
        if training:
            return bn(c1 + s * c2 + const, training=True)
        g = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)
        shift = bn.beta - bn.moving_mean * g + g * const
        return (c1 * g + shift) + s * (c2 * g)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "binary": self.binary,
            "mode": self.mode,
            "scale_over": self.scale_over,
            "use_bias": self.use_bias,
            "num_bn": self.num_bn,
            "bn_epsilon": self.bn_epsilon,
            "bn_momentum": self.bn_momentum,
        }
