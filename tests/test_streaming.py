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
import os

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


def stream_keras(model, x):
    """Every hop's logits [hops, B, classes] of StreamingDFSMN (eager) from zero state."""
    st = StreamingDFSMN(model)
    states = st.initial_states(len(x))
    out = []
    for h in range(x.shape[1] // 4):
        logits, states = st.step(x[:, 4 * h:4 * h + 4], states)
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
    exported --streaming: float and lce."""
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
    reps += export.run(student, out, cfg, depths=[2], flavors=["lce"], verify_clips=VERIFY,
                       test_accuracy=False, streaming=True)
    feats = export.clips(InputPipeline(index_from_config(cfg), cfg), "validation", VERIFY)[1]
    return {"out": out, "teacher": teacher, "student": student, "cfg": cfg, "feats": feats,
            "reports": {r["name"]: r for r in reps}}


def test_streaming_exports_are_verified_and_described(exports):
    reps = exports["reports"]
    assert set(reps) == {"dfsmn_stream_float_d8_streaming", "bifsmnv2_stream_lce_d2_streaming"}
    for name, r in reps.items():
        v = r["verification"]
        print(name, v["top1_agreement"], v["max_abs_logit_diff"], r["op_census"])
        assert r["written"] and v["passed"] and r["streaming"]
        assert v["invokes"] == 8 * v["clips"]           # 8 hops per 1 s clip
        assert r["input_shape"] == [1, 4, 32] and r["output_shape"] == [1, 5]
        pred = predictors.load_predictor(os.path.join(exports["out"], name + ".tflite"))
        d = pred.description["streaming"]
        assert d["hop_samples"] == 2048 and d["states"][0]["name"] == "conv1"
        runner = pred.streaming
        assert runner.input_shapes[1:] == [tuple(s["shape"]) for s in d["states"]]
        assert runner.output_shapes[1:] == runner.input_shapes[1:]
    census = reps["bifsmnv2_stream_lce_d2_streaming"]["op_census"]
    from lce_kernels import ops
    # conv2, linear and pw1 / pw2 of the 2 layers: two binary convs each (the bit planes)
    assert census[ops.BCONV2D] == 2 * (2 + 2 * 2)
    assert reps["bifsmnv2_stream_lce_d2_streaming"]["binary_convs_lowered"]
    assert ops.BDFSMN not in census and "DEPTHWISE_CONV_2D" in census
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
    _, logits = streaming_runner.run_stream(runner, audio_lib.load_wav(wav, None))
    np.testing.assert_allclose(again["loop"].probs, stream.det.softmax(logits), atol=1e-6)
    # the same file windowed (each 1 s window from reset, every 250 ms)
    w = stream.run(path, dataclasses.replace(st, loop="windowed"),
                   data_cfg=exports["cfg"])["summary"]
    assert w["loop"] == "windowed" and w["invokes"] == len(range(16000, 15 * 16000 + 1, 4000))


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
    assert a.shape == b.shape and tfl_run["summary"]["invokes"] == len(a)
    # PCM through the model's own FFT vs the pipeline's features: float rounding, which may
    # flip a sign tie at a few hops of a barely trained binary model
    close = np.abs(a - b).max(axis=1) < 1e-3
    print(f"pcm .tflite vs Keras streaming: {close.mean():.1%} of {len(a)} hops within 1e-3")
    assert close.mean() > 0.9 and np.mean(a.argmax(1) == b.argmax(1)) > 0.9
