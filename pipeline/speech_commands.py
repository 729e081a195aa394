"""Read any directory in the Speech Commands layout and index it into labelled splits.

Layouts (detected from the directory itself):

* ``archive``: the v0.01 / v0.02 archives (and any corpus made like them, e.g. the project's
  synthetic corpus or ``speech_commands_real8``): one folder per word, ``_background_noise_/``,
  and ``validation_list.txt`` / ``testing_list.txt``. Clips not named in a list are training.
  A directory without list files is split by the data set's hashing rule (pipeline/splits.py).
* ``test_set``: the official test sets (``speech_commands_test_set_v0.0x``): word folders plus
  ``_silence_`` and ``_unknown_``, no list files; every clip is a test clip.

Protocols for the two extra classes:

* ``tf`` (TensorFlow's speech_commands example, TFDS): ``_silence_`` examples are crops of the
  background-noise recordings, ``silence_percentage`` % of each split's keyword clips; unknown
  examples are other words sampled to ``unknown_percentage`` %. Crops are scaled to a target RMS
  drawn log-uniformly over a wide loudness range, because the official test sets' silence clips
  reach speech loudness (a quiet-only silence class calls loud noise a word).
* ``reference`` (the BiFSMNv2 code): silence is all-zero clips, ``silence_percentage`` % of each
  split; every non-wanted word is unknown, unbalanced.

The class list is ``[_silence_] + [_unknown_] + wanted words``; silence and unknown are present
iff their percentage is positive (V2-35 has neither).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from pipeline import audio as audio_lib
from pipeline.splits import which_set

SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"
SPLITS = ("training", "validation", "testing")

V1_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
V2_35_WORDS = V1_WORDS + (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "bed", "bird",
    "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "backward", "forward",
    "follow", "learn", "visual")

# name -> (wanted words, silence %, unknown %)
TASKS = {
    "v1-12": (V1_WORDS, 10.0, 10.0),
    "v2-12": (V1_WORDS, 10.0, 10.0),
    "v2-35": (V2_35_WORDS, 0.0, 0.0),
}

# Loudness range of synthetic silence (RMS of the crop, full scale = 1.0): -80 dBFS (near digital
# silence) to -15 dBFS (as loud as speech in the data set).
SILENCE_RMS_DB_RANGE = (-80.0, -15.0)


class DataError(ValueError):
    """The data directory or the requested task does not match what the reader expects."""


@dataclasses.dataclass
class Split:
    """One split as columns. ``source`` 0 = a WAV file, 1 = silence made from noise, 2 = zeros."""

    paths: np.ndarray         # str, '' for generated silence
    labels: np.ndarray        # int32 index into the class list
    source: np.ndarray        # int32 (see above)
    noise_index: np.ndarray   # int32, noise recording for source 1
    noise_offset: np.ndarray  # float32 in [0, 1): where in the recording the crop starts
    rms_db: np.ndarray        # float32, target RMS of the silence crop in dBFS

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> "Split":
        return cls(np.array([], dtype=object), *(np.array([], dtype=t) for t in
                   (np.int32, np.int32, np.int32, np.float32, np.float32)))


@dataclasses.dataclass
class SpeechCommandsIndex:
    """What the reader found: class list, splits, noise recordings and what it skipped."""

    data_dir: str
    layout: str
    labels: List[str]
    splits: Dict[str, Split]
    noise_files: List[str]
    skipped: audio_lib.SkipReport
    ignored: Dict[str, int]   # clips of words outside the class list, per split (no unknown class)

    def counts(self) -> Dict[str, Dict[str, int]]:
        """Number of examples per split and class."""
        out = {}
        for name, split in self.splits.items():
            per = np.bincount(split.labels, minlength=len(self.labels)) if len(split) else \
                np.zeros(len(self.labels), int)
            out[name] = {label: int(n) for label, n in zip(self.labels, per)}
        return out

    def table(self) -> str:
        """A per-class table of split sizes, for logs and the README."""
        counts = self.counts()
        names = [s for s in SPLITS if s in counts]
        width = max(len(l) for l in self.labels + ["total"]) + 2
        lines = ["class".ljust(width) + "".join(n.rjust(12) for n in names)]
        for label in self.labels:
            lines.append(label.ljust(width) + "".join(str(counts[n][label]).rjust(12) for n in names))
        lines.append("total".ljust(width) + "".join(str(sum(counts[n].values())).rjust(12)
                                                     for n in names))
        return "\n".join(lines)


def parse_words(words) -> List[str]:
    if words is None:
        return []
    if isinstance(words, str):
        words = words.split(",")
    return [w.strip() for w in words if w.strip()]


def class_labels(task: Optional[str] = None, wanted_words=None, silence_percentage=None,
                 unknown_percentage=None):
    """Resolve a task name or a word list into (labels, wanted words, silence %, unknown %)."""
    words = parse_words(wanted_words)
    if task and task != "custom":
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}: expected one of {sorted(TASKS)} or 'custom'")
        task_words, task_sil, task_unk = TASKS[task]
        words = words or list(task_words)
        silence_percentage = task_sil if silence_percentage is None else silence_percentage
        unknown_percentage = task_unk if unknown_percentage is None else unknown_percentage
    if not words:
        raise DataError("no keywords: pass --wanted_words (comma separated) or --task")
    if len(set(words)) != len(words):
        raise DataError(f"--wanted_words lists a word twice: {words}")
    silence_percentage = 10.0 if silence_percentage is None else float(silence_percentage)
    unknown_percentage = 10.0 if unknown_percentage is None else float(unknown_percentage)
    labels = ([SILENCE_LABEL] if silence_percentage > 0 else []) + \
             ([UNKNOWN_LABEL] if unknown_percentage > 0 else []) + words
    return labels, words, silence_percentage, unknown_percentage


def detect_layout(data_dir: str) -> str:
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir!r} does not exist: expected a folder in the "
                        "Speech Commands layout (one sub-folder of WAV files per word). Build one "
                        "with `python -m pipeline.synth --out_dir DIR` or get the real data with "
                        "`python -m pipeline.download`.")
    entries = set(os.listdir(data_dir))
    has_lists = {"validation_list.txt", "testing_list.txt"} & entries
    if not has_lists and ({SILENCE_LABEL, UNKNOWN_LABEL} & entries):
        return "test_set"
    return "archive"


def _word_dirs(data_dir: str) -> List[str]:
    return sorted(d for d in os.listdir(data_dir)
                  if os.path.isdir(os.path.join(data_dir, d)) and d != BACKGROUND_NOISE_DIR)


def _wavs(data_dir: str, word: str) -> List[str]:
    folder = os.path.join(data_dir, word)
    return sorted(f"{word}/{f}" for f in os.listdir(folder) if f.lower().endswith(".wav"))


def _read_list(data_dir: str, name: str, all_clips: set) -> set:
    path = os.path.join(data_dir, name)
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        entries = {line.strip() for line in f if line.strip()}
    missing = sorted(entries - all_clips)
    if missing:
        raise DataError(f"{path} names {len(missing)} clip(s) that are not in {data_dir}, e.g. "
                        f"{missing[:3]}: expected entries like 'yes/0a7c2a8d_nohash_0.wav' for "
                        "files that exist (is this the right list for this directory?)")
    return entries


def build_index(data_dir: str, labels: Sequence[str], protocol: str = "tf",
                silence_percentage: float = 10.0, unknown_percentage: float = 10.0,
                validation_percentage: float = 10.0, testing_percentage: float = 10.0,
                seed: int = 59185, check_audio: bool = True,
                split_salt: Optional[str] = None) -> SpeechCommandsIndex:
    """Index ``data_dir`` for the class list ``labels`` (see class_labels).

    ``split_salt``: ignore the list files and split by the data set's hashing rule salted with
    this string: another speaker-disjoint partition of the same clips (the same percentages), for
    estimating accuracy on unseen speakers over several splits."""
    if protocol not in ("tf", "reference"):
        raise DataError(f"unknown protocol {protocol!r}: expected 'tf' or 'reference'")
    labels = list(labels)
    layout = detect_layout(data_dir)
    words = [l for l in labels if l not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    has_silence, has_unknown = SILENCE_LABEL in labels, UNKNOWN_LABEL in labels
    dirs = _word_dirs(data_dir)
    if not dirs:
        raise DataError(f"{data_dir} has no word folders: expected sub-folders such as yes/, no/ "
                        "holding 1 s 16 kHz WAV clips")
    special = {SILENCE_LABEL, UNKNOWN_LABEL} if layout == "test_set" else set()
    unknown_words = [w for w in words if w not in dirs]
    if unknown_words:
        raise DataError(f"wanted word(s) {unknown_words} have no folder in {data_dir}; it has: "
                        f"{', '.join(d for d in dirs if d not in special)}")

    clips = {d: _wavs(data_dir, d) for d in dirs}
    skipped = audio_lib.SkipReport()
    if check_audio:
        for d in dirs:
            clips[d] = [c for c in clips[d]
                        if audio_lib.check_wav(os.path.join(data_dir, c), skipped)]
    all_clips = {c for cs in clips.values() for c in cs}

    if layout == "test_set":
        assign = lambda clip: "testing"  # noqa: E731
    else:
        known = set()
        for d in dirs:
            known.update(_wavs(data_dir, d))
        val = _read_list(data_dir, "validation_list.txt", known)
        test = _read_list(data_dir, "testing_list.txt", known)
        if split_salt:
            logging.info("split by the hashing rule salted with %r (%g%% validation, %g%% "
                         "testing; list files ignored)", split_salt, validation_percentage,
                         testing_percentage)
            assign = lambda clip: which_set(clip, validation_percentage,  # noqa: E731
                                            testing_percentage, salt=split_salt)
        elif val or test:
            assign = lambda clip: ("validation" if clip in val else  # noqa: E731
                                   "testing" if clip in test else "training")
        else:
            logging.info("%s has no list files: splitting by the data set's hashing rule "
                         "(%g%% validation, %g%% testing)", data_dir, validation_percentage,
                         testing_percentage)
            assign = lambda clip: which_set(clip, validation_percentage,  # noqa: E731
                                            testing_percentage)

    label_of = {w: labels.index(w) for w in words}
    keyword = {s: [] for s in SPLITS}
    unknown = {s: [] for s in SPLITS}
    given_silence = {s: [] for s in SPLITS}
    ignored = {s: 0 for s in SPLITS}
    for d in dirs:
        for clip in clips[d]:
            split = assign(clip)
            if d in label_of:
                keyword[split].append((clip, label_of[d]))
            elif d == SILENCE_LABEL and layout == "test_set":
                if has_silence:
                    given_silence[split].append(clip)
                else:
                    ignored[split] += 1
            elif has_unknown:
                unknown[split].append(clip)
            else:
                ignored[split] += 1

    noise_files = []
    noise_dir = os.path.join(data_dir, BACKGROUND_NOISE_DIR)
    if os.path.isdir(noise_dir):
        noise_files = sorted(os.path.join(noise_dir, f) for f in os.listdir(noise_dir)
                             if f.lower().endswith(".wav"))
        if check_audio:
            noise_files = [f for f in noise_files if audio_lib.check_wav(f, skipped, min_seconds=1)]

    rng = np.random.default_rng(seed)
    splits = {}
    for split in SPLITS:
        rows = [(os.path.join(data_dir, c), y, 0, 0, 0.0, 0.0) for c, y in keyword[split]]
        n_kw = len(rows)
        if has_unknown and unknown[split]:
            pool = sorted(unknown[split])
            if protocol == "tf" and layout != "test_set":
                rng.shuffle(pool)
                pool = pool[:int(math.ceil(n_kw * unknown_percentage / 100))]
            rows += [(os.path.join(data_dir, c), labels.index(UNKNOWN_LABEL), 0, 0, 0.0, 0.0)
                     for c in pool]
        if has_silence:
            sil = labels.index(SILENCE_LABEL)
            rows += [(os.path.join(data_dir, c), sil, 0, 0, 0.0, 0.0) for c in given_silence[split]]
            if layout != "test_set" and n_kw:
                if protocol == "reference":
                    n_sil = int(math.ceil(len(rows) * silence_percentage / 100))
                    rows += [("", sil, 2, 0, 0.0, 0.0)] * n_sil
                else:
                    n_sil = int(math.ceil(n_kw * silence_percentage / 100))
                    if noise_files:
                        lo, hi = SILENCE_RMS_DB_RANGE
                        rows += [("", sil, 1, int(rng.integers(len(noise_files))),
                                  float(rng.random()), float(rng.uniform(lo, hi)))
                                 for _ in range(n_sil)]
                    else:
                        logging.warning("%s has no %s/: %s split gets all-zero silence clips",
                                        data_dir, BACKGROUND_NOISE_DIR, split)
                        rows += [("", sil, 2, 0, 0.0, 0.0)] * n_sil
        if rows:
            cols = list(zip(*rows))
            splits[split] = Split(np.array(cols[0], dtype=object),
                                  np.array(cols[1], np.int32), np.array(cols[2], np.int32),
                                  np.array(cols[3], np.int32), np.array(cols[4], np.float32),
                                  np.array(cols[5], np.float32))
        else:
            splits[split] = Split.empty()

    if has_unknown and not any(unknown.values()):
        raise DataError(f"the class list has {UNKNOWN_LABEL} but {data_dir} has no clips of other "
                        f"words; pass --unknown_percentage=0 (words here: {', '.join(dirs)})")
    if not any(len(s) for s in splits.values()):
        raise DataError(f"no usable clips of {words} in {data_dir}")
    skipped.log(data_dir)
    if any(ignored.values()):
        logging.info("ignored %d clip(s) outside the class list (no %s class)",
                     sum(ignored.values()), UNKNOWN_LABEL)
    return SpeechCommandsIndex(data_dir, layout, labels, splits, noise_files, skipped, ignored)
