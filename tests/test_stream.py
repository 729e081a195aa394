"""Streaming loop: the detector against hand-computed sequences, the scoring, the stream
generator, the loop's causality, and end-to-end runs on tone streams with known keyword times
(a stub predictor that hears tones from each window's spectrum, and a tiny trained DFSMN)."""
import dataclasses
import json
import os

import numpy as np
import pytest

import models  # noqa: F401  (Keras 2 before TensorFlow)
from conftest import WORD_FREQS, tone
from firmware_sim import detector as det
from firmware_sim import stream, stream_audio, stream_budget
from pipeline import cli
from pipeline.input_pipeline import DataConfig

LABELS = ["_silence_", "yes", "no"]
S, Y, N = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def fired(seq, stride=250, labels=LABELS, **cfg):
    """Run the detector over a list of score vectors every ``stride`` ms from t=0."""
    d = det.RecognizeCommands(labels, det.DetectorConfig(**cfg))
    trace = d.run([i * stride for i in range(len(seq))], seq)
    return [(round(x.time * 1000), x.word, round(x.score, 4)) for x in trace.detections], trace


# -- detector -------------------------------------------------------------------------------------
def test_smoothing_threshold_and_suppression():
    # window 1000 ms at a 250 ms stride: up to 5 results (t-1000 is kept, older dropped)
    seq = [S, S, S] + [Y] * 12
    got, trace = fired(seq, threshold=0.6, suppression_ms=1500, minimum_count=3)
    avg = trace.averaged()
    assert np.isnan(avg[:2]).all()                             # < minimum_count results
    np.testing.assert_allclose(avg[2], [1, 0, 0])              # t=500: silence wins, not reported
    np.testing.assert_allclose(avg[3], [0.75, 0.25, 0])        # t=750
    np.testing.assert_allclose(avg[4], [0.6, 0.4, 0])          # t=1000: 5 results (0 kept)
    np.testing.assert_allclose(avg[5], [0.4, 0.6, 0])          # t=1250: 0.6 is not > 0.6
    np.testing.assert_allclose(avg[6], [0.2, 0.8, 0])          # t=1500: fires
    # then yes stays on top: suppressed while t - 1500 <= 1500, fires again at 3250
    assert got == [(1500, "yes", 0.8), (3250, "yes", 1.0)]


def test_a_different_word_fires_at_once():
    seq = [S, S, S, Y, Y, Y, Y, N, N, N, N, N]
    got, _ = fired(seq, threshold=0.6, suppression_ms=1500, minimum_count=3)
    # yes at 1500 (avg .8); no: t=2000 [y,y,y,n,n] .4, 2250 [y,y,n,n,n] .6 (not >), 2500 .8
    assert got == [(1500, "yes", 0.8), (2500, "no", 0.8)]


def test_minimum_count_and_filling_window():
    # stride 500, window 1000: at most 3 results (t-1000, t-500, t)
    assert fired([Y] * 5, stride=500, threshold=0.5, minimum_count=3)[0] == [(1000, "yes", 1.0)]
    assert fired([Y] * 8, stride=500, threshold=0.5, minimum_count=4)[0] == []
    # minimum_count 1: still no decision until the results span window / 4 = 250 ms
    got, trace = fired([Y] * 5, stride=100, threshold=0.5, minimum_count=1)
    assert np.isnan(trace.averaged()[:3]).all() and got == [(300, "yes", 1.0)]


def test_silence_is_never_reported_and_lifts_suppression():
    cfg = dict(average_window_ms=300, threshold=0.6, suppression_ms=1500, minimum_count=2)
    M = [0.5, 0.5, 0.0]                                         # silence never above threshold
    with_silence = [Y, Y, Y, S, S, S, Y, Y, Y]
    without = [Y, Y, Y, M, M, M, Y, Y, Y]
    got, trace = fired(with_silence, stride=100, **cfg)
    # yes at 100; silence commands at 500 and 600 (not reported); yes again at 800 although
    # only 700 ms passed: after a silence command nothing is suppressed (TFLite Micro)
    assert got == [(100, "yes", 1.0), (800, "yes", 0.75)]
    assert fired(without, stride=100, **cfg)[0] == [(100, "yes", 1.0)]
    assert all(d.word != "_silence_" for d in trace.detections)
    # only silence in the stream: nothing reported
    assert fired([S] * 20)[0] == []


def test_unknown_ignored_and_ties_take_the_first_class():
    labels = ["_silence_", "_unknown_", "yes"]
    U = [0.0, 1.0, 0.0]
    got, _ = fired([U] * 10, labels=labels, threshold=0.5)
    assert got == []
    d = det.RecognizeCommands(labels, det.DetectorConfig(minimum_count=1, threshold=0.1))
    d.process(0, [0.2, 0.4, 0.4])
    r = d.process(500, [0.2, 0.4, 0.4])
    assert r.label == "_unknown_" and not r.is_detection
    with pytest.raises(ValueError, match="increasing time"):
        d.process(100, [1, 0, 0])
    with pytest.raises(ValueError, match="expected 3 scores"):
        d.process(600, [1, 0])


def test_probabilities_from_logits():
    z = np.array([[2.0, 0.0, -1.0]])
    p = det.to_probabilities(z)
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(), rtol=1e-12)
    probs = np.array([[0.2, 0.7, 0.1]])
    np.testing.assert_array_equal(det.to_probabilities(probs), probs)   # already probabilities
    assert det.output_kind([[1.0, -1e-17, 0.0]]) == "probs"             # rounding
    assert det.output_kind([[0.5, 0.6, 0.0]]) == "logits"


# -- scoring --------------------------------------------------------------------------------------
def test_scoring_counts():
    kw = [det.Keyword("yes", 9.7, 10.0, 10.5), det.Keyword("no", 19.7, 20.0, 20.6),
          det.Keyword("up", 29.7, 30.0, 30.4), det.Keyword("no", 39.7, 40.0, 40.5)]
    D = det.Detection
    dets = [D(10.8, "yes", .9), D(11.0, "yes", .8),            # hit, duplicate
            D(20.1, "yes", .7), D(21.4, "no", .9),              # wrong word, then hit (<= +1.5)
            D(29.7, "up", .9), D(31.6, "up", .9),               # outside both sides: 2 FAs
            D(39.75, "no", .9),                                 # exactly onset - 0.25: a hit
            D(50.0, "go", .9)]                                  # far from any keyword: FA
    r = det.score_detections(kw, dets, audio_seconds=1800.0)
    assert (r["keywords"], r["hits"], r["misses"]) == (4, 3, 1)
    assert (r["wrong_word"], r["duplicates"], r["false_accepts"]) == (1, 1, 3)
    assert r["hit_rate"] == 0.75 and r["false_accepts_per_hour"] == 6.0
    assert r["spurious_per_hour"] == 10.0
    assert r["hit_mask"] == [True, True, False, True]
    assert r["outcomes"] == ["hit", "duplicate", "wrong_word", "hit", "false_accept",
                             "false_accept", "hit", "false_accept"]
    assert r["per_word"]["no"] == {"hits": 2, "keywords": 2}
    assert r["median_latency_s"] == pytest.approx(0.8)
    empty = det.score_detections(kw, [], 3600.0)
    assert empty["hits"] == 0 and empty["misses"] == 4 and empty["false_accepts_per_hour"] == 0


# -- stream generation ----------------------------------------------------------------------------
def clean_tone(freq, start_s=0.3, length_s=0.5, amp=0.5):
    x = np.zeros(16000)
    n, s = int(length_s * 16000), int(start_s * 16000)
    t = np.arange(n) / 16000
    x[s:s + n] = amp * np.hanning(n) * np.sin(2 * np.pi * freq * t)
    return x.astype(np.float32)


def band_rms(x, freq, width=40.0):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return np.sqrt(spec[(f > freq - width) & (f < freq + width)].sum() / len(x) ** 2)


def test_stream_puts_keywords_at_the_recorded_times():
    rng = np.random.default_rng(3)
    words, amps = ["yes", "no", "up", "down"], [0.5, 0.02, 0.2, 0.5]   # 28 dB apart
    clips = [(w, clean_tone(WORD_FREQS[w], amp=a), f"{w}.wav") for w, a in zip(words, amps)]
    noise = [0.1 * rng.standard_normal(16000 * 5),
             np.sin(2 * np.pi * 50 * np.arange(40000) / 16000)]
    audio, truth = stream_audio.make_stream(clips, noise, 90.0, rng, keywords_per_minute=12,
                                      snr_db=20.0, min_gap_s=2.0)
    assert len(audio) == 90 * 16000 and len(truth) == 18
    starts = np.array([k.start for k in truth])
    assert starts[0] >= 1.0 and starts[-1] <= 89.0 and np.all(np.diff(starts) >= 3.0 - 1e-6)
    p_kw = []
    for i, k in enumerate(truth):
        assert k.word == words[i % 4]                            # clips used in order
        # speech bounds: the tone runs from 0.3 to 0.8 s in its clip (Hann edges are quiet)
        assert k.onset - k.start == pytest.approx(0.3, abs=0.06)
        assert k.offset - k.start == pytest.approx(0.8, abs=0.06)
        seg = audio[int(k.onset * 16000):int(k.offset * 16000)]
        before = audio[int((k.start - 1.0) * 16000):int(k.start * 16000)]
        # the keyword's own tone is there, and not just before it
        assert band_rms(seg, WORD_FREQS[k.word]) > 10 * band_rms(before, WORD_FREQS[k.word])
        p_kw.append(np.mean(seg.astype(np.float64) ** 2))
    # equal loudness: every keyword at the same speech power, 20 dB over the noise (the noise
    # between keywords, within 1.5 dB)
    assert 10 * np.log10(max(p_kw) / min(p_kw)) < 0.5
    gaps = np.ones(len(audio), bool)
    for k in truth:
        gaps[int(k.start * 16000):int((k.start + 1.0) * 16000)] = False
    snr = 10 * np.log10(np.mean(p_kw) / np.mean(audio[gaps].astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=1.5)
    # natural loudness: the clips keep their level differences
    audio, truth = stream_audio.make_stream(clips, noise, 90.0, np.random.default_rng(3), 12,
                                      snr_db=float("inf"), equal_loudness=False)
    p = [np.mean(audio[int(k.onset * 16000):int(k.offset * 16000)].astype(np.float64) ** 2)
         for k in truth[:4]]
    assert 10 * np.log10(p[0] / p[1]) == pytest.approx(20 * np.log10(0.5 / 0.02), abs=0.5)
    with pytest.raises(stream.StreamError, match="do not fit"):
        stream_audio.make_stream(clips, noise, 20.0, rng, keywords_per_minute=60)


def test_corpus_clips_come_from_the_split(tiny_corpus):
    rng = np.random.default_rng(0)
    labels = ["_silence_", "yes", "no", "up", "down"]
    clips, noise, _ = stream_audio.corpus_clips(DataConfig(data_dir=tiny_corpus), labels, "testing",
                                          12, rng)
    testing = set(open(os.path.join(tiny_corpus, "testing_list.txt")).read().split())
    assert len(clips) == 12 and len(noise) == 2
    assert all(src in testing and w in labels[1:] and src.startswith(w + "/")
               for w, _, src in clips)
    assert all(len(a) == 16000 for _, a, _ in clips)


# -- the loop -------------------------------------------------------------------------------------
class Recorder:
    """Audio-input stub that records what it is given and returns fixed scores."""
    labels, input_kind, runtime, name = LABELS, "audio", "stub", "recorder"

    def __init__(self):
        self.seen = []

    def predict(self, batch):
        self.seen.extend(np.asarray(batch))
        return np.tile([[0.0, 5.0, 0.0]], (len(batch), 1))


def test_loop_windows_are_causal_and_batching_changes_nothing():
    audio = np.random.default_rng(0).standard_normal(16000 * 4 + 1234).astype(np.float32)
    results = []
    for batch in (1, 5, 64):
        rec = Recorder()
        d = det.RecognizeCommands(LABELS, det.DetectorConfig(threshold=0.5))
        res = stream.run_loop(rec, audio, d, stride_ms=250, batch_windows=batch, progress=False)
        ends = np.arange(16000, len(audio) + 1, 4000)
        np.testing.assert_array_equal(res.times_ms, ends / 16.0)
        assert len(rec.seen) == len(ends)
        for e, w in zip(ends, rec.seen):                     # each window ends at its time
            np.testing.assert_array_equal(w, audio[e - 16000:e])
        results.append((res.probs, [(x.time, x.word) for x in res.trace.detections]))
    for probs, dets in results[1:]:
        np.testing.assert_array_equal(probs, results[0][0])
        assert dets == results[0][1] == [(1.5, "yes"), (3.25, "yes")]   # 3.25: after suppression
    with pytest.raises(stream.StreamError, match="shorter than one"):
        stream.run_loop(Recorder(), audio[:8000], det.RecognizeCommands(LABELS), progress=False)


def test_compute_budget_and_cost_json(tmp_path):
    b = stream_budget.compute_budget(3e6, stride_ms=250, clock_mhz=1200, ipc=1.0)
    assert b["inferences_per_second"] == 4 and b["instructions_per_audio_second"] == 1.2e7
    assert b["core_load"] == pytest.approx(0.01)
    assert stream_budget.compute_budget(3e6, 250, ipc=2.0)["core_load"] == pytest.approx(0.005)
    p = tmp_path / "cost.txt"
    p.write_text("qemu: counting...\ntotal 123\n" + json.dumps(
        {"model": "x.tflite", "instructions_per_inference": 2.5e6, "runs": 3}) + "\n")
    assert stream_budget.read_cost_json(str(p)) == 2.5e6
    p.write_text(json.dumps({"counts": {"instructions": 7}, "wall": 1.0}))
    assert stream_budget.read_cost_json(str(p)) == 7
    p.write_text(json.dumps({"insns_d8": 9, "insns_d4": 5}))
    with pytest.raises(stream.StreamError, match="--cost_key"):
        stream_budget.read_cost_json(str(p))
    assert stream_budget.read_cost_json(str(p), "insns_d4") == 5


# -- end to end on tone streams -------------------------------------------------------------------
KW_LABELS = ["_silence_", "yes", "no", "up", "down"]


class ToneEar:
    """Stub predictor (audio input): the score of a word is the share of its tone's energy
    that the window holds (from the window's spectrum, so it only knows the window's audio);
    silence is the rest. A full tone of the fixtures scores ~1."""
    labels, input_kind, runtime, name = KW_LABELS, "audio", "stub", "tone-ear"

    def __init__(self):
        ref = clean_tone(WORD_FREQS["yes"], 0.2)
        self.full = self._band_energy(ref[None], WORD_FREQS["yes"])[0]

    @staticmethod
    def _band_energy(batch, freq, width=25.0):
        spec = np.abs(np.fft.rfft(batch, axis=1)) ** 2
        f = np.fft.rfftfreq(batch.shape[1], 1 / 16000)
        return spec[:, (f > freq - width) & (f < freq + width)].sum(1)

    def predict(self, batch):
        batch = np.asarray(batch, np.float64)
        words = np.stack([np.clip(self._band_energy(batch, WORD_FREQS[w]) / self.full, 0, 1)
                          for w in KW_LABELS[1:]], 1)
        words = words / np.maximum(words.sum(1, keepdims=True), 1.0)
        return np.concatenate([1 - words.sum(1, keepdims=True), words], 1)


@pytest.fixture(scope="module")
def tone_settings(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream")
    return out, stream.StreamSettings(minutes=2.0, keywords_per_minute=10, snr_db=20.0,
                                      seed=1, plot="none", progress=False)


def test_stub_predictor_finds_every_tone_at_its_time(tiny_corpus, tone_settings, capsys):
    out_dir, st = tone_settings
    # the stub's averaged scores peak at 0.6-0.8 (its evidence lasts ~0.5 s of a 1 s average)
    st = dataclasses.replace(st, plot=str(out_dir / "stub.png"),
                             detector=det.DetectorConfig(threshold=0.5))
    res = stream.run(None, st, data_cfg=DataConfig(data_dir=tiny_corpus), predictor=ToneEar())
    s, m = res["summary"], res["metrics"]
    assert s["keywords"] == 20 and s["audio_seconds"] == 120.0
    assert s["hit_rate"] == 1.0 and s["false_accepts"] == 0 and m["wrong_word"] == 0
    assert m["duplicates"] == 0
    # causal: a detection needs most of the tone inside the window that fired
    for d in res["detections"]:
        k = min(res["truth"], key=lambda k: abs(k.onset - d.time))
        assert k.offset <= d.time <= k.onset + 1.5, (d, k)
    # the written stream and its ground truth reproduce the run
    truth = stream_audio.read_truth(res["paths"]["truth"])
    assert [(k.word, k.onset) for k in truth] == [(k.word, k.onset) for k in res["truth"]]
    assert os.path.getsize(res["paths"]["plot"]) > 20000
    post = np.load(res["paths"]["posteriors"])
    assert post["probs"].shape == (477, 5) and list(post["labels"]) == KW_LABELS
    # the same stream from the WAV (16-bit) gives the same detections
    again = stream.run(None, dataclasses.replace(st, plot=str(out_dir / "again.png")),
                       wav=res["paths"]["stream"], predictor=ToneEar())
    assert [(d.word, d.time) for d in again["detections"]] == \
        [(d.word, d.time) for d in res["detections"]]
    assert again["summary"]["hit_rate"] == 1.0


def train_tiny_tone_model(run_dir, corpus, seed=0, n=500, epochs=4):
    """A 2-layer DFSMN taught the fixture tones in a few seconds, written as a run directory
    that load_predictor reads. Background as the real pipeline does it: crops of the corpus'
    own _background_noise_ recordings (white noise, hum) at random levels, alone (silence) or
    under a tone cut at a random place (as a stream's windows cut them)."""
    import tensorflow as tf
    from pipeline import checkpoints
    from pipeline.audio import load_wav
    from pipeline.features import log_mel

    noise_dir = os.path.join(corpus, "_background_noise_")
    recs = [load_wav(os.path.join(noise_dir, f), None) for f in sorted(os.listdir(noise_dir))]
    recs = [r / np.sqrt(np.mean(r ** 2)) for r in recs]          # unit RMS, as the stream
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        y = i % len(KW_LABELS)
        x = tone(WORD_FREQS[KW_LABELS[y]], rng) if y else np.zeros(16000)
        shift = int(rng.integers(-4000, 4000))
        x = np.roll(x, shift)
        if shift > 0:
            x[:shift] = 0.0
        elif shift < 0:
            x[shift:] = 0.0
        noise = np.zeros(16000)
        for r in recs:
            if rng.random() < 0.6:
                start = int(rng.integers(0, len(r) - 16000))
                noise += r[start:start + 16000] * rng.random()
        xs.append(x + np.exp(rng.uniform(np.log(0.002), np.log(0.08))) * noise)
        ys.append(y)
    feats = log_mel(np.array(xs, np.float32)).numpy()
    kwargs = dict(channels=16, hidden=16, num_layers=2, left=2, right=2, dilation=1, dropout=0.0)
    spec = checkpoints.write_model_json(run_dir, "dfsmn", kwargs, KW_LABELS, [2])
    tf.keras.utils.set_random_seed(seed)
    model = checkpoints.build_from_spec(spec)
    for layer in model.submodules:   # 64 steps: let the BN statistics catch up
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.8
    model.compile(tf.keras.optimizers.Adam(1e-2),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)   # no tracing: seconds for a tiny model
    tf.get_logger().setLevel("ERROR")   # "gradients do not exist" for other depths' BN
    model.fit(feats, np.array(ys), batch_size=32, epochs=epochs, verbose=0)
    model.save_weights(os.path.join(run_dir, "best.weights.h5"))
    return run_dir


def test_cli_with_a_tiny_trained_model(tiny_corpus, tmp_path, capsys):
    """The command line end to end: a real (tiny) model from a run directory, features, the
    detector, scoring, the plot, and one JSON line last."""
    from absl import flags
    run_dir = train_tiny_tone_model(str(tmp_path / "tiny"), tiny_corpus)
    if "stride_ms" not in flags.FLAGS:
        stream.define_flags()
    FLAGS = flags.FLAGS
    plot = str(tmp_path / "out" / "tiny.png")
    FLAGS.unparse_flags()
    FLAGS(["stream", "--model", run_dir, "--data_dir", tiny_corpus, "--minutes", "2",
           "--keywords_per_minute", "10", "--seed", "1", "--plot", plot, "--noprogress",
           "--instructions_per_inference", "2e6"])
    capsys.readouterr()
    stream.main([])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("hit_rate", "false_accepts_per_hour", "hits", "misses", "false_accepts",
                "keywords", "audio_seconds"):
        assert key in summary
    assert summary["keywords"] == 20 and summary["audio_seconds"] == 120.0
    assert summary["hit_rate"] >= 0.9 and summary["false_accepts"] <= 1, out
    assert summary["instructions_per_audio_second"] == 8e6
    assert "hit rate" in out and "false accepts / hour" in out
    assert os.path.getsize(plot) > 20000 and os.path.exists(plot[:-4] + ".truth.json")
    details = json.load(open(plot[:-4] + ".json"))
    assert len(details["detections"]) == summary["detections"]

    # clear errors for a missing model / data directory
    for argv, msg in ((["--model", str(tmp_path / "nope"), "--data_dir", tiny_corpus],
                       "does not exist"),
                      (["--model", run_dir, "--data_dir", str(tmp_path / "nodata")],
                       "nodata' does not exist")):
        FLAGS.unparse_flags()
        FLAGS(["stream", "--plot", "none", "--noprogress"] + argv)
        with pytest.raises(Exception) as e:   # what pipeline.cli prints in one line, exit 2
            stream.main([])
        assert cli.user_error_message(e.value, (stream.StreamError,)) is not None, e.value
        assert msg in str(e.value)
    FLAGS.unparse_flags()


# -- firmware_sim.stream_report: several streams, one table ------------------------------------
def _fake_stream(folder, model, seed, hits, fa, loop="streaming", seconds=3600.0, threshold=0.5,
                 hit_keywords=None, depth=None):
    """A details .json and .truth.json as firmware_sim.stream writes them: 100 keywords 10 s
    apart, a correct detection 0.5 s after the onset of each hit keyword (the first ``hits``,
    or those of ``hit_keywords``), ``fa`` false accepts half-way between keywords."""
    hit_keywords = list(range(hits)) if hit_keywords is None else sorted(hit_keywords)
    assert len(hit_keywords) == hits
    words = ["yes", "no", "up", "down"]
    truth = [{"word": words[i % 4], "start": 10.0 * i, "onset": 10.0 * i + 0.2,
              "offset": 10.0 * i + 0.7, "source": f"c{i}.wav"} for i in range(100)]
    dets = [{"time": 10.0 * i + 0.7, "word": words[i % 4], "score": 0.9} for i in hit_keywords]
    dets += [{"time": 10.0 * i + 5.0, "word": "go", "score": 0.8} for i in range(fa)]
    metrics = {"keywords": 100, "hits": hits, "misses": 100 - hits, "hit_rate": hits / 100,
               "wrong_word": 10 - seed, "false_accepts": fa,
               "false_accepts_per_hour": fa * 3600.0 / seconds, "median_latency_s": 0.6 + seed / 10}
    sweep = [{"threshold": th, "hits": hits - k, "misses": 100 - hits + k,
              "hit_rate": (hits - k) / 100, "false_accepts_per_hour": fa + k, "wrong_word": 5}
             for k, th in enumerate((0.4, 0.6))]
    stem = os.path.join(folder, f"{os.path.basename(model)}_testing_s{seed}")
    with open(stem + ".json", "w") as f:
        json.dump({"model": model, "loop": loop, "audio_seconds": seconds, "depth": depth,
                   "threshold": threshold, "metrics": metrics, "sweep": sweep,
                   "detections": sorted(dets, key=lambda d: d["time"])}, f)
    with open(stem + ".truth.json", "w") as f:
        json.dump({"seed": seed, "keywords": truth}, f)
    return stem + ".json"


def test_stream_report_means_over_seeds(tmp_path, capsys):
    from firmware_sim import stream_report
    for seed, (hits, fa) in enumerate([(90, 1), (88, 5), (89, 3)]):
        _fake_stream(str(tmp_path), "w.tflite", seed, hits, fa, loop="windowed")
    _fake_stream(str(tmp_path), "s.tflite", 4, 91, 8)
    rows = {r["model"]: r for r in stream_report.run([str(tmp_path)])[0]}
    w = rows["w.tflite"]
    assert w["seeds"] == [0, 1, 2] and w["streams"] == 3 and w["loop"] == "windowed"
    assert w["mean"]["hit_rate"] == pytest.approx(267 / 300)
    assert w["mean"]["false_accepts_per_hour"] == pytest.approx(3.0)
    assert w["false_accepts_per_hour"] == [1, 5, 3]
    assert [c["threshold"] for c in w["curve"]] == [0.4, 0.6]
    assert w["curve"][1]["false_accepts_per_hour"] == pytest.approx(4.0)
    assert w["curve"][1]["hit_rate"] == pytest.approx(264 / 300)
    assert rows["s.tflite"]["seeds"] == [4]
    text = stream_report.format_table(list(rows.values()))
    assert "1 / 5 / 3 (**3.0**)" in text and "| 0.6 | 88.00 % | 4.0 |" in text
    # the command line: the same table, --json_out
    out = tmp_path / "r.json"
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "firmware_sim.stream_report", "--streams",
                        str(tmp_path), "--json_out", str(out)], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "1 / 5 / 3 (**3.0**)" in p.stdout and len(json.load(open(out))["rows"]) == 2


def test_stream_report_pairs_models_keyword_by_keyword(tmp_path):
    """--baseline: discordant keywords and McNemar's exact p, false-accept counts and their
    exact test, checked against binomial sums by hand; unpaired streams are left out."""
    import math
    from firmware_sim import stream_report
    # baseline hits keywords 0..89 on both seeds; the other hits 5..96 (92): per stream the
    # baseline alone hits 0..4 (5), the other alone 90..96 (7)
    for seed in (0, 1):
        _fake_stream(str(tmp_path), "w.tflite", seed, 90, 3, loop="windowed")
        _fake_stream(str(tmp_path), "s.tflite", seed, 92, 1, hit_keywords=range(5, 97))
    _fake_stream(str(tmp_path), "s.tflite", 7, 92, 1)   # no baseline stream of seed 7
    rows, pairs = stream_report.run([str(tmp_path)], baseline="w.tflite")
    (c,) = pairs
    assert c["model"] == "s.tflite" and c["streams"] == 2 and c["streams_skipped"] == 1
    assert (c["base_only"], c["other_only"], c["keywords"]) == (10, 14, 200)
    assert c["hit_rate_difference"] == pytest.approx(4 / 200)

    def two_sided(k, n):   # exact binomial test at 1/2, by hand
        tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
        return min(1.0, 2 * tail)
    assert c["hits_p"] == pytest.approx(two_sided(14, 24))
    assert (c["false_accepts"], c["baseline_false_accepts"]) == (2, 6)
    assert c["false_accepts_p"] == pytest.approx(two_sided(2, 8))
    assert c["hours"] == pytest.approx(2.0)
    text = stream_report.format_comparisons(pairs)
    assert "+2.00 points" in text and "10 / 14" in text and "(+1 unpaired)" in text
    with pytest.raises(stream_report.ReportError, match="names 2 rows"):
        stream_report.run([str(tmp_path)], baseline=".tflite")
    with pytest.raises(stream_report.ReportError, match="names 0 rows"):
        stream_report.run([str(tmp_path)], baseline="w.tflite@streaming")


def test_stream_report_refuses_mixed_or_foreign_files(tmp_path):
    from firmware_sim import stream_report
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _fake_stream(str(a), "m.tflite", 0, 90, 1)
    _fake_stream(str(a), "m.tflite", 1, 90, 1, seconds=600.0)
    with pytest.raises(stream_report.ReportError, match="differ in lengths"):
        stream_report.run([str(a)])
    (b / "x.json").write_text("[1, 2]")
    with pytest.raises(stream_report.ReportError, match="not a firmware_sim.stream"):
        stream_report.run([str(b)])
    (b / "x.json").write_text("{broken")
    with pytest.raises(stream_report.ReportError, match="not readable as JSON"):
        stream_report.run([str(b)])
    with pytest.raises(stream_report.ReportError, match="no such file"):
        stream_report.run([str(tmp_path / "missing")])
    with pytest.raises(stream_report.ReportError, match="no firmware_sim.stream .json"):
        stream_report.run([str(tmp_path)])
    # one run directory streamed at two depths: two rows when the files say the depth, refused
    # (the same seed twice in one row) when they do not
    c, d = tmp_path / "c", tmp_path / "d"
    c.mkdir(), d.mkdir()
    for depth, folder in ((8, c), (2, d)):
        _fake_stream(str(folder), "runs/student", 0, 90 - depth, 1, loop="windowed", depth=depth)
    rows, _ = stream_report.run([str(c), str(d)])
    assert sorted(r["model"] for r in rows) == ["runs/student (depth 2)", "runs/student (depth 8)"]
    for depth, folder in ((8, c), (2, d)):
        _fake_stream(str(folder), "runs/student", 0, 90 - depth, 1, loop="windowed")
    with pytest.raises(stream_report.ReportError, match="same seed"):
        stream_report.run([str(c), str(d)])
