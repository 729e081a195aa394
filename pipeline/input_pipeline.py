"""tf.data input pipeline: WAV files -> (log-mel features, label) batches.

    index rows ─ map(decode, parallel) ─ cache ─┬─ training: shuffle(seed, epoch) ─ batch ─
                                                │     map(augment + log-mel, seeded by epoch/batch)
                                                └─ eval: batch ─ map(log-mel)      ─ prefetch

Decoded audio is cached once (in memory, or in ``cache_dir`` files), so only the first epoch
reads and decodes WAVs; augmentation and features run batched on every epoch. Randomness
depends only on (seed, epoch, batch index): a resumed run gets the batches it would have got.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from pipeline import audio as audio_lib
from pipeline import augment as aug
from pipeline import features as feat
from pipeline import speech_commands as sc


@dataclasses.dataclass(frozen=True)
class DataConfig:
    data_dir: str
    task: Optional[str] = None
    wanted_words: Optional[str] = None
    protocol: str = "tf"
    silence_percentage: Optional[float] = None
    unknown_percentage: Optional[float] = None
    validation_percentage: float = 10.0
    testing_percentage: float = 10.0
    seed: int = 59185
    split_salt: Optional[str] = None
    cache_dir: Optional[str] = None
    augment: aug.AugmentConfig = aug.AugmentConfig()
    features: feat.FeatureConfig = feat.DEFAULT


def index_from_config(cfg: DataConfig, labels=None) -> sc.SpeechCommandsIndex:
    """Index the data directory; ``labels`` (e.g. from a trained model) overrides the task."""
    if labels is None:
        labels, _, sil, unk = sc.class_labels(cfg.task, cfg.wanted_words, cfg.silence_percentage,
                                              cfg.unknown_percentage)
    else:
        sil = cfg.silence_percentage if cfg.silence_percentage is not None else 10.0
        unk = cfg.unknown_percentage if cfg.unknown_percentage is not None else 10.0
        sil = sil if sc.SILENCE_LABEL in labels else 0.0
        unk = unk if sc.UNKNOWN_LABEL in labels else 0.0
    return sc.build_index(cfg.data_dir, labels, cfg.protocol, sil, unk,
                          cfg.validation_percentage, cfg.testing_percentage, cfg.seed,
                          split_salt=cfg.split_salt)


def noise_bank(noise_files, clip_samples: int = audio_lib.CLIP_SAMPLES, hop: int = 4000):
    """All 1 s segments (hop 0.25 s) of the noise recordings: [S, clip_samples] float32."""
    segments = []
    for path in noise_files:
        rec = audio_lib.load_wav(path, None)
        if len(rec) < clip_samples:
            continue
        starts = np.arange(0, len(rec) - clip_samples + 1, hop)
        segments.append(np.stack([rec[s:s + clip_samples] for s in starts]))
    return np.concatenate(segments).astype(np.float32) if segments else None


class InputPipeline:
    """Datasets for one index. ``train(epoch)`` and ``eval(split)`` give (features, label)."""

    def __init__(self, index: sc.SpeechCommandsIndex, cfg: DataConfig):
        self.index, self.cfg = index, cfg
        self.labels = index.labels
        recordings = [audio_lib.load_wav(f, None) for f in index.noise_files]
        self._recordings = tf.ragged.constant(recordings, dtype=tf.float32) if recordings else None
        bank = noise_bank(index.noise_files, cfg.features.clip_samples)
        self.noise_bank = tf.constant(bank) if bank is not None else None
        self._decoded = {}

    # -- decoding ------------------------------------------------------------------------
    def _decode_row(self, row):
        n = self.cfg.features.clip_samples
        recordings = self._recordings

        def from_file():
            return audio_lib.decode_clip(row["path"], n)

        def from_noise():
            if recordings is None:
                return tf.zeros([n])
            rec = recordings[row["noise_index"]]
            span = tf.maximum(tf.shape(rec)[0] - n, 0)
            start = tf.cast(row["noise_offset"] * tf.cast(span, tf.float32), tf.int32)
            crop = rec[start:start + n]
            crop = tf.pad(crop, [[0, n - tf.shape(crop)[0]]])
            rms = tf.sqrt(tf.reduce_mean(tf.square(crop)) + 1e-12)
            return crop * tf.pow(10.0, row["rms_db"] / 20.0) / rms

        audio = tf.switch_case(row["source"], [from_file, from_noise, lambda: tf.zeros([n])])
        audio = tf.ensure_shape(audio, [n])
        return {"audio": audio, "label": row["label"], "source": row["source"]}

    def decoded(self, split: str) -> tf.data.Dataset:
        """Decoded 1 s clips of a split, cached after the first pass."""
        if split not in self._decoded:
            s = self.index.splits[split]
            if not len(s):
                raise sc.DataError(f"the {split} split of {self.index.data_dir} is empty")
            rows = {"path": s.paths.astype(str), "label": s.labels, "source": s.source,
                    "noise_index": s.noise_index, "noise_offset": s.noise_offset,
                    "rms_db": s.rms_db}
            ds = tf.data.Dataset.from_tensor_slices(rows)
            ds = ds.map(self._decode_row, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            if self.cfg.cache_dir:
                os.makedirs(self.cfg.cache_dir, exist_ok=True)
                ds = ds.cache(os.path.join(self.cfg.cache_dir, f"{split}.cache"))
            else:
                ds = ds.cache()
            self._decoded[split] = ds
        return self._decoded[split]

    def num_examples(self, split: str) -> int:
        return len(self.index.splits[split])

    # -- batches -------------------------------------------------------------------------
    def train(self, batch_size: int, epoch: int = 0, split: str = "training",
              drop_remainder: bool = True) -> tf.data.Dataset:
        n = self.num_examples(split)
        seed = self.cfg.seed
        ds = self.decoded(split).shuffle(n, seed=seed * 1000 + epoch, reshuffle_each_iteration=False)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        steps = tf.data.Dataset.range(10**9)
        bank, acfg, fcfg = self.noise_bank, self.cfg.augment, self.cfg.features

        def step(batch_index, batch):
            rng = aug.SeedStream(tf.stack([tf.constant(seed * 1000 + epoch, tf.int64), batch_index]))
            audio = aug.augment_batch(batch["audio"], batch["source"], bank, rng, acfg,
                                      fcfg.sample_rate)
            x = aug.prepend_history(feat.log_mel(audio, fcfg), rng, acfg, batch["source"],
                                    1000.0 * fcfg.hop / fcfg.sample_rate)
            if acfg.spec_augment:
                x = aug.spec_augment(x, rng, acfg)
            return x, batch["label"]

        ds = tf.data.Dataset.zip((steps, ds)).map(step, num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def eval(self, split: str, batch_size: int = 256) -> tf.data.Dataset:
        fcfg = self.cfg.features
        ds = self.decoded(split).batch(batch_size)
        ds = ds.map(lambda b: (feat.log_mel(b["audio"], fcfg), b["label"]),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def eval_audio(self, split: str, batch_size: int = 256) -> tf.data.Dataset:
        """Raw (audio, label) batches, for models that take PCM."""
        return self.decoded(split).batch(batch_size).map(lambda b: (b["audio"], b["label"]))
