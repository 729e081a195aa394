"""Shared fixtures: tiny Speech Commands folders written with NumPy in milliseconds.

Each word is a tone of its own frequency with a random onset, so a model can learn them in a
few steps; the folders follow the real layouts (archive with lists, archive without lists,
official test set). The espeak-ng corpus (pipeline.synth) has its own test.
"""
import os
import wave

import numpy as np
import pytest

import models  # noqa: F401  (Keras 2 before TensorFlow)
from pipeline.splits import which_set

REAL8 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                     "speech_commands_real8")
WORD_FREQS = {"yes": 300.0, "no": 500.0, "up": 800.0, "down": 1200.0, "cat": 1800.0,
              "dog": 2500.0}


def write_wav(path, samples, rate=16000, channels=1, width=2):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    samples = np.asarray(samples, np.float64)
    if channels > 1:
        samples = np.repeat(samples[:, None], channels, axis=1)
    if width == 2:
        data = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    else:
        data = (np.clip(samples, -1, 1) * 127 + 128).astype(np.uint8).tobytes()
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)


def tone(freq, rng, rate=16000, seconds=1.0):
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = np.zeros(n)
    start, length = rng.integers(0, n // 3), n // 2
    env = np.hanning(length)
    x[start:start + length] = 0.5 * env * np.sin(2 * np.pi * freq * t[:length])
    return x + 0.003 * rng.standard_normal(n)


def make_corpus(root, words=("yes", "no", "up", "down", "cat", "dog"), speakers=12, reps=2,
                lists=True, seed=0, noise=True):
    rng = np.random.default_rng(seed)
    clips = []
    for s in range(speakers):
        spk = f"{s * 7919 + 1000:08x}"
        for w in words:
            for r in range(reps):
                rel = f"{w}/{spk}_nohash_{r}.wav"
                write_wav(os.path.join(root, rel), tone(WORD_FREQS[w], rng))
                clips.append(rel)
    if noise:
        for name, color in (("white_noise.wav", 0), ("hum.wav", 1)):
            n = 16000 * 4
            x = 0.1 * rng.standard_normal(n) if color == 0 else \
                0.1 * np.sin(2 * np.pi * 50 * np.arange(n) / 16000)
            write_wav(os.path.join(root, "_background_noise_", name), x)
    if lists:
        for split, fname in (("validation", "validation_list.txt"),
                             ("testing", "testing_list.txt")):
            with open(os.path.join(root, fname), "w") as f:
                f.write("\n".join(c for c in clips if which_set(c, 20, 20) == split) + "\n")
    return str(root)


def make_test_set(root, words=("yes", "no", "up", "down"), per_word=4, seed=1):
    rng = np.random.default_rng(seed)
    for w in words:
        for i in range(per_word):
            write_wav(os.path.join(root, w, f"{i:08x}_nohash_0.wav"), tone(WORD_FREQS[w], rng))
    for i in range(3):
        write_wav(os.path.join(root, "_silence_", f"{i:08x}_nohash_0.wav"),
                  0.05 * rng.standard_normal(16000))
        write_wav(os.path.join(root, "_unknown_", f"{i:08x}_nohash_0.wav"),
                  tone(WORD_FREQS["cat"], rng))
    return str(root)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("tiny_corpus"))


@pytest.fixture(scope="session")
def tiny_test_set(tmp_path_factory):
    return make_test_set(tmp_path_factory.mktemp("tiny_test_set"))


@pytest.fixture(scope="session")
def real8():
    if not os.path.isdir(REAL8):
        pytest.skip(f"real Speech Commands pack not present at {REAL8}")
    return REAL8
