"""pipeline.train scaled out (issue 15, points 4 and 5): ``--strategy mirrored`` and
``multi_worker`` on 2 logical CPU devices, resume after a kill, the single-device numbers, and
each run's ``run.flags`` reproducing it.

Logical devices must be configured before TensorFlow initialises its devices, so every
training runs in a process of its own: ``tests/train_driver.py`` splits the CPU into 2 logical
devices, then runs the real command line (``cli.run(train.main)``); with
``--die_after_saves=K`` it ends the process with ``os._exit`` right after the K-th checkpoint
(a kill: no cleanup, nothing written after it).

Tolerance of "mirrored matches one device": relative 1e-5 on every per-epoch loss term. The
two runs compute the same sums in another order (each replica sums its half of the batch, the
halves are all-reduced; batch norms take E[x^2] - E[x]^2 over both replicas instead of the fused
one-device kernel): measured relative differences 5e-8 (teacher) to 1e-7 (student with FID)
after 6 steps, float32 rounding. Real mistakes are far larger: batch norms left per replica
gave 2e-3 on the first epoch's loss, and an unscaled (doubled) gradient changes every step
after the first.
"""
import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pipeline import cli, run_dirs, train
from pipeline.input_pipeline import DataConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "train_driver.py")
KILLED = 75  # train_driver.KILLED
TIMEOUT = 1800
TINY = ["--wanted_words=yes,no,up,down", "--channels=16", "--hidden=16", "--num_layers=2",
        "--epochs=2", "--steps_per_epoch=3", "--batch_size=16", "--eval_batch_size=64"]
TEACHER = TINY + ["--arch=dfsmn", "--thin_n=1"]
STUDENT = TINY + ["--arch=bifsmnv2", "--thin_n=2", "--optimizer=adam", "--lr=1e-3"]
TIMING = ("seconds", "steps_per_s", "median_seconds_per_epoch", "median_steps_per_s")


def train_run(corpus, out, args, cpus=2, die_after_saves=0, env=None, expect=0, wait=True):
    """pipeline.train's command line in a process of its own on ``cpus`` logical CPUs."""
    cmd = [sys.executable, DRIVER, f"--cpus={cpus}"]
    if die_after_saves:
        cmd.append(f"--die_after_saves={die_after_saves}")
    cmd += ["--", f"--data_dir={corpus}", f"--out_dir={out}", *args]
    env = dict(os.environ, **(env or {}))
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == expect, (proc.returncode, proc.stderr[-3000:])
    return proc


def history(run):
    with open(os.path.join(run, "history.json")) as f:
        return json.load(f)


def metrics(run):
    with open(os.path.join(run, "metrics.json")) as f:
        return json.load(f)


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def weights(path):
    """{dataset name: array} of a .weights.h5."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_losses_close(a, b, rtol=1e-5):
    """Per epoch: every loss term (loss, ce_*, kd_*, fid_*) within ``rtol`` (module doc)."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        terms = [k for k in rb if k == "loss" or k.split("_")[0] in ("ce", "kd", "fid")]
        assert terms and set(terms) <= set(ra)
        for k in terms:
            np.testing.assert_allclose(ra[k], rb[k], rtol=rtol, err_msg=f"epoch {rb['epoch']} {k}")


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# -- one device vs two replicas ---------------------------------------------------------------
@pytest.fixture(scope="module")
def one_device_teacher(tiny_corpus, tmp_path_factory):
    """The default strategy, dropout 0 (the replicas draw other dropout masks than one
    device): the reference numbers, and the run the flagfile test reproduces."""
    out = str(tmp_path_factory.mktemp("default") / "teacher")
    train_run(tiny_corpus, out, TEACHER + ["--dropout=0", "--strategy=default"])
    return out


@pytest.mark.slow
def test_mirrored_matches_one_device(tiny_corpus, one_device_teacher, tmp_path):
    """Teacher, then a binary student distilled from it (FID + logit MSE, depths 2 and 1):
    on 2 replicas the same losses as on one device (module doc: tolerance)."""
    mirrored = str(tmp_path / "teacher")
    train_run(tiny_corpus, mirrored, TEACHER + ["--dropout=0", "--strategy=mirrored"])
    assert metrics(mirrored)["strategy"] == "mirrored" and metrics(mirrored)["replicas"] == 2
    assert metrics(one_device_teacher)["replicas"] == 1
    assert [h["replicas"] for h in history(mirrored)] == [2, 2]
    assert_losses_close(history(mirrored), history(one_device_teacher))

    students = {}
    for strategy in ("default", "mirrored"):
        out = str(tmp_path / f"student_{strategy}")
        train_run(tiny_corpus, out, STUDENT + ["--dropout=0", f"--teacher={one_device_teacher}",
                                               f"--strategy={strategy}"])
        students[strategy] = history(out)
    assert students["default"][0]["fid_d2"] > 0 and students["default"][0]["kd_d1"] > 0
    assert_losses_close(students["mirrored"], students["default"])


@pytest.mark.slow
def test_mirrored_resumes_after_a_kill_identically(tiny_corpus, tmp_path):
    """Killed right after epoch 1's checkpoint, then --resume: the same history and weights as
    an uninterrupted run (dropout on: each replica's masks are reseeded per epoch too)."""
    args = TEACHER + ["--dropout=0.2", "--strategy=mirrored"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    train_run(tiny_corpus, straight, args)
    train_run(tiny_corpus, killed, args, die_after_saves=1, expect=KILLED)
    assert [h["epoch"] for h in history(killed)] == [1]
    assert not os.path.exists(os.path.join(killed, "metrics.json"))
    train_run(tiny_corpus, killed, args + ["--resume"])
    assert without_timing(history(killed)) == without_timing(history(straight))
    a, b = weights(os.path.join(straight, "last.weights.h5")), \
        weights(os.path.join(killed, "last.weights.h5"))
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # the resume is noted in run.flags, which keeps the flags the run started with
    with open(os.path.join(killed, run_dirs.RUN_FLAGFILE)) as f:
        text = f.read()
    assert text.rstrip().splitlines()[-1] == \
        "# resumed at epoch 1 with --epochs=2 --lr=0.005 --clip_norm=5.0"
    assert "\n--resume\n" not in text and "\n--noresume\n" not in text


@pytest.mark.slow
def test_multi_worker_two_processes_match_one_device(tiny_corpus, one_device_teacher, tmp_path):
    """MultiWorkerMirroredStrategy with two local worker processes (TF_CONFIG), one CPU device
    each: worker 0 writes the run directory, worker 1 only a temporary one (removed); the losses
    are those of one device."""
    out = str(tmp_path / "teacher")
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    procs = [train_run(tiny_corpus, out, TEACHER + ["--dropout=0", "--strategy=multi_worker"],
                       cpus=1, wait=False,
                       env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                     "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    logs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    m = metrics(out)
    assert m["strategy"] == "multi_worker" and m["replicas"] == 2
    assert_losses_close(history(out), history(one_device_teacher))


# -- run.flags: the run's flags as a flagfile that reproduces it --------------------------------
@pytest.mark.slow
def test_run_flagfile_reproduces_the_run(one_device_teacher, tmp_path):
    """``python -m pipeline.train --flagfile=<run>/run.flags --out_dir=NEW`` (from another
    folder's point of view: paths in it are absolute) gives the same history and metrics.json,
    bit for bit but for the timings: CPU training here is deterministic with the seeds (no
    ``enable_op_determinism`` needed, checked by this test)."""
    flagfile = os.path.join(one_device_teacher, run_dirs.RUN_FLAGFILE)
    with open(flagfile) as f:
        text = f.read()
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    names = [l[2:].split("=")[0] for l in lines]
    assert len(names) == len(set(names)), "each flag once"
    for line in ("--arch=dfsmn", "--strategy=default", "--dropout=0.0", "--distill",
                 f"--out_dir={os.path.abspath(one_device_teacher)}"):
        assert line in lines, line
    assert not {"resume", "noresume", "overwrite", "nooverwrite", "json_out", "debug",
                "model", "teacher_checkpoint"} & set(names)
    data_dir = next(l for l in lines if l.startswith("--data_dir="))
    assert os.path.isabs(data_dir.split("=", 1)[1])

    again = str(tmp_path / "again")
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", f"--flagfile={flagfile}",
                           f"--out_dir={again}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert without_timing(history(again)) == without_timing(history(one_device_teacher))
    a, b = metrics(again), metrics(one_device_teacher)
    assert {k: v for k, v in a.items() if k not in TIMING} == \
        {k: v for k, v in b.items() if k not in TIMING}
    # the flagfile alone points at the original run: refused, not overwritten
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", f"--flagfile={flagfile}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_flagfile_on_resume(tmp_path):
    """A resume keeps run.flags and appends a note; a run made before run.flags existed gets
    one on resume, with the --epochs / --lr / --clip_norm it started with (flags.json)."""
    lines = [("arch", "--arch=dfsmn"), ("epochs", "--epochs=40"), ("lr", "--lr=0.01"),
             ("distill", "--nodistill")]
    new = run_dirs.Plan(str(tmp_path), "fresh")
    run_dirs.write_run_flagfile(new, lines, 0, {"epochs": 40, "lr": 0.01, "clip_norm": 5.0})
    path = tmp_path / run_dirs.RUN_FLAGFILE
    first = path.read_text()
    assert first.startswith("# ") and first.endswith("--arch=dfsmn\n--epochs=40\n--lr=0.01\n"
                                                     "--nodistill\n")
    resumed = run_dirs.Plan(str(tmp_path), "resume", {"epochs": 40, "lr": 0.01})
    run_dirs.write_run_flagfile(resumed, [("epochs", "--epochs=80")], 40,
                                {"epochs": 80, "lr": 0.01, "clip_norm": 5.0})
    assert path.read_text() == first + \
        "# resumed at epoch 40 with --epochs=80 --lr=0.01 --clip_norm=5.0\n"
    path.unlink()  # a run from before run.flags
    run_dirs.write_run_flagfile(resumed, [("arch", "--arch=dfsmn"), ("epochs", "--epochs=80"),
                                          ("lr", "--lr=0.01")], 40,
                                {"epochs": 80, "lr": 0.01, "clip_norm": 5.0})
    body = [l for l in path.read_text().splitlines() if not l.startswith("#")]
    assert body == ["--arch=dfsmn", "--epochs=40", "--lr=0.01"]
    assert path.read_text().endswith("# resumed at epoch 40 with --epochs=80 --lr=0.01 "
                                     "--clip_norm=5.0\n")


# -- clear errors ------------------------------------------------------------------------------
class _Replicas:
    """A stand-in strategy with ``n`` replicas (the batch check runs before anything else)."""

    def __init__(self, n):
        self.num_replicas_in_sync = n
        self.cluster_resolver = None


def test_batch_size_must_split_across_replicas(tiny_corpus, tmp_path):
    with pytest.raises(cli.UserError, match="--batch_size 16 does not split evenly across the "
                                            "3 replicas.*multiple of 3"):
        train.Trainer(DataConfig(data_dir=tiny_corpus, wanted_words="yes,no"), "dfsmn",
                      {"channels": 16, "hidden": 16, "num_layers": 2}, str(tmp_path / "run"),
                      epochs=1, batch_size=16, lr=1e-3, thin_n=1, strategy=_Replicas(3))
    assert not (tmp_path / "run").exists()


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(cli.UserError, match="TF_CONFIG.*not set.*expected TF_CONFIG on every "
                                            "worker"):
        train.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(cli.UserError, match="not a cluster description"):
        train.make_strategy("multi_worker")


@pytest.mark.slow
def test_one_replica_strategy_runs_the_distributed_path(tiny_corpus, tmp_path):
    """A tf.distribute strategy with one replica (``--strategy mirrored`` on a machine with one
    CPU device) goes through strategy.run, the distributed dataset and the replica reductions,
    and trains exactly as the default strategy (dropout 0, so that no mask is drawn)."""
    import tensorflow as tf

    def run(strategy, out):
        t = train.Trainer(DataConfig(data_dir=tiny_corpus, wanted_words="yes,no,up,down"),
                          "dfsmn", {"channels": 16, "hidden": 16, "num_layers": 2,
                                    "dropout": 0.0},
                          str(tmp_path / out), epochs=1, batch_size=16, lr=5e-3, thin_n=1,
                          steps_per_epoch=2, eval_batch_size=64, strategy=strategy)
        assert t.distributed == (strategy is not None)
        return t.fit(), history(str(tmp_path / out))

    m_default, h_default = run(None, "default")
    m_mirrored, h_mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0"]), "mirrored")
    assert (m_default["strategy"], m_mirrored["strategy"]) == ("default", "mirrored")
    assert m_mirrored["replicas"] == 1
    assert_losses_close(h_mirrored, h_default, rtol=1e-6)
