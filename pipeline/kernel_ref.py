"""NumPy reference of ONE binary DFSMN layer for the bitwise C++ kernel (lce_kernels/core).

Reads: nothing (random layers from --seed).
Writes: --cases test vectors (.bdv files) into --out_dir for lce_kernels/tests/bdfsmn_test.cc;
  their list (--json_out).

Three views of the same layer:

- `raw_forward`: the textbook float64 math on raw (Keras-named) parameters, written like
  `tests/numpy_ref.py` (depthwise conv of a = b1 + s*b2 - t2, unfolded BN).
- `fold` + `packed_forward`: the inference form the kernel consumes (bit-packed signs,
  per-channel multiplier/bias with BN and the t2 constant folded in, PReLU slopes) and its
  evaluation with explicit INTEGER accumulators (D1, W of the memory block; P1/P2 of pw1 and
  pw2), in float64. `packed_forward(x, fold(raw))` must equal `raw_forward(x, raw)`.
- `raw_from_params`: the raw parameters of layer j of a Keras BiFSMNv2 student (via
  `numpy_ref.Params`), which ties the kernel to the trained model's math.

Test vectors for the C++ runner (`lce_kernels/tests/bdfsmn_test.cc`) are written by
`write_vectors` / the command line (`python -m pipeline.kernel_ref --out_dir DIR`): one `.bdv` file
per case, a tiny self-describing little-endian record format (see `write_case`). Only NumPy
is needed here (no TensorFlow), so vectors can be made anywhere.

Bit convention (as LCE): bit = 1 <=> -1, LSB first in 32-bit words, rows padded to
ceil(n/32) words with zero pad bits; sign(0) = +1 (``lce_kernels.ops.pack_bits``; the words
are uint32 here). The op's operands from the inference form: ``lce_kernels.ops.bdfsmn_inputs``.
"""
import os
import struct

import numpy as np

# the op's bit layout and operand order are the contract's (lce_kernels/ops.py); the math
# below (raw forward, folding, packed forward) is this module's own, independent of it
from lce_kernels.ops import pack_bits, unpack_bits

#: The binary weights' per-output-channel scale floor, written out here so that this module
#: needs no TensorFlow: models.quantizers.MIN_WEIGHT_SCALE (tests/test_models.py checks the two
#: are equal).
MIN_WEIGHT_SCALE = 2.0 ** -20


def weight_scale(w):
    """mean |w| over axis 0 (the inputs / taps), per output channel, floored at
    MIN_WEIGHT_SCALE; shape (1, out)."""
    return np.maximum(np.mean(np.abs(w), axis=0, keepdims=True), MIN_WEIGHT_SCALE)

EPS = 1e-5  # BatchNorm epsilon of the model (models.dfsmn / QuantConvBN default)
NUM_DEPTHS = 4
MAGIC = b"BDFV1\0\0\0"


# ------------------------------------------------------------------ raw parameters
def sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def prelu(z, slope):
    return np.where(z < 0, z * slope, z)


def batch_norm(x, p, eps=EPS):
    return p["gamma"] * (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + eps) + p["beta"]


def _f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def random_raw_layer(rng, channels, hidden, left, right):
    """Random non-degenerate raw parameters (all float32-representable), Keras shapes:
    mem_w (K, C), pw1_w (C, H), pw2_w (H, C), thresholds (3, n), lists of one BN dict
    per depth index (mem_bn, pw1_bn, pw2_bn), slopes (act_slope per depth)."""
    C, H, K = channels, hidden, left + right + 1

    def bn(n):
        return {"gamma": _f32(rng.uniform(0.5, 1.5, n)), "beta": _f32(rng.normal(0, 0.2, n)),
                "moving_mean": _f32(rng.normal(0, 0.2, n)),
                "moving_variance": _f32(rng.uniform(0.5, 1.5, n))}

    return {
        "mem_w": _f32(rng.normal(0, 1 / np.sqrt(K), (K, C))),
        "mem_t": _f32(rng.normal(0, 0.2, (3, C))),
        "mem_bn": [bn(C) for _ in range(NUM_DEPTHS)],
        "mem_slope": _f32(rng.uniform(0.0, 0.5, C)),
        "pw1_w": _f32(rng.normal(0, 1 / np.sqrt(C), (C, H))),
        "pw1_t": _f32(rng.normal(0, 0.2, (3, C))),
        "pw1_bn": [bn(H) for _ in range(NUM_DEPTHS)],
        "pw1_slope": _f32(rng.uniform(0.0, 0.5, H)),
        "pw2_w": _f32(rng.normal(0, 1 / np.sqrt(H), (H, C))),
        "pw2_t": _f32(rng.normal(0, 0.2, (3, H))),
        "pw2_bn": [bn(C) for _ in range(NUM_DEPTHS)],
        "act_slope": [_f32(rng.uniform(0.0, 0.5, C)) for _ in range(NUM_DEPTHS)],
    }


def _bn_per_depth(P, prefix):
    """The BatchNorm of each depth index under `prefix`: switchable BN (`bn0..bn3`), a
    single `bn0`, or an unnumbered `bn` (older checkpoints) shared by every depth."""
    if f"{prefix}/bn0/gamma" in P.v:
        return [P.group(f"{prefix}/bn{d}") if f"{prefix}/bn{d}/gamma" in P.v
                else P.group(f"{prefix}/bn0") for d in range(NUM_DEPTHS)]
    return [P.group(f"{prefix}/bn")] * NUM_DEPTHS


def raw_from_params(P, j):
    """Raw parameters of student layer j from a `numpy_ref.Params` (Keras variable names).
    BN lists are per depth index (all three BNs of a layer are switchable in the model)."""
    pre = f"dfsmn/layer{j}"
    return {
        "mem_w": P[f"{pre}/memory/dwconv/depthwise_kernel"][:, 0, :, 0],
        "mem_t": np.stack([P[f"{pre}/memory/dual_scale/threshold_t{i}"] for i in range(3)]),
        "mem_bn": _bn_per_depth(P, f"{pre}/memory"),
        "mem_slope": P[f"{pre}/memory/act/alpha"].reshape(-1),
        "pw1_w": P[f"{pre}/pw1/conv/kernel"][0, 0],
        "pw1_t": np.stack([P[f"{pre}/pw1/dual_scale/threshold_t{i}"] for i in range(3)]),
        "pw1_bn": _bn_per_depth(P, f"{pre}/pw1"),
        "pw1_slope": P[f"{pre}/pw1_act/alpha"].reshape(-1),
        "pw2_w": P[f"{pre}/pw2/conv/kernel"][0, 0],
        "pw2_t": np.stack([P[f"{pre}/pw2/dual_scale/threshold_t{i}"] for i in range(3)]),
        "pw2_bn": _bn_per_depth(P, f"{pre}/pw2"),
        "act_slope": [P[f"{pre}/act{d}/alpha"].reshape(-1) for d in range(NUM_DEPTHS)],
    }


def _dual(v, t):
    b1 = sign(v - t[0])
    r = v - b1 - t[1]
    b2 = sign(r)
    s = np.mean(np.abs(r), axis=-1, keepdims=True)
    return b1 + s * b2 - t[2]


def raw_forward(x, raw, left, right, dilation, depth):
    """Textbook float64 forward of one binary DFSMN layer. x (T, C) -> out (T, C)."""
    x = np.asarray(x, np.float64)
    T = x.shape[0]
    a = _dual(x, raw["mem_t"])
    w = raw["mem_w"]
    w = sign(w) * weight_scale(w)
    h = np.zeros_like(x)
    for t in range(T):
        for k in range(left + right + 1):
            tau = t + (k - left) * dilation
            if 0 <= tau < T:
                h[t] += w[k] * a[tau]
    m = x + prelu(batch_norm(h, raw["mem_bn"][depth]), raw["mem_slope"])
    w1 = sign(raw["pw1_w"]) * weight_scale(raw["pw1_w"])
    hid = prelu(batch_norm(_dual(m, raw["pw1_t"]) @ w1, raw["pw1_bn"][depth]),
                raw["pw1_slope"])
    w2 = sign(raw["pw2_w"]) * weight_scale(raw["pw2_w"])
    o = batch_norm(_dual(hid, raw["pw2_t"]) @ w2, raw["pw2_bn"][depth])
    return m + prelu(o, raw["act_slope"][depth])


# ------------------------------------------------------------------ inference form
def fold(raw, depth, eps=EPS):
    """Raw parameters -> the kernel's inference form (float64 vectors, uint32 bit words)."""
    def g_of(bn):
        return bn["gamma"] / np.sqrt(bn["moving_variance"] + eps)

    p = {}
    mw = raw["mem_w"]
    mbn = raw["mem_bn"][depth]
    g = g_of(mbn)
    p["mem_weights"] = pack_bits(mw < 0, np.uint32)           # (K, ceil(C/32))
    p["mem_t0"], p["mem_t1"], p["mem_t2"] = raw["mem_t"]
    p["mem_mul"] = g * weight_scale(mw)[0]
    p["mem_bias"] = mbn["beta"] - mbn["moving_mean"] * g
    p["mem_slope"] = raw["mem_slope"]
    for name, w, t, bn, slope in (
            ("pw1", raw["pw1_w"], raw["pw1_t"], raw["pw1_bn"][depth], raw["pw1_slope"]),
            ("pw2", raw["pw2_w"], raw["pw2_t"], raw["pw2_bn"][depth], raw["act_slope"][depth])):
        g = g_of(bn)
        mul = g * weight_scale(w)[0]                         # (out,)
        k = sign(w).T @ t[2]                                 # sum_c sigma[c, o] t2[c]
        p[f"{name}_weights"] = pack_bits((w < 0).T, np.uint32)  # (out, ceil(in/32))
        p[f"{name}_t0"], p[f"{name}_t1"] = t[0], t[1]
        p[f"{name}_mul"] = mul
        p[f"{name}_bias"] = bn["beta"] - bn["moving_mean"] * g - mul * k
        p[f"{name}_slope"] = slope
    return p


FLOAT_KEYS = ["mem_t0", "mem_t1", "mem_t2", "mem_mul", "mem_bias", "mem_slope",
              "pw1_t0", "pw1_t1", "pw1_mul", "pw1_bias", "pw1_slope",
              "pw2_t0", "pw2_t1", "pw2_mul", "pw2_bias", "pw2_slope"]
WEIGHT_KEYS = ["mem_weights", "pw1_weights", "pw2_weights"]


def to_float32(p):
    """The parameters exactly as the kernel stores them (float32 vectors)."""
    q = dict(p)
    for k in FLOAT_KEYS:
        q[k] = _f32(p[k])
    return q


def binarize(v, t0, t1):
    """Dual-scale binarization -> (neg1, neg2, s, d, r): bit planes (True = -1), per-frame
    scale, and the two arguments of sign (for tie margins)."""
    d = v - t0
    neg1 = d < 0
    r = (v - np.where(neg1, -1.0, 1.0)) - t1
    neg2 = r < 0
    return neg1, neg2, np.mean(np.abs(r), axis=-1), d, r


def dual_quantize(x, t0, t1, scale_shape):
    """The dual-scale binarization op (``lce_kernels.ops.DUAL_QUANTIZE``) written out:
    x float32 [B, ..., C], t0 / t1 [C], ``scale_shape`` the shape of its ``s`` output (x's
    rank; 1 on the averaged axes) -> (b1, b2 int32 words [B, ..., ceil(C/32)], s float32).
    The two signs in float32 as the converter's SUBs compute them; the mean in float64."""
    x = np.asarray(x, np.float32)
    t0, t1 = np.asarray(t0, np.float32), np.asarray(t1, np.float32)
    neg1 = (x - t0) < 0
    r = (x - np.where(neg1, np.float32(-1), np.float32(1))) - t1
    axes = tuple(a for a, (n, m) in enumerate(zip(x.shape, scale_shape)) if m == 1 and n != 1)
    s = np.mean(np.abs(r.astype(np.float64)), axis=axes, keepdims=True) if axes else \
        np.abs(r.astype(np.float64))
    return (pack_bits(neg1), pack_bits(r < 0),
            np.asarray(s, np.float32).reshape([int(d) for d in scale_shape]))


def packed_forward(x, p, left, right, dilation):
    """Float64 forward from the inference form, with every integer accumulator.

    Returns a dict: out, m, h (T, .) float; mem_s/pw1_s/pw2_s (T,); packed bit planes
    mem_b1/mem_b2/pw1_b1/pw1_b2 (T, ceil(C/32)), pw2_b1/pw2_b2 (T, ceil(H/32)) uint32;
    int32 mem_d1, mem_wsum (T, C), pw1_p1, pw1_p2 (T, H), pw2_p1, pw2_p2 (T, C); and
    `margin`, the smallest |argument| of any sign() (tie distance)."""
    x = np.asarray(x, np.float64)
    T, C = x.shape
    K = left + right + 1
    res = {}
    margins = []

    n1, n2, s, d, r = binarize(x, p["mem_t0"], p["mem_t1"])
    margins += [np.abs(d).min(), np.abs(r).min()]
    res["mem_b1"], res["mem_b2"] = pack_bits(n1, np.uint32), pack_bits(n2, np.uint32)
    res["mem_s"] = s
    wneg = unpack_bits(p["mem_weights"], C)                       # (K, C)
    d1 = np.zeros((T, C), np.int64)
    ws = np.zeros((T, C), np.int64)
    s2 = np.zeros((T, C))
    for t in range(T):
        for k in range(K):
            tau = t + (k - left) * dilation
            if 0 <= tau < T:
                d1[t] += 1 - 2 * (wneg[k] ^ n1[tau])
                ws[t] += 1 - 2 * wneg[k]
                s2[t] += s[tau] * (1 - 2 * (wneg[k] ^ n2[tau]))
    res["mem_d1"], res["mem_wsum"] = d1.astype(np.int32), ws.astype(np.int32)
    z = (d1 + s2 - p["mem_t2"] * ws) * p["mem_mul"] + p["mem_bias"]
    m = x + prelu(z, p["mem_slope"])
    res["m"] = m

    h = _pointwise(p, "pw1", m, res, margins)
    res["h"] = h
    res["out"] = m + _pointwise(p, "pw2", h, res, margins)
    res["margin"] = float(min(margins))
    return res


def layer_stream(x, state, p, left, dilation=1):
    """The streaming form of the layer (``lce_kernels.ops.BDFSMN`` with a state; right = 0),
    float64, written from its definition: ``x`` (T, C) the new frames, ``state`` (S, C) with
    S = left * dilation the memory block's inputs a of the frames before them (zeros at the
    start of a stream). Returns a dict: out (T, C), new_state (S, C), m (T, C), and
    ``margin`` (the smallest |argument| of any sign(), for tie-free inputs)::

        a = (v1 + s v2) - t2           v1, v2 = +-1 from the dual-scale binarization of x
        A = [state; a]
        m[t] = x[t] + PReLU(sum_k sign(w_k) A[S + t - (left - k) dil] * mul + bias)
        out = m + pw2(pw1(m))          (as ``packed_forward``)
        new_state = A[T:]
    """
    x = np.asarray(x, np.float64)
    state = np.asarray(state, np.float64)
    T, C = x.shape
    S = left * dilation
    if state.shape != (S, C):
        raise ValueError(f"state {state.shape}, expected {(S, C)}")
    n1, n2, s, d, r = binarize(x, p["mem_t0"], p["mem_t1"])
    margins = [np.abs(d).min(), np.abs(r).min()]
    a = (np.where(n1, -1.0, 1.0) + s[:, None] * np.where(n2, -1.0, 1.0)) - p["mem_t2"]
    A = np.concatenate([state, a], axis=0)
    sigma = np.where(unpack_bits(p["mem_weights"], C), -1.0, 1.0)      # (K, C)
    acc = np.zeros((T, C))
    for t in range(T):
        for k in range(left + 1):
            acc[t] += sigma[k] * A[S + t - (left - k) * dilation]
    m = x + prelu(acc * p["mem_mul"] + p["mem_bias"], p["mem_slope"])
    res = {"m": m, "new_state": A[T:]}
    h = _pointwise(p, "pw1", m, res, margins)
    res["out"] = m + _pointwise(p, "pw2", h, res, margins)
    res["margin"] = float(min(margins))
    return res


def _pointwise(p, name, v, res, margins):
    """One binary 1x1 conv of the layer on v (T, n_in), its counts stored in ``res``."""
    n_in = v.shape[1]
    a1, a2, sv, dd, rr = binarize(v, p[f"{name}_t0"], p[f"{name}_t1"])
    margins.extend([np.abs(dd).min(), np.abs(rr).min()])
    wn = unpack_bits(p[f"{name}_weights"], n_in)              # (out, in)
    p1 = n_in - 2 * np.sum(wn[None] ^ a1[:, None], axis=-1)   # (T, out)
    p2 = n_in - 2 * np.sum(wn[None] ^ a2[:, None], axis=-1)
    res[f"{name}_b1"], res[f"{name}_b2"] = pack_bits(a1, np.uint32), pack_bits(a2, np.uint32)
    res[f"{name}_s"] = sv
    res[f"{name}_p1"], res[f"{name}_p2"] = p1.astype(np.int32), p2.astype(np.int32)
    z = (p1 + sv[:, None] * p2) * p[f"{name}_mul"] + p[f"{name}_bias"]
    return prelu(z, p[f"{name}_slope"])


# ------------------------------------------------------------------ test vectors
_DT = {np.dtype(np.float32): b"f", np.dtype(np.float64): b"d", np.dtype(np.int32): b"i",
       np.dtype(np.uint32): b"u"}


def write_case(path, records):
    """records: dict name -> ndarray (float32/float64/int32/uint32). File layout (LE):
    magic[8] u32:count, then per record u16:len name u8:dtype('f','d','i','u') u8:ndim
    u32 dims[ndim] raw data."""
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(records)))
        for name, arr in records.items():
            arr = np.ascontiguousarray(arr)
            nb = name.encode()
            f.write(struct.pack("<H", len(nb)) + nb + _DT[arr.dtype] +
                    struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape))
            f.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())


def case_records(p, x, ref, shape):
    """Records of one test vector: shape (T, C, H, l, r, dilation, depth), the float32 /
    uint32 parameters, the float32 input and the reference (`packed_forward`) results."""
    rec = {"shape": np.array(shape, np.int32)}
    for k in WEIGHT_KEYS:
        rec[k] = np.asarray(p[k], np.uint32)
    for k in FLOAT_KEYS:
        rec[k] = np.asarray(p[k], np.float32)
    rec["x"] = np.asarray(x, np.float32)
    for k in ("mem_b1", "mem_b2", "pw1_b1", "pw1_b2", "pw2_b1", "pw2_b2"):
        rec["ref_" + k] = ref[k].astype(np.uint32)
    for k in ("mem_d1", "mem_wsum", "pw1_p1", "pw1_p2", "pw2_p1", "pw2_p2"):
        rec["ref_" + k] = ref[k].astype(np.int32)
    for k in ("mem_s", "pw1_s", "pw2_s", "m", "h", "out"):
        rec["ref_" + k] = np.asarray(ref[k], np.float64)
    return rec


def tie_free_input(rng, p, T, C, left, right, dilation, margin=5e-5, tries=500, scale=1.0):
    """Draw x (T, C) (float32 values) until every sign() argument of the layer is at least
    `margin` from 0, so float32 rounding in the kernel cannot flip a bit. -> (x, ref)."""
    for _ in range(tries):
        x = _f32(rng.normal(0, scale, (T, C)))
        ref = packed_forward(x, p, left, right, dilation)
        if ref["margin"] >= margin:
            return x, ref
    raise RuntimeError("could not draw a tie-free input")


def vary_slopes(rng, raw, kind):
    """PReLU slopes of the two forms of the NEON passes (lce_kernels/core/bdfsmn.h,
    Layer::MaxPreluExact): kind 0 keeps [0, 0.5); 1 spreads them over [-0.5, 1] (max(z, a z)
    still exact); 2 puts one slope of each stage above 1 (the select form)."""
    if kind == 0:
        return raw
    slopes = [raw["mem_slope"], raw["pw1_slope"]] + list(raw["act_slope"])
    for a in slopes:
        a[:] = _f32(a * 3.0 - 0.5)
        if kind == 2:
            a[int(rng.integers(a.size))] = 1.5
    return raw


def make_case(rng, T, C, H, left, right, dilation, depth, margin=5e-5, slopes=0):
    """A random layer and a tie-free input. Returns (records, ref)."""
    raw = vary_slopes(rng, random_raw_layer(rng, C, H, left, right), slopes)
    p = to_float32(fold(raw, depth))
    x, ref = tie_free_input(rng, p, T, C, left, right, dilation, margin)
    return case_records(p, x, ref, (T, C, H, left, right, dilation, depth)), ref


def case_shapes(n_cases=32, seed=0):
    """Shapes covering T in {1,3,8,13}, C/H not multiples of 32/64, l/r in {0..3},
    dilation {1,2}, every depth index; plus the model's own layer (8, 128, 256, 2, 2, 1)."""
    rng = np.random.default_rng(seed)
    Ts, Cs, Hs = [1, 3, 8, 13], [37, 100, 128, 200], [37, 100, 128, 200, 256]
    shapes = [(8, 128, 256, 2, 2, 1, d) for d in range(NUM_DEPTHS)]
    for i in range(n_cases - len(shapes)):
        shapes.append((Ts[i % 4], Cs[(i // 4) % 4], Hs[int(rng.integers(5))], i % 4,
                       int(rng.integers(4)), 1 + (i // 2) % 2, int(rng.integers(4))))
    return shapes


def write_vectors(out_dir, n_cases=32, seed=0):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    paths = []
    for i, shape in enumerate(case_shapes(n_cases, seed)):
        rec, _ = make_case(rng, *shape, slopes=i % 3)
        path = os.path.join(out_dir, "case_%03d_T%d_C%d_H%d_l%d_r%d_d%d_dep%d.bdv" % ((i,) + shape))
        write_case(path, rec)
        paths.append(path)
    return paths


def define_flags():
    from absl import flags

    from pipeline import cli_vocabulary
    flags.DEFINE_string("out_dir", None, "Folder for the .bdv test vectors (created).")
    flags.DEFINE_integer("cases", 32, "Number of test cases (layers).", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the random layers and inputs.")
    flags.mark_flag_as_required("out_dir")
    cli_vocabulary.define_aliases("pipeline.kernel_ref")  # --out (old name of --out_dir)


def main(argv):
    from absl import app, flags

    from pipeline import output_paths
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    output_paths.check_dir(f.out_dir, "--out_dir")
    paths = write_vectors(f.out_dir, f.cases, f.seed)
    print(f"wrote {len(paths)} cases to {f.out_dir}")
    return {"out_dir": f.out_dir, "cases": paths}  # --json_out


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags)
