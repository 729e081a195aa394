"""Audio I/O: validate WAV files once, decode them with TensorFlow ops in tf.data.

``check_wav`` reads only the header (``pipeline.wav_format``: the RIFF chunks, checked by the
rules of TensorFlow's WAV decoder plus a sample-rate range the resampler can serve), so a corpus
of thousands of clips is vetted in a second. It decides, per file, one of:

* kept as is: 16-bit PCM, mono, 16 kHz;
* kept and converted on decode (counted): stereo -> mixed down to mono, other sample rates
  (1..384 kHz) -> resampled to 16 kHz with tensorflow-io;
* skipped (counted), whatever the header claims: empty files, files that are not RIFF/WAVE
  (also a folder named ``x.wav``), truncated files (header promises more than the file holds),
  encodings other than 16-bit PCM (TensorFlow's WAV decoder reads only those; float WAVs,
  whose samples may be NaN, included), bad headers (0 Hz or absurd rates, 0 channels, a block
  size or byte rate that disagrees with the format, a data size that disagrees with the file,
  chunks the decoder refuses), clips without samples, files over 1 GiB.

All of it is summarised in ONE warning line per corpus with examples (``SkipReport.log``), so a
bad file never crashes an epoch and never silently changes a label: whatever the check accepts,
TensorFlow's decoder and the resampler decode (tests/test_audio_robust.py tries seeded header
mutations against both).

``decode_clip`` is the graph function used by tf.data: read, decode, mix down, resample, then
pad with zeros / crop to exactly one second, as TensorFlow's speech_commands example does.
``load_wav`` is its eager twin for tools (noise recordings, ``firmware_sim.stream --wav``): the
same checks, samples read with NumPy (16-bit PCM, or 32/64-bit float if every sample is finite),
the same mix-down and resampler; a file it cannot read raises ``speech_commands.DataError``
saying what was found and what was expected.
"""
from __future__ import annotations

import collections
import os

import numpy as np
from absl import logging

from pipeline import wav_format
from pipeline.wav_format import WavError

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s


class SkipReport:
    """Counts of skipped / converted files by reason, with a few examples each."""

    SKIP = ("empty file", "not a WAV file", "truncated", "unsupported encoding", "bad header",
            "no samples", "too short", "too large")
    CONVERT = ("stereo, mixed down", "resampled to 16 kHz")

    def __init__(self):
        self.counts = collections.Counter()
        self.examples = collections.defaultdict(list)
        self.details = {}  # reason -> what the first example's header said

    def add(self, reason: str, path: str, detail: str = ""):
        self.counts[reason] += 1
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(os.path.basename(os.path.dirname(path)) + "/" +
                                         os.path.basename(path))
        if detail and reason not in self.details:
            self.details[reason] = detail

    @property
    def n_skipped(self) -> int:
        return sum(self.counts[r] for r in self.SKIP)

    def summary(self) -> str:
        def examples(r):
            ex = list(self.examples[r])
            if r in self.details:
                ex[0] += f": {self.details[r]}"
            return ", ".join(ex)

        parts = [f"{self.counts[r]} {r} (e.g. {examples(r)})"
                 for r in self.SKIP + self.CONVERT if self.counts[r]]
        return "; ".join(parts)

    def log(self, where: str):
        if self.counts:
            logging.warning("%s: skipped %d file(s), converted %d: %s", where, self.n_skipped,
                            sum(self.counts[r] for r in self.CONVERT), self.summary())


def check_wav(path: str, report: SkipReport, min_seconds: float = 0.0) -> bool:
    """True if ``path`` can be decoded (possibly after mix-down/resampling); else count a skip."""
    try:
        info = wav_format.read_info(path)
    except WavError as e:
        report.add(e.reason, path, e.detail)
        return False
    if info.frames == 0:
        report.add("no samples", path)
        return False
    if info.frames < min_seconds * info.rate:
        report.add("too short", path)
        return False
    if info.channels != 1:
        report.add("stereo, mixed down", path)
    if info.rate != SAMPLE_RATE:
        report.add("resampled to 16 kHz", path)
    return True


def _fit(audio, num_samples):
    """Crop or zero-pad the first axis to ``num_samples`` (None: unchanged)."""
    if num_samples is None:
        return audio
    audio = audio[:num_samples]
    return np.pad(audio, (0, num_samples - len(audio)))


def decode_clip(path, num_samples: int = CLIP_SAMPLES):
    """Graph function: WAV path -> float32 [num_samples] in [-1, 1] at 16 kHz, mono.

    ``num_samples=None`` keeps the whole recording (used for background noise). Only for files
    ``check_wav`` accepted: a graph op cannot skip a clip, so the check must have.
    """
    import tensorflow as tf
    import tensorflow_io as tfio

    audio, rate = tf.audio.decode_wav(tf.io.read_file(path))
    audio = tf.reduce_mean(audio, axis=1, keepdims=True)      # mix down to mono
    rate = tf.cast(rate, tf.int64)
    audio = tf.cond(
        tf.equal(rate, SAMPLE_RATE), lambda: audio,
        lambda: tfio.audio.resample(audio, rate_in=rate, rate_out=SAMPLE_RATE))
    audio = audio[:, 0]
    if num_samples is None:
        return audio
    audio = audio[:num_samples]
    return tf.pad(audio, [[0, num_samples - tf.shape(audio)[0]]])


def _data_error(path, what):
    from pipeline.speech_commands import DataError  # (speech_commands imports this module)
    return DataError(f"{path}: {what}")


def read_samples(path: str):
    """Checked read of a whole file: (float32 [frames, channels] in [-1, 1], rate in Hz)."""
    try:
        info = wav_format.read_info(path, allow_float=True)
    except WavError as e:
        raise _data_error(path, f"{e.reason} ({e.detail})") from None
    if info.frames == 0:
        raise _data_error(path, "no samples (an empty data chunk); expected at least one frame")
    n = info.frames * info.block_align
    with open(path, "rb") as f:
        f.seek(info.data_offset)
        raw = f.read(n)
    if len(raw) != n:
        raise _data_error(path, f"truncated while reading ({len(raw)} of {n} bytes); "
                          "expected the file the header describes")
    dtype = {16: "<i2", 32: "<f4", 64: "<f8"}[info.bits]
    x = np.frombuffer(raw, dtype).reshape(info.frames, info.channels)
    if info.format_tag == wav_format.PCM:
        x = x.astype(np.float32) * np.float32(1.0 / 32768)  # as TensorFlow's decoder scales
    else:
        x = x.astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise _data_error(path, f"{bad} float sample(s) are not finite (NaN/inf, or beyond "
                              "float32); expected finite samples, nominally in [-1, 1]")
    return x, info.rate


def load_wav(path: str, num_samples=CLIP_SAMPLES):
    """Eager: decode one file to float32 [num_samples] (None: all) at 16 kHz, mono, after the
    checks of ``read_samples`` (tools, noise recordings, tests)."""
    x, rate = read_samples(path)
    mono = x.mean(axis=1, keepdims=True, dtype=np.float32)
    if rate != SAMPLE_RATE:
        import tensorflow_io as tfio
        mono = tfio.audio.resample(mono, rate_in=rate, rate_out=SAMPLE_RATE).numpy()
    return _fit(mono[:, 0], num_samples)
