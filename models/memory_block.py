"""The DFSMN memory block: the single home of its math (a later issue ports it to C++)."""
import larq as lq
import tensorflow as tf

from models.dual_scale import DualScaleActivation, build_sublayer
from models.quantizers import ScaledSignWeight

__all__ = ["MemoryBlock"]


@tf.keras.utils.register_keras_serializable(package="bifsmn")
class MemoryBlock(tf.keras.layers.Layer):
    r"""DFSMN memory block: residual depthwise temporal convolution.

    Input and output layout: \\((B, T, 1, C)\\) (time first, a dummy width axis, channels
    last). With left context \\(l\\), right context \\(r\\), dilation (stride) \\(d\\),
    a depthwise kernel \\(w \in \mathbb{R}^{(l+r+1) \times C}\\) (stored as Keras
    depthwise kernel of shape (l+r+1, 1, C, 1)) and zero padding in time:

    \\[
    h_{b,t,c} = \sum_{k=0}^{l+r} w_{k,c}\; a_{b,\,t + (k - l) d,\,c}, \qquad
    a_{b,\tau,c} = 0 \text{ for } \tau < 0 \text{ or } \tau \ge T
    \\]
    \\[
    m = x + \operatorname{PReLU}(\operatorname{BN}(h))
    \\]

    (BN: inference \\(\gamma (h - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta\\) per channel;
    PReLU: \\(\max(0, z) + p_c \min(0, z)\\) with a slope per channel.) Default
    \\(l = r = 2\\), \\(d = 1\\): kernel 5, two frames back and two ahead.

    Full precision (teacher): \\(a = x\\) and \\(w\\) is the float kernel.

    Binary (student): \\(a\\) is the dual-scale binarization of \\(x\\) with per-channel
    thresholds \\(t_0, t_1, t_2\\) and the scale averaged over CHANNELS per sample and frame:

    \\[
    b_1 = \operatorname{sign}(x - t_0),\; r = x - b_1 - t_1,\; b_2 = \operatorname{sign}(r),\;
    s_{b,t} = \tfrac{1}{C}\textstyle\sum_c |r_{b,t,c}|,\;
    a = b_1 + s\, b_2 - t_2
    \\]

    and \\(w_{k,c} = \operatorname{sign}(w_{k,c}) \cdot \frac{1}{l+r+1}\sum_{k'}
    |w_{k',c}|\\) (one scale per channel). Padding is applied to \\(a\\) (padded frames are
    0, not \\(\pm 1\\)), so for a bitwise kernel:
    \\(h_{t,c} = \bar w_c \sum_{k\,\text{valid}} \operatorname{sign}(w_{k,c})
    (b_{1,\tau,c} + s_\tau b_{2,\tau,c} - t_{2,c})\\), \\(\tau = t + (k-l)d\\): since
    \\(s\\) varies per frame it stays inside the tap sum (it does not factor out of a
    temporal conv).

    Switchable BatchNorm: ``num_bn`` BNs (``bn0..bn{n-1}``), one per thinnable depth index,
    chosen by ``call(x, bn_index=d)``. The same layer receives different inputs at different
    depths (at depth 2 layer 3 reads the front end, at depth 8 layer 2's output), so one shared
    set of running statistics blends them and the inference model breaks (measured on the real
    8-word pack: depth-2 validation accuracy 9 % with running statistics vs 61 % with batch
    statistics after 4 epochs). The reference shares this BN; we do not.

    LCE has no binary depthwise kernel (a grouped binary conv needs >= 32 input channels per
    group), so in the LCE export this block stays float (DEPTHWISE_CONV_2D); expected.
    """

    def __init__(
        self,
        channels: int,
        left: int = 2,
        right: int = 2,
        dilation: int = 1,
        binary: bool = False,
        mode: str = "lpb",
        bn_epsilon: float = 1e-5,
        bn_momentum: float = 0.9,
        num_bn: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_bn = num_bn
        self.channels = channels
        self.left = left
        self.right = right
        self.dilation = dilation
        self.binary = binary
        self.mode = mode
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        if binary:
            self.dual_scale = DualScaleActivation(mode, "channels", name="dual_scale")
            dq = ScaledSignWeight(learnable=(mode == "lpb"), channel_axis=2, name="weight_sign")
        else:
            dq = None
        self.dwconv = lq.layers.QuantDepthwiseConv2D(
            kernel_size=(left + right + 1, 1),
            dilation_rate=(dilation, 1),
            padding="valid",
            use_bias=False,
            depthwise_quantizer=dq,
            depthwise_initializer="glorot_uniform",
            name="dwconv",
        )
        self.bns = [
            tf.keras.layers.BatchNormalization(
                epsilon=bn_epsilon, momentum=bn_momentum, name=f"bn{d}")
            for d in range(num_bn)
        ]
        self.act = tf.keras.layers.PReLU(
            alpha_initializer=tf.keras.initializers.Constant(0.25),
            shared_axes=[1, 2],
            name="act",
        )

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if self.binary:
            build_sublayer(self.dual_scale, input_shape)
        pad = (self.left + self.right) * self.dilation
        padded = tf.TensorShape(
            [input_shape[0], None if input_shape[1] is None else input_shape[1] + pad,
             input_shape[2], input_shape[3]]
        )
        build_sublayer(self.dwconv, padded)
        if self.binary:
            build_sublayer(self.dwconv.depthwise_quantizer, self.dwconv.depthwise_kernel.shape)
        for bn in self.bns:
            build_sublayer(bn, input_shape)
        build_sublayer(self.act, input_shape)
        super().build(input_shape)

    def call(self, x, bn_index: int = 0, training=None):
        if self.binary:
            a = self.dual_scale.combine(*self.dual_scale(x))
        else:
            a = x
        a = tf.pad(
            a,
            [[0, 0], [self.left * self.dilation, self.right * self.dilation], [0, 0], [0, 0]],
        )
        h = self.dwconv(a)
        return x + self.act(self.bns[bn_index](h, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "left": self.left,
            "right": self.right,
            "dilation": self.dilation,
            "binary": self.binary,
            "mode": self.mode,
            "bn_epsilon": self.bn_epsilon,
            "bn_momentum": self.bn_momentum,
            "num_bn": self.num_bn,
        }
