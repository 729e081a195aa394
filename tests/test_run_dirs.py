"""Run directories are transactional (issue 14): ``train`` refuses a folder that is not its own
run unless --overwrite, ``--resume`` compares the stored architecture and flags with the given
ones before touching a file, legitimate changes are recorded, and files are written atomically.

Every refusal is checked against a byte snapshot of the folder: nothing written, nothing removed.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pipeline import checkpoints
from pipeline.checkpoints import CheckpointError
from pipeline.input_pipeline import DataConfig
from pipeline.train import Trainer

ROOT = os.path.join(os.path.dirname(__file__), "..")
PUBLISHED = os.path.join(ROOT, "pretrained", "real8", "teacher")
TINY = dict(channels=16, hidden=16, num_layers=2, left=2, right=2, dilation=1, dropout=0.2)
WORDS = "yes,no,up,down"


def make_trainer(corpus, out, model="dfsmn", model_kwargs=None, words=WORDS, seed=59185, **kw):
    args = dict(epochs=1, batch_size=16, lr=5e-3, thin_n=1, steps_per_epoch=1,
                eval_batch_size=64)
    args.update(kw)
    cfg = DataConfig(data_dir=corpus, wanted_words=words, seed=seed)
    return Trainer(cfg, model, dict(TINY, **(model_kwargs or {})), str(out), **args)


def snapshot(folder):
    """{relative path: bytes} of every file below ``folder`` (folders as None)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder)] = None
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


@pytest.fixture(scope="module")
def tiny_run(tiny_corpus, tmp_path_factory):
    """A finished one-epoch run (one step) of a 2-layer teacher."""
    out = tmp_path_factory.mktemp("run") / "run"
    make_trainer(tiny_corpus, out).fit()
    return str(out)


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return str(dst)


# -- a folder that is not train's own ----------------------------------------------------------
@pytest.fixture
def published(tmp_path):
    """A copy of the published teacher folder (model.json + model.weights.h5, no ckpt/)."""
    dst = tmp_path / "published"
    shutil.copytree(PUBLISHED, dst)
    return str(dst)


def test_published_model_folder_is_refused_before_any_write(tiny_corpus, published):
    before = snapshot(published)
    with pytest.raises(CheckpointError, match=r"not a run of pipeline\.train.*--overwrite"):
        make_trainer(tiny_corpus, published)
    assert snapshot(published) == before


def test_published_model_folder_cli_exits_2_and_keeps_every_byte(tiny_corpus, published):
    """The issue's case end to end: it used to exit 0 after overwriting model.json, flags.json,
    history.json and metrics.json."""
    before = snapshot(published)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.train", f"--data_dir={tiny_corpus}",
         f"--wanted_words={WORDS}", f"--out_dir={published}", "--epochs=1",
         "--steps_per_epoch=1", "--batch_size=16", "--channels=16", "--hidden=16",
         "--num_layers=2", "--thin_n=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "--overwrite" in proc.stderr
    assert snapshot(published) == before


def test_overwrite_replaces_a_foreign_folder_and_an_empty_folder_is_fine(tiny_corpus, published,
                                                                          tmp_path):
    kept = snapshot(published)["model.weights.h5"]
    make_trainer(tiny_corpus, published, overwrite=True)  # the constructor writes the start
    spec = json.load(open(os.path.join(published, "model.json")))
    assert open(os.path.join(published, "model.weights.h5"), "rb").read() == kept  # not train's
    assert not os.path.exists(os.path.join(published, "history.json"))  # the old run's
    assert spec["model_kwargs"]["channels"] == 16
    assert os.path.isdir(os.path.join(published, "ckpt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    make_trainer(tiny_corpus, empty)  # an empty folder is not refused


def test_a_finished_run_is_refused_without_resume_or_overwrite(tiny_corpus, run_copy):
    before = snapshot(run_copy)
    with pytest.raises(CheckpointError, match="already holds a run.*--resume.*--overwrite"):
        make_trainer(tiny_corpus, run_copy)
    assert snapshot(run_copy) == before


def test_out_dir_that_is_a_file_is_refused(tiny_corpus, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(CheckpointError, match="is a file"):
        make_trainer(tiny_corpus, path)
    assert path.read_text() == "keep me"


# -- --resume -------------------------------------------------------------------------------------
def test_resume_refuses_another_architecture_before_touching_a_file(tiny_corpus, run_copy):
    """The issue's case: --resume with a changed --model or size flag rewrote model.json before
    failing, leaving a run that no longer loads."""
    before = snapshot(run_copy)
    with pytest.raises(CheckpointError) as err:
        make_trainer(tiny_corpus, run_copy, model="bifsmnv2", model_kwargs={"channels": 32},
                     resume=True)
    msg = str(err.value)
    assert "--arch dfsmn (stored) vs bifsmnv2 (given)" in msg
    assert "--channels 16 (stored) vs 32 (given)" in msg
    assert snapshot(run_copy) == before
    checkpoints.load_model(run_copy)  # still loads


def test_resume_refuses_other_data_flags_and_batch_size(tiny_corpus, run_copy):
    """The issue's case: --resume --batch_size 16 continued without a word (here 16 -> 8);
    data flags too, each named in one message."""
    before = snapshot(run_copy)
    with pytest.raises(CheckpointError) as err:
        make_trainer(tiny_corpus, run_copy, batch_size=8, words="yes,no,up", seed=7,
                     resume=True)
    msg = str(err.value)
    for part in ("--batch_size 16 (stored) vs 8 (given)", "--seed 59185 (stored) vs 7 (given)",
                 "--wanted_words yes,no,up,down (stored) vs yes,no,up (given)",
                 "may change on --resume"):
        assert part in msg, (part, msg)
    assert snapshot(run_copy) == before


def test_resume_without_a_checkpoint_is_refused(tiny_corpus, published, tmp_path):
    before = snapshot(published)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        make_trainer(tiny_corpus, published, resume=True)
    assert snapshot(published) == before
    with pytest.raises(CheckpointError, match="no checkpoint"):
        make_trainer(tiny_corpus, tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()


def test_resume_records_epochs_and_lr_changes(tiny_corpus, run_copy):
    flags_before = json.load(open(os.path.join(run_copy, "flags.json")))
    trainer = make_trainer(tiny_corpus, run_copy, epochs=2, lr=1e-3, resume=True)
    assert int(trainer.epoch.numpy()) == 1
    trainer.fit()
    hist = json.load(open(os.path.join(run_copy, "history.json")))
    assert [(h["epoch"], h["epochs"], h["lr"]) for h in hist] == [(1, 1, 5e-3), (2, 2, 1e-3)]
    flags = json.load(open(os.path.join(run_copy, "flags.json")))
    # the original values stay; each resume is recorded
    assert flags["epochs"] == 1 and flags["lr"] == 5e-3
    assert {k: v for k, v in flags.items() if k != "resumed_with"} == \
        {k: v for k, v in flags_before.items() if k != "resumed_with"}
    assert flags["resumed_with"] == [{"at_epoch": 1, "epochs": 2, "lr": 1e-3,
                                      "clip_norm": 5.0}]


def test_resume_of_a_run_made_before_the_cli_vocabulary(tiny_corpus, run_copy, tmp_path):
    """Runs written before issue 15 stored --model / --teacher_checkpoint in flags.json (the
    training queue's runs): they still resume, their stored values are compared under the new
    names (--arch, --teacher), and the resumed flags.json uses the new names."""
    path = os.path.join(run_copy, "flags.json")
    stored = json.load(open(path))
    old = {("model" if k == "arch" else "teacher_checkpoint" if k == "teacher" else k): v
           for k, v in stored.items()}
    assert "model" in old and "teacher_checkpoint" in old and "arch" not in old
    with open(path, "w") as f:
        json.dump(old, f)
    before = snapshot(run_copy)
    teacher = str(tmp_path / "some_teacher")
    with pytest.raises(CheckpointError) as err:  # a given teacher differs from the stored none
        make_trainer(tiny_corpus, run_copy, epochs=2, resume=True, teacher_dir=teacher)
    assert f"--teacher None (stored) vs {teacher} (given)" in str(err.value)
    assert snapshot(run_copy) == before
    trainer = make_trainer(tiny_corpus, run_copy, epochs=2, resume=True)
    trainer.fit()
    flags = json.load(open(path))
    assert flags["arch"] == "dfsmn" and flags["teacher"] is None
    assert "model" not in flags and "teacher_checkpoint" not in flags
    assert flags["resumed_with"][-1]["epochs"] == 2


def test_resume_of_a_run_made_before_the_logit_loss_flags(tiny_corpus, run_copy):
    """Runs stored before --logit_loss / --kd_temperature / --kd_weight / --ce_weight existed
    trained with their defaults: a resume with the defaults goes on, another value is refused
    by name (run_dirs.ADDED_DEFAULTS)."""
    path = os.path.join(run_copy, "flags.json")
    stored = json.load(open(path))
    for k in ("logit_loss", "kd_temperature", "kd_weight", "ce_weight"):
        del stored[k]
    with open(path, "w") as f:
        json.dump(stored, f)
    before = snapshot(run_copy)
    with pytest.raises(CheckpointError) as err:
        make_trainer(tiny_corpus, run_copy, epochs=2, resume=True, logit_loss="kl")
    assert "--logit_loss mse (stored) vs kl (given)" in str(err.value)
    assert snapshot(run_copy) == before
    trainer = make_trainer(tiny_corpus, run_copy, epochs=2, resume=True)
    assert int(trainer.epoch.numpy()) == 1


# -- atomic writes --------------------------------------------------------------------------------
def test_atomic_write_json_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "history.json")
    checkpoints.atomic_write_json(path, [{"epoch": 1}], indent=1)
    before = open(path, "rb").read()
    with pytest.raises(TypeError):
        checkpoints.atomic_write_json(path, [{"epoch": 2, "bad": object()}])
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["history.json"]


def test_atomic_save_weights_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    path = str(tmp_path / "last.weights.h5")
    checkpoints.atomic_save_weights(model, path)
    before = open(path, "rb").read()
    saved = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in saved])

    def dies_half_way(filepath, *a, **k):
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF half a file")
        raise OSError(28, "No space left on device", filepath)

    monkeypatch.setattr(model, "save_weights", dies_half_way)
    with pytest.raises(OSError):
        checkpoints.atomic_save_weights(model, path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["last.weights.h5"]
    monkeypatch.undo()
    model.load_weights(path)
    for a, b in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(a, b)
