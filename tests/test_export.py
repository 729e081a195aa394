"""pipeline.export on tiny models: files, reports, op census, verification, refusal.

Checkpoints: run directories in pipeline.train's format (model.json + best.weights.h5) of a
tiny teacher and a tiny student (TINY sizes) with RANDOMISED weights (tests/numpy_ref:
random BN statistics, thresholds, PReLU slopes; an untrained student has exact-zero
pre-binarization values whose sign Keras and LCE break differently, a trained or randomised
one does not). Training them, even 2 epochs x 3 steps, costs ~90 s on a loaded 2-core
machine, so the run through pipeline.train is one slow test (``test_trained_tiny_models``).

The student is exported with the LCE converter at depths 4 and 2, the teacher as float and
int8 at depth 8; the refusal / --force tests use the float flavor (fast), the PCM-input LCE
export is slow.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import numpy_ref as R
import ties
from test_train import TINY, make_trainer, tiny_cfg

import models
from lce_kernels import ops
from pipeline import checkpoints, export, predictors
from pipeline.input_pipeline import InputPipeline, index_from_config

import tensorflow as tf  # noqa: E402  (after `models`: Keras 2)

lce = pytest.importorskip("larq_compute_engine")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERIFY = 60  # validation clips (the tiny corpus has fewer: all of them are used)


def make_run_dir(path, model_name, training_depths, labels, seed):
    """A run directory as pipeline.train writes it, with randomised weights.

    The Keras initialisers draw the kernels from TensorFlow's global generator, so it is
    seeded here: the same checkpoint whatever other tests ran before in the process."""
    kwargs = dict(TINY)
    tf.keras.utils.set_random_seed(seed)
    checkpoints.write_model_json(path, model_name, kwargs, labels, training_depths)
    model = models.get_model(model_name, training_depths=tuple(training_depths),
                             num_classes=len(labels), **kwargs)
    R.randomize_weights(model, seed=seed)
    model.save_weights(os.path.join(path, "best.weights.h5"))
    return path


def verification_features(tiny_corpus):
    """The features of the clips `export.run` verifies on (first VERIFY validation clips)."""
    cfg = tiny_cfg(tiny_corpus)
    return export.clips(InputPipeline(index_from_config(cfg), cfg), "validation", VERIFY)[1]


def assert_export_matches_keras(checkpoint, depth, tflite_path, inputs, label):
    """Per clip: the exported .tflite (through `predictors`, as evaluate / benchmark run it)
    equals the Keras checkpoint at ``depth`` to 1e-4 on every tie-free clip (`ties`), for each
    batch in ``inputs`` ({name: x}). Returns (predictor, {name: (Keras logits, .tflite logits,
    tie-free mask)})."""
    model, _ = export.load_keras(checkpoint, depth)
    pred = predictors.load_predictor(tflite_path)
    out = {}
    for name, x in inputs.items():
        ref, margin = ties.keras_with_margins(model, x)
        got = pred.predict(x)
        _, clean = ties.assert_close_except_ties(got, ref, margin, tol=1e-4,
                                                 label=f"{label} {name}")
        out[name] = ref, got, clean
    return pred, out


@pytest.fixture(scope="module")
def runs(tiny_corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("export_runs")
    labels = index_from_config(tiny_cfg(tiny_corpus)).labels
    teacher = make_run_dir(str(base / "teacher"), "dfsmn", [8], labels, seed=1)
    student = make_run_dir(str(base / "student"), "bifsmnv2", [8, 4, 2], labels, seed=2)
    return teacher, student


@pytest.fixture(scope="module")
def exported(runs, tiny_corpus, tmp_path_factory):
    teacher, student = runs
    out = str(tmp_path_factory.mktemp("exports"))
    cfg = tiny_cfg(tiny_corpus)
    # student first and without --teacher: its storage saving is filled in by the index once
    # the float export exists (the in-memory reference from --teacher: slow test below)
    reps = export.run(student, out, cfg, depths=[2, 1], flavors=["lce"], verify_clips=VERIFY)
    # (test-split evaluation: checked on the lce exports; skipped here to save time)
    reps += export.run(teacher, out, cfg, flavors=["float"], verify_clips=VERIFY,
                       test_accuracy=False)
    # int8 at the flavor's default gate (0.95). The teacher's kernels come from a seeded
    # generator (make_run_dir): before they did, its weights changed with the tests run
    # earlier in the process, and so did the int8 agreement (0.80-1.00).
    reps += export.run(teacher, out, cfg, flavors=["int8"], verify_clips=VERIFY,
                       representative_clips=16, test_accuracy=False)
    return out, {r["name"]: r for r in reps}


def test_files_and_index(exported, runs):
    out, reps = exported
    assert set(reps) == {"bifsmnv2_lce_d2", "bifsmnv2_lce_d1", "dfsmn_float_d8",
                         "dfsmn_int8_d8"}
    for name, r in reps.items():
        for ext in (".tflite", ".json", ".md"):
            assert os.path.exists(os.path.join(out, name + ext)), name + ext
        assert r["written"] and not r["forced"]
        assert os.path.getsize(os.path.join(out, name + ".tflite")) == r["file_bytes"]
        on_disk = json.load(open(os.path.join(out, name + ".json")))
        for key in ("labels", "input", "flavor", "depth", "file_bytes", "weight_bytes",
                    "storage_saving_vs_float", "op_census", "binary_layers", "verification"):
            assert key in on_disk, (name, key)
    index = json.load(open(os.path.join(out, "exports.json")))
    assert set(index["exports"]) == set(reps)
    md = open(os.path.join(out, "exports.md")).read()
    assert all(name in md for name in reps)
    assert not os.path.exists(os.path.join(out, ".staging"))


def test_lce_census_and_binary_layers(exported):
    _, reps = exported
    for depth in (2, 1):
        r = reps[f"bifsmnv2_lce_d{depth}"]
        print(f"d{depth}: {r['file_bytes']:,} B, {r['num_ops']} ops, {r['op_census']}")
        assert r["op_census"][ops.BCONV2D] == 2 * (2 + 2 * depth)
        assert r["op_census"]["DEPTHWISE_CONV_2D"] == depth
        assert r["op_census"]["CONV_2D"] == 1 and r["op_census"]["FULLY_CONNECTED"] == 1
        layers = r["binary_layers"]
        convs = [b for b in layers if b["kind"] == "conv"]
        mems = [b for b in layers if b["kind"] == "memory"]
        assert len(convs) == 2 + 2 * depth and len(mems) == depth
        assert all(b["status"] == ops.BCONV2D and b["lce_bconv2d"] == 2 for b in convs)
        assert all(b["status"] == "float" and "depthwise" in b["reason"] for b in mems)
        assert r["binary_convs_lowered"] is True
        w = r["weight_bytes"]
        assert w["binary_filters"] > 0 and w["total"] <= r["file_bytes"]
        assert r["input"] == "features" and r["input_dtype"] == "float32"
    assert {b["layer"] for b in reps["bifsmnv2_lce_d1"]["binary_layers"]} == {
        "conv2", "linear", "dfsmn/layer7/memory", "dfsmn/layer7/pw1", "dfsmn/layer7/pw2"}
    assert {b["layer"] for b in reps["bifsmnv2_lce_d2"]["binary_layers"]} == {
        "conv2", "linear", "dfsmn/layer3/memory", "dfsmn/layer3/pw1", "dfsmn/layer3/pw2",
        "dfsmn/layer7/memory", "dfsmn/layer7/pw1", "dfsmn/layer7/pw2"}


def test_teacher_baselines_and_storage(exported):
    out, reps = exported
    fl, q = reps["dfsmn_float_d8"], reps["dfsmn_int8_d8"]
    assert fl["binary_layers"] == [] and ops.BCONV2D not in fl["op_census"]
    assert fl["storage_saving_vs_float"] == 1.0
    assert q["input_dtype"] == "int8" and q["output_dtype"] == "int8"
    assert q["input_quantization"]["scale"] > 0
    assert q["storage_saving_vs_float"] > 1.5  # int8 weights (tiny model: graph overhead)
    for d in (2, 1):  # no float teacher export of these depths, no --teacher: no saving
        r = reps[f"bifsmnv2_lce_d{d}"]
        assert r["storage_reference"] is None and r["storage_saving_vs_float"] is None
        assert "no float teacher export" in open(os.path.join(out, r["name"] + ".md")).read()


def test_verification_passed(exported):
    _, reps = exported
    for name, r in reps.items():
        v = r["verification"]
        print(f"{name}: agreement {v['top1_agreement']:.4f}, max|d| "
              f"{v['max_abs_logit_diff']:.2e}, test acc {r['test_accuracy']}")
        assert v["passed"] and v["clips"] > 10
        assert v["runtime"] == ("lce" if r["flavor"] == "lce" else "tf")
        assert v["min_agreement"] == export.MIN_AGREEMENT[r["flavor"]]
        assert v["top1_agreement"] >= v["min_agreement"]
        if r["flavor"] == "float":  # measured ~1e-5 relative (lce: per clip, below)
            assert v["max_rel_logit_diff"] < 1e-3
        if r["flavor"] == "lce":
            assert 0.0 <= r["test_accuracy"]["accuracy"] <= 1.0 and r["test_accuracy"]["n"] > 0
        else:
            assert r["test_accuracy"] is None


def test_lce_equals_keras_on_tie_free_clips(exported, runs, tiny_corpus):
    """Per clip, on the verification clips: the LCE .tflite equals Keras up to float rounding
    wherever no binarizer input lies within rounding of its threshold (`ties`)."""
    out, _ = exported
    feats = verification_features(tiny_corpus)
    for d in (2, 1):
        assert_export_matches_keras(runs[1], d, os.path.join(out, f"bifsmnv2_lce_d{d}.tflite"),
                                    {"validation clips": feats}, f"lce d{d} vs Keras")


def test_sidecar_labels(exported, runs):
    out, reps = exported
    labels = checkpoints.read_model_json(runs[1])["labels"]
    for name in reps:
        pred = predictors.load_predictor(os.path.join(out, name + ".tflite"))
        assert pred.labels == labels and pred.input_kind == "features"
        assert pred.runtime == ("lce" if name.startswith("bifsmnv2") else "tf")


def test_every_flavor_describes_itself(exported):
    """Each export carries its description (pipeline.tflite_metadata), the same as its
    report's; the report's digest is that of the file as written."""
    from pipeline import model_contract, tflite_metadata
    out, reps = exported
    for name, r in reps.items():
        data = open(os.path.join(out, name + ".tflite"), "rb").read()
        desc = tflite_metadata.read(data, name)
        assert desc is not None and desc == r["description"], name
        assert (desc["flavor"], desc["depth"], desc["labels"], desc["input"]) == (
            r["flavor"], r["depth"], r["labels"], "features")
        assert desc["arch"] == r["model"] and desc["model_kwargs"] == r["model_kwargs"]
        assert r["sha256"] == model_contract.sha256(data) and r["file_bytes"] == len(data)


def test_mismatched_checkpoint(runs, tmp_path, tiny_corpus):
    teacher, student = runs
    # weights of another architecture behind the student's model.json
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(os.path.join(student, "model.json"), bad / "model.json")
    shutil.copy(os.path.join(teacher, "best.weights.h5"), bad / "best.weights.h5")
    with pytest.raises(checkpoints.CheckpointError, match="does not match"):
        export.load_keras(str(bad), 2)
    with pytest.raises(checkpoints.CheckpointError, match="--arch"):
        export.load_keras(student, 2, {"model": "dfsmn"})
    with pytest.raises(checkpoints.CheckpointError, match="does not match"):
        export.load_keras(student, 2, {"channels": 32})


@pytest.mark.slow  # a fresh process (TensorFlow import): ~15-20 s on a loaded machine
def test_mismatched_checkpoint_cli(runs, tmp_path, tiny_corpus):
    """Command line: wrong size flag -> clear message, exit status != 0, nothing written."""
    _, student = runs
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.export", "--model", student, "--out_dir",
         str(out), "--depth", "2", "--channels", "32", "--data_dir", tiny_corpus,
         "--wanted_words", "yes,no,up,down"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "does not match" in proc.stderr and "--channels" in proc.stderr
    assert not list(out.glob("*.tflite")) if out.exists() else True


def test_refuses_on_failed_verification_and_force(runs, exported, tiny_corpus, tmp_path,
                                                    monkeypatch):
    teacher, _ = runs
    real = export.keras_logits

    def shuffled(model, x, batch=256):  # a Keras reference that disagrees with the .tflite
        y = real(model, x, batch)
        return np.roll(y, 1, axis=-1)

    monkeypatch.setattr(export, "keras_logits", shuffled)
    # the float conversion itself is tested above: reuse its bytes (saves two conversions)
    fb = open(os.path.join(exported[0], "dfsmn_float_d8.tflite"), "rb").read()
    monkeypatch.setattr(export, "convert", lambda *a, **k: fb)
    cfg = tiny_cfg(tiny_corpus)
    (r,) = export.run(teacher, str(tmp_path), cfg, flavors=["float"], verify_clips=VERIFY,
                      test_accuracy=False)
    assert not r["verification"]["passed"] and not r["written"] and r["file"] is None
    assert not os.path.exists(tmp_path / "dfsmn_float_d8.tflite")
    assert json.load(open(tmp_path / "dfsmn_float_d8.json"))["verification"]["passed"] is False
    assert "REFUSED" in open(tmp_path / "dfsmn_float_d8.md").read()
    assert "REFUSED" in open(tmp_path / "exports.md").read()

    (r,) = export.run(teacher, str(tmp_path), cfg, flavors=["float"], verify_clips=VERIFY,
                      test_accuracy=False, force=True)
    assert r["written"] and r["forced"] and os.path.exists(tmp_path / "dfsmn_float_d8.tflite")
    assert "FORCED" in open(tmp_path / "dfsmn_float_d8.md").read()


def test_wrong_flavor_for_model(runs, tiny_corpus, tmp_path):
    teacher, student = runs
    cfg = tiny_cfg(tiny_corpus)
    with pytest.raises(export.ExportError, match="binary student"):
        export.run(teacher, str(tmp_path), cfg, flavors=["lce"])
    with pytest.raises(export.ExportError, match="--teacher"):
        export.run(student, str(tmp_path), cfg, flavors=["float"])


@pytest.mark.slow  # ~20 s on a loaded machine: keeps this file under ~90 s
def test_pcm_input_float_agrees(runs, tiny_corpus, tmp_path):
    """Front end inside the model (TF converter: STFT -> RFFT2D builtin) vs features+model."""
    teacher, _ = runs
    (r,) = export.run(teacher, str(tmp_path), tiny_cfg(tiny_corpus), flavors=["float"],
                      audio_input=True, verify_clips=VERIFY)
    assert r["name"] == "dfsmn_float_d8_pcm" and r["input"] == "audio"
    assert r["input_shape"] == [1, 16000] and "RFFT2D" in r["op_census"]
    v = r["verification"]
    print(f"pcm float: agreement {v['top1_agreement']}, max|d| {v['max_abs_logit_diff']:.2e}")
    assert v["passed"] and v["max_rel_logit_diff"] < 1e-3
    pred = predictors.load_predictor(str(tmp_path / "dfsmn_float_d8_pcm.tflite"))
    assert pred.input_kind == "audio"


@pytest.mark.slow
def test_pcm_input_lce_agrees(runs, tiny_corpus, tmp_path):
    """The LCE converter lowers tf.signal.stft to the builtin RFFT2D (+ COMPLEX_ABS) and the
    LCE interpreter runs it: the PCM-input binary model agrees with features + Keras model."""
    _, student = runs
    (r,) = export.run(student, str(tmp_path), tiny_cfg(tiny_corpus), depths=[2],
                      flavors=["lce"], audio_input=True, verify_clips=VERIFY)
    v = r["verification"]
    print(f"pcm lce: agreement {v['top1_agreement']}, max|d| {v['max_abs_logit_diff']:.2e}, "
          f"{r['op_census']}")
    assert r["input"] == "audio" and "RFFT2D" in r["op_census"]
    assert r["op_census"][ops.BCONV2D] == 2 * (2 + 2 * 2) and r["binary_convs_lowered"]
    assert v["passed"]


@pytest.mark.slow
def test_trained_tiny_models(tiny_corpus, tmp_path):
    """The real path: pipeline.train (2 epochs x 3 steps) -> export lce at 2 depths + int8."""
    teacher, student = str(tmp_path / "teacher"), str(tmp_path / "student")
    make_trainer(tiny_corpus, teacher, model="dfsmn", epochs=2).fit()
    make_trainer(tiny_corpus, student, model="bifsmnv2", epochs=2, teacher_dir=teacher).fit()
    cfg = tiny_cfg(tiny_corpus)
    out = str(tmp_path / "out")
    reps = export.run(student, out, cfg, depths=[4, 2], flavors=["lce"], teacher=teacher,
                      verify_clips=VERIFY)
    for r in reps:  # reference: the teacher at the same depth, converted for its size only
        assert r["storage_reference"]["bytes"] > r["file_bytes"]
        assert r["storage_saving_vs_float"] > 1.0
    reps += export.run(teacher, out, cfg, flavors=["float", "int8"], verify_clips=VERIFY,
                       representative_clips=64, min_agreement=0.8)
    for r in reps:
        v = r["verification"]
        print(f"{r['name']}: agreement {v['top1_agreement']:.4f}, max|d| "
              f"{v['max_abs_logit_diff']:.2e}, logit scale {v['logit_scale']:.2f}")
        assert r["written"] and v["passed"]
    assert all(r["binary_convs_lowered"] for r in reps if r["flavor"] == "lce")
