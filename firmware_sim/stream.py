"""The always-on loop of the device, simulated on the host: audio in, commands out.

Reads: --model (run directory, .weights.h5 or .tflite), a --wav file or the clips and noise of
  --data_dir (a stream is generated), --cost_json (optional).
Writes: into --out_dir (default runs/stream; or next to --plot): the stream .wav, .truth.json,
  .posteriors.npz, the details .json and a PNG; the summary (--json_out).

    python -m firmware_sim.stream --model runs/real8/bifsmnv2 \\
        --data_dir ../shared/data/speech_commands_real8 --minutes 10 --seed 0
    python -m firmware_sim.stream --model export/bifsmnv2_d8.tflite --wav recording.wav \\
        [--truth recording.truth.json]

Input: a 16 kHz stream, a WAV file or one generated from a corpus's clips of one split
(``--split``) in its background noise, with ground truth (``firmware_sim.stream_audio``).

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

Compute budget (``firmware_sim.stream_budget``): ``--instructions_per_inference N`` or
``--cost_json FILE`` (firmware_sim.cost's output; for a streaming model its MEASURED count per
invoke when it counted that model hop by hop, else an estimate from the windowed parts) gives
instructions per second of audio and the load of one ``--clock_mhz`` core at ``--ipc``.

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
from typing import Optional, Sequence

import numpy as np
from absl import app, flags, logging

from firmware_sim import detector as det
from firmware_sim.stream_audio import (SAMPLE_RATE, StreamError, corpus_clips, make_stream,
                                       read_truth, write_wav)
from firmware_sim.stream_budget import (compute_budget, cost_object, read_cost_json,
                                        streaming_hop_instructions,
                                        streaming_measured_instructions)
from firmware_sim.stream_plot import plot_stream

#: the windowed loop's stride: one 1 s window (one inference) every 250 ms (--stride_ms)
DEFAULT_STRIDE_MS = 250.0

WINDOW = 16000                      # 1 s, the models' input
DEFAULT_OUT_DIR = os.path.join("runs", "stream")

FLAGS = flags.FLAGS


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
            counted = cost_object(st.cost_json).get("model_insns") or {}
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
    info = {"model": model, "depth": getattr(pred, "depth", None) or depth,
            "runtime": pred.runtime, "audio_seconds": seconds,
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
                   "tolerance_before": st.tolerance_before, "tolerance_after": st.tolerance_after,
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
        cost_object(FLAGS.cost_json)
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
