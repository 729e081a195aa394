"""Independent NumPy implementation of the DFSMN / BiFSMNv2 forward pass (inference mode).

Written from the math in REFERENCE.md and the model docstrings, not from the Keras code:
parameters are read from a Keras model by variable name only. Differences in formulation on
purpose: the binary conv here convolves the dual-scale activation a = b1 + s*b2 - t2 directly
(padded with its defined edge value 1 + s - t2, i.e. bit planes padded with +1), instead of
conv(b1) + s*conv(b2) - k; BatchNorm is applied unfolded.

Also: `randomize_weights`, which gives every BN statistic, threshold, PReLU slope, bias and
LPB alpha a random value. Needed for any exact comparison: with the initial thresholds (0) and
identity BN, a binary conv output lies on a lattice (n1 + s*n2 with integers n1, n2) and is
EXACTLY 0 with probability ~0.5%; a float implementation then rounds to +-1e-8 and sign()
of the tie flips at random. With random shifts, ties have measure zero.
"""
import numpy as np

from pipeline.kernel_ref import MIN_WEIGHT_SCALE


def sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def same_padding(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def conv2d(x, w, stride=1, pad=((0, 0), (0, 0)), pad_value=0.0):
    """x (B, H, W, C), w (kh, kw, C, O), explicit padding; pad_value scalar or (B,1,1,C)."""
    b, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    (pt, pb), (pl, pr) = pad
    xp = np.empty((b, h + pt + pb, wd + pl + pr, c), dtype=np.float64)
    xp[...] = pad_value
    xp[:, pt:pt + h, pl:pl + wd, :] = x
    ho = (h + pt + pb - kh) // stride + 1
    wo = (wd + pl + pr - kw) // stride + 1
    out = np.zeros((b, ho, wo, o))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            out += patch @ w[i, j]
    return out


def batch_norm(x, p, eps=1e-5):
    return p["gamma"] * (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + eps) + p["beta"]


def prelu(x, slope):
    return np.maximum(x, 0) + slope.reshape(-1) * np.minimum(x, 0)


def relu(x):
    return np.maximum(x, 0)


def binarize_weight(w, channel_axis):
    axes = tuple(i for i in range(w.ndim) if i != channel_axis % w.ndim)
    return sign(w) * np.maximum(np.mean(np.abs(w), axis=axes, keepdims=True), MIN_WEIGHT_SCALE)


def dual_scale(x, t0, t1, t2, per_sample):
    """(b1, b2, s): b1 = sign(x - t0), r = x - b1 - t1, b2 = sign(r), s = mean|r|."""
    b1 = sign(x - t0)
    r = x - b1 - t1
    b2 = sign(r)
    axes = tuple(range(1, x.ndim)) if per_sample else (x.ndim - 1,)
    s = np.mean(np.abs(r), axis=axes, keepdims=True)
    return b1, b2, s


class Params:
    """Variable values of a Keras model by name, e.g. P["dfsmn/layer3/pw1/conv/kernel"]."""

    def __init__(self, model):
        self.v = {w.name.split(":")[0]: np.asarray(w.numpy(), dtype=np.float64)
                  for w in model.weights}

    def __getitem__(self, k):
        return self.v[k]

    def group(self, prefix):
        return {k[len(prefix) + 1:]: v for k, v in self.v.items() if k.startswith(prefix + "/")}


def conv_block(x, P, name, binary, stride=1, same=False, per_sample=False, bn="bn0"):
    """QuantConvBN math: float BN(W*x + b) or binary BN(W^ * a + b), a = b1 + s b2 - t2."""
    w = P[f"{name}/conv/kernel"]
    kh, kw = w.shape[:2]
    pad = ((0, 0), (0, 0))
    if same:
        pad = (same_padding(x.shape[1], kh, stride), same_padding(x.shape[2], kw, stride))
    if binary:
        t0, t1, t2 = (P[f"{name}/dual_scale/threshold_t{i}"] for i in range(3))
        b1, b2, s = dual_scale(x, t0, t1, t2, per_sample)
        a = b1 + s * b2 - t2
        edge = 1.0 + s * 1.0 - t2  # bit planes padded with +1
        if not per_sample:
            assert pad == ((0, 0), (0, 0)), "per-frame scale only for unpadded 1x1 convs"
            edge = 0.0
        y = conv2d(a, binarize_weight(w, -1), stride, pad,
                   edge if np.ndim(edge) == 0 else np.broadcast_to(edge, (x.shape[0], 1, 1, x.shape[-1])))
    else:
        y = conv2d(x, w, stride, pad, 0.0)
    if f"{name}/bias" in P.v:
        y = y + P[f"{name}/bias"]
    if bn is not None and f"{name}/{bn}/gamma" in P.v:
        y = batch_norm(y, P.group(f"{name}/{bn}"))
    return y


def memory_block(x, P, name, binary, left=2, right=2, dilation=1, bn="bn0"):
    """m = x + PReLU(BN(sum_k w[k,c] a[t + (k - l) d, c])), a zero-padded in time."""
    w = P[f"{name}/dwconv/depthwise_kernel"]  # (l + r + 1, 1, C, 1)
    if binary:
        t0, t1, t2 = (P[f"{name}/dual_scale/threshold_t{i}"] for i in range(3))
        b1, b2, s = dual_scale(x, t0, t1, t2, per_sample=False)
        a = b1 + s * b2 - t2
        w = binarize_weight(w, 2)
    else:
        a = x
    w = w[:, 0, :, 0]  # (K, C)
    bsz, T, _, C = x.shape
    h = np.zeros_like(a)
    for t in range(T):
        for k in range(left + right + 1):
            tau = t + (k - left) * dilation
            if 0 <= tau < T:
                h[:, t] += w[k] * a[:, tau]
    return x + prelu(batch_norm(h, P.group(f"{name}/{bn}")), P[f"{name}/act/alpha"])


def dfsmn_layer(x, P, j, d, binary):
    pre = f"dfsmn/layer{j}"
    m = memory_block(x, P, f"{pre}/memory", binary, bn=f"bn{d}")
    h = conv_block(m, P, f"{pre}/pw1", binary, bn=f"bn{d}")
    h = prelu(h, P[f"{pre}/pw1_act/alpha"]) if binary else relu(h)
    o = conv_block(h, P, f"{pre}/pw2", binary, bn=f"bn{d}")
    return m + prelu(o, P[f"{pre}/act{d}/alpha"])


def assert_nontrivial(logits):
    """Logits must vary across samples and classes (else a comparison proves nothing)."""
    logits = np.asarray(logits)
    assert np.std(logits - logits.mean(axis=0)) > 1e-2, "logits do not depend on the input"


def forward(x, P, binary, depth_index=0, num_layers=8):
    """x (B, frames, mels) -> logits (B, classes)."""
    h = x[..., None].astype(np.float64)
    h = relu(conv_block(h, P, "conv1", False, stride=2, same=True))
    h = relu(conv_block(h, P, "conv2", binary, stride=2, same=True, per_sample=True))
    b, t, f, c = h.shape
    h = h.reshape(b, t, 1, f * c)
    h = relu(conv_block(h, P, "linear", binary))
    for j in range(num_layers):
        if (j + 1) % 2 ** depth_index == 0:
            h = dfsmn_layer(h, P, j, depth_index, binary)
    h = h.reshape(b, -1)
    return h @ P["classifier/kernel"] + P["classifier/bias"]


def randomize_weights(model, seed=0):
    """Random non-degenerate values for every non-kernel variable; kernels keep their
    initialisation unless it is all zeros (the classifier is zero-initialised for training
    stability), which would make every comparison of logits vacuous."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        name = w.name.split(":")[0].rsplit("/", 1)[-1]
        shape = tuple(w.shape)
        if name in ("kernel", "depthwise_kernel"):
            if np.any(w.numpy() != 0):
                continue
            fan_in = int(np.prod(shape[:-1]))
            w.assign(rng.normal(0, 1 / np.sqrt(fan_in), shape).astype(np.float32))
            continue
        if name == "gamma":
            val = rng.uniform(0.5, 1.5, shape)
        elif name == "moving_variance":
            val = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "moving_mean", "bias"):
            val = rng.normal(0, 0.2, shape)
        elif name.startswith("threshold_t"):
            val = rng.normal(0, 0.2, shape)
        elif name == "alpha":  # PReLU slopes
            val = rng.uniform(0.0, 0.5, shape)
        elif name == "lpb_alpha":
            val = rng.uniform(0.5, 1.5, shape)
        else:
            raise KeyError(f"no randomisation rule for {w.name}")
        w.assign(val.astype(np.float32))
