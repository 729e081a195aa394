"""Posterior smoothing and suppression: when does a stream of per-window scores become a command?

A keyword spotter run every stride on the last second of audio gives one score vector per
window. The device does not report every window's argmax: it behaves like TensorFlow Lite
Micro's ``RecognizeCommands`` (examples/micro_speech/recognize_commands.cc), re-implemented
here in plain Python (no TensorFlow) with the same rules, for scores in [0, 1] (probabilities)
instead of the int8 scores 0..255 of the microcontroller:

1. Every result (time t in ms, scores) is appended to a queue; results older than
   ``t - average_window_ms`` are dropped (a result exactly at that limit is kept), so the queue
   holds the results of the last ``average_window_ms``. Times must not decrease.
2. Unreliable average: with fewer than ``minimum_count`` results in the queue, or when they span
   less than ``average_window_ms / 4`` (the window is still filling, e.g. after start-up), the
   step reports the previous top label with score 0 and never a new command.
3. Otherwise the scores are averaged over the queue, class by class, and the top class of the
   average (first index on ties) is the current label, its average the score.
4. A new command is declared when the score is strictly above ``threshold`` and either the
   label differs from the previous command's label, or more than ``suppression_ms`` have passed
   since the previous command. Suppression therefore only stops the *same* word from firing
   again; a different word fires at once. A command updates "previous label / time".
5. Silence and unknown: TFLite Micro lets every class, ``_silence_`` included, become a command
   (the application then ignores silence), and after a silence command the next command is
   never suppressed. Here the same state machine runs over all classes, the classes in
   ``ignore`` (by default ``_silence_`` and ``_unknown_``) are never *reported*, and a previous
   command of *any* ignored class lifts suppression (TFLite Micro does this for category 0,
   "silence", only; for unknown the reported detections are the same either way, because a
   keyword after an unknown command is a different label and fires at once).

``DetectorConfig``'s defaults are micro_speech's (1000 ms window, threshold 200/255 = 0.78,
1500 ms suppression, minimum count 3); the stream tool has its own defaults, tuned for a 250 ms
stride (see firmware_sim/stream.py).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, List, Optional, Sequence

import numpy as np

SILENCE_LABEL = "_silence_"   # same strings as pipeline.speech_commands (no TF import here)
UNKNOWN_LABEL = "_unknown_"


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    average_window_ms: float = 1000.0
    threshold: float = 0.78          # on averaged probabilities; TFLite Micro: 200 / 255
    suppression_ms: float = 1500.0
    minimum_count: int = 3
    ignore: Sequence[str] = (SILENCE_LABEL, UNKNOWN_LABEL)


@dataclasses.dataclass
class StepResult:
    """What one call of ``process`` decided (the outputs of ProcessLatestResults)."""
    time_ms: float
    label: str               # top label of the average (or the previous one when unreliable)
    index: int               # its class index (-1 before any command when unreliable)
    score: float             # averaged top score; 0 when unreliable
    is_new_command: bool     # TFLite Micro's is_new_command (any class, ignored ones included)
    reliable: bool           # enough results in the window to average
    average: np.ndarray      # averaged scores per class (NaN when unreliable)
    reported: bool = False   # the label is not in ``ignore`` (silence / unknown)

    @property
    def is_detection(self) -> bool:
        """A new command that is reported (not silence / unknown)."""
        return self.is_new_command and self.reported


@dataclasses.dataclass(frozen=True)
class Detection:
    time: float     # seconds: the end of the window whose result fired
    word: str
    score: float


class RecognizeCommands:
    """Stateful smoother; feed it results in time order with ``process``."""

    def __init__(self, labels: Sequence[str], config: DetectorConfig = DetectorConfig()):
        if config.minimum_count < 1:
            raise ValueError("minimum_count must be >= 1")
        if config.average_window_ms <= 0:
            raise ValueError("average_window_ms must be > 0")
        self.labels = list(labels)
        self.config = config
        self.ignored = {i for i, l in enumerate(self.labels) if l in set(config.ignore)}
        self.reset()

    def reset(self):
        self._queue = collections.deque()       # (time_ms, scores)
        self._sum = None
        self.previous_index = -1                 # TFLite Micro starts at "silence", time -inf
        self.previous_time_ms = None

    def process(self, time_ms: float, scores) -> StepResult:
        cfg = self.config
        scores = np.asarray(scores, np.float64).reshape(-1)
        if scores.shape[0] != len(self.labels):
            raise ValueError(f"expected {len(self.labels)} scores ({self.labels}), "
                             f"got {scores.shape[0]}")
        if self._queue and time_ms < self._queue[-1][0]:
            raise ValueError(f"results must come in increasing time order: {time_ms} ms after "
                             f"{self._queue[-1][0]} ms")
        self._queue.append((time_ms, scores))
        limit = time_ms - cfg.average_window_ms
        while self._queue and self._queue[0][0] < limit:
            self._queue.popleft()

        n = len(self._queue)
        span = time_ms - self._queue[0][0]
        prev_label = self.labels[self.previous_index] if self.previous_index >= 0 else \
            SILENCE_LABEL
        if n < cfg.minimum_count or span < cfg.average_window_ms / 4:
            return StepResult(time_ms, prev_label, self.previous_index, 0.0, False, False,
                              np.full(len(self.labels), np.nan))

        average = np.mean([s for _, s in self._queue], axis=0)
        top = int(np.argmax(average))
        score = float(average[top])
        if self.previous_index < 0 or self.previous_index in self.ignored:
            since_last = np.inf
        else:
            since_last = time_ms - self.previous_time_ms
        is_new = score > cfg.threshold and (top != self.previous_index or
                                            since_last > cfg.suppression_ms)
        if is_new:
            self.previous_index, self.previous_time_ms = top, time_ms
        return StepResult(time_ms, self.labels[top], top, score, is_new, True, average,
                          reported=top not in self.ignored)

    def run(self, times_ms: Iterable[float], scores) -> "DetectorTrace":
        """Process a whole sequence; returns detections and the per-step averages."""
        trace = DetectorTrace(self.labels)
        for t, s in zip(times_ms, scores):
            trace.add(self.process(t, s))
        return trace


class DetectorTrace:
    """Per-step record of a run: averaged scores (for plots) and the reported detections."""

    def __init__(self, labels):
        self.labels = list(labels)
        self.times_ms: List[float] = []
        self.averages: List[np.ndarray] = []
        self.detections: List[Detection] = []

    def add(self, res: StepResult):
        self.times_ms.append(res.time_ms)
        self.averages.append(res.average)
        if res.is_detection:
            self.detections.append(Detection(res.time_ms / 1000.0, res.label, res.score))

    def averaged(self) -> np.ndarray:
        return np.array(self.averages).reshape(len(self.averages), len(self.labels))


def softmax(logits, axis=-1) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def output_kind(outputs) -> str:
    """'probs' when every row is in [0, 1] and sums to 1 (an exported model may end in a
    softmax), else 'logits'."""
    out = np.asarray(outputs, np.float64)
    if out.size and out.min() >= -1e-6 and out.max() <= 1 + 1e-6 and \
            np.allclose(out.sum(-1), 1.0, atol=1e-3):
        return "probs"
    return "logits"


def to_probabilities(outputs, mode: str = "auto") -> np.ndarray:
    """Model outputs -> probabilities: ``probs`` kept (clipped to [0, 1]), ``logits`` through a
    softmax, ``auto`` decided by ``output_kind`` (a streaming run decides once, on its first
    batch, so that every window is treated alike)."""
    if mode not in ("auto", "logits", "probs"):
        raise ValueError(f"unknown output mode {mode!r}: expected auto, logits or probs")
    out = np.asarray(outputs, np.float64)
    if mode == "auto":
        mode = output_kind(out)
    return np.clip(out, 0.0, 1.0) if mode == "probs" else softmax(out)


# -- scoring ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Keyword:
    """Ground truth: one keyword placed in a stream (seconds from the stream start)."""
    word: str
    start: float          # where the 1 s clip was placed
    onset: float          # speech onset (energy), the reference time for matching
    offset: float         # speech end
    source: str = ""      # clip path


def score_detections(truth: Sequence[Keyword], detections: Sequence[Detection],
                     audio_seconds: float, before: float = 0.25, after: float = 1.5,
                     ignore_words: Optional[Sequence[str]] = None) -> dict:
    """Match detections against the keywords.

    A detection at time d belongs to a keyword k when ``k.onset - before <= d <= k.onset +
    after`` (the nearest onset if several windows contain it). Per keyword: a *hit* if at
    least one of its detections names its word, else a *miss*. Per detection: *wrong word*
    (inside a keyword's window, another word), *duplicate* (a further correct detection of an
    already hit keyword), *false accept* (no keyword window contains it).
    ``false_accepts_per_hour`` counts false accepts only; ``spurious_per_hour`` adds wrong-word
    and duplicate detections.
    """
    ignore_words = set(ignore_words or ())
    kws = [k for k in truth if k.word not in ignore_words]
    onsets = np.array([k.onset for k in kws])
    hit_by = [None] * len(kws)
    wrong, dup, fa = [], [], []
    outcome = []  # per detection
    for d in sorted(detections, key=lambda d: d.time):
        eps = 1e-6   # times are float sums of ms and sample counts
        inside = np.nonzero((onsets - before - eps <= d.time) &
                            (d.time <= onsets + after + eps))[0] \
            if len(kws) else []
        if len(inside) == 0:
            fa.append(d)
            outcome.append("false_accept")
            continue
        j = int(inside[np.argmin(np.abs(onsets[inside] - d.time))])
        if d.word != kws[j].word:
            wrong.append(d)
            outcome.append("wrong_word")
        elif hit_by[j] is None:
            hit_by[j] = d
            outcome.append("hit")
        else:
            dup.append(d)
            outcome.append("duplicate")
    hits = sum(h is not None for h in hit_by)
    hours = audio_seconds / 3600.0
    per_word = {}
    for k, h in zip(kws, hit_by):
        w = per_word.setdefault(k.word, [0, 0])
        w[0] += h is not None
        w[1] += 1
    latencies = [h.time - k.onset for k, h in zip(kws, hit_by) if h is not None]
    return {
        "keywords": len(kws), "hits": hits, "misses": len(kws) - hits,
        "hit_rate": hits / len(kws) if kws else None,
        "wrong_word": len(wrong), "duplicates": len(dup), "false_accepts": len(fa),
        "detections": len(detections),
        "false_accepts_per_hour": len(fa) / hours if hours > 0 else None,
        "spurious_per_hour": (len(fa) + len(wrong) + len(dup)) / hours if hours > 0 else None,
        "audio_seconds": float(audio_seconds),
        "median_latency_s": float(np.median(latencies)) if latencies else None,
        "per_word": {w: {"hits": h, "keywords": n} for w, (h, n) in sorted(per_word.items())},
        "hit_mask": [h is not None for h in hit_by],
        "outcomes": outcome,
    }
