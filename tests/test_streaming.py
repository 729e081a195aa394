"""Always-on streaming (issue 16): the streaming form computes the non-streaming model's function.

Tiny models (C = H = 16) with randomised weights (tests/numpy_ref; thresholds away from 0, so
sign ties are rare and measured, tests/ties.py):

* Keras: ``StreamingDFSMN`` fed one hop (4 feature frames) at a time from zero state equals the
  non-streaming model (``build_dfsmn_stream``, any number of frames) on every prefix of the same
  frames, also after the classifier's ring buffer wrapped (12 hops > 8); teacher to float
  rounding, student on every tie-free sample. State reset: a second clip after the first equals
  the model on it only after ``reset``.
* The log-mel front end: the streaming frames equal ``pipeline.features.log_mel``'s.
* .tflite (``pipeline.export --streaming``): the float teacher and the binary student (LCE
  converter ops + builtins) fed hop by hop equal the Keras non-streaming model on the same clips
  (teacher: tolerance; student: top-1 identical and logits to 1e-4 on tie-free clips); the
  hop-by-hop .tflite equals the Keras streaming model on a 12-hop stream; reset; description.
* ``firmware_sim.stream`` runs the streaming .tflite hop by hop (one invoke per 128 ms).
* Training: a few optimiser steps on the streaming student reduce its loss (fast, eager); the
  whole path pipeline.train (teacher, then FID student) -> export -> stream is one slow test.
"""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

import numpy_ref as R
import ties

import models
from models.streaming import StreamingDFSMN, build_dfsmn_stream
from pipeline import checkpoints, export, predictors, streaming_runner
from pipeline.input_pipeline import DataConfig, InputPipeline, index_from_config

import tensorflow as tf  # noqa: E402  (after `models`: Keras 2)

TINY = dict(channels=16, hidden=16, num_layers=8, left=4, right=0, dilation=1, dropout=0.2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOPS = 12          # > 8: the ring buffer of the classifier wraps
VERIFY = 60        # validation clips for the exports (the tiny corpus has fewer: all of them)


def features(n, hops=HOPS, seed=0):
    """Random log-mel-like features [n, 4 * hops, 32] (dB scale, varied)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(-20, 6, (n, 1, 32)) + rng.normal(0, 4, (n, 4 * hops, 32))).astype(
        np.float32)


def model_any_length(name, depth, seed):
    tf.keras.utils.set_random_seed(seed)
    m = models.get_model(name, depth=depth, num_classes=5, input_shape=(None, 32), **TINY)
    R.randomize_weights(m, seed=seed)
    return m


@pytest.fixture(scope="module")
def teacher_model():
    return model_any_length("dfsmn_stream", 8, seed=3)


@pytest.fixture(scope="module")
def student_model():
    return model_any_length("bifsmnv2_stream", 2, seed=4)


def stream_keras(model, x, hop=4):
    """Every hop's logits [hops, B, classes] of StreamingDFSMN (eager) from zero state, hops of
    ``hop`` feature frames."""
    st = StreamingDFSMN(model, hop_frames=hop)
    states = st.initial_states(len(x))
    out = []
    for h in range(x.shape[1] // hop):
        logits, states = st.step(x[:, hop * h:hop * h + hop], states)
        out.append(logits.numpy())
    return np.stack(out), st


# -- Keras ---------------------------------------------------------------------------------------
def test_causal_settings_are_enforced():
    with pytest.raises(ValueError, match="right must be 0"):
        build_dfsmn_stream(right=2, left=2)
    assert "right must be 0" in models.registry.kwargs_problem("bifsmnv2_stream", {"right": 2})
    assert models.registry.kwargs_problem("bifsmnv2_stream", {"left": 4, "right": 0}) is None
    assert models.registry.kwargs_problem("bifsmnv2", {"right": 2}) is None
    with pytest.raises(ValueError, match="multiple of 4"):
        build_dfsmn_stream(input_shape=(30, 32))


def test_teacher_stream_equals_model_on_every_prefix(teacher_model):
    x = features(3)
    got, st = stream_keras(teacher_model, x)
    assert [n for n, _ in st.state_specs] == ["conv1", "conv2"] + [
        f"layer{j}" for j in range(8)] + ["ring"]
    for h in (0, 3, 7, 8, HOPS - 1):                  # from 4 frames to 48 (ring wrapped)
        ref = teacher_model(x[:, :4 * (h + 1)], training=False).numpy()
        scale = np.abs(ref).max()
        err = np.abs(got[h] - ref).max() / scale
        print(f"hop {h}: max |d| {err * scale:.2e} (scale {scale:.2f})")
        assert scale > 0.1 and err < 1e-5
    # the stream's logits move with the audio (not a constant), and an all-zero-state model
    # without the past frames would differ: the state carries information
    assert np.abs(got[HOPS - 1] - got[HOPS - 2]).max() > 1e-3
    short = teacher_model(x[:, -32:], training=False).numpy()   # the last 1 s alone
    assert np.abs(got[HOPS - 1] - short).max() > 1e-3


def test_teacher_stream_of_8_frame_hops(teacher_model):
    """8-frame hops (2 backbone frames per invoke): the ring state keeps the other 6 of the
    classifier's 8 frames, and every hop's logits are the model's on the frames so far."""
    x = features(2)
    got, st = stream_keras(teacher_model, x, hop=8)
    assert dict(st.state_specs)["ring"][:2] == (6, 1) and len(got) == HOPS // 2
    for h in range(len(got)):
        ref = teacher_model(x[:, :8 * (h + 1)], training=False).numpy()
        scale = np.abs(ref).max()
        assert scale > 0.1 and np.abs(got[h] - ref).max() / scale < 1e-5, h


def test_student_stream_equals_model_except_ties(student_model):
    x = features(16, seed=1)
    got, st = stream_keras(student_model, x)
    assert [n for n, _ in st.state_specs] == ["conv1", "conv2", "layer3", "layer7",
                                              "ring"]                # depth 2's layers
    for h in (7, HOPS - 1):
        ref, margin = ties.keras_with_margins(student_model, x[:, :4 * (h + 1)])
        _, clean = ties.assert_close_except_ties(got[h], ref, margin, tol=1e-4,
                                                 label=f"student hop {h}")
        assert np.all(got[h][clean].argmax(-1) == ref[clean].argmax(-1))


def test_state_reset(teacher_model):
    a, b = features(2, hops=8, seed=5), features(2, hops=8, seed=6)
    st = StreamingDFSMN(teacher_model)
    states = st.initial_states(2)
    assert all(float(tf.reduce_max(tf.abs(s))) == 0 for s in states)
    for h in range(8):
        _, states = st.step(a[:, 4 * h:4 * h + 4], states)
    carried = states
    for h in range(8):
        y_carried, carried = st.step(b[:, 4 * h:4 * h + 4], carried)
    fresh = st.initial_states(2)
    for h in range(8):
        y_reset, fresh = st.step(b[:, 4 * h:4 * h + 4], fresh)
    ref = teacher_model(b, training=False).numpy()
    np.testing.assert_allclose(y_reset.numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert np.abs(y_carried.numpy() - ref).max() > 1e-3   # clip a is still in the state


def test_streaming_student_trains(student_model):
    """Gradient steps through the causal front end (binary conv2 with the receptive-field
    scale), the memory blocks and the ring: the loss on a fixed batch goes down. (The module's
    student model, its weights restored afterwards; the whole pipeline.train path: slow test.)"""
    m = student_model
    saved = m.get_weights()
    tf.keras.utils.set_random_seed(7)            # dropout masks
    x = features(12, hops=8, seed=7) / 10.0
    y = np.arange(12) % 5
    for c in range(1, 5):
        x[y == c, :, 8 * (c - 1):8 * c] += 1.5
    opt = tf.keras.optimizers.Adam(1e-2)
    losses = []
    try:
        for _ in range(6):
            with tf.GradientTape() as tape:
                logits = m(x, training=True)
                loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True))
            grads = tape.gradient(loss, m.trainable_variables)
            g = {v.name.split(":")[0]: gr for v, gr in zip(m.trainable_variables, grads)}
            for name in ("conv2/conv/kernel", "conv2/dual_scale/threshold_t0",
                         "dfsmn/layer7/memory/dwconv/depthwise_kernel", "conv1/conv/kernel"):
                assert g[name] is not None and float(tf.reduce_max(tf.abs(g[name]))) > 0, name
            opt.apply_gradients(zip(grads, m.trainable_variables))
            losses.append(float(loss))
    finally:
        m.set_weights(saved)
    print("losses", [round(v, 4) for v in losses])
    assert losses[-1] < 0.8 * losses[0]


# -- features ------------------------------------------------------------------------------------
def test_streaming_log_mel_is_the_pipelines():
    from pipeline.features import log_mel
    g = streaming_runner.StreamGeometry.from_config()
    assert (g.hop_samples, g.hop_frames, g.audio_state, g.window_hops, g.hop_ms) == \
        (2048, 4, 1536, 8, 128.0)
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    ref = log_mel(clip[None]).numpy()[0]
    s0, hops = streaming_runner.clip_hops(clip, "audio", g)
    assert len(hops) == 8 and all(h.shape == (2048,) for h in hops)
    state, frames = tf.constant(s0[None]), []
    for h in hops:
        f, state = streaming_runner.log_mel_step(state, tf.constant(h[None]))
        frames.append(f.numpy()[0])
    np.testing.assert_allclose(np.concatenate(frames), ref, atol=1e-3)
    # a stream: frame k is the log-mel of the 2048 samples ending at 512 (k + 1)
    audio = (0.1 * rng.standard_normal(5 * 2048)).astype(np.float32)
    feats = streaming_runner.stream_features(audio, g, chunk_frames=7)
    assert feats.shape == (20, 32)
    padded = np.concatenate([np.zeros(1536, np.float32), audio])
    for k in (0, 3, 19):
        one = streaming_runner.log_mel_frames(padded[512 * k:512 * k + 2048]).numpy()[0]
        np.testing.assert_allclose(feats[k], one, atol=1e-3)


# -- .tflite -------------------------------------------------------------------------------------
def make_run_dir(path, model, name, depths, labels):
    """A run directory as pipeline.train writes it, with the weights of ``model`` (the
    module's Keras model: single-depth and training models own the same variables)."""
    checkpoints.write_model_json(path, name, TINY, labels, depths)
    model.save_weights(os.path.join(path, "best.weights.h5"))
    return path


@pytest.fixture(scope="module")
def exports(tiny_corpus, tmp_path_factory, teacher_model, student_model):
    """The module's teacher (depth 8) and student (depth 2) as run directories (5 classes),
    exported --streaming: float, lce and binary (lce + ``ops.DUAL_QUANTIZE``)."""
    base = tmp_path_factory.mktemp("stream_runs")
    cfg = DataConfig(data_dir=tiny_corpus, wanted_words="yes,no,up")
    labels = index_from_config(cfg).labels
    assert labels == ["_silence_", "_unknown_", "yes", "no", "up"]   # the models' 5 classes
    teacher = make_run_dir(str(base / "teacher"), teacher_model, "dfsmn_stream", [8], labels)
    student = make_run_dir(str(base / "student"), student_model, "bifsmnv2_stream", [8, 2],
                           labels)
    out = str(base / "out")
    reps = export.run(teacher, out, cfg, flavors=["float"], verify_clips=VERIFY,
                      test_accuracy=False, streaming=True)
    reps += export.run(student, out, cfg, depths=[2], flavors=["lce", "binary"],
                       verify_clips=VERIFY, test_accuracy=False, streaming=True)
    reps += export.run(student, out, cfg, depths=[2], flavors=["binary"], verify_clips=VERIFY,
                       test_accuracy=False, streaming=True, hop_frames=8)
    feats = export.clips(InputPipeline(index_from_config(cfg), cfg), "validation", VERIFY)[1]
    return {"out": out, "teacher": teacher, "student": student, "cfg": cfg, "feats": feats,
            "reports": {r["name"]: r for r in reps}}


def test_streaming_exports_are_verified_and_described(exports):
    reps = exports["reports"]
    assert set(reps) == {"dfsmn_stream_float_d8_streaming", "bifsmnv2_stream_lce_d2_streaming",
                         "bifsmnv2_stream_binary_d2_streaming",
                         "bifsmnv2_stream_binary_d2_streaming_hop8"}
    for name, r in reps.items():
        v = r["verification"]
        print(name, v["top1_agreement"], v["max_abs_logit_diff"], r["op_census"])
        hop = 8 if name.endswith("_hop8") else 4
        assert r["written"] and v["passed"] and r["streaming"]
        assert v["invokes"] == 32 // hop * v["clips"]     # 8 (4) hops per 1 s clip
        assert r["input_shape"] == [1, hop, 32] and r["output_shape"] == [1, 5]
        pred = predictors.load_predictor(os.path.join(exports["out"], name + ".tflite"))
        d = pred.description["streaming"]
        assert d["hop_samples"] == 512 * hop and d["states"][0]["name"] == "conv1"
        assert d["window_hops"] == 32 // hop
        runner = pred.streaming
        assert runner.input_shapes[1:] == [tuple(s["shape"]) for s in d["states"]]
        assert runner.output_shapes[1:] == runner.input_shapes[1:]
    census = reps["bifsmnv2_stream_lce_d2_streaming"]["op_census"]
    from lce_kernels import ops
    # conv2, linear and pw1 / pw2 of the 2 layers: two binary convs each (the bit planes)
    assert census[ops.BCONV2D] == 2 * (2 + 2 * 2)
    assert reps["bifsmnv2_stream_lce_d2_streaming"]["binary_convs_lowered"]
    assert ops.BDFSMN not in census and "DEPTHWISE_CONV_2D" in census
    # binary: every DFSMN layer one ops.BDFSMN in its streaming form (state in, new state
    # out), the front end's two dual-scale binarizations (conv2, linear) one op each, none of
    # the converter's ABS / MEAN, no float memory block, no PAD (the mel padding joins the
    # state's CONCATENATION)
    for name in ("bifsmnv2_stream_binary_d2_streaming", "bifsmnv2_stream_binary_d2_streaming_hop8"):
        fused = reps[name]["op_census"]
        assert fused[ops.BDFSMN] == 2 and fused[ops.DUAL_QUANTIZE] == 2
        assert fused[ops.BCONV2D] == 2 * 2
        for gone in ("ABS", "MEAN", "DEPTHWISE_CONV_2D", "PAD", "PRELU"):
            assert gone not in fused, (name, gone)
        assert reps[name]["binary_convs_lowered"]
        assert reps[name]["binary"][f"one_{ops.BDFSMN}_per_layer"]
        assert reps[name]["verification"]["checks"][f"one_{ops.BDFSMN}_per_layer"]
    # the streaming ops: 10 inputs (the state last, a graph input), 2 outputs (the new state
    # a graph output)
    from pipeline.tflite_metadata import read_model
    m = read_model(open(os.path.join(exports["out"],
                                     "bifsmnv2_stream_binary_d2_streaming.tflite"), "rb").read())
    sg = m.subgraphs[0]
    bd = [op for op in sg.operators if ops.custom_code(m.operatorCodes[op.opcodeIndex])
          == ops.BDFSMN]
    for op in bd:
        assert len(op.inputs) == ops.BDFSMN_STATE_INPUT + 1 and len(op.outputs) == 2
        assert int(op.inputs[ops.BDFSMN_STATE_INPUT]) in set(int(t) for t in sg.inputs)
        assert int(op.outputs[1]) in set(int(t) for t in sg.outputs)
    index = export.load_index(exports["out"])["exports"]
    assert all(e["streaming"] for e in index.values())


def test_damaged_streaming_description_is_refused(exports, tmp_path):
    """A streaming entry that is malformed, or that does not fit the model's tensors: one
    CheckpointError naming the file (the tools: one line, exit 2), never a traceback."""
    from pipeline import tflite_metadata
    src = os.path.join(exports["out"], "bifsmnv2_stream_lce_d2_streaming.tflite")
    data = open(src, "rb").read()
    desc = tflite_metadata.read(data)
    cases = {
        "no_states": dict(desc["streaming"], states=[]),
        "bad_hop": dict(desc["streaming"], hop_samples=2000),
        "wrong_shape": dict(desc["streaming"], states=[dict(s, shape=[1, 9, 9, 9])
                                                       for s in desc["streaming"]["states"]]),
        "missing_state": dict(desc["streaming"], states=desc["streaming"]["states"][:-1]),
        "not_an_object": "streaming",
    }
    for name, entry in cases.items():
        path = str(tmp_path / f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(tflite_metadata.write(data, dict(desc, streaming=entry)))
        with pytest.raises(checkpoints.CheckpointError, match=name + ".tflite") as e:
            predictors.load_predictor(path)
        print(name, "->", str(e.value)[:160])


def test_float_tflite_hop_by_hop_equals_keras(exports, teacher_model):
    model = teacher_model                        # the run directory's weights
    x = exports["feats"]
    pred = predictors.load_predictor(os.path.join(exports["out"],
                                                  "dfsmn_stream_float_d8_streaming.tflite"))
    got = pred.predict(x)                        # each clip: reset, 8 hops
    ref = model(x, training=False).numpy()
    err = np.abs(got - ref).max(axis=1) / np.maximum(1.0, np.abs(ref).max(axis=1))
    print(f"float: max relative error {err.max():.2e} over {len(x)} clips")
    assert err.max() < 1e-4 and np.all(got.argmax(-1) == ref.argmax(-1))
    # a 12-hop stream (ring wrapped), .tflite vs Keras StreamingDFSMN
    s = features(1, seed=9)[0]
    runner = pred.streaming
    runner.reset()
    tfl = np.stack([runner.step(s[4 * h:4 * h + 4]) for h in range(HOPS)])
    ker, _ = stream_keras(model, s[None])
    np.testing.assert_allclose(tfl, ker[:, 0], rtol=0, atol=1e-4 * np.abs(ker).max())


def test_binary_tflite_hop_by_hop_equals_keras_except_ties(exports, student_model):
    model = student_model                        # the run directory's weights
    x = exports["feats"]
    pred = predictors.load_predictor(os.path.join(exports["out"],
                                                  "bifsmnv2_stream_lce_d2_streaming.tflite"))
    assert pred.runtime == "lce"
    got = pred.predict(x)
    ref, margin = ties.keras_with_margins(model, x)
    _, clean = ties.assert_close_except_ties(got, ref, margin, tol=1e-4, label="lce stream")
    assert np.all(got[clean].argmax(-1) == ref[clean].argmax(-1))
    # reset: clip 1 after clip 0 without reset is not clip 1
    runner = pred.streaming
    runner.reset()
    for h in range(8):
        runner.step(x[0, 4 * h:4 * h + 4])
    for h in range(8):
        carried = runner.step(x[1, 4 * h:4 * h + 4])
    assert np.abs(carried - got[1]).max() > 1e-4
    np.testing.assert_allclose(pred.predict(x[1:2])[0], got[1], rtol=0, atol=1e-6)


def test_binary_stream_equals_lce_stream_except_ties(exports, student_model):
    """The fused streaming export (``ops.DUAL_QUANTIZE`` on the project's registerer) hop by
    hop against the lce export on LCE's interpreter: top-1 identical and logits to 1e-5 on
    every tie-free clip."""
    x = exports["feats"]
    lce = predictors.load_predictor(os.path.join(exports["out"],
                                                 "bifsmnv2_stream_lce_d2_streaming.tflite"))
    path = os.path.join(exports["out"], "bifsmnv2_stream_binary_d2_streaming.tflite")
    pred = predictors.load_predictor(path)
    assert pred.runtime == "tf+custom_ops"
    got, ref = pred.predict(x), lce.predict(x)
    _, margin = ties.keras_with_margins(student_model, x)
    _, clean = ties.assert_close_except_ties(got, ref, margin, tol=1e-5, label="binary stream")
    assert clean.sum() >= len(x) // 2 and np.array_equal(got[clean].argmax(-1),
                                                         ref[clean].argmax(-1))


def test_hop8_stream_equals_hop4_stream_except_ties(exports, student_model):
    """--hop_frames 8 (256 ms per invoke) computes the same function as the 128 ms hop: its
    logits after each hop are the 128 ms model's after every second hop (each clip from
    reset), to float rounding on every tie-free clip."""
    x = exports["feats"]
    p4, p8 = (predictors.load_predictor(os.path.join(exports["out"], n + ".tflite")) for n in (
        "bifsmnv2_stream_binary_d2_streaming", "bifsmnv2_stream_binary_d2_streaming_hop8"))
    assert p8.streaming.geometry.hop_frames == 8
    _, margin = ties.keras_with_margins(student_model, x)
    got, ref = [], []
    for clip in x[:6]:
        p4.streaming.reset()
        p8.streaming.reset()
        h4 = [p4.streaming.step(clip[4 * h:4 * h + 4]) for h in range(8)]
        h8 = [p8.streaming.step(clip[8 * h:8 * h + 8]) for h in range(4)]
        got.append(np.stack(h8))
        ref.append(np.stack(h4[1::2]))
    got, ref = np.stack(got), np.stack(ref)
    _, clean = ties.assert_close_except_ties(got[:, -1], ref[:, -1], margin[:6], tol=1e-5,
                                             label="hop 8 vs hop 4")
    assert clean.sum() >= 3
    # the hops before the last (prefixes of the clip): the same to rounding but where a
    # prefix has a sign tie of its own
    close = np.abs(got - ref).max(-1) <= 1e-4 * np.abs(ref).max()
    print(f"hop 8 vs hop 4: {close.sum()} of {close.size} (clip, hop) logits within 1e-4")
    assert close.mean() >= 0.8


def test_stream_tool_runs_the_streaming_tflite(exports, tmp_path):
    from firmware_sim import stream
    path = os.path.join(exports["out"], "bifsmnv2_stream_lce_d2_streaming.tflite")
    st = stream.StreamSettings(minutes=0.25, keywords_per_minute=8, plot="none",
                               out_dir=str(tmp_path), progress=False,
                               instructions_per_inference=1e5, sweep=())
    out = stream.run(path, st, data_cfg=exports["cfg"])
    s = out["summary"]
    hops = int(15 * 16000) // 2048
    assert s["loop"] == "streaming" and s["invokes"] == hops and s["stride_ms"] == 128.0
    assert s["instructions_per_audio_second"] == pytest.approx(1e5 * 1000 / 128)
    assert s["keywords"] == 2 and 0 <= s["hit_rate"] <= 1
    # from the written stream (16-bit WAV) and its truth: the posteriors are the runner's,
    # hop by hop, and the scoring the same code's
    from pipeline import audio as audio_lib
    wav = out["paths"]["stream"]
    again = stream.run(path, st, wav=wav)
    assert again["summary"]["keywords"] == 2
    runner = predictors.load_predictor(path).streaming
    times, logits = streaming_runner.run_stream(runner, audio_lib.load_wav(wav, None))
    # warm-up: the detector's first result is the first full window's (1.024 s), as the
    # windowed loop's first window ends at 1 s; every hop still runs
    warm = runner.geometry.window_hops - 1
    assert warm > 0 and again["summary"]["invokes"] == len(times)
    np.testing.assert_allclose(again["loop"].times_ms, times[warm:])
    assert again["loop"].times_ms[0] == runner.geometry.window_hops * runner.geometry.hop_ms
    np.testing.assert_allclose(again["loop"].probs, stream.det.softmax(logits[warm:]),
                               atol=1e-6)
    # the same file windowed (each 1 s window from reset, every 250 ms)
    w = stream.run(path, dataclasses.replace(st, loop="windowed"),
                   data_cfg=exports["cfg"])["summary"]
    assert w["loop"] == "windowed" and w["invokes"] == len(range(16000, 15 * 16000 + 1, 4000))


# -- the firmware (firmware_sim/firmware: TensorFlow Lite Micro), hop by hop ---------------------
FW_TOOLS = [t for t in ("make", "g++") if shutil.which(t) is None]
needs_fw = pytest.mark.skipif(bool(FW_TOOLS), reason="needs " + ", ".join(FW_TOOLS))
QEMU_TOOLS = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]


def _stream_hops(seed):
    """One HOPS-hop stream of features(1, seed): [HOPS, 4, 32]."""
    return features(1, seed=seed)[0].reshape(HOPS, 4, 32)


def _tflite_ref_stream(path, hops):
    """tf.lite.Interpreter (TFLite's reference kernels) hop by hop from zero state: logits
    [hops, classes] and the final states (the model's own feedback: output k + 1 -> input k + 1)."""
    it = tf.lite.Interpreter(model_path=path, experimental_op_resolver_type=(
        tf.lite.experimental.OpResolverType.BUILTIN_REF))
    it.allocate_tensors()
    ins, outs = it.get_input_details(), it.get_output_details()
    states = [np.zeros(d["shape"], np.float32) for d in ins[1:]]
    logits = []
    for h in hops:
        it.set_tensor(ins[0]["index"], h[None].astype(np.float32))
        for d, v in zip(ins[1:], states):
            it.set_tensor(d["index"], v)
        it.invoke()
        logits.append(it.get_tensor(outs[0]["index"])[0])
        states = [it.get_tensor(d["index"]).copy() for d in outs[1:]]
    return np.stack(logits), states


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(1e-12, np.abs(b).max()))


@needs_fw
def test_firmware_float_streaming_equals_tflite_hop_by_hop(exports):
    """The host firmware runs the float streaming export hop by hop (states fed back by the
    firmware): every hop's logits and the final states equal tf.lite.Interpreter's run of the
    same file hop by hop, to 1e-5 relative; clips from reset (--stream_reset) equal the
    TFLite predictor's."""
    from firmware_sim import firmware_runner as fw
    path = os.path.join(exports["out"], "dfsmn_stream_float_d8_streaming.tflite")
    hops = _stream_hops(9)
    got, states, rep = fw.run_stream(path, hops, target="host")
    assert rep["streaming"] and len(rep["states"]) == 11 and rep["items"] == HOPS
    assert rep["allocations_during_invoke"] == 0
    assert [k for k, _ in rep["ops"] if k not in ("RESHAPE", "CONCATENATION", "PAD", "CONV_2D",
            "STRIDED_SLICE", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "FULLY_CONNECTED")] == []
    ref, ref_states = _tflite_ref_stream(path, hops)
    print(f"float firmware vs TFLite hop by hop: logits {_rel(got, ref):.2e}, states "
          f"{max(_rel(a, b) for a, b in zip(states, ref_states)):.2e}")
    assert _rel(got, ref) < 1e-5 and np.array_equal(got.argmax(1), ref.argmax(1))
    for a, b in zip(states, ref_states):
        assert a.shape == b.shape and _rel(a, b) < 1e-5
    # clips, each hop by hop from zero state: the firmware's predictor vs TFLite's
    x = exports["feats"][:8]
    fpred = fw.predictor(path, target="host")
    np.testing.assert_allclose(fpred.predict(x), predictors.load_predictor(path).predict(x),
                               rtol=0, atol=1e-5 * np.abs(ref).max())
    assert fpred.reports[-1]["stream_reset"] == 8 and fpred.reports[-1]["items"] == 8 * len(x)


@needs_fw
def test_firmware_lce_streaming_equals_lce_interpreter_except_ties(exports, student_model):
    """The binary student's lce streaming export in the host firmware (the project's LCE ops)
    against the LCE interpreter, both hop by hop: each clip from reset, top-1 identical and
    logits to 1e-5 on every tie-free clip (tests/ties.py margins of the Keras student);
    a tie-free 12-hop stream: every hop's top-1 and the final states."""
    from firmware_sim import firmware_runner as fw
    path = os.path.join(exports["out"], "bifsmnv2_stream_lce_d2_streaming.tflite")
    pred = predictors.load_predictor(path)
    assert pred.runtime == "lce"
    x = exports["feats"]
    got = fw.predictor(path, target="host").predict(x)
    ref = pred.predict(x)
    _, margin = ties.keras_with_margins(student_model, x)
    _, clean = ties.assert_close_except_ties(got, ref, margin, tol=1e-5, label="lce firmware")
    assert np.array_equal(got[clean].argmax(-1), ref[clean].argmax(-1))
    for seed in range(9, 30):   # a stream without binarizer ties
        s = features(1, seed=seed)
        if ties.keras_with_margins(student_model, s)[1][0] >= ties.TIE_DELTA:
            break
    else:
        pytest.fail("no tie-free stream among 21 seeds")
    hops = s[0].reshape(HOPS, 4, 32)
    logits, states, rep = fw.run_stream(path, hops, target="host")
    runner = pred.streaming
    runner.reset()
    ref_hops = np.stack([runner.step(h) for h in hops])
    print(f"lce firmware vs LCE interpreter, stream seed {seed}: logits "
          f"{_rel(logits, ref_hops):.2e}, states "
          f"{max(_rel(a, b) for a, b in zip(states, runner.states)):.2e}")
    assert np.array_equal(logits.argmax(1), ref_hops.argmax(1)) and _rel(logits, ref_hops) < 1e-5
    for a, b in zip(states, runner.states):
        assert _rel(a, b) < 1e-5


@needs_fw
def test_firmware_binary_streaming_equals_tflite_except_ties(exports, student_model):
    """The fused streaming export hop by hop in the host firmware (TFLite Micro with the
    project's ops) against TensorFlow's interpreter with the project's registerer."""
    from firmware_sim import firmware_runner as fw
    path = os.path.join(exports["out"], "bifsmnv2_stream_binary_d2_streaming.tflite")
    x = exports["feats"]
    ref = predictors.load_predictor(path).predict(x)
    got = fw.predictor(path, target="host").predict(x)
    _, margin = ties.keras_with_margins(student_model, x)
    _, clean = ties.assert_close_except_ties(got, ref, margin, tol=1e-5,
                                             label="binary stream firmware")
    assert clean.sum() >= len(x) // 2
    assert np.array_equal(got[clean].argmax(-1), ref[clean].argmax(-1))


@needs_fw
@pytest.mark.parametrize("target", ["host", "asan"])
def test_firmware_refuses_unsupported_streaming_models(exports, tmp_path, target):
    """An op the firmware lacks: every missing op named (exit 1, JSON error), never a crash,
    also under ASan/UBSan; a state whose new value does not fit its input; a streaming
    model's flags on a windowed model."""
    import subprocess
    from firmware_sim import firmware_runner as fw
    from pipeline.tflite_metadata import read_model, write_model
    from tensorflow.lite.python import schema_py_generated as schema
    fw.build(target)
    src = os.path.join(exports["out"], "dfsmn_stream_float_d8_streaming.tflite")
    cases = {}
    m = read_model(open(src, "rb").read())
    for c in m.operatorCodes:   # STRIDED_SLICE -> GATHER, CONCATENATION -> LOG (not compiled)
        for old, new in (("STRIDED_SLICE", "GATHER"), ("CONCATENATION", "LOG")):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == getattr(schema.BuiltinOperator,
                                                                      old):
                c.builtinCode = c.deprecatedBuiltinCode = getattr(schema.BuiltinOperator, new)
    cases["unsupported ops"] = (write_model(m), ("ops ", "LOG", "GATHER",
                                                 "have no kernel in this firmware"))
    m = read_model(open(src, "rb").read())
    sg = m.subgraphs[0]   # new layer0 state <-> new ring: no longer the state inputs' shapes
    sg.outputs[3], sg.outputs[-1] = sg.outputs[-1], sg.outputs[3]
    cases["state shape"] = (write_model(m), ("state 2 is input 3", "expected the same type"))
    hops = str(tmp_path / "hops.bin")
    fw.tensor_file.write(hops, _stream_hops(1)[:, None])
    seen = {}
    for name, (data, expect) in cases.items():
        p = tmp_path / "m.tflite"
        p.write_bytes(data)
        r = subprocess.run([fw.BINARIES[target], "--model", str(p), "--inputs", hops,
                            "--outputs", str(tmp_path / "o.bin")], capture_output=True,
                           text=True, timeout=120)
        assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
        rep = json.loads(r.stdout.strip().splitlines()[-1])
        seen[name] = rep.get("error")
        assert r.returncode == 1 and not rep["ok"], (name, rep)
        assert all(e in rep["error"] for e in expect), (name, rep["error"])
    print(json.dumps(seen, indent=1))
    if target == "asan":   # the good exports hop by hop, clips from reset: no sanitizer report
        for name in ("dfsmn_stream_float_d8_streaming", "bifsmnv2_stream_lce_d2_streaming"):
            p = os.path.join(exports["out"], name + ".tflite")
            r = subprocess.run([fw.BINARIES["asan"], "--model", p, "--inputs", hops, "--outputs",
                                str(tmp_path / "o.bin"), "--stream_reset", "8", "--final_states",
                                str(tmp_path / "s.bin")], capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0 and "runtime error" not in r.stderr, r.stderr[-3000:]
            host = fw.run(p, _stream_hops(1)[:, None], target="host", stream_reset=8)[0]
            np.testing.assert_allclose(fw.tensor_file.read(str(tmp_path / "o.bin")), host,
                                       rtol=0, atol=1e-5 * np.abs(host).max())
    windowed = os.path.join(ROOT, "pretrained", "real8", "exports", "bifsmnv2_binary_d2.tflite")
    if target == "host" and os.path.exists(windowed):
        with pytest.raises(fw.FirmwareError, match="not a streaming model"):
            fw.run_stream(windowed, np.zeros((2, 32, 32), np.float32), target="host")
        x = str(tmp_path / "w.bin")
        fw.tensor_file.write(x, np.zeros((1, 1, 32, 32), np.float32))
        r = subprocess.run([fw.BINARIES["host"], "--model", windowed, "--inputs", x, "--outputs",
                            str(tmp_path / "o.bin"), "--stream_reset", "8"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "not a streaming model" in r.stdout


@needs_fw
@pytest.mark.skipif(bool(QEMU_TOOLS), reason="needs " + ", ".join(QEMU_TOOLS))
def test_streaming_cost_measured_on_aarch64(exports, tmp_path):
    """aarch64 under qemu: the firmware's hop-by-hop logits equal the host build's bit for bit
    (reference float kernels); firmware_sim.cost's streaming count (model_cost.count_streaming,
    XNNPACK float kernels): one region-1 entry per hop, per-hop regions, per-op regions that
    add up to the hop, no allocation in Invoke; firmware_sim.stream prefers the measured
    figure to its estimate."""
    from firmware_sim import firmware_runner as fw
    from firmware_sim import model_cost, stream, stream_budget
    paths = [os.path.join(exports["out"], n + ".tflite") for n in
             ("dfsmn_stream_float_d8_streaming", "bifsmnv2_stream_lce_d2_streaming")]
    fw.build("host")
    fw.build("aarch64")
    hops = _stream_hops(5)
    binary = os.path.join(exports["out"], "bifsmnv2_stream_binary_d2_streaming.tflite")
    for p in paths + [binary]:   # the binary one: the streaming ops.BDFSMN, NEON vs x86-64
        host = fw.run_stream(p, hops, target="host")
        arm = fw.run_stream(p, hops, target="aarch64", build_first=False)
        assert host[0].tobytes() == arm[0].tobytes(), p
        assert all(a.tobytes() == b.tobytes() for a, b in zip(host[1], arm[1])), p
        # XNNPACK's float kernels (other summation order): float rounding, top-1 identical
        xnn = fw.run_stream(p, hops, target="aarch64", float_kernels="xnnpack",
                            build_first=False)
        assert np.mean(xnn[0].argmax(1) == host[0].argmax(1)) >= 0.9, p
        assert ["AVERAGE_POOL_2D", "reference"] not in xnn[2]["ops"]
    res = [model_cost.count_streaming(p, str(tmp_path), hops=6) for p in paths]
    model_cost.report(res, "generic")
    for r in res:
        assert r["streaming"] and r["hops"] == 6 and len(r["hop_insns"]) == 6
        assert r["insns"] == pytest.approx(np.mean(r["hop_insns"]), rel=1e-9)
        assert r["ops_sum"] == pytest.approx(r["insns"], rel=0.01)
        assert all(o["insns"] for o in r["ops"]) and r["allocations_during_invoke"] == 0
        assert r["insns_per_second"] == pytest.approx(r["insns"] * 1000 / 128.0)
    # a graph of more ops than one run's 150 op regions: counted in runs of op_offset
    mp = pytest.MonkeyPatch()
    mp.setattr(model_cost, "OP_REGIONS", 50)
    try:
        chunked = model_cost.count_streaming(paths[1], str(tmp_path), hops=6)
    finally:
        mp.undo()
    assert len(chunked["ops"]) > 100 and all(o["insns"] for o in chunked["ops"])
    # (the offset profiler's check costs ~2 instructions per op inside the op's region)
    assert chunked["ops_sum"] == pytest.approx(res[1]["ops_sum"], rel=3e-3)
    assert chunked["insns"] == res[1]["insns"]
    summ = model_cost.summary(res, "generic")
    assert set(summ["streaming_hop_insns"]) == {"dfsmn_stream_float_d8_streaming",
                                                "bifsmnv2_stream_lce_d2_streaming"}
    assert summ["model_instruction_ratio"] == {}   # no windowed teacher among them
    # a streaming binary export (--flavor binary --streaming) is not the windowed artifact:
    # the whole-model ratio never takes it
    fake = [dict(res[0], streaming=None, name="t", flavor="float", depth=8),
            dict(res[1], flavor="binary")]
    assert model_cost.summary(fake, "generic")["model_instruction_ratio"] == {}
    # streaming_vs_windowed: the windowed loop's instructions per second of audio (the deepest
    # windowed binary artifact, one inference every stream.DEFAULT_STRIDE_MS) over each
    # streaming binary export's; None without both kinds
    assert summ["streaming_vs_windowed"] is None
    win = [dict(res[1], streaming=None, name=f"w{d}", flavor="binary", depth=d,
                insns=res[1]["insns"] * k) for d, k in ((4, 10), (8, 40))]
    sw = model_cost.summary(win + [dict(res[1], flavor="binary")], "generic")
    sw = sw["streaming_vs_windowed"]
    assert sw["windowed"] == "w8" and sw["windowed_stride_ms"] == stream.DEFAULT_STRIDE_MS
    assert sw["ratio"] == {res[1]["name"]: pytest.approx(
        40 * 1000 / stream.DEFAULT_STRIDE_MS * 128.0 / 1000, abs=1e-4)}
    cost_json = str(tmp_path / "cost.json")
    with open(cost_json, "w") as f:
        f.write("tables\n" + json.dumps(summ) + "\n")
    m = stream_budget.streaming_measured_instructions(cost_json, paths[1])
    assert m["total"] == res[1]["insns"] and m["matched"] == "the same file"
    m = stream_budget.streaming_measured_instructions(cost_json, "/runs/x", "bifsmnv2_stream", 2)
    assert m["total"] == res[1]["insns"] and "same arch" in m["matched"]
    assert stream_budget.streaming_measured_instructions(cost_json, "/runs/x", "bifsmnv2_stream",
                                                  8) is None
    table = stream.format_table(None, dict(stream_budget.compute_budget(m["total"], 128.0),
                                           measured=m, source="measured"),
                                {"model": "m", "runtime": "lce", "audio_seconds": 1.0,
                                 "loop": "streaming", "stride_ms": 128.0, "windows": 7,
                                 "wall_seconds": 1.0, "realtime_factor": 1.0,
                                 "average_window_ms": 750, "threshold": 0.5,
                                 "suppression_ms": 1500, "minimum_count": 3,
                                 "n_detections": 0})
    print(table)
    assert "measured, firmware_sim.cost counted" in table and "estimate" not in table


@pytest.mark.slow
def test_train_export_stream_end_to_end(tiny_corpus, tmp_path):
    """pipeline.train (streaming teacher, then the FID student from it) -> export --streaming
    --audio_input (lce) -> firmware_sim.stream on the run directory (Keras hop by hop) and on
    the .tflite: the same posteriors."""
    from firmware_sim import stream
    from pipeline.train import Trainer
    cfg = DataConfig(data_dir=tiny_corpus, wanted_words="yes,no,up,down")
    teacher, student = str(tmp_path / "teacher"), str(tmp_path / "student")
    args = dict(epochs=1, batch_size=16, lr=5e-3, steps_per_epoch=2, eval_batch_size=64)
    Trainer(cfg, "dfsmn_stream", dict(TINY), teacher, thin_n=1, **args).fit()
    m = Trainer(cfg, "bifsmnv2_stream", dict(TINY), student, thin_n=3, teacher_dir=teacher,
                optimizer="adam", **args).fit()
    assert m["depths"] == [8, 4, 2]
    out = str(tmp_path / "out")
    (r,) = export.run(student, out, cfg, depths=[2], flavors=["lce"], verify_clips=VERIFY,
                      audio_input=True, streaming=True)
    assert r["verification"]["passed"] and r["input_shape"] == [1, 2048]
    assert r["test_accuracy"]["n"] > 0
    st = stream.StreamSettings(minutes=0.25, keywords_per_minute=8, plot="none",
                               out_dir=str(tmp_path / "s"), progress=False, sweep=())
    keras_run = stream.run(student, st, data_cfg=cfg, depth=2)
    assert keras_run["summary"]["loop"] == "streaming"
    tfl_run = stream.run(os.path.join(out, r["file"]), st, data_cfg=cfg)
    a, b = tfl_run["loop"].probs, keras_run["loop"].probs
    warm = predictors.load_predictor(os.path.join(out, r["file"])).streaming.geometry \
        .window_hops - 1                          # hops before the first full window
    assert a.shape == b.shape and tfl_run["summary"]["invokes"] == len(a) + warm
    # PCM through the model's own FFT vs the pipeline's features: float rounding, which may
    # flip a sign tie at a few hops of a barely trained binary model
    close = np.abs(a - b).max(axis=1) < 1e-3
    print(f"pcm .tflite vs Keras streaming: {close.mean():.1%} of {len(a)} hops within 1e-3")
    assert close.mean() > 0.9 and np.mean(a.argmax(1) == b.argmax(1)) > 0.9


# -- streaming-aware training: history in front of the clips (--history_clips) ------------------
class _FixedDraw:
    """A SeedStream stand-in whose uniform draws are all ``value``."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=tf.float32):
        self.calls += 1
        return tf.fill(shape, tf.constant(self.value, dtype))


def test_prepend_history_puts_other_clips_in_front():
    from pipeline import augment as aug
    x = tf.constant(np.arange(4 * 8 * 3, dtype=np.float32).reshape(4, 8, 3))
    cfg = aug.AugmentConfig(history_clips=2, history_prob=0.5)
    on = aug.prepend_history(x, _FixedDraw(0.1), cfg).numpy()   # 0.1 < 0.5: history
    assert on.shape == (4, 24, 3)
    xn = x.numpy()
    for i in range(4):  # example i: examples i - 2, i - 1 of the batch, then itself
        np.testing.assert_array_equal(on[i, :8], xn[(i - 2) % 4])
        np.testing.assert_array_equal(on[i, 8:16], xn[(i - 1) % 4])
        np.testing.assert_array_equal(on[i, 16:], xn[i])
    off = aug.prepend_history(x, _FixedDraw(0.9), cfg).numpy()  # 0.9 >= 0.5: the bare clips
    np.testing.assert_array_equal(off, xn)
    none = _FixedDraw(0.0)
    assert aug.prepend_history(x, none, aug.AugmentConfig()) is x and none.calls == 0


class _Draws:
    """A SeedStream stand-in that answers its calls with ``values`` in order (filled)."""

    def __init__(self, *values):
        self.values, self.calls = list(values), 0

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=tf.float32):
        self.calls += 1
        v = self.values.pop(0)
        assert dtype != tf.int32 or 0 <= v < maxval, (v, maxval)
        return tf.fill(shape, tf.constant(v, dtype))


def test_history_tail_windows_move_only_silence_examples():
    """--history_tail_ms: a silence example's window ends k frames before its clip's end
    (the clip before it shows its last k frames at the front of the last second, zeros in front
    of everything); word examples and batches without history keep their windows."""
    from pipeline import augment as aug
    x = tf.constant(np.arange(1, 4 * 8 * 3 + 1, dtype=np.float32).reshape(4, 8, 3))
    source = tf.constant([0, 1, 0, 2])         # words at 0 and 2, silence at 1 and 3
    cfg = aug.AugmentConfig(history_clips=1, history_prob=0.5, history_tail_ms=96.0)  # 3 frames
    y = aug.prepend_history(x, _Draws(0.1, 2), cfg, source, frame_ms=32.0).numpy()
    h = aug.prepend_history(x, _Draws(0.1), aug.AugmentConfig(history_clips=1, history_prob=0.5),
                            source).numpy()   # the same history without tails
    assert y.shape == h.shape == (4, 16, 3)
    for i in (0, 2):
        np.testing.assert_array_equal(y[i], h[i])
    for i in (1, 3):
        np.testing.assert_array_equal(y[i, :2], 0.0)
        np.testing.assert_array_equal(y[i, 2:], h[i, :-2])
        # the last second (8 frames) starts with the last 2 frames of the clip before
        np.testing.assert_array_equal(y[i, 8:10], x.numpy()[(i - 1) % 4, -2:])
    # no history in this batch: nothing moves, no tail drawn
    d = _Draws(0.9)
    np.testing.assert_array_equal(aug.prepend_history(x, d, cfg, source).numpy(), x.numpy())
    # no source given (a caller without the index): history only
    np.testing.assert_array_equal(aug.prepend_history(x, _Draws(0.1), cfg).numpy(), h)


def test_history_training_and_fine_tuning(tiny_corpus, tmp_path):
    """--history_clips trains the streaming models on longer inputs (windowed archs refuse
    it); --init_from starts from another run's weights and refuses a different model."""
    from pipeline import cli
    from pipeline.train import Trainer
    base = DataConfig(data_dir=tiny_corpus, wanted_words="yes,no,up,down")
    hist = dataclasses.replace(base, augment=dataclasses.replace(base.augment, history_clips=1,
                                                                 history_prob=1.0,
                                                                 history_tail_ms=320.0))
    args = dict(epochs=1, batch_size=16, lr=5e-3, steps_per_epoch=2, eval_batch_size=64)
    with pytest.raises(cli.UserError, match="history is for the streaming models"):
        Trainer(hist, "dfsmn", dict(TINY, left=2, right=2), str(tmp_path / "w"), thin_n=1, **args)
    run = str(tmp_path / "run")
    first = Trainer(base, "dfsmn_stream", dict(TINY), run, thin_n=1, **args)
    first.fit()
    x, _ = next(iter(InputPipeline(first.index, hist).train(16)))
    assert x.shape[1] == 64  # one clip of history (32 frames) before each 1 s clip
    tuned = Trainer(hist, "dfsmn_stream", dict(TINY), str(tmp_path / "tuned"), thin_n=1,
                    init_from=run, **dict(args, lr=0.0))
    assert tuned.model.input_shape[1] is None
    for va, vb in zip(first.model.weights, tuned.model.weights):  # --init_from's weights
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.name)
    m = tuned.fit()
    assert np.isfinite(m["best_val_acc"]) and tuned.settings["history_clips"] == 1
    assert tuned.settings["history_tail_ms"] == 320.0       # recorded with the run's flags
    with pytest.raises(checkpoints.CheckpointError, match="expected the same architecture"):
        Trainer(base, "dfsmn_stream", dict(TINY, hidden=32), str(tmp_path / "x"), thin_n=1,
                init_from=run, **args)
