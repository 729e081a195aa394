"""The always-on loop of the device, simulated on the host: audio in, commands out.

Reads: --model (run directory, .weights.h5 or .tflite), a --wav file or the clips and noise of
  --data_dir (a stream is generated), --cost_json (optional).
Writes: into --out_dir (default runs/stream; or next to --plot): the stream .wav, .truth.json,
  .posteriors.npz, the details .json and a PNG; the summary (--json_out).

    python -m firmware_sim.stream --model runs/real8/bifsmnv2 \\
        --data_dir ../shared/data/speech_commands_real8 --minutes 10 --seed 0
    python -m firmware_sim.stream --model export/bifsmnv2_d8.tflite --wav recording.wav \\
        [--truth recording.truth.json]

Input: a 16 kHz stream, either a WAV file or one generated from a corpus: keyword clips of
one split (``--split``, default testing) placed at random, non-overlapping times (at least
``--min_gap_s`` of background between two clips), each scaled to the same speech power
(``--equal_loudness``; power over the energy-detected speech span of the clip), on top of
background noise made from the corpus' ``_background_noise_`` recordings (random segments,
each scaled to the same RMS, 50 ms cross-fades) at ``--snr_db`` below that speech power.
(These are the recordings the models were trained with, as augmentation and as the silence
class: false accepts on unseen noise may well be higher.) The generated stream (``.wav``) and its ground truth (``.truth.json``: clip start, speech onset
/ end, word, source clip) are written next to the plot, with the per-window posteriors
(``.posteriors.npz``, to re-tune the detector offline) and the details (``.json``).

Loop: every ``--stride_ms`` the last second of audio (the window ending now) goes through the
log-mel features and the model, the softmax goes to the detector (firmware_sim.detector: TFLite
Micro's RecognizeCommands), and new commands come out with their time (the end of the window
that fired), word and averaged score. For speed the windows are processed in batches of
``--batch_windows`` (features in one TensorFlow call, the model in one call), which changes
nothing: each window is cut from the audio that ends at its own end time, and the detector sees
the results one by one in time order, as the device would.

Detector defaults (750 ms average, threshold 0.5, suppression 1500 ms, minimum count 3) were
chosen on a 10-minute *validation*-split stream of speech_commands_real8 with the DFSMN teacher
(stride 250 ms, 20 dB SNR): TFLite Micro's 1000 ms / 0.78 gave a 49 % hit rate there. With a
1 s window only ~2-3 of its 4-5 results hold the whole word, so the average rarely nears 0.78,
and the average peaks late: correct detections arrive up to ~1.7 s after the onset, past the
default +1.5 s tolerance (use --tolerance_after 2 with --average_window_ms 1000). At 750 ms /
0.5: 92 % hits, 0 false accepts, 5 wrong-word detections on that stream.

Scoring: a detection at time d matches a keyword with speech onset o when
``o - tolerance_before <= d <= o + tolerance_after`` (defaults 0.25 s, 1.5 s); see
``detector.score_detections`` for hits, misses, wrong-word detections, duplicates and false
accepts. ``--sweep`` re-runs the detector (not the model) at other thresholds: an operating
curve of hit rate against false accepts per hour.

Streaming models (issue 16; ``models/streaming.py``): a .tflite written by ``pipeline.export
--streaming`` (its description has a ``streaming`` entry) or a run directory of
``dfsmn_stream`` / ``bifsmnv2_stream`` runs HOP BY HOP (``--loop auto``, the default): every
2048 samples (128 ms) one invoke with the hop's 4 feature frames (or its PCM for an audio-input
model) and the state of the previous invoke, which gives the logits of the 1 s window ending
with the hop; the state starts at zero with the stream and is never reset. The features of the
whole stream are computed once (``pipeline.streaming_runner.stream_features``: frame k ends
at sample 512 (k + 1); each depends only on its own past audio), the model runs one invoke per
hop in order, and the detector and scoring are the windowed loop's (results every hop instead
of every ``--stride_ms``). Warm-up: the detector gets its first result at the end of the first
full window (``window_hops`` hops, 1.024 s), as the windowed loop's first window ends at 1 s;
the earlier hops run (they fill the state) but their logits, computed over a window that
reaches before the stream's start, are not reported (a zero state is not audio: on a 60-minute
stream the depth-8 student fired "right" at 0.77 s, with nothing said). ``--loop windowed``
runs such a model the windowed way instead (the non-streaming form on a 1 s window every
stride, each window from zero state): the same weights without the state carried across
windows. The summary counts the model's host invokes
(``invokes``, ``invokes_per_audio_second``).

Compute budget: ``--instructions_per_inference N`` or ``--cost_json FILE`` (the output of
firmware_sim.cost: its last JSON line) gives instructions per second of audio = N x inferences
per second (1000 / stride_ms; a streaming model: per invoke x 1000 / 128), and the load of one
``--clock_mhz`` (1200: Cortex-A53) core at ``--ipc`` instructions per cycle. Only the network is
counted, not the features. For a streaming model, ``--cost_json`` without ``--cost_key`` gives the
MEASURED instructions per invoke when the cost tool counted that model hop by hop
(``streaming_measured_instructions``: its ``streaming_hop_insns`` under the .tflite's name, or
the one ``streaming_models`` entry of the same arch and depth, e.g. for a run directory),
and otherwise an ESTIMATE from firmware_sim.cost's measured parts of the windowed model
(``streaming_hop_instructions``: one T-th of conv1, conv2, linear and the depth's layers, which
all scale with the frames, plus the whole classifier). The table says which. A windowed
.tflite counted by the cost tool takes its ``model_insns`` entry of the same file name.

Prints a table and, last, one JSON line with hit_rate, false_accepts_per_hour, hits, misses,
false_accepts, keywords, audio_seconds (metrics are null for a WAV without ground truth).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import List, Optional, Sequence

import numpy as np
from absl import app, flags, logging

from firmware_sim import detector as det

#: the windowed loop's stride: one 1 s window (one inference) every 250 ms (--stride_ms)
DEFAULT_STRIDE_MS = 250.0

SAMPLE_RATE = 16000
WINDOW = 16000                      # 1 s, the models' input
DEFAULT_OUT_DIR = os.path.join("runs", "stream")

FLAGS = flags.FLAGS


class StreamError(ValueError):
    """Bad input to the stream tool (missing files, streams too short...)."""


# -- stream generation --------------------------------------------------------------------------
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


# -- the loop -----------------------------------------------------------------------------------
def window_ends(n_samples: int, stride: int, window: int = WINDOW) -> np.ndarray:
    """End sample (exclusive) of every window: the first full second, then every stride."""
    if n_samples < window:
        return np.zeros(0, np.int64)
    return np.arange(window, n_samples + 1, stride, dtype=np.int64)


@dataclasses.dataclass
class LoopResult:
    times_ms: np.ndarray      # [T] window end times
    probs: np.ndarray         # [T, C] per-window posteriors
    trace: det.DetectorTrace  # smoothed posteriors and detections
    wall_seconds: float
    invokes: int = 0          # model invocations on the host (a batch of B windows: B)
    loop: str = "windowed"


def run_loop(predictor, audio, detector: det.RecognizeCommands,
             stride_ms: float = DEFAULT_STRIDE_MS,
             batch_windows: int = 64, outputs: str = "auto", progress: bool = True,
             window: int = WINDOW) -> LoopResult:
    """Slide a ``window`` over ``audio`` every ``stride_ms``; features, model, detector.

    Windows are batched for speed; each one ends at its own time and the detector gets the
    results in time order, so every decision depends only on audio up to its window end."""
    from tqdm import tqdm
    stride = int(round(stride_ms * SAMPLE_RATE / 1000))
    if stride <= 0:
        raise StreamError("--stride_ms must be > 0")
    audio = np.asarray(audio, np.float32)
    ends = window_ends(len(audio), stride, window)
    if not len(ends):
        raise StreamError(f"the stream is {len(audio) / SAMPLE_RATE:.2f} s long: shorter than "
                          f"one {window / SAMPLE_RATE:g} s window")
    features = None
    if predictor.input_kind == "features":
        from pipeline.features import log_mel
        features = log_mel
    trace = det.DetectorTrace(detector.labels)
    pad_last = getattr(predictor, "runtime", "") == "keras" and len(ends) > batch_windows
    all_probs = []
    t0 = time.time()
    chunks = range(0, len(ends), batch_windows)
    for c in tqdm(chunks, desc="stream", unit="chunk", disable=not progress, file=sys.stderr):
        chunk = ends[c:c + batch_windows]
        windows = np.stack([audio[e - window:e] for e in chunk])
        if pad_last and len(chunk) < batch_windows:   # one batch shape: no re-tracing
            windows = np.concatenate([windows, np.repeat(windows[-1:], batch_windows -
                                                         len(chunk), axis=0)])
        x = features(windows).numpy() if features is not None else windows
        raw = np.asarray(predictor.predict(x))[:len(chunk)]
        if outputs == "auto":
            outputs = det.output_kind(raw)          # decided once, on the first batch
        probs = det.to_probabilities(raw, outputs)
        if probs.shape[-1] != len(detector.labels):
            raise StreamError(f"the model gives {probs.shape[-1]} scores for "
                              f"{len(detector.labels)} labels")
        for e, p in zip(chunk, probs):
            trace.add(detector.process(e * 1000.0 / SAMPLE_RATE, p))
        all_probs.append(probs)
    return LoopResult(ends * 1000.0 / SAMPLE_RATE, np.concatenate(all_probs), trace,
                      time.time() - t0, len(ends), "windowed")


def run_streaming_loop(runner, audio, detector: det.RecognizeCommands, outputs: str = "auto",
                       progress: bool = True) -> LoopResult:
    """A streaming model hop by hop over ``audio`` from zero state (module docstring): one
    invoke per hop, the detector after each, in time order. ``runner``: a
    ``pipeline.streaming_runner.StreamingRunner``."""
    from pipeline import streaming_runner
    g = runner.geometry
    if len(audio) < g.window_hops * g.hop_samples:
        raise StreamError(f"the stream is {len(audio) / SAMPLE_RATE:.2f} s long: shorter than "
                          f"one {g.window_hops * g.hop_samples / SAMPLE_RATE:g} s window")
    t0 = time.time()
    before = runner.invokes
    times, raw = streaming_runner.run_stream(runner, audio, progress)
    from pipeline.model_contract import check_logits
    raw = check_logits(getattr(runner, "path", "the streaming model"), raw)
    if outputs == "auto":
        outputs = det.output_kind(raw[:64])        # decided once, as the windowed loop does
    probs = det.to_probabilities(raw, outputs)
    if probs.shape[-1] != len(detector.labels):
        raise StreamError(f"the model gives {probs.shape[-1]} scores for "
                          f"{len(detector.labels)} labels")
    warm = g.window_hops - 1                       # the first full window ends at hop warm
    times, probs = times[warm:], probs[warm:]
    trace = det.DetectorTrace(detector.labels)
    for t, p in zip(times, probs):
        trace.add(detector.process(t, p))
    return LoopResult(times, probs, trace, time.time() - t0, runner.invokes - before,
                      "streaming")


def sweep(labels, times_ms, probs, config: det.DetectorConfig, thresholds, truth,
          audio_seconds, before, after):
    """Detector only (cached posteriors) at other thresholds -> list of score dicts."""
    rows = []
    for th in thresholds:
        d = det.RecognizeCommands(labels, dataclasses.replace(config, threshold=th))
        trace = d.run(times_ms, probs)
        r = det.score_detections(truth, trace.detections, audio_seconds, before, after)
        rows.append({"threshold": th, **{k: r[k] for k in (
            "hit_rate", "hits", "misses", "wrong_word", "false_accepts",
            "false_accepts_per_hour", "spurious_per_hour")}})
    return rows


# -- compute budget -----------------------------------------------------------------------------
INSTRUCTION_KEYS = ("instructions_per_inference", "instructions", "total_instructions",
                    "insns", "icount")


def _find_instruction_counts(obj, prefix=""):
    found = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}{k}"
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "ins" in k.lower():
                found[key] = float(v)
            elif isinstance(v, dict):
                found.update(_find_instruction_counts(v, key + "."))
    return found


def _cost_object(path: str) -> dict:
    """The last line of ``path`` that is a JSON object (or the whole file)."""
    if not os.path.exists(path):
        raise StreamError(f"--cost_json {path} does not exist")
    text = open(path).read()
    for candidate in [text] + text.strip().splitlines()[::-1]:
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    raise StreamError(f"--cost_json {path}: no JSON object found (expected the output of "
                      "firmware_sim.cost, whose last line is JSON)")


def streaming_measured_instructions(path: str, model: str, arch=None, depth=None
                                    ) -> Optional[dict]:
    """The MEASURED instructions per hop of a streaming model from firmware_sim.cost's JSON
    (``streaming_hop_insns`` / ``streaming_models``, counted hop by hop in the aarch64
    firmware): the entry named as ``model``'s file (stem), else the only entry of the same
    ``arch`` and ``depth`` (a run directory and its export compute the same ops). None when the
    JSON has no such measurement (older output, windowed models only)."""
    obj = _cost_object(path)
    hop = obj.get("streaming_hop_insns") or {}
    entries = [e for e in obj.get("streaming_models") or [] if isinstance(e, dict)]
    name = os.path.splitext(os.path.basename(str(model).rstrip("/")))[0]
    entry = next((e for e in entries if e.get("name") == name), None)
    how = "the same file"
    if entry is None and name in hop:
        entry = {"name": name, "hop_insns": hop[name]}
    if entry is None and arch is not None and depth is not None:
        same = [e for e in entries if e.get("arch") == arch and e.get("depth") == int(depth)]
        if len(same) == 1:
            entry, how = same[0], f"the export of the same arch {arch} and depth {depth}"
    if entry is None:
        return None
    try:
        total = float(entry["hop_insns"])
    except (KeyError, TypeError, ValueError) as e:
        raise StreamError(f"--cost_json {path}: streaming entry {entry.get('name')!r} has no "
                          "instruction count") from e
    return {"total": total, "model": entry.get("name"), "matched": how,
            "hops": entry.get("hops"),
            "measured": "firmware_sim.cost: one Invoke() per hop counted in the aarch64 "
                        "firmware (qemu-aarch64 -cpu cortex-a53), mean over the hops"}


def streaming_hop_instructions(path: str, depth: int, binary: bool = True) -> dict:
    """ESTIMATED instructions of one streaming invoke (one backbone frame) at ``depth``, from
    firmware_sim.cost's measured parts of the windowed model (its JSON: ``raw``, ``meta.T``):
    conv1, conv2, linear and each DFSMN layer scale with the frames (conv1 computes 2 of its
    2T output rows per hop, conv2 1 of T, linear and every layer 1 of T frames), the classifier
    runs whole every hop. Binary: conv2 is the cost tool's proxy of the binary conv, linear and
    the layers bitwise; float (teacher): XNNPACK's. The streaming model's own extra work (state
    copies, the receptive-field scale of conv2) is not in it. Returns the parts and the total."""
    obj = _cost_object(path)
    try:
        raw, T = obj["raw"], int(obj["meta"]["T"])
        part = raw["bitwise"] if binary else raw["float"]
        layers = part["layer"]
        n = len(layers)
        sets, step = {}, 1
        while step <= n:   # thinnable layer sets (models/thinnable.py)
            sets[n // step] = [j for j in range(n) if (j + 1) % step == 0]
            step *= 2
        if depth not in sets:
            raise StreamError(f"--cost_json {path}: depth {depth} is not one of the measured "
                              f"model's depths {sorted(sets)}")
        parts = {"conv1": raw["float"]["conv1"] / T,
                 "conv2": (raw["bitwise"]["conv2_proxy"] if binary else raw["float"]["conv2"]) / T,
                 "linear": part["linear"] / T,
                 f"layers_d{depth}": sum(layers[j] for j in sets[depth]) / T,
                 "classifier": raw["float"]["classifier"]}
    except (KeyError, TypeError, ValueError, IndexError) as e:
        if isinstance(e, StreamError):
            raise
        raise StreamError(f"--cost_json {path}: not firmware_sim.cost's output ({e!r}); "
                          "expected its JSON line (raw, meta)") from e
    return {"parts": parts, "total": float(sum(parts.values())), "frames_measured": T,
            "estimate": "windowed parts / T frames + the whole classifier (not measured "
                        "as a streaming model)"}


def read_cost_json(path: str, key: Optional[str] = None) -> float:
    """Instructions per inference from the cost tool's output: the last line of ``path`` that
    is a JSON object (or the whole file), key ``key`` (dotted for nested) or the first of
    INSTRUCTION_KEYS present."""
    obj = _cost_object(path)
    if key:
        v = obj
        for part in key.split("."):
            if not isinstance(v, dict) or part not in v:
                raise StreamError(f"--cost_json {path}: no key {key!r}; it has "
                                  f"{sorted(_find_instruction_counts(obj))}")
            v = v[part]
        return float(v)
    for k in INSTRUCTION_KEYS:
        if isinstance(obj.get(k), (int, float)):
            return float(obj[k])
    counts = _find_instruction_counts(obj)
    if len(counts) == 1:
        return next(iter(counts.values()))
    raise StreamError(f"--cost_json {path}: cannot tell which number is the instruction count "
                      f"per inference (candidates: {sorted(counts) or 'none'}); pass --cost_key")


def compute_budget(instructions_per_inference: float, stride_ms: float,
                   clock_mhz: float = 1200.0, ipc: float = 1.0) -> dict:
    inferences_per_s = 1000.0 / stride_ms
    ips = instructions_per_inference * inferences_per_s
    cycles = ips / ipc
    return {"instructions_per_inference": instructions_per_inference,
            "inferences_per_second": inferences_per_s, "stride_ms": stride_ms,
            "instructions_per_audio_second": ips,
            "cycles_per_audio_second": cycles,
            "clock_mhz": clock_mhz, "ipc": ipc,
            "core_load": cycles / (clock_mhz * 1e6)}


# -- reporting ----------------------------------------------------------------------------------
def format_table(metrics: Optional[dict], budget: Optional[dict], info: dict,
                 sweep_rows=None) -> str:
    what = (f"streaming: one hop every {info['stride_ms']:g} ms, {info['windows']} hops"
            if info.get("loop") == "streaming" else
            f"stride {info['stride_ms']:g} ms, {info['windows']} windows")
    lines = [f"model {info['model']} ({info['runtime']}), {info['audio_seconds']:.1f} s of "
             f"audio, {what} ({info.get('invokes', info['windows'])} host invokes) in "
             f"{info['wall_seconds']:.1f} s ({info['realtime_factor']:.1f}x real time)",
             f"detector: average {info['average_window_ms']:g} ms, threshold "
             f"{info['threshold']:g}, suppression {info['suppression_ms']:g} ms, minimum count "
             f"{info['minimum_count']}", ""]
    if metrics is None:
        lines.append(f"{info['n_detections']} detections (no ground truth: not scored)")
    else:
        m = metrics
        hr = "-" if m["hit_rate"] is None else f"{m['hit_rate']:.2%}"
        rows = [("keywords", m["keywords"]), ("hits", m["hits"]), ("misses", m["misses"]),
                ("hit rate", hr), ("wrong-word detections", m["wrong_word"]),
                ("duplicate detections", m["duplicates"]),
                ("false accepts", m["false_accepts"]),
                ("false accepts / hour", f"{m['false_accepts_per_hour']:.1f}"),
                ("all spurious / hour", f"{m['spurious_per_hour']:.1f}"),
                ("median latency (s after onset)",
                 "-" if m["median_latency_s"] is None else f"{m['median_latency_s']:.2f}")]
        lines += [f"{k:<32}{v:>10}" for k, v in rows]
        lines += ["", "word        hits / keywords"]
        lines += [f"{w:<12}{v['hits']:>4} / {v['keywords']}" for w, v in m["per_word"].items()]
    if sweep_rows:
        lines += ["", "threshold  hit rate  false acc/h  wrong  spurious/h"]
        lines += [f"{r['threshold']:>9.2f}  {r['hit_rate'] or 0:>8.2%}  "
                  f"{r['false_accepts_per_hour']:>11.1f}  {r['wrong_word']:>5}  "
                  f"{r['spurious_per_hour']:>10.1f}" for r in sweep_rows]
    if budget:
        b = budget
        lines += ["", f"compute: {b['instructions_per_inference']:.4g} instructions / inference "
                  f"x {b['inferences_per_second']:g} inferences / s = "
                  f"{b['instructions_per_audio_second']:.4g} instructions per second of audio; "
                  f"{b['core_load']:.2%} of one {b['clock_mhz']:g} MHz Cortex-A53 core at IPC "
                  f"{b['ipc']:g} (network only)"]
        if b.get("measured"):
            m = b["measured"]
            lines.append(f"  (instructions per invoke: measured, firmware_sim.cost counted "
                         f"{m['model']} hop by hop in the aarch64 firmware"
                         + (f", {m['hops']} hops" if m.get("hops") else "")
                         + f"; matched by {m['matched']})")
        if b.get("estimate"):
            lines.append("  (instructions per invoke: estimate from firmware_sim.cost's "
                         "windowed parts, not measured as a streaming model: " + ", ".join(
                             f"{k} {v:,.0f}" for k, v in b["estimate"]["parts"].items()) + ")")
    return "\n".join(lines)


def pick_excerpt(truth, detections, outcomes, seconds, length, start=None):
    """Excerpt start: given, or the ``length`` s window with the most errors (misses, false
    accepts, wrong words), or the beginning."""
    if seconds <= length:
        return 0.0
    if start is not None:
        return float(min(max(start, 0.0), seconds - length))
    bad = [k.onset for k, hit in truth if not hit] + \
        [d.time for d, o in zip(detections, outcomes) if o != "hit"]
    if not bad:
        return 0.0
    bad = np.sort(bad)
    best = max(bad, key=lambda b: np.sum((bad >= b - 2) & (bad < b - 2 + length)))
    return float(min(max(best - 2.0, 0.0), seconds - length))


def plot_stream(path, audio, times_ms, trace: det.DetectorTrace, truth, metrics, threshold,
                title, excerpt_s=30.0, excerpt_start=None, row_s=150.0):
    """PNG: an excerpt (waveform; smoothed posteriors, keywords and detections) and, for long
    streams, a summary of the whole stream (one row per ``row_s`` seconds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = len(audio) / SAMPLE_RATE
    labels = trace.labels
    avg = trace.averaged()
    t = np.asarray(times_ms) / 1000.0
    dets = trace.detections
    outcomes = metrics["outcomes"] if metrics else ["?"] * len(dets)
    hits = metrics["hit_mask"] if metrics else [False] * len(truth)
    kw_words = [l for l in labels if l not in (det.SILENCE_LABEL, det.UNKNOWN_LABEL)]
    cmap = plt.get_cmap("tab10")
    color = {w: cmap(i % 10) for i, w in enumerate(kw_words)}
    color.update({det.SILENCE_LABEL: "0.6", det.UNKNOWN_LABEL: "0.35"})
    ocolor = {"hit": "tab:green", "wrong_word": "tab:orange", "duplicate": "tab:purple",
              "false_accept": "tab:red", "?": "k"}

    start = pick_excerpt(list(zip(truth, hits)), dets, outcomes, seconds, excerpt_s,
                         excerpt_start)
    stop = min(start + excerpt_s, seconds)
    n_rows = int(math.ceil(seconds / row_s)) if seconds > excerpt_s else 0
    fig = plt.figure(figsize=(16, 6.5 + 1.1 * n_rows))
    heights = [1.2, 2.2] + ([0.45] + [0.8] * n_rows if n_rows else [])
    gs = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.35)
    ax_w = fig.add_subplot(gs[0])
    ax_p = fig.add_subplot(gs[1], sharex=ax_w)

    a, b = int(start * SAMPLE_RATE), int(stop * SAMPLE_RATE)
    x = np.asarray(audio[a:b])
    step = max(1, len(x) // 8000)
    ax_w.plot(start + np.arange(0, len(x), step) / SAMPLE_RATE, x[::step], lw=0.4, color="0.2")
    ax_w.set_ylabel("audio")
    ax_w.set_title(title, fontsize=10)
    sel = (t >= start) & (t <= stop)
    for i, l in enumerate(labels):
        ax_p.plot(t[sel], avg[sel, i], lw=1.3 if l in kw_words else 0.9,
                  color=color.get(l, "k"), label=l.strip("_"), ls="-" if l in kw_words else ":")
    ax_p.axhline(threshold, color="k", lw=0.7, ls="--")
    ax_p.set_ylim(-0.02, 1.12)
    ax_p.set_ylabel("smoothed posterior")
    ax_p.set_xlabel("time (s); posteriors and detections at the end of their window",
                    fontsize=9)
    for k, hit in zip(truth, hits):
        if k.offset < start or k.onset > stop:
            continue
        for ax in (ax_w, ax_p):
            ax.axvspan(k.onset, k.offset, color=color.get(k.word, "0.5"), alpha=0.18, lw=0)
        ax_w.text(k.onset, 0.97, " " + k.word + ("" if hit or not metrics else " (miss)"),
                  transform=ax_w.get_xaxis_transform(), fontsize=8, va="top",
                  color="tab:red" if metrics and not hit else "k")
    for d, o in zip(dets, outcomes):
        if start <= d.time <= stop:
            ax_p.plot(d.time, 1.06, marker="v", ms=8, color=ocolor.get(o, "k"))
            ax_p.text(d.time, 1.08, f" {d.word} {d.score:.2f}", fontsize=7, va="bottom",
                      color=ocolor.get(o, "k"))
    ax_p.set_xlim(start, stop)
    ax_p.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)

    if n_rows:
        ax_t = fig.add_subplot(gs[2])
        ax_t.axis("off")
        summary = (f"whole stream ({seconds / 60:.1f} min): shaded = the excerpt above; "
                   "keywords: green hit, red miss (below the line); detections: green hit, "
                   "red false accept, orange wrong word, purple duplicate (above)")
        ax_t.text(0, 0.15, summary, fontsize=9, va="center")
        for r in range(n_rows):
            lo, hi = r * row_s, min((r + 1) * row_s, seconds)
            ax = fig.add_subplot(gs[3 + r])
            top = np.full(len(t), np.nan)
            if kw_words:
                kw_avg = avg[:, [labels.index(w) for w in kw_words]]
                ok = ~np.isnan(kw_avg).any(axis=1)
                top[ok] = kw_avg[ok].max(axis=1)
            s2 = (t >= lo) & (t <= hi)
            ax.plot(t[s2], top[s2], lw=0.6, color="0.4")
            ax.axhline(threshold, color="k", lw=0.5, ls="--")
            for k, hit in zip(truth, hits):
                if lo <= k.onset < hi:
                    c = "tab:green" if hit else "tab:red"
                    ax.plot(k.onset, -0.25, marker="^", ms=6, color=c)
                    ax.text(k.onset, -0.75, k.word, fontsize=6, ha="center", color=c)
            for d, o in zip(dets, outcomes):
                if lo <= d.time < hi:
                    ax.plot(d.time, 1.25, marker="v", ms=6, color=ocolor.get(o, "k"))
                    if o != "hit":
                        ax.text(d.time, 1.45, d.word, fontsize=6, ha="center",
                                color=ocolor.get(o, "k"))
            if start < hi and stop > lo:
                ax.axvspan(max(start, lo), min(stop, hi), color="tab:blue", alpha=0.08, lw=0)
            ax.set_xlim(lo, lo + row_s if n_rows > 1 else seconds)
            ax.set_ylim(-1.0, 1.8)
            ax.set_yticks([0, 1])
            ax.tick_params(labelsize=7)
            ax.set_ylabel("top kw", fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


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
    try:
        rows = data["keywords"] if isinstance(data, dict) else data
        return [det.Keyword(r["word"], float(r.get("start", r["onset"])), float(r["onset"]),
                            float(r.get("offset", r["onset"] + 1.0)), r.get("source", ""))
                for r in rows]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StreamError(f"--truth {path}: not a ground-truth file ({type(e).__name__}: {e}); "
                          "expected a .truth.json written by firmware_sim.stream") from e


# -- the tool -----------------------------------------------------------------------------------
def define_flags():
    from pipeline import data_flags
    data_flags.define_flags()
    flags.DEFINE_string("model", None, "Run directory, .weights.h5 or .tflite (with sidecar).")
    flags.DEFINE_string("depth", None, "Thinnable depth of a checkpoint (default: deepest).")
    flags.DEFINE_string("wav", None, "Stream from this WAV file instead of generating one.")
    flags.DEFINE_string("truth", None, "Ground truth of --wav (a .truth.json written by this "
                        "tool); default: <wav without .wav>.truth.json if it exists.")
    flags.DEFINE_enum("split", "testing", ["testing", "validation", "training"],
                      "Split the keyword clips of a generated stream come from.")
    flags.DEFINE_float("minutes", 10.0, "Length of a generated stream.")
    flags.DEFINE_float("keywords_per_minute", 10.0, "Keywords in a generated stream.")
    flags.DEFINE_float("snr_db", 20.0, "Keyword speech power over background noise power "
                       "(dB); 'inf' for no added noise.")
    flags.DEFINE_bool("equal_loudness", True, "Scale every keyword clip to the same speech "
                      "power (each at --snr_db); --noequal_loudness keeps the recordings' own "
                      "loudness (the noise is then --snr_db under their mean).")
    flags.DEFINE_float("min_gap_s", 2.0, "Minimum background between two keyword clips.")
    flags.DEFINE_float("stride_ms", DEFAULT_STRIDE_MS,
                       "One 1 s window (one inference) every stride.")
    flags.DEFINE_float("average_window_ms", 750.0, "Detector: averaging window (TFLite Micro: "
                       "1000; see the module doc for the choice).")
    flags.DEFINE_float("threshold", 0.5, "Detector: threshold on the averaged top probability "
                       "(TFLite Micro: 200/255 = 0.78).")
    flags.DEFINE_float("suppression_ms", 1500.0, "Detector: no repeat of the same word within.")
    flags.DEFINE_integer("minimum_count", 3, "Detector: results needed in the window.")
    flags.DEFINE_list("sweep", ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"],
                      "Also score these thresholds (detector re-run on the same posteriors).")
    flags.DEFINE_enum("outputs", "auto", ["auto", "logits", "probs"],
                      "Model outputs (auto: softmax unless they already are probabilities).")
    flags.DEFINE_float("tolerance_before", 0.25, "A hit may come this long before the onset.")
    flags.DEFINE_float("tolerance_after", 1.5, "... and this long after the onset.")
    flags.DEFINE_integer("batch_windows", 64, "Windows per model call (a chunk).")
    flags.DEFINE_string("out_dir", DEFAULT_OUT_DIR, "Folder of the outputs when --plot is not "
                        "given: <model>_<split>_s<seed>.png and the stream, ground truth, "
                        "posteriors and details next to it (stream.* with --plot none).")
    flags.DEFINE_string("plot", None, "PNG path; the generated stream, its ground truth, the "
                        "posteriors and the details are written next to it. Default: "
                        "OUT_DIR/<model>_<split>_s<seed>.png. 'none': no plot (the other "
                        "files go to OUT_DIR/stream.*).")
    flags.DEFINE_float("plot_seconds", 30.0, "Length of the zoomed excerpt in the plot.")
    flags.DEFINE_float("plot_start", None, "Start of the excerpt (default: where most errors are).")
    flags.DEFINE_float("instructions_per_inference", None, "Instructions of one inference on the "
                       "device (firmware_sim.cost).")
    flags.DEFINE_string("cost_json", None, "Output of firmware_sim.cost (its last JSON line "
                        "holds the count).")
    flags.DEFINE_string("cost_key", None, "Key of the count in --cost_json (dotted if nested).")
    flags.DEFINE_float("clock_mhz", 1200.0, "Core clock for the load estimate (Cortex-A53).")
    flags.DEFINE_float("ipc", 1.0, "Assumed instructions per cycle.")
    flags.DEFINE_bool("progress", True, "Progress bar over chunks.")
    flags.DEFINE_enum("loop", "auto", ["auto", "streaming", "windowed"],
                      "auto: hop by hop for a streaming model (a .tflite from pipeline.export "
                      "--streaming, a dfsmn_stream / bifsmnv2_stream run), windows otherwise; "
                      "streaming: require it; windowed: a 1 s window every --stride_ms.")


def default_plot_path(model, split, seed, wav=None, out_dir=DEFAULT_OUT_DIR):
    name = os.path.basename(model.rstrip("/"))
    name = os.path.splitext(name)[0] if name.endswith(".tflite") else name
    if wav:
        return os.path.join(out_dir, f"{name}_{os.path.splitext(os.path.basename(wav))[0]}"
                            ".png")
    return os.path.join(out_dir, f"{name}_{split}_s{seed}.png")


@dataclasses.dataclass
class StreamSettings:
    """Everything of a run but the model and the input (the flags, as a value)."""
    stride_ms: float = DEFAULT_STRIDE_MS
    detector: det.DetectorConfig = det.DetectorConfig(average_window_ms=750.0, threshold=0.5)
    sweep: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    outputs: str = "auto"
    tolerance_before: float = 0.25
    tolerance_after: float = 1.5
    batch_windows: int = 64
    # generated streams
    split: str = "testing"
    minutes: float = 10.0
    keywords_per_minute: float = 10.0
    snr_db: float = 20.0
    equal_loudness: bool = True
    min_gap_s: float = 2.0
    seed: int = 0
    # outputs
    plot: Optional[str] = None        # None: default path in out_dir; "none": no plot
    out_dir: str = DEFAULT_OUT_DIR
    plot_seconds: float = 30.0
    plot_start: Optional[float] = None
    progress: bool = True
    # compute budget
    instructions_per_inference: Optional[float] = None
    clock_mhz: float = 1200.0
    ipc: float = 1.0
    cost_json: Optional[str] = None   # streaming models: measured per hop from it, or estimate
    # auto / streaming / windowed (module docstring)
    loop: str = "auto"


def _is_binary_arch(arch) -> bool:
    from models import registry
    builder = registry._REGISTRY.get(arch)  # noqa: SLF001
    return bool(getattr(builder, "keywords", {}).get("binary", False))


def load_for_loop(model: str, depth: Optional[int], loop: str = "auto"):
    """The predictor the loop runs: ``pipeline.predictors.load_predictor``, except for a run
    directory of a streaming architecture, whose hop-by-hop runner it builds (unless
    ``loop == 'windowed'``). A predictor with a ``streaming`` attribute runs hop by hop."""
    from models.streaming import is_streaming_arch
    from pipeline import checkpoints, predictors, streaming_runner
    if loop not in ("auto", "streaming", "windowed"):
        raise StreamError(f"--loop {loop!r}: expected auto, streaming or windowed")
    if not model.endswith(".tflite") and loop != "windowed":
        spec = checkpoints.read_model_json(model)
        if is_streaming_arch(spec["model"]):
            keras_model, spec = checkpoints.load_model(model, depth=depth, spec=spec)
            d = depth or max(spec.get("training_depths") or [8])
            return streaming_runner.keras_predictor(keras_model, spec["labels"], spec["model"],
                                                    d)
    pred = predictors.load_predictor(model, depth=depth)
    if loop == "streaming" and getattr(pred, "streaming", None) is None:
        raise StreamError(f"--loop streaming: {model} is not a streaming model; expected a "
                          ".tflite from pipeline.export --streaming or a run directory of "
                          "dfsmn_stream / bifsmnv2_stream")
    return pred


def run(model: str, settings: StreamSettings = StreamSettings(), wav: Optional[str] = None,
        truth_path: Optional[str] = None, data_cfg=None, depth: Optional[int] = None,
        predictor=None) -> dict:
    """The tool without its flags: returns the summary (the JSON line) plus ``metrics``,
    ``detections``, ``truth``, ``paths``. ``predictor`` replaces loading ``model`` (tests)."""
    from pipeline import audio as audio_lib
    from pipeline import predictors

    st = settings
    if predictor is None:
        if not model or not os.path.exists(model):
            raise StreamError(f"--model {model} does not exist: expected a run directory of "
                              "pipeline.train or a .tflite written by pipeline.export")
        pred = load_for_loop(model, depth, st.loop)
    else:
        pred = predictor
    if wav is None and data_cfg is None:
        raise StreamError("give --wav FILE or --data_dir DIR (to generate a stream)")
    if wav is not None and not os.path.exists(wav):
        raise StreamError(f"--wav {wav} does not exist")
    plot = st.plot or default_plot_path(model or "model", st.split, st.seed, wav, st.out_dir)
    out_base = os.path.splitext(plot)[0] if plot != "none" else \
        os.path.join(st.out_dir, "stream")
    os.makedirs(os.path.dirname(out_base) or ".", exist_ok=True)
    paths = {"details": out_base + ".json"}

    if wav is not None:
        audio = audio_lib.load_wav(wav, None)
        tp = truth_path or os.path.splitext(wav)[0] + ".truth.json"
        truth = read_truth(tp) if (truth_path or os.path.exists(tp)) else None
        source = wav
    else:
        rng = np.random.default_rng(st.seed)
        count = int(round(st.keywords_per_minute * st.minutes))
        clips, noise, _ = corpus_clips(data_cfg, list(pred.labels), st.split, count, rng)
        if not noise and math.isfinite(st.snr_db):
            logging.warning("%s has no _background_noise_ recordings: no noise added",
                            data_cfg.data_dir)
        audio, truth = make_stream(clips, noise, st.minutes * 60.0, rng,
                                   st.keywords_per_minute, st.snr_db, st.min_gap_s,
                                   equal_loudness=st.equal_loudness)
        source = paths["stream"] = out_base + ".wav"
        paths["truth"] = out_base + ".truth.json"
        write_wav(source, audio)
        with open(paths["truth"], "w") as f:
            json.dump({"data_dir": data_cfg.data_dir, "split": st.split, "seed": st.seed,
                       "snr_db": st.snr_db, "equal_loudness": st.equal_loudness,
                       "keywords_per_minute": st.keywords_per_minute,
                       "min_gap_s": st.min_gap_s, "seconds": len(audio) / SAMPLE_RATE,
                       "keywords": [dataclasses.asdict(k) for k in truth]}, f, indent=1)
        print(f"stream: {source} ({len(audio) / SAMPLE_RATE:.0f} s, {len(truth)} keywords), "
              f"ground truth: {paths['truth']}")

    config = st.detector
    detector = det.RecognizeCommands(pred.labels, config)
    runner = getattr(pred, "streaming", None) if st.loop != "windowed" else None
    n_instr, estimate, measured = st.instructions_per_inference, None, None
    if n_instr is None and st.cost_json:   # read before the loop: a bad file fails at once
        if runner is not None:   # measured hop by hop if the cost tool did, else the estimate
            measured = streaming_measured_instructions(st.cost_json, model,
                                                       getattr(pred, "arch", None),
                                                       getattr(pred, "depth", None))
            if measured is None:
                estimate = streaming_hop_instructions(st.cost_json, int(pred.depth),
                                                      _is_binary_arch(pred.arch))
            n_instr = (measured or estimate)["total"]
        else:   # a windowed file counted by the cost tool by name, else its one count
            counted = _cost_object(st.cost_json).get("model_insns") or {}
            name = os.path.splitext(os.path.basename(str(model).rstrip("/")))[0]
            n_instr = (float(counted[name]) if isinstance(counted.get(name), (int, float))
                       else read_cost_json(st.cost_json))
    if runner is not None:   # one invoke per hop, state carried (issue 16)
        res = run_streaming_loop(runner, audio, detector, st.outputs, st.progress)
        stride_ms = runner.geometry.hop_ms
    else:
        res = run_loop(pred, audio, detector, st.stride_ms, st.batch_windows, st.outputs,
                       st.progress)
        stride_ms = st.stride_ms
    seconds = len(audio) / SAMPLE_RATE
    dets = res.trace.detections
    metrics = det.score_detections(truth, dets, seconds, st.tolerance_before,
                                   st.tolerance_after) if truth is not None else None
    sweep_rows = None
    if truth is not None and st.sweep:
        sweep_rows = sweep(pred.labels, res.times_ms, res.probs, config, st.sweep, truth,
                           seconds, st.tolerance_before, st.tolerance_after)
    budget = compute_budget(n_instr, stride_ms, st.clock_mhz, st.ipc) \
        if n_instr is not None else None
    if budget and estimate:
        budget["estimate"] = estimate
        budget["source"] = "estimate"
    if budget and measured:
        budget["measured"] = measured
        budget["source"] = "measured"
    info = {"model": model, "runtime": pred.runtime, "audio_seconds": seconds,
            "loop": res.loop, "stride_ms": stride_ms, "windows": len(res.times_ms),
            "invokes": res.invokes, "invokes_per_audio_second": res.invokes / seconds,
            "wall_seconds": res.wall_seconds,
            "realtime_factor": seconds / max(res.wall_seconds, 1e-9),
            "average_window_ms": config.average_window_ms, "threshold": config.threshold,
            "suppression_ms": config.suppression_ms, "minimum_count": config.minimum_count,
            "n_detections": len(dets)}
    print()
    print(format_table(metrics, budget, info, sweep_rows))
    print()
    outcomes = metrics["outcomes"] if metrics else [""] * len(dets)
    print("detections (time s, word, averaged score" + (", outcome)" if metrics else ")"))
    for d, o in list(zip(dets, outcomes))[:40]:
        print(f"  {d.time:8.2f}  {d.word:<10} {d.score:.3f}  {o}")
    if len(dets) > 40:
        print(f"  ... {len(dets) - 40} more in {paths['details']}")

    paths["posteriors"] = out_base + ".posteriors.npz"   # for re-tuning the detector offline
    np.savez_compressed(paths["posteriors"], times_ms=res.times_ms, probs=res.probs.astype(
        np.float32), labels=np.array(pred.labels))
    with open(paths["details"], "w") as f:
        json.dump({"source": source, **info,
                   "metrics": {k: v for k, v in (metrics or {}).items()
                               if k not in ("hit_mask", "outcomes")},
                   "sweep": sweep_rows, "budget": budget,
                   "detections": [dict(dataclasses.asdict(d), outcome=o)
                                  for d, o in zip(dets, outcomes)]}, f, indent=1)
    if plot != "none":
        name = os.path.basename((model or pred.name).rstrip("/"))
        title = f"{name} on {os.path.basename(source)}"
        if metrics:
            title += (f": hit rate {metrics['hit_rate']:.1%} ({metrics['hits']}/"
                      f"{metrics['keywords']}), {metrics['false_accepts']} false accepts "
                      f"({metrics['false_accepts_per_hour']:.1f}/h), threshold "
                      f"{config.threshold:g}")
        plot_stream(plot, audio, res.times_ms, res.trace, truth or [], metrics,
                    config.threshold, title, st.plot_seconds, st.plot_start)
        paths["plot"] = plot
        print(f"plot: {plot}")
    print(f"details: {paths['details']}")

    summary = {"hit_rate": None, "false_accepts_per_hour": None, "hits": None, "misses": None,
               "false_accepts": None, "keywords": None}
    if metrics:
        summary.update({k: metrics[k] for k in (
            "hit_rate", "false_accepts_per_hour", "hits", "misses", "false_accepts", "keywords",
            "wrong_word", "duplicates", "spurious_per_hour", "median_latency_s")})
    summary.update({"audio_seconds": seconds, "detections": len(dets),
                    "threshold": config.threshold, "stride_ms": stride_ms,
                    "loop": res.loop, "invokes": res.invokes,
                    "invokes_per_audio_second": res.invokes / seconds,
                    "model": model, "source": source})
    if budget:
        summary.update({k: budget[k] for k in ("instructions_per_inference",
                                               "instructions_per_audio_second", "core_load")})
        summary["instructions_source"] = budget.get("source", "given")
    return {"summary": summary, "metrics": metrics, "detections": dets, "truth": truth,
            "paths": paths, "loop": res, "budget": budget, "sweep": sweep_rows}


def main(argv):
    del argv
    from pipeline import data_flags, output_paths

    if not FLAGS.model:
        raise app.UsageError("--model is required (run directory, .weights.h5 or .tflite)")
    if not FLAGS.wav and not FLAGS.data_dir:
        raise app.UsageError("give --wav FILE or --data_dir DIR (to generate a stream)")
    if FLAGS.depth and not FLAGS.depth.isdigit():
        raise app.UsageError(f"--depth {FLAGS.depth!r}: expected a number of layers (8/4/2/1)")
    plot = FLAGS.plot or default_plot_path(FLAGS.model, FLAGS.split, FLAGS.seed, FLAGS.wav,
                                           FLAGS.out_dir)
    if plot == "none":
        output_paths.check_dir(FLAGS.out_dir, "--out_dir")
    else:
        output_paths.check_file(plot, "--plot" if FLAGS.plot else "--plot (default)")
    output_paths.check_dir(FLAGS.cache_dir, "--cache_dir")
    try:
        sweep = [float(s) for s in FLAGS.sweep or []]
    except ValueError:
        raise app.UsageError(f"--sweep {','.join(FLAGS.sweep)}: expected thresholds, e.g. "
                             "0.3,0.5,0.7") from None
    n_instr = FLAGS.instructions_per_inference
    if n_instr is None and FLAGS.cost_json and FLAGS.cost_key:
        n_instr = read_cost_json(FLAGS.cost_json, FLAGS.cost_key)
    elif n_instr is None and FLAGS.cost_json:   # checked now; read once the model is known
        _cost_object(FLAGS.cost_json)
    settings = StreamSettings(
        stride_ms=FLAGS.stride_ms,
        detector=det.DetectorConfig(FLAGS.average_window_ms, FLAGS.threshold,
                                    FLAGS.suppression_ms, FLAGS.minimum_count),
        sweep=sweep, outputs=FLAGS.outputs,
        tolerance_before=FLAGS.tolerance_before, tolerance_after=FLAGS.tolerance_after,
        batch_windows=FLAGS.batch_windows, split=FLAGS.split, minutes=FLAGS.minutes,
        keywords_per_minute=FLAGS.keywords_per_minute, snr_db=FLAGS.snr_db,
        equal_loudness=FLAGS.equal_loudness,
        min_gap_s=FLAGS.min_gap_s, seed=FLAGS.seed, plot=FLAGS.plot, out_dir=FLAGS.out_dir,
        plot_seconds=FLAGS.plot_seconds, plot_start=FLAGS.plot_start,
        progress=FLAGS.progress, instructions_per_inference=n_instr,
        clock_mhz=FLAGS.clock_mhz, ipc=FLAGS.ipc,
        cost_json=None if n_instr is not None else FLAGS.cost_json, loop=FLAGS.loop)
    data_cfg = data_flags.config_from_flags() if not FLAGS.wav else None
    out = run(FLAGS.model, settings, wav=FLAGS.wav, truth_path=FLAGS.truth,
              data_cfg=data_cfg, depth=int(FLAGS.depth) if FLAGS.depth else None)
    print(json.dumps(out["summary"]))
    return dict(out["summary"], paths=out["paths"], metrics={  # --json_out
        k: v for k, v in (out["metrics"] or {}).items() if k not in ("hit_mask", "outcomes")},
        sweep=out["sweep"], budget=out["budget"])


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags, errors=(StreamError,))
