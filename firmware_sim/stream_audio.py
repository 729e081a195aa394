"""The test stream of the always-on loop: keyword clips in background noise, with ground truth.

Input: a 16 kHz stream, either a WAV file or one generated from a corpus: keyword clips of one
split (``--split``, default testing) placed at random, non-overlapping times (at least
``--min_gap_s`` of background between two clips), each scaled to the same speech power
(``--equal_loudness``; power over the energy-detected speech span of the clip), on top of
background noise made from the corpus' ``_background_noise_`` recordings (random segments, each
scaled to the same RMS, 50 ms cross-fades) at ``--snr_db`` below that speech power. (These are
the recordings the models were trained with, as augmentation and as the silence class: false
accepts on unseen noise may well be higher.) The generated stream (``.wav``) and its ground
truth (``.truth.json``: clip start, speech onset / end, word, source clip) are written next to
the plot, with the per-window posteriors (``.posteriors.npz``, to re-tune the detector offline)
and the details (``.json``).

``make_stream`` mixes clips (``corpus_clips``: one split of a corpus, the model's words) into a
noise track (``noise_track``) at known times (``place_times``); ``write_wav`` / ``read_truth``
keep a stream and its ground truth on disk so that any model can be scored on the same audio.
Used by ``firmware_sim.stream`` (the loop) and the demo.
"""
from __future__ import annotations

import json
import math
import os
from typing import List, Optional, Sequence

import numpy as np

from firmware_sim import detector as det

SAMPLE_RATE = 16000


class StreamError(ValueError):
    """Bad input to the stream tool (missing files, streams too short...)."""



def speech_bounds(clip, rate=SAMPLE_RATE, frame_ms=10.0, rel_db=-25.0):
    """(onset, end) in seconds of the speech in a clip: the first and last 10 ms frame whose RMS
    is within ``rel_db`` of the loudest frame's."""
    clip = np.asarray(clip, np.float64)
    n = int(rate * frame_ms / 1000)
    frames = clip[:len(clip) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(frames ** 2, axis=1) + 1e-20)
    active = np.nonzero(20 * np.log10(rms / rms.max()) >= rel_db)[0]
    return active[0] * n / rate, (active[-1] + 1) * n / rate


def noise_track(recordings: Sequence[np.ndarray], n: int, rng: np.random.Generator,
                segment_s=(4.0, 15.0), fade_s=0.05, rate=SAMPLE_RATE) -> np.ndarray:
    """``n`` samples of background: random segments of random recordings, each scaled to unit
    RMS, joined with linear cross-fades. Zeros when there are no recordings."""
    recordings = [np.asarray(r, np.float32) for r in recordings if len(r) > rate // 10]
    out = np.zeros(n, np.float32)
    if not recordings:
        return out
    fade = int(fade_s * rate)
    pos = 0
    while pos < n:
        rec = recordings[int(rng.integers(len(recordings)))]
        length = min(int(rng.uniform(*segment_s) * rate), len(rec))
        start = int(rng.integers(0, len(rec) - length + 1))
        seg = rec[start:start + length].astype(np.float32)
        seg = seg / (np.sqrt(np.mean(seg ** 2)) + 1e-8)
        f = min(fade, length // 2, pos)
        if f:
            ramp = np.linspace(0, 1, f, dtype=np.float32)
            seg = seg.copy()
            seg[:f] *= ramp
            out[pos - f:pos] *= ramp[::-1]
            pos -= f
        take = min(length, n - pos)
        out[pos:pos + take] += seg[:take]
        pos += take
    return out


def place_times(count: int, seconds: float, clip_s: float, min_gap_s: float,
                rng: np.random.Generator, lead_s: float = 1.0) -> np.ndarray:
    """``count`` clip start times in [lead_s, seconds - clip_s], sorted, at least
    ``clip_s + min_gap_s`` apart, uniformly spread (random gaps)."""
    slot = clip_s + min_gap_s
    free = seconds - lead_s - clip_s - (count - 1) * slot
    if count and free < 0:
        raise StreamError(f"{count} keywords of {clip_s} s with {min_gap_s} s gaps do not fit in "
                          f"{seconds:.1f} s: lower --keywords_per_minute or --min_gap_s")
    offsets = np.sort(rng.uniform(0, max(free, 0), count))
    return lead_s + offsets + np.arange(count) * slot


def make_stream(clips, noise_recordings, seconds: float, rng: np.random.Generator,
                keywords_per_minute: float = 10.0, snr_db: Optional[float] = 20.0,
                min_gap_s: float = 2.0, lead_s: float = 1.0, equal_loudness: bool = True,
                rate=SAMPLE_RATE):
    """Mix keyword clips into background noise.

    ``clips``: list of (word, audio [<= 1 s], source) to draw from (in order, cycling);
    returns (audio float32 [n], [Keyword]) with the keywords at known times. The speech power
    of a clip is the mean power over its speech span (``speech_bounds``); the noise power is
    ``snr_db`` under the mean speech power of the placed clips. ``equal_loudness``: every clip
    is first scaled to that mean speech power, so each keyword is at ``snr_db`` (recordings of
    Speech Commands differ by 30 dB and more in loudness: unscaled, the quiet ones sit far
    below the noise and no model could hear them).
    """
    n = int(round(seconds * rate))
    count = int(round(keywords_per_minute * seconds / 60.0))
    if count and not clips:
        raise StreamError("no keyword clips to place in the stream")
    clip_s = max(len(c[1]) for c in clips) / rate if clips else 1.0
    starts = place_times(count, seconds, clip_s, min_gap_s, rng, lead_s)
    placed, powers = [], []
    for i, start_s in enumerate(starts):
        word, clip, source = clips[i % len(clips)]
        clip = np.asarray(clip, np.float32)
        on, off = speech_bounds(clip, rate)
        seg = clip[int(on * rate):int(off * rate)]
        powers.append(float(np.mean(seg.astype(np.float64) ** 2)) + 1e-12)
        placed.append((word, clip, source, int(round(start_s * rate)), on, off))
    p_speech = float(np.mean(powers)) if powers else 0.01
    speech = np.zeros(n, np.float32)
    truth = []
    for (word, clip, source, s, on, off), p in zip(placed, powers):
        if equal_loudness:
            clip = clip * np.float32(math.sqrt(p_speech / p))
        speech[s:s + len(clip)] += clip[:n - s]
        truth.append(det.Keyword(word, s / rate, s / rate + on, s / rate + off, source))
    audio = speech
    if snr_db is not None and math.isfinite(snr_db):
        noise = noise_track(noise_recordings, n, rng)
        audio = speech + noise * np.float32(math.sqrt(p_speech / 10 ** (snr_db / 10)))
    peak = float(np.max(np.abs(audio))) if n else 0.0
    if peak > 0.999:  # keep it writable as 16-bit PCM without clipping
        audio = audio * np.float32(0.999 / peak)
    return audio.astype(np.float32), truth


def corpus_clips(cfg, labels, split: str, count: int, rng: np.random.Generator):
    """``count`` keyword clips of ``split`` for the model's words, the word drawn uniformly,
    the clip without replacement within a word (cycling when a word runs out)."""
    from pipeline import audio as audio_lib
    from pipeline import speech_commands as sc
    from pipeline.input_pipeline import index_from_config

    index = index_from_config(cfg, labels=labels)
    if split not in index.splits or not len(index.splits[split]):
        raise StreamError(f"the {split} split of {cfg.data_dir} is empty")
    s = index.splits[split]
    words = [l for l in labels if l not in (sc.SILENCE_LABEL, sc.UNKNOWN_LABEL)]
    pools = {}
    for w in words:
        rows = np.nonzero((s.source == 0) & (s.labels == labels.index(w)))[0]
        if len(rows):
            pools[w] = list(rng.permutation(rows))
    if not pools:
        raise StreamError(f"no clips of the model's words {words} in the {split} split of "
                          f"{cfg.data_dir}")
    present = sorted(pools)
    used = {w: 0 for w in present}
    clips = []
    for _ in range(count):
        w = present[int(rng.integers(len(present)))]
        row = pools[w][used[w] % len(pools[w])]
        used[w] += 1
        path = str(s.paths[row])
        clips.append((w, audio_lib.load_wav(path), os.path.relpath(path, cfg.data_dir)))
    noise = [audio_lib.load_wav(f, None) for f in index.noise_files]
    return clips, noise, index


def write_wav(path, audio, rate=SAMPLE_RATE):
    import wave
    data = (np.clip(np.asarray(audio), -1, 1) * 32767).astype("<i2").tobytes()
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)


def read_truth(path) -> List[det.Keyword]:
    if not os.path.exists(path):
        raise StreamError(f"--truth {path} does not exist")
    with open(path) as f:
        data = json.load(f)
    return parse_truth(data, path)


def parse_truth(data, path) -> List[det.Keyword]:
    """The keywords of a loaded .truth.json (``path`` for the message)."""
    try:
        rows = data["keywords"] if isinstance(data, dict) else data
        return [det.Keyword(r["word"], float(r.get("start", r["onset"])), float(r["onset"]),
                            float(r.get("offset", r["onset"] + 1.0)), r.get("source", ""))
                for r in rows]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StreamError(f"--truth {path}: not a ground-truth file ({type(e).__name__}: {e}); "
                          "expected a .truth.json written by firmware_sim.stream") from e
