"""Audio I/O: validate WAV files once, decode them with TensorFlow ops in tf.data.

``check_wav`` reads only the header (stdlib ``wave``) and the data size, so a corpus of thousands
of clips is vetted in a second. It decides, per file, one of:

* kept as is: 16-bit PCM, mono, 16 kHz;
* kept and converted on decode (counted): stereo -> mixed down to mono, other sample rates ->
  resampled to 16 kHz with tensorflow-io;
* skipped (counted): empty files, files that are not RIFF/WAVE, truncated files (header promises
  more frames than the file holds), encodings other than 16-bit PCM (TensorFlow's WAV decoder
  reads only those), and clips without samples.

All of it is summarised in ONE warning line per corpus with examples (``SkipReport.log``), so a
bad file never crashes an epoch and never silently changes a label.

``decode_clip`` is the graph function used by tf.data: read, decode, mix down, resample, then
pad with zeros / crop to exactly one second, as TensorFlow's speech_commands example does.
"""
from __future__ import annotations

import collections
import os
import wave

from absl import logging

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s


class SkipReport:
    """Counts of skipped / converted files by reason, with a few examples each."""

    SKIP = ("empty file", "not a WAV file", "truncated", "unsupported encoding", "no samples",
            "too short")
    CONVERT = ("stereo, mixed down", "resampled to 16 kHz")

    def __init__(self):
        self.counts = collections.Counter()
        self.examples = collections.defaultdict(list)

    def add(self, reason: str, path: str):
        self.counts[reason] += 1
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(os.path.basename(os.path.dirname(path)) + "/" +
                                         os.path.basename(path))

    @property
    def n_skipped(self) -> int:
        return sum(self.counts[r] for r in self.SKIP)

    def summary(self) -> str:
        parts = [f"{self.counts[r]} {r} (e.g. {', '.join(self.examples[r])})"
                 for r in self.SKIP + self.CONVERT if self.counts[r]]
        return "; ".join(parts)

    def log(self, where: str):
        if self.counts:
            logging.warning("%s: skipped %d file(s), converted %d: %s", where, self.n_skipped,
                            sum(self.counts[r] for r in self.CONVERT), self.summary())


def check_wav(path: str, report: SkipReport, min_seconds: float = 0.0) -> bool:
    """True if ``path`` can be decoded (possibly after mix-down/resampling); else count a skip."""
    try:
        size = os.path.getsize(path)
    except OSError:
        report.add("not a WAV file", path)
        return False
    if size == 0:
        report.add("empty file", path)
        return False
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        report.add("not a WAV file", path)
        return False
    try:
        with wave.open(path, "rb") as w:
            channels, width, rate, frames = (w.getnchannels(), w.getsampwidth(),
                                             w.getframerate(), w.getnframes())
            data = w.readframes(frames)
    except (wave.Error, EOFError) as e:
        reason = "unsupported encoding" if "unknown format" in str(e) else "truncated"
        report.add(reason, path)
        return False
    if width != 2:
        report.add("unsupported encoding", path)
        return False
    if frames == 0:
        report.add("no samples", path)
        return False
    if len(data) < frames * channels * width:
        report.add("truncated", path)
        return False
    if frames < min_seconds * rate:
        report.add("too short", path)
        return False
    if channels != 1:
        report.add("stereo, mixed down", path)
    if rate != SAMPLE_RATE:
        report.add("resampled to 16 kHz", path)
    return True


def decode_clip(path, num_samples: int = CLIP_SAMPLES):
    """Graph function: WAV path -> float32 [num_samples] in [-1, 1] at 16 kHz, mono.

    ``num_samples=None`` keeps the whole recording (used for background noise).
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


def load_wav(path: str, num_samples=CLIP_SAMPLES):
    """Eager convenience: decode one file to a NumPy array (tools and tests)."""
    return decode_clip(path, num_samples).numpy()
