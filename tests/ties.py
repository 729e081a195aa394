"""sign() ties: which samples a float rounding difference may legitimately change.

Two float implementations of the same binary network (Keras vs the LCE interpreter, float32
Keras vs the float64 NumPy reference) sum in different orders, so a binarizer input differs
between them by a rounding error (measured up to ~5e-6 after a few layers). Where that input
lies closer to its threshold than the error, sign() differs, one bit of one activation flips
and the sample's logits move by up to ~0.2 (relative): a correct implementation, not a bug.
With random weights this happened to 5 of 192 samples at depth 2 (measured on this machine;
which samples depends on the CPU's kernels, so a fixed tolerance on every sample is flaky).

So a comparison takes, per sample, the smallest distance of any binarizer input to its
threshold (`binarizer_margins`, recorded while Keras runs eagerly, at the inputs of the two
binarizers of every `DualScaleActivation`: x - t0 and r), and requires agreement to `tol` on
every sample whose margin is at least `delta` (4x the largest margin seen to flip), and at
least `MIN_TIE_FREE` such samples, so that the check cannot pass vacuously. A bug (a wrong
scale, padding, sign, layer order) moves every sample, tie-free or not.
"""
import contextlib

import numpy as np
import tensorflow as tf

#: Binarizer inputs within this distance of their threshold may flip between float
#: implementations (largest margin seen to flip: 5e-6).
TIE_DELTA = 2e-5
#: Fewest tie-free samples a comparison accepts (deep models have few: the minimum over more
#: binarizer inputs is smaller, ~19 % of random inputs at depth 8, so draw enough).
MIN_TIE_FREE = 4


@contextlib.contextmanager
def binarizer_margins(model):
    """Yield a list that, after `model(x)` runs eagerly inside the block, holds one (B,)
    array per activation-binarizer call (the `sign1` / `sign2` of every
    `DualScaleActivation`, whose inputs are x - t0 and r): min over the sample of |input|.
    The per-sample margin is the minimum over the list (`keras_with_margins`).

    Wraps each binarizer instance's `call` (not the class's: saving a model, as the LCE
    converter does, leaves a bound `call` in the instance's dict) and restores it on exit."""
    from models.dual_scale import DualScaleActivation

    records = []
    signs = [b for m in model.submodules if isinstance(m, DualScaleActivation)
             for b in (m.sign1, m.sign2)]
    saved = [b.__dict__.get("call") for b in signs]

    def wrap(inner):
        def call(inputs):
            if tf.executing_eagerly():
                axes = list(range(1, inputs.shape.rank))
                records.append(tf.reduce_min(tf.abs(inputs), axes).numpy())
            return inner(inputs)
        return call

    for b in signs:
        b.call = wrap(b.call)
    try:
        yield records
    finally:
        for b, old in zip(signs, saved):
            if old is None:
                del b.__dict__["call"]
            else:
                b.__dict__["call"] = old


def keras_with_margins(model, x):
    """Eager `model(x, training=False)` -> (logits, per-sample margin (B,))."""
    with binarizer_margins(model) as records:
        logits = model(x, training=False).numpy()
    assert records, "no activation binarizer ran eagerly: is the model binary?"
    return logits, np.min(np.stack(records), axis=0)


def tie_free(margin, delta=TIE_DELTA, min_count=MIN_TIE_FREE):
    """Boolean mask of the samples whose margin >= delta; at least `min_count` of them."""
    clean = np.asarray(margin) >= delta
    assert clean.sum() >= min_count, (
        f"only {clean.sum()} of {clean.size} samples are tie-free (margin >= {delta:g}): "
        f"a comparison on them would prove little; use more samples")
    return clean


def assert_close_except_ties(got, ref, margin, tol, delta=TIE_DELTA, label=""):
    """Per-sample relative error (to the sample's logit scale) <= tol on every tie-free
    sample (margin >= delta; at least MIN_TIE_FREE of them). Returns (errors, tie-free mask)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    err = np.abs(got - ref).max(axis=1) / np.maximum(1.0, np.abs(ref).max(axis=1))
    clean = tie_free(margin, delta)
    print(f"{label}: {clean.sum()} of {clean.size} samples tie-free (margin >= {delta:g}), "
          f"max relative error {err[clean].max():.2e}; near a tie: "
          f"{int((err[~clean] > tol).sum())} of {int((~clean).sum())} over {tol:g}")
    bad = np.flatnonzero(clean & (err > tol))
    assert bad.size == 0, (
        f"tie-free samples {bad.tolist()} differ: relative errors {err[bad].tolist()} > {tol}"
        f" (margins {np.asarray(margin)[bad].tolist()})")
    return err, clean


def close_or_all_tied(got, ref, margin, tol, all_tied_tol=1e-3, label=""):
    """The comparison of a binary model's logits with Keras's: on the tie-free samples
    (assert_close_except_ties; tol None: their top-1 only) when there are at least
    MIN_TIE_FREE of them; else every sample, its relative error <= all_tied_tol. Some real
    students have on EVERY clip a binarizer input within ~4e-7 of its threshold (pw1 PReLU
    slopes near 0 pile the outputs up at the pw2 thresholds): no clip is tie-free and a bit
    may flip between Keras's float order and the kernels' (measured 9e-5 at d8, 2e-6 at d2;
    one flipped bit moves the logits up to ~6e-3 of their scale). Returns the mask of the
    samples whose top-1 must be equal."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    margin = np.asarray(margin)
    err = np.abs(got - ref).max(axis=1) / np.maximum(1.0, np.abs(ref).max(axis=1))
    if (margin >= TIE_DELTA).sum() >= MIN_TIE_FREE:
        if tol is not None:
            return assert_close_except_ties(got, ref, margin, tol, label=label)[1]
        clean = margin >= TIE_DELTA
        print(f"{label}: {int(clean.sum())} of {clean.size} samples tie-free; max relative "
              f"error {err.max():.1e}")
        return clean
    print(f"{label}: no {MIN_TIE_FREE} tie-free samples (largest margin {margin.max():.1e}); "
          f"max relative error {err.max():.1e}")
    assert err.max() <= all_tied_tol, err.max()
    return np.ones(len(got), bool)
