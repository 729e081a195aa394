r"""Always-on streaming DFSMN teacher and BiFSMNv2 student (issue 16).

The windowed models (`models.dfsmn`) look ahead everywhere: the 5x5 front-end convs pad time
with 'same' padding, each memory block reads 2 frames ahead with zero padding, so every output
depends on where the 1 s window ends and nothing computed for one window can be reused for the
next. The streaming variant (registry names ``dfsmn_stream`` / ``bifsmnv2_stream``) is the same
network made CAUSAL, in the manner of google-research kws_streaming (streaming-aware layers
that compute the same function hop by hop as over the whole window, state as explicit inputs
and outputs):

    features (B, T, 32)                               T a multiple of 4 (training: 32)
    conv1: 5x5 s2, 1 -> 16, BN, ReLU                  causal in time: 3 zero frames before the
    conv2: 5x5 s2, 16 -> 32, BN, ReLU                 input, none after; 'same' (zero) padding
                                                      over the mels; binary conv2 in the student
    -> (B, T/4, 1, 256) -> linear 1x1 256 -> 128, ReLU
    8 x DFSMNLayer, memory blocks left = 4, right = 0 (kernel 5: the current frame and 4 back)
    ring: the last 8 backbone frames (zeros before the first: the empty ring buffer)
    flatten 8 * 128 -> dropout -> Dense(num_classes)

Choices, and why:

- **Causal, no look-ahead.** A memory block that reads r frames ahead delays its output by r
  backbone frames (128 ms each), and the delays add up over the layers: the reference's r = 2
  in 8 layers would hold every decision back by 2 s. Causal memory blocks keep the same number
  of taps (kernel 5: the current frame and 4 back instead of 2 and 2); future context of a frame
  still reaches the decision through the classifier, which reads the last 8 frames (1 s). The
  front-end convs pad time by kernel - stride = 3 frames in front: output frame t of a stride-2
  conv reads input frames 2t - 3 .. 2t + 1, so it is complete as soon as frame 2t + 1 arrives.
- **One backbone frame per hop.** The two stride-2 convs turn 4 feature frames (4 x 512 = 2048
  samples = 128 ms) into one backbone frame, so a hop is 2048 samples of audio or 4 feature
  frames, and every invoke of the streaming model gives the logits of the 1 s window that ends
  with the hop (kws_streaming likewise feeds a strided model its total stride per step).
- **The binary conv2's scale.** The windowed student averages |r| over the whole window (one s
  per sample): not computable before the window ends. Here s is averaged over each output
  position's 5 x 5 x 16 receptive field (an average pool of the per-position channel mean), so
  it is known as soon as the inputs of that output are, and it is still constant over the
  conv's input channels and taps of each output, the property that lets
  conv(b1 + s b2) = conv(b1) + s conv(b2) run as two binary convolutions
  (`lce_kernels.ops.BCONV2D`). For 1x1 convs this is the per-frame channel mean the windowed
  student already uses.
- **Padding is of the layer input** (zeros), binarized like any other input, so a stream that
  starts from zero state computes exactly what the model computes on the zero-padded window.

Streaming state (`StreamingDFSMN`): per hop the new frames are appended to a buffer of the
frames each layer still needs, the layer runs without padding ('valid' in time), and the last
frames become the new state:

    conv1   the last 3 feature frames           (3, 32, 1)
    conv2   the last 3 conv1 output frames      (3, 16, 16)   (post-ReLU, pre-binarization)
    layerJ  the last 4 memory inputs a          (4 * dilation, 1, 128)  (student: a is the
            of layer J (depth's layers only)    dual-scale activation b1 + s b2 - t2)
    ring    the last 8 - n backbone frames      (8 - n, 1, 128)  (n backbone frames per hop:
                                                 1 by default, 2 with 8-frame hops; the hop's
                                                 n frames complete the classifier's 8)

All start at zero (`initial_states`): a stream from reset equals the non-streaming model on
the frames seen so far (`build_dfsmn_stream` with any multiple of 4 frames), and a 1 s window
fed hop by hop from reset equals the non-streaming model on that window (what training sees).
In a continuous stream the states carry real past frames instead of the zero padding of
training: the model's receptive field (3 + 4 x 8 layers backbone frames before the ring) then
reaches past the 1 s window, a difference training does not see; the stream tool measures its
effect (`firmware_sim.stream --loop windowed` runs the same weights window by window).
"""
from __future__ import annotations

import tensorflow as tf

from models.dfsmn import backbone_and_classifier
from models.dual_scale import QuantConvBN
from models.thinnable import layer_set

__all__ = ["CausalConvBN", "LastFrames", "StreamingDFSMN", "build_dfsmn_stream",
           "is_streaming_arch", "TIME_STRIDE", "RING_FRAMES", "FRONT_KERNEL", "FRONT_STRIDE"]

FRONT_KERNEL = 5
FRONT_STRIDE = 2
#: feature frames per backbone frame (two stride-2 convs): the frames of one hop
TIME_STRIDE = FRONT_STRIDE * FRONT_STRIDE
#: backbone frames the classifier reads (32 feature frames: the 1 s window)
RING_FRAMES = 8


def is_streaming_arch(model_or_name) -> bool:
    """A streaming-capable model (built by `build_dfsmn_stream`) or registry name."""
    if isinstance(model_or_name, str):
        from models import registry
        builder = registry._REGISTRY.get(model_or_name)  # noqa: SLF001
        return getattr(builder, "func", None) is build_dfsmn_stream
    try:
        model_or_name.get_layer("ring")
    except ValueError:
        return False
    return True


def last_frames(x, n: int, flat: bool = False):
    """``x[:, -n:]`` of a (B, T, ...) tensor with static T and inner dims, taken as one
    contiguous run: reshaped to (B, T * inner), sliced, reshaped back (``flat``: left
    (B, n * inner)). The same values; but TFLite's and TFLM's STRIDED_SLICE copy the
    innermost axis run by run, which for conv1's state (3 frames x 32 mels x 1 channel) is 96
    copies of one float, and a row-major tensor's last frames are one run."""
    if x.shape[1] is None or any(d is None for d in x.shape[2:]):  # not static: plain slice
        tail = x[:, -n:]
        return tf.reshape(tail, [tf.shape(x)[0], -1]) if flat else tail
    inner = 1
    for d in x.shape[2:]:
        inner *= int(d)
    tail = tf.reshape(x, [-1, int(x.shape[1]) * inner])[:, -n * inner:]
    return tail if flat else tf.reshape(tail, [-1, n] + [int(d) for d in x.shape[2:]])


def same_padding(n: int, kernel: int, stride: int):
    """TensorFlow's 'same' padding (before, after) of an axis of length n."""
    out = -(-n // stride)
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


@tf.keras.utils.register_keras_serializable(package="bifsmn")
class CausalConvBN(QuantConvBN):
    r"""A k x k, stride-s `QuantConvBN` that is causal in time and 'same' over frequency.

    Input (B, T, F, C). The input is zero padded by \\(k - s\\) frames before the first frame
    (none after) and by TensorFlow's 'same' amounts over F, then convolved without padding:
    output frame t reads input frames \\(st - (k - s) \ldots st + s - 1\\), so
    \\(T_{out} = T / s\\) for T a multiple of s, and the zero frames are exactly the state a
    stream starts from (`step`).

    Binary (student), with \\((b_1, b_2, r)\\) the dual-scale binarization of the padded input
    (`DualScaleActivation`, per-channel thresholds):

    \\[
    y_{t,f} = \mathrm{BN}\big(\hat W * b_1 + s_{t,f}\, (\hat W * b_2) - k + b\big), \qquad
    s_{t,f} = \operatorname{mean}_{(\tau, \phi, c) \in \mathrm{RF}(t,f)} |r_{\tau,\phi,c}|
    \\]

    the scale averaged over the output's receptive field (k x k positions x C channels; an
    average pool k x k, stride s of the per-position channel mean), constant over the taps of
    each output, so the two bit planes stay two binary convolutions with one kernel, and
    \\(k_o = \sum \hat W_{\cdot,\cdot,c,o} t_{2,c}\\) exactly (no padded taps: padding is of the
    input, before binarization). Float (teacher): \\(\mathrm{BN}(W * x + b)\\).
    """

    def __init__(self, filters, kernel_size=FRONT_KERNEL, strides=FRONT_STRIDE, **kwargs):
        kwargs.pop("padding", None)
        kwargs.pop("scale_over", None)
        super().__init__(filters, kernel_size, strides=strides, padding="valid",
                         scale_over="channels", **kwargs)
        k = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
        s = strides if isinstance(strides, int) else strides[0]
        if isinstance(kernel_size, (tuple, list)) and len(set(kernel_size)) != 1 or \
                isinstance(strides, (tuple, list)) and len(set(strides)) != 1:
            raise ValueError("CausalConvBN takes a square kernel and one stride")
        if k < s:
            raise ValueError(f"kernel {k} < stride {s}: frames would be skipped")
        self.k, self.s = k, s
        #: frames of zeros before the input (and of state in a stream)
        self.time_pad = k - s

    def _padded(self, x, pad_time: bool):
        lo, hi = same_padding(int(x.shape[2]), self.k, self.s)
        return tf.pad(x, [[0, 0], [self.time_pad if pad_time else 0, 0], [lo, hi], [0, 0]])

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        t = None if input_shape[1] is None else input_shape[1] + self.time_pad
        lo, hi = same_padding(int(input_shape[2]), self.k, self.s)
        super().build(tf.TensorShape([input_shape[0], t, input_shape[2] + lo + hi,
                                      input_shape[3]]))

    def call(self, x, bn_index: int = 0, training=None):
        return self.valid(self._padded(x, True), bn_index, training)

    def step(self, x, state):
        """Streaming: ``x`` (B, n, F, C) new frames (n a multiple of the stride), ``state``
        (B, k - s, F, C) the frames before them -> (output (B, n / s, F', filters), new
        state). Inference only (folded BN). The zeros over F join the buffer in the same
        CONCATENATION as the state (what `_padded` does with a PAD, which the firmware's
        float PAD ran at ~21k instructions a hop for these few hundred floats)."""
        frames = tf.concat([state, x], axis=1)
        lo, hi = same_padding(int(x.shape[2]), self.k, self.s)
        buf = frames
        if lo or hi:
            shape = tf.shape(frames)
            zeros = [tf.zeros(tf.concat([shape[:2], [n], shape[3:]], 0)) for n in (lo, hi)]
            buf = tf.concat([zeros[0]] * bool(lo) + [frames] + [zeros[1]] * bool(hi), axis=2)
        # the new state: the last time_pad frames of [state, x], from x alone when it has
        # that many (a smaller copy)
        tail = x if x.shape[1] is not None and x.shape[1] >= self.time_pad else frames
        return self.valid(buf, 0, False), last_frames(tail, self.time_pad)

    def valid(self, x, bn_index=0, training=None):
        """The convolution of an already padded input (no padding in time or frequency)."""
        bn = self.bns[bn_index] if self.bns else None
        if not self.binary:
            return self._float(x, bn, training)
        b1, b2, s_pos = self.dual_scale(x)          # s_pos: (B, T, F, 1), mean over channels
        s = tf.nn.avg_pool2d(s_pos, self.k, self.s, "VALID")  # receptive-field mean of |r|
        return self._combine(self.conv(b1), self.conv(b2), s, bn, training)

    def get_config(self):
        config = super().get_config()
        for k in ("padding", "scale_over"):
            config.pop(k, None)
        return config


@tf.keras.utils.register_keras_serializable(package="bifsmn")
class LastFrames(tf.keras.layers.Layer):
    """(B, T, 1, C) -> (B, n, 1, C): the last ``n`` frames, zero frames in front when T < n
    (the classifier's ring buffer of a stream that started T frames ago)."""

    def __init__(self, frames: int = RING_FRAMES, **kwargs):
        super().__init__(**kwargs)
        self.frames = int(frames)

    def call(self, y):
        t = y.shape[1]
        if t is not None and t >= self.frames:
            return y[:, t - self.frames:]
        if t is not None:
            return tf.pad(y, [[0, 0], [self.frames - t, 0], [0, 0], [0, 0]])
        pad = tf.maximum(self.frames - tf.shape(y)[1], 0)   # any number of frames
        out = tf.pad(y, [[0, 0], [pad, 0], [0, 0], [0, 0]])[:, -self.frames:]
        return tf.ensure_shape(out, [None, self.frames] + y.shape[2:].as_list())

    def get_config(self):
        return {**super().get_config(), "frames": self.frames}


def kwargs_problem(kwargs) -> str | None:
    """What is wrong with these size flags for a streaming model (None: nothing)."""
    right, left = kwargs.get("right", 0), kwargs.get("left", 4)
    if right not in (0, None):
        return (f"the streaming DFSMN is causal: its memory blocks read no frame ahead, so "
                f"--right must be 0 (got {right}); use --left=4 --right=0 (kernel 5: the "
                "current frame and 4 back)")
    if left is not None and left < 1:
        return f"--left must be >= 1 (got {left})"
    if kwargs.get("dilation", 1) < 1:
        return f"--dilation must be >= 1 (got {kwargs.get('dilation')})"
    return None


def build_dfsmn_stream(
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
    left: int = 4,
    right: int = 0,
    dilation: int = 1,
    dropout: float = 0.2,
    ring: int = RING_FRAMES,
    name: str = None,
) -> tf.keras.Model:
    """The non-streaming form of the streaming teacher (`binary=False`) / student: what
    pipeline.train trains. Same arguments and outputs as `models.dfsmn.build_dfsmn` (a
    single-depth logits model, or with ``training_depths`` the dict of logits and layer
    features that FID distils); the variables have the same names and shapes as the
    windowed model's. ``input_shape`` (frames, mels): frames a multiple of 4, or None for
    any multiple of 4 (the classifier reads the last ``ring`` backbone frames, zeros in front
    of fewer): the model over all the frames a stream has seen is what the stream computes.

    ``right`` must be 0 (causal memory blocks, module docstring): ValueError otherwise."""
    problem = kwargs_problem({"left": left, "right": right, "dilation": dilation})
    if problem:
        raise ValueError(problem)
    frames, mels = input_shape
    if frames is not None and (frames % TIME_STRIDE or frames < TIME_STRIDE):
        raise ValueError(f"{frames} feature frames: the streaming model takes a multiple of "
                         f"{TIME_STRIDE} (one backbone frame per {TIME_STRIDE})")
    f1, f2 = front_channels
    inp = tf.keras.Input(shape=(frames, mels), name="features")
    x = tf.keras.layers.Reshape((-1 if frames is None else frames, mels, 1),
                                name="add_channel")(inp)
    x = CausalConvBN(f1, binary=False, num_bn=1, name="conv1")(x)
    x = tf.keras.layers.ReLU(name="conv1_relu")(x)
    x = CausalConvBN(f2, binary=binary, mode=mode, num_bn=1, name="conv2")(x)
    x = tf.keras.layers.ReLU(name="conv2_relu")(x)
    t, f = x.shape[1], x.shape[2]
    x = tf.keras.layers.Reshape((-1 if t is None else t, 1, f * f2), name="frames")(x)
    x = QuantConvBN(channels, 1, binary=binary, mode=mode, use_bias=True, name="linear")(x)
    x = tf.keras.layers.ReLU(name="linear_relu")(x)

    return backbone_and_classifier(
        inp, x, name, depth, training_depths, num_classes, channels, hidden, num_layers,
        left, 0, dilation, dropout, binary, mode, frames=LastFrames(ring, name="ring"),
        suffix="_stream")


class StreamingDFSMN(tf.Module):
    """The streaming form of a single-depth model built by `build_dfsmn_stream`: one hop
    (``hop_frames`` feature frames, a multiple of `TIME_STRIDE` = 4: 4 = one backbone frame =
    128 ms, 8 = 256 ms, the windowed loop's decision rate) per `step`, state explicit. The
    states do not depend on the hop. Shares the model's variables (nothing is copied: weights
    loaded into the model are what it runs).

        stream = StreamingDFSMN(model)
        states = stream.initial_states()
        for chunk in hops:                   # (1, 4, 32) feature frames each
            logits, states = stream.step(chunk, states)

    ``state_specs``: [(name, shape without the batch axis)] in the order of ``states``.
    """

    def __init__(self, model: tf.keras.Model, name=None, hop_frames: int = TIME_STRIDE):
        super().__init__(name=name or f"{model.name}_streaming")
        if hop_frames < TIME_STRIDE or hop_frames % TIME_STRIDE:
            raise ValueError(f"hop of {hop_frames} feature frames: a streaming hop is a "
                             f"positive multiple of {TIME_STRIDE} (one backbone frame per "
                             f"{TIME_STRIDE})")
        if not is_streaming_arch(model):
            raise ValueError(f"{model.name} is not a streaming model (build_dfsmn_stream)")
        self.model = model
        self.conv1 = model.get_layer("conv1")
        self.conv2 = model.get_layer("conv2")
        self.linear = model.get_layer("linear")
        self.backbone = model.get_layer("dfsmn")
        self.ring = model.get_layer("ring").frames
        self.classifier = model.get_layer("classifier")
        if len(self.backbone.depth_indices) != 1 or self.backbone.return_features:
            raise ValueError("StreamingDFSMN runs a single-depth model (build_dfsmn_stream "
                             "without training_depths)")
        self.depth_index = self.backbone.depth_indices[0]
        self.layers = layer_set(self.depth_index, self.backbone.num_layers)
        frames, self.mels = model.input_shape[1:]
        self.hop_frames = int(hop_frames)
        self.hop_backbone = self.hop_frames // TIME_STRIDE   # backbone frames per hop
        c1 = int(self.conv1.conv.kernel.shape[-1])
        f_mid = -(-self.mels // FRONT_STRIDE)
        mem = self.backbone.left * self.backbone.dilation
        ch = self.backbone.channels
        self.state_specs = (
            [("conv1", (self.conv1.time_pad, self.mels, 1)),
             ("conv2", (self.conv2.time_pad, f_mid, c1))]
            + [(f"layer{j}", (mem, 1, ch)) for j in self.layers]
            + ([("ring", (self.ring - self.hop_backbone, 1, ch))]
               if self.ring > self.hop_backbone else []))

    def initial_states(self, batch: int = 1):
        """Zero state: the empty stream (equal to the zero padding of the window)."""
        return [tf.zeros((batch,) + tuple(shape)) for _, shape in self.state_specs]

    def step(self, features, states):
        """features (B, hop_frames, mels), states -> (logits (B, classes) of the window
        ending with the hop, new states)."""
        st = list(states)
        if len(st) != len(self.state_specs):
            raise ValueError(f"{len(st)} states given, the model has {len(self.state_specs)}")
        new = []
        x = tf.expand_dims(features, -1)
        with tf.name_scope("conv1"):   # the windowed model's scopes: op reports find them
            x, s = self.conv1.step(x, st.pop(0))
        new.append(s)
        with tf.name_scope("conv2"):
            x, s = self.conv2.step(tf.nn.relu(x), st.pop(0))
        new.append(s)
        x = tf.nn.relu(x)
        x = tf.reshape(x, [-1, x.shape[1], 1, x.shape[2] * x.shape[3]])
        h = tf.nn.relu(self.linear(x, training=False))
        with tf.name_scope("dfsmn"):
            for j in self.layers:
                with tf.name_scope(f"layer{j}"):
                    h, s = self._layer_step(self.backbone.blocks[j], h, st.pop(0))
                new.append(s)
        with tf.name_scope("ring"):
            keep = self.ring - self.hop_backbone
            if keep > 0:   # the state and the hop's frames: exactly the classifier's frames
                buf = tf.concat([st.pop(0), h], axis=1)
                flat = tf.reshape(buf, [-1, self.ring * h.shape[-1]])
                new.append(buf[:, -keep:])   # runs of 128 floats: a plain STRIDED_SLICE
            else:
                flat = last_frames(h, self.ring, flat=True)
        return self.classifier(flat), new

    def _layer_step(self, layer, x, state):
        """One DFSMNLayer (models.dfsmn) on new frames x (B, n, 1, C) with the memory block's
        state (the last left * dilation values of its input a): causal, so 'valid' in time."""
        d = self.depth_index
        mem = layer.memory
        with tf.name_scope("memory"):
            a = mem.dual_scale.combine(*mem.dual_scale(x)) if mem.binary else x
            buf = tf.concat([state, a], axis=1)
            h = mem.dwconv(buf)
            m = x + mem.act(mem.bns[d](h, training=False))
        y = layer.pw1_act(layer.pw1(m, bn_index=d, training=False))
        o = layer.pw2(y, bn_index=d, training=False)
        return m + layer.acts[d](o), buf[:, -state.shape[1]:]
