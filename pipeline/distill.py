"""Frequency Independent Distillation (FID) and the thinnable student objective.

For a DFSMN layer output A (B, C, T) (our layout (B, T, 1, C) is transposed to it), a J-level
2-D Haar wavelet transform over (C, T) with zero padding splits A into

    low  = inverse transform with every high band zeroed  = mean of A over 2^J x 2^J blocks
    high = inverse transform with the final low band zeroed = A - low

(the Haar transform is orthonormal, so these closed forms are exact, zero padding included:
the block mean counts padded positions as zeros). Each band is distilled separately with the
"r2b" attention loss

    Q = A^2 flattened per example,   r2b(S, T) = mean_b || Q_S / ||Q_S|| - Q_T / ||Q_T|| ||_2

and logits with MSE (the reference). With depth weights w_D ([1, 0.5, 0.25] for depths 8/4/2)
the student loss is

    L = sum_D w_D * [ CE(z_D, y) + alpha * ( sum_{j in L(D)} sum_bands r2b(band(S_j), band(T_j))
                                            + MSE(z_D, z_T) ) ]

``logit_loss='kl'`` replaces the logits' MSE by Hinton's soft-target loss at temperature tau,

    KD(z_D, z_T) = tau^2 * mean_b KL( softmax(z_T / tau) || softmax(z_D / tau) )

(tau^2 keeps its gradients on the scale of the CE's), weighted by ``kd_weight`` instead of alpha
when given; ``ce_weight`` scales the CE term (0 with ``kd_weight`` 1 and tau 1: ReActNet's
distributional loss, the student learning only the teacher's distribution):

    L = sum_D w_D * [ ce_weight * CE(z_D, y) + alpha * FID_D + kd_weight * KD(z_D, z_T) ]

where L(D) are the layers run at depth D, i.e. student layer j at depth index op is matched to
teacher layer j when (j + 1) % 2^op == 0, and the teacher runs at full depth.
``select_pass``: 'fid' (high and low), 'high', 'low', or 'no' (r2b on A itself, no wavelet).
"""
from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from models.thinnable import depth_index

SELECT_PASS = ("fid", "high", "low", "no")
LOGIT_LOSSES = ("mse", "kl")


def to_bct(x):
    """(B, T, 1, C) layer output -> (B, C, T), the reference's layout."""
    if x.shape.rank == 4:
        x = tf.squeeze(x, axis=2)
    return tf.transpose(x, [0, 2, 1])


def haar_low(x, levels: int = 1):
    """Low-pass reconstruction of a J-level 2-D Haar transform over the last two axes."""
    block = 2 ** levels
    shape = tf.shape(x)
    rows, cols = shape[-2], shape[-1]
    pad_r = (-rows) % block
    pad_c = (-cols) % block
    xp = tf.pad(x, [[0, 0], [0, pad_r], [0, pad_c]])
    b = tf.shape(xp)[0]
    r2, c2 = (rows + pad_r) // block, (cols + pad_c) // block
    means = tf.reduce_mean(tf.reshape(xp, [b, r2, block, c2, block]), axis=[2, 4])
    up = tf.repeat(tf.repeat(means, block, axis=1), block, axis=2)
    return up[:, :rows, :cols]


def bands(x, select_pass: str = "fid", levels: int = 1):
    """The tensors to distill for one layer output (B, C, T)."""
    if select_pass == "no":
        return [x]
    low = haar_low(x, levels)
    return {"fid": [x - low, low], "high": [x - low], "low": [low]}[select_pass]


def r2b_loss(student, teacher):
    """Attention loss between two (B, ...) tensors: L2 distance of L2-normalised squares."""
    b = tf.shape(student)[0]
    qs = tf.reshape(tf.square(student), [b, -1])
    qt = tf.reshape(tf.square(teacher), [b, -1])
    qs = qs / (tf.norm(qs, axis=1, keepdims=True) + 1e-12)
    qt = qt / (tf.norm(qt, axis=1, keepdims=True) + 1e-12)
    return tf.reduce_mean(tf.norm(qs - qt, axis=1))


def feature_loss(student_feats: Dict[int, tf.Tensor], teacher_feats: Dict[int, tf.Tensor],
                 select_pass: str = "fid", levels: int = 1):
    """Sum over the student's layers j (those run at this depth) of the band r2b losses."""
    total = 0.0
    for j, s in student_feats.items():
        t = tf.stop_gradient(teacher_feats[j])
        for sb, tb in zip(bands(to_bct(s), select_pass, levels),
                          bands(to_bct(t), select_pass, levels)):
            total += r2b_loss(sb, tb)
    return total


def logit_loss(student, teacher, kind: str = "mse", temperature: float = 1.0):
    """Distillation of the logits (B, K): 'mse', or 'kl' = tau^2 * mean_b KL(p_T || p_S) of the
    softened distributions (module doc)."""
    teacher = tf.stop_gradient(teacher)
    if kind == "mse":
        return tf.reduce_mean(tf.square(student - teacher))
    if kind != "kl":
        raise ValueError(f"logit loss {kind!r}: expected one of {LOGIT_LOSSES}")
    log_ps = tf.nn.log_softmax(student / temperature, axis=-1)
    log_pt = tf.nn.log_softmax(teacher / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_pt) * (log_pt - log_ps), axis=-1)
    return temperature ** 2 * tf.reduce_mean(kl)


def student_loss(labels, logits: Dict[int, tf.Tensor], depth_weights: Dict[int, float],
                 feats: Dict[int, Dict[int, tf.Tensor]] = None, teacher_logits=None,
                 teacher_feats: Dict[int, tf.Tensor] = None, alpha: float = 0.01,
                 select_pass: str = "fid", levels: int = 1, label_smoothing: float = 0.0,
                 logit_kind: str = "mse", temperature: float = 1.0, kd_weight: float = None,
                 ce_weight: float = 1.0):
    """The thinnable (+ FID) objective; returns (total, {name: term}) for logging. kd_weight
    None: the logits' term is weighted by alpha, as the FID's (the reference)."""
    num_classes = None
    terms = {}
    total = 0.0
    for depth, z in logits.items():
        w = depth_weights[depth]
        num_classes = num_classes or z.shape[-1]
        onehot = tf.one_hot(labels, num_classes)
        ce = tf.reduce_mean(tf.keras.losses.categorical_crossentropy(
            onehot, z, from_logits=True, label_smoothing=label_smoothing))
        terms[f"ce_d{depth}"] = ce
        total += w * ce_weight * ce
        if teacher_logits is not None:
            kd = logit_loss(z, teacher_logits, logit_kind, temperature)
            fid = feature_loss(feats[depth], teacher_feats, select_pass, levels) \
                if feats is not None and teacher_feats is not None else 0.0
            terms[f"kd_d{depth}"] = kd
            terms[f"fid_d{depth}"] = fid
            if kd_weight is None:  # the reference's grouping, bit for bit
                total += w * alpha * (fid + kd)
            else:
                total += w * (alpha * fid + kd_weight * kd)
    return total, terms


def depth_weights(depths: Sequence[int], num_layers: int = 8) -> Dict[int, float]:
    """The reference's weights by depth index: 8 -> 1, 4 -> 0.5, 2 -> 0.25 (1 -> 0.125)."""
    return {d: 0.5 ** depth_index(d, num_layers) for d in depths}
