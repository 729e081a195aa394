"""Training augmentation on batches of 1 s clips, as vectorised TensorFlow ops.

Every function takes a batch ``audio`` [B, N] and draws its random numbers per example from a
``SeedStream`` (stateless random ops seeded by (run seed, epoch, batch)), so a whole batch is one
set of ops (a per-clip ``map`` costs more in op dispatch than the math on a 2-core CPU) and a
resumed run sees exactly the augmentation it would have seen.

* speed/pitch change: resample about the clip centre by a factor f ~ U(1-a, 1+a) (linear
  interpolation): y[i] = x[c + (i - c) f], which changes tempo and pitch together, as sox's
  ``speed`` effect (the reference's "speed/pitch change");
* time shift: y[i] = x[i - s], s ~ U{-S..S}, zero filled;
* amplitude change: y = g x, g = 10^(u/20), u ~ U(-G, G) dB;
* background noise, with probability p: y = x + v * rms(x)/rms(n) * n, v ~ U(0, V), n a random
  1 s crop of the ``_background_noise_`` recordings. The scale is relative to the clip, i.e. an
  SNR of at least -20 log10(V) dB; a scale relative to the noise file's own level adds almost
  nothing with the quiet recordings of the data set;
* silence examples are replaced by a fresh noise crop scaled to an RMS drawn log-uniformly over
  ``SILENCE_RMS_DB_RANGE`` (-80..-15 dBFS), so the silence class covers loud noise too;
* history (streaming models, issue 16): with probability ``history_prob`` per batch, the
  features of ``history_clips`` other examples of the batch in front of every example
  (``prepend_history``), the label still the last clip's; with ``history_tail_ms``, a silence
  example's window ends up to that long before its clip's end, so that its last second starts
  with the tail of the clip before it (a word leaving the window), labelled silence;
* SpecAugment (optional, on features): per example, ``n`` frequency and time masks of width
  U{0..W} filled with the example's mean. tensorflow-io's masks draw one mask per call, which
  would give a whole batch the same mask, hence these few lines.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from pipeline.speech_commands import SILENCE_RMS_DB_RANGE


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    background_frequency: float = 0.3   # probability of mixing noise into a keyword clip
    background_volume: float = 0.3      # max noise RMS relative to the clip's RMS
    time_shift_ms: float = 100.0
    speed_change: float = 0.1           # f ~ U(1 - a, 1 + a)
    gain_db: float = 6.0
    spec_augment: bool = False
    history_clips: int = 0              # streaming models: other clips' features in front
    history_prob: float = 0.5           # probability that a batch gets that history
    history_tail_ms: float = 0.0        # with history: silence examples end up to this early
    freq_masks: int = 2
    freq_mask_width: int = 4
    time_masks: int = 2
    time_mask_width: int = 4


class SeedStream:
    """Stateless random numbers: call k uses seed fold_in(seed, k), so results depend only on
    the seed handed in (e.g. (run seed, epoch, batch)), never on execution order."""

    def __init__(self, seed):
        self.seed = tf.cast(seed, tf.int64)
        self.calls = 0

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=tf.float32):
        self.calls += 1
        seed = tf.random.experimental.stateless_fold_in(self.seed, self.calls)
        return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype)


def _rms(x, axis=-1):
    return tf.sqrt(tf.reduce_mean(tf.square(x), axis=axis, keepdims=True) + 1e-12)


def speed_change(audio, rng: SeedStream, amount: float):
    if amount <= 0:
        return audio
    b, n = tf.shape(audio)[0], tf.shape(audio)[1]
    f = rng.uniform([b, 1], 1.0 - amount, 1.0 + amount)
    centre = tf.cast(n, tf.float32) / 2.0
    pos = centre + (tf.cast(tf.range(n), tf.float32)[None, :] - centre) * f
    i0 = tf.floor(pos)
    frac = pos - i0
    i0 = tf.cast(i0, tf.int32)
    valid0 = tf.cast((i0 >= 0) & (i0 < n), tf.float32)
    valid1 = tf.cast((i0 + 1 >= 0) & (i0 + 1 < n), tf.float32)
    x0 = tf.gather(audio, tf.clip_by_value(i0, 0, n - 1), batch_dims=1) * valid0
    x1 = tf.gather(audio, tf.clip_by_value(i0 + 1, 0, n - 1), batch_dims=1) * valid1
    return x0 * (1.0 - frac) + x1 * frac


def time_shift(audio, rng: SeedStream, max_shift: int):
    if max_shift <= 0:
        return audio
    b, n = tf.shape(audio)[0], tf.shape(audio)[1]
    shift = rng.uniform([b, 1], -max_shift, max_shift + 1, dtype=tf.int32)
    idx = tf.range(n)[None, :] - shift
    valid = (idx >= 0) & (idx < n)
    shifted = tf.gather(audio, tf.clip_by_value(idx, 0, n - 1), batch_dims=1)
    return tf.where(valid, shifted, tf.zeros_like(shifted))


def random_gain(audio, rng: SeedStream, gain_db: float):
    if gain_db <= 0:
        return audio
    g = rng.uniform([tf.shape(audio)[0], 1], -gain_db, gain_db)
    return audio * tf.pow(10.0, g / 20.0)


def noise_crops(noise_bank, rng: SeedStream, batch):
    """``batch`` random rows of ``noise_bank`` [S, N] (1 s segments of the noise recordings)."""
    idx = rng.uniform([batch], 0, tf.shape(noise_bank)[0], dtype=tf.int32)
    return tf.gather(noise_bank, idx)


def mix_noise(audio, noise_bank, rng: SeedStream, probability: float, volume: float):
    if probability <= 0 or volume <= 0:
        return audio
    b = tf.shape(audio)[0]
    noise = noise_crops(noise_bank, rng, b)
    scale = rng.uniform([b, 1], 0.0, volume) * _rms(audio) / _rms(noise)
    apply = tf.cast(rng.uniform([b, 1]) < probability, tf.float32)
    return audio + apply * scale * noise


def silence_like(noise_bank, rng: SeedStream, batch):
    """Fresh silence examples: noise crops at a log-uniform RMS over SILENCE_RMS_DB_RANGE."""
    lo, hi = SILENCE_RMS_DB_RANGE
    noise = noise_crops(noise_bank, rng, batch)
    target = tf.pow(10.0, rng.uniform([batch, 1], lo, hi) / 20.0)
    return noise * target / _rms(noise)


def prepend_history(x, rng: SeedStream, cfg: AugmentConfig, source=None,
                    frame_ms: float = 32.0):
    r"""Streaming-aware training: what an always-on stream shows a causal model and a 1 s
    clip does not.

    A streaming model (`models.streaming`) decides on its last second, but its memory blocks
    and front end carry state from everything before: in a continuous stream the layers'
    inputs before the window are real audio (earlier keywords, speech, noise), where training
    on clips only ever showed the zero padding of a stream start. Measured on a 60-minute
    stream, that mismatch turns into false accepts and wrong words a windowed loop of the same
    weights does not make. Here, with probability ``history_prob`` per batch, every example
    gets the features of ``history_clips`` other examples in front of it:

        x [B, T, F] -> [concat(x rolled by n, ..., x rolled by 1, x) over time]  [B, (n+1) T, F]

    (example i is preceded by examples i - n .. i - 1 of the shuffled batch, so by other
    clips, keywords included), the label still example i's: the model learns to answer for the
    last second whatever came before. The other batches keep the bare clips (a stream from
    reset). No history (n = 0): ``x`` unchanged and no random number drawn.

    Tail windows (``history_tail_ms`` > 0, in batches with history; ``source`` from the index:
    0 = a word clip, else silence): the clips are 1 s and so is the classifier's ring, so the
    ring only ever holds its own clip, never the end of the one before: the moment in a stream
    when a word is leaving the window (measured: most of the streaming loop's false accepts
    are another word fired there, 1.5-2 s after a keyword's onset). A silence example i is
    therefore moved later by k_i ~ U{0..K} frames (K = history_tail_ms / frame_ms), zeros in
    front of the history: the window ends k_i frames before the clip's end and starts with the
    last k_i frames of the clip before it, still labelled silence,

        y[i, t] = h[i, t - k_i]  (0 where t < k_i),  k_i = 0 for word examples,

    where h is the example with its history. Word examples keep their windows."""
    n = int(cfg.history_clips)
    if n <= 0:
        return x
    tail = int(round(cfg.history_tail_ms / frame_ms)) if source is not None else 0

    def with_history():
        h = tf.concat([tf.roll(x, shift=k, axis=0) for k in range(n, 0, -1)] + [x], axis=1)
        if tail <= 0:
            return h
        silent = tf.cast(tf.not_equal(source, 0), tf.int32)
        k = rng.uniform([tf.shape(h)[0]], 0, tail + 1, dtype=tf.int32) * silent
        idx = tf.range(tf.shape(h)[1])[None, :] - k[:, None]                  # [B, L]
        moved = tf.gather(h, tf.maximum(idx, 0), batch_dims=1)
        return tf.where((idx >= 0)[:, :, None], moved, tf.zeros_like(moved))

    return tf.cond(rng.uniform([]) < cfg.history_prob, with_history, lambda: x)


def augment_batch(audio, source, noise_bank, rng: SeedStream, cfg: AugmentConfig,
                  sample_rate: int = 16000):
    """Augment a training batch. ``source`` (from the index) marks silence rows: 1 = made from
    noise (redrawn here every epoch), 2 = all-zero silence (left at zero)."""
    is_word = tf.equal(source, 0)[:, None]
    out = speed_change(audio, rng, cfg.speed_change)
    out = time_shift(out, rng, int(cfg.time_shift_ms * sample_rate / 1000))
    out = random_gain(out, rng, cfg.gain_db)
    if noise_bank is not None:
        out = mix_noise(out, noise_bank, rng, cfg.background_frequency, cfg.background_volume)
        fresh = silence_like(noise_bank, rng, tf.shape(audio)[0])
        out = tf.where(tf.equal(source, 1)[:, None], fresh, out)
    out = tf.where(is_word | tf.equal(source, 1)[:, None], out, tf.zeros_like(out))
    return tf.clip_by_value(out, -1.0, 1.0)


def _masks(features, rng, axis: int, count: int, width: int):
    b, size = tf.shape(features)[0], tf.shape(features)[axis]
    keep = tf.ones_like(features, dtype=tf.bool)
    pos = tf.range(size)
    for _ in range(count):
        w = rng.uniform([b, 1], 0, width + 1, dtype=tf.int32)
        room = tf.cast(tf.maximum(size - w + 1, 1), tf.float32)
        start = tf.cast(tf.floor(rng.uniform([b, 1]) * room), tf.int32)
        hit = (pos[None, :] >= start) & (pos[None, :] < start + w)  # [B, size]
        hit = hit[:, :, None] if axis == 1 else hit[:, None, :]
        keep &= ~hit
    return keep


def spec_augment(features, rng: SeedStream, cfg: AugmentConfig):
    """features [B, T, F] -> masked copy (frequency masks on F, time masks on T)."""
    keep = _masks(features, rng, 2, cfg.freq_masks, cfg.freq_mask_width)
    keep &= _masks(features, rng, 1, cfg.time_masks, cfg.time_mask_width)
    mean = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
    return tf.where(keep, features, tf.broadcast_to(mean, tf.shape(features)))
