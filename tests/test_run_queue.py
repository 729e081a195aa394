"""The training queue: parsing, resume state, evaluation inheritance, report arithmetic."""
import glob
import json
import os

import pytest

from pipeline import run_queue as rq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_queue_options_continuations_and_runs_dir():
    text = """
    # comment
    t1  @weights=best  --flagfile=a.flags --epochs=3   # trailing comment
    s1  @group=s @teacher=t1 --flagfile=b.flags \\
        --teacher_checkpoint={runs}/t1 --seed=1
    """
    entries = rq.parse_queue(text, "R")
    assert [e.name for e in entries] == ["t1", "s1"]
    assert entries[0].options == {"weights": "best"}
    assert entries[0].args == ["--flagfile=a.flags", "--epochs=3"]
    assert entries[1].group == "s" and entries[0].group == "t1"
    assert entries[1].args == ["--flagfile=b.flags", "--teacher_checkpoint=R/t1", "--seed=1"]


@pytest.mark.parametrize("text", ["a --x\na --y", "--flag x", "a --out_dir=x"])
def test_parse_queue_rejects_malformed(text):
    with pytest.raises(rq.QueueError):
        rq.parse_queue(text, "R")


def _fake_run(root, name, epochs, done=True, ckpt=False, evals=None):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    hist = [{"epoch": i + 1, "seconds": 10.0, "steps_per_s": 5.0} for i in range(epochs)]
    json.dump(hist, open(os.path.join(d, "history.json"), "w"))
    json.dump({"epochs": 4}, open(os.path.join(d, "flags.json"), "w"))
    if done:
        json.dump({}, open(os.path.join(d, "metrics.json"), "w"))
    if ckpt:
        os.makedirs(os.path.join(d, "ckpt"))
        open(os.path.join(d, "ckpt", "checkpoint"), "w").close()
    for split, by_depth in (evals or {}).items():
        json.dump({"by_depth": {str(k): v for k, v in by_depth.items()}},
                  open(os.path.join(d, f"eval_{split}.json"), "w"))


def test_state_done_resume_fresh(tmp_path):
    root = str(tmp_path)
    e = rq.parse_queue("a --epochs=4\nb --epochs=4\nc --epochs=4\nd", root)
    _fake_run(root, "a", 4)
    _fake_run(root, "b", 2, done=False, ckpt=True)
    assert [rq.state(x, root) for x in e[:3]] == ["done", "resume", "fresh"]
    # without --epochs on the line, the run's own flags.json says how many it wants (4)
    _fake_run(root, "d", 4)
    assert rq.state(e[3], root) == "done"


def test_report_mean_std_and_gap(tmp_path):
    root = str(tmp_path)
    text = "t --epochs=4\n" + "".join(
        f"s{i} @group=s @teacher=t --epochs=4\n" for i in range(3))
    entries = rq.parse_queue(text, root)
    _fake_run(root, "t", 4, evals={"testing": {8: 0.95, 4: 0.94}, "validation": {8: 0.96, 4: 0.95}})
    for i, acc in enumerate((0.93, 0.94, 0.92)):
        _fake_run(root, f"s{i}", 4, evals={"testing": {8: acc, 4: acc - 0.01},
                                         "validation": {8: acc, 4: acc}})
    rep = rq.report(entries, root)
    s = rep["groups"]["s"]
    assert s["n"] == 3
    assert s["testing_d8"][0] == pytest.approx(0.93)
    assert s["testing_d8"][1] == pytest.approx(0.01)  # sample standard deviation
    assert s["gap_d8"][0] == pytest.approx(0.02) and s["gap_d4"][0] == pytest.approx(0.03)
    assert s["gap_d8"][1] == pytest.approx(0.01)
    assert s["hours"] == pytest.approx(3 * 4 * 10 / 3600)
    assert "93.00 ± 1.00" in rep["text"]
    assert os.path.exists(os.path.join(root, "report.md"))
    # the figure: what it drew is the table's numbers, and the file is a PNG
    assert rep["plot"] == os.path.join(root, "report.png")
    with open(rep["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    drawn = rq.report_plot.plot_points(rep["runs"])
    assert sorted(drawn) == [4, 8]
    (t8, s8), (t4, s4) = drawn[8], drawn[4]
    assert t8["group"] == "t" and t8["teacher_group"] and t8["std"] is None
    assert s8["group"] == "s" and not s8["teacher_group"]
    assert s8["values"] == pytest.approx([0.93, 0.94, 0.92])
    assert s8["mean"] == pytest.approx(s["testing_d8"][0])
    assert s8["std"] == pytest.approx(s["testing_d8"][1])
    assert s4["mean"] == pytest.approx(0.92)


def test_report_without_evaluations_draws_nothing(tmp_path):
    root = str(tmp_path)
    entries = rq.parse_queue("t --epochs=4\n", root)
    rep = rq.report(entries, root)
    assert rep["plot"] is None and not os.path.exists(os.path.join(root, "report.png"))


@pytest.mark.slow
def test_queue_trains_evaluates_and_resumes(tiny_corpus, tmp_path):
    """Two tiny runs through the real tools: trained, evaluated with the run's data flags
    (incl. --split_salt), skipped when done, and a grown --epochs continues with --resume."""
    import subprocess
    import sys
    runs, logs = str(tmp_path / "runs"), str(tmp_path / "logs")
    common = (f"--data_dir={tiny_corpus} --wanted_words=yes,no,up,down --channels=16 "
              "--hidden=32 --num_layers=2 --thin_n=1 --batch_size=8 --steps_per_epoch=2 "
              "--eval_batch_size=64")
    queue = tmp_path / "q.txt"

    def run(epochs):
        queue.write_text(f"a @weights=last {common} --epochs={epochs}\n"
                         f"b @group=g {common} --epochs=1 --split_salt=fold1 "
                         "--validation_percentage=25 --testing_percentage=25\n")
        out = subprocess.run([sys.executable, "-m", "pipeline.run_queue", f"--queue={queue}",
                              f"--out_dir={runs}", f"--logs_dir={logs}"],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    first = run(1)
    assert "a: fresh" in first and "b: fresh" in first
    for name in ("a", "b"):
        for split in ("validation", "testing"):
            ev = json.load(open(os.path.join(runs, name, f"eval_{split}.json")))
            assert 0.0 <= ev["accuracy"] <= 1.0 and ev["n"] > 0
    # b was evaluated on its own (salted) split, a on the list files: different test sets
    na = json.load(open(os.path.join(runs, "a", "eval_testing.json")))["n"]
    nb = json.load(open(os.path.join(runs, "b", "eval_testing.json")))["n"]
    assert na != nb
    second = run(2)
    assert "a: resume" in second and "b:" not in second
    assert len(json.load(open(os.path.join(runs, "a", "history.json")))) == 2
    rep = json.load(open(os.path.join(runs, "report.json")))
    assert rep["groups"]["g"]["runs"] == ["b"]


def test_split_salt_gives_another_speaker_disjoint_partition(tiny_corpus):
    from pipeline import speech_commands as sc
    from pipeline.splits import speaker_id
    labels = ["_silence_", "yes", "no", "up", "down"]
    lists = sc.build_index(tiny_corpus, labels, unknown_percentage=0)
    salted = sc.build_index(tiny_corpus, labels, unknown_percentage=0, split_salt="fold1")

    def speakers(index, split):
        return {speaker_id(p) for p in index.splits[split].paths if p}
    for index in (lists, salted):
        parts = [speakers(index, s) for s in ("training", "validation", "testing")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert speakers(lists, "testing") != speakers(salted, "testing")


def test_archive_keeps_records_and_teacher_weights_and_restore_skips_them(tmp_path):
    """A queue survives a machine that loses --out_dir: finished runs are archived (records;
    weights only for a run another entry names as @teacher) and restored as 'done'."""
    runs, arch = str(tmp_path / "runs"), str(tmp_path / "archive")
    text = ("t @weights=best --epochs=4\n"
            "s @teacher=t --epochs=4 --teacher={runs}/t\n"
            "u --epochs=4\n")
    entries = rq.parse_queue(text, runs)
    evals = {"validation": {8: 0.9}, "testing": {8: 0.8}}
    for name in "ts":
        _fake_run(runs, name, 4, evals=evals)
        for w in ("best", "last"):
            open(os.path.join(runs, name, f"{w}.weights.h5"), "wb").write(w.encode())
    _fake_run(runs, "u", 2, done=False, ckpt=True)          # unfinished: nothing archived
    kept = {e.name: rq.archive(e, entries, runs, arch) for e in entries}
    assert "best.weights.h5" in kept["t"] and "last.weights.h5" not in kept["t"]
    assert not any(n.endswith(".weights.h5") for n in kept["s"])
    assert kept["u"] == [] and not os.path.exists(os.path.join(arch, "u"))
    assert {"history.json", "metrics.json", "eval_testing.json"} <= set(kept["s"])

    fresh = str(tmp_path / "new_machine")
    entries = rq.parse_queue(text, fresh)
    assert [rq.restore(e, fresh, arch) for e in entries] == [True, True, False]
    assert [rq.state(e, fresh) for e in entries] == ["done", "done", "fresh"]
    assert open(os.path.join(fresh, "t", "best.weights.h5"), "rb").read() == b"best"
    # an existing run folder is never overwritten
    assert rq.restore(entries[0], fresh, arch) is False
    assert rq.report(entries, fresh)["text"]


def test_ablation_gain_against_seed_noise(tmp_path):
    """An arm with @baseline: the gain of the baseline over it, its standard error and Welch's
    p-value (independent check: the t statistic and degrees of freedom by hand)."""
    root = str(tmp_path)
    text = "".join(f"b{i} @group=b --epochs=4\n" for i in range(3)) + "".join(
        f"a{i} @group=a @baseline=b --epochs=4\n" for i in range(3)) + "".join(
        f"c{i} @group=c @baseline=b --epochs=4\n" for i in range(3))
    entries = rq.parse_queue(text, root)
    base, far, near = (0.93, 0.94, 0.95), (0.90, 0.905, 0.91), (0.935, 0.945, 0.95)
    for prefix, accs in (("b", base), ("a", far), ("c", near)):
        for i, acc in enumerate(accs):
            _fake_run(root, f"{prefix}{i}", 4, evals={"testing": {8: acc}, "validation": {8: acc}})
    rep = rq.report(entries, root)
    a = rep["groups"]["a"]["ablation"]["testing_d8"]
    va, vb = 0.005 ** 2, 0.01 ** 2                      # sample variances of a and b
    se = ((va + vb) / 3) ** 0.5
    df = (va / 3 + vb / 3) ** 2 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)
    assert a["gain"] == pytest.approx(0.035) and a["se"] == pytest.approx(se)
    assert a["df"] == pytest.approx(df)
    assert a["p"] < 0.05 and a["exceeds_noise"]
    c = rep["groups"]["c"]["ablation"]["testing_d8"]
    assert c["gain"] == pytest.approx(-0.00333, abs=1e-4) and not c["exceeds_noise"]
    assert "b" not in [g for g, it in rep["groups"].items() if "ablation" in it]
    assert "+3.50 ±" in rep["text"] and "beyond the noise" in rep["text"]
    assert "within the noise" in rep["text"]
    # one run on a side: no variance, no verdict
    assert rq.compare_groups([0.9], [0.8, 0.85]) is None


def test_queue_files_use_flags_train_accepts(monkeypatch):
    """Every entry of the project's queue files (and its --flagfile) uses flags pipeline.train
    defines: a typo fails at once, not when its turn comes hours into the queue."""
    monkeypatch.chdir(ROOT)  # flagfiles are relative to the repository, as in the queue files
    known = rq.train_flag_names()
    assert {"arch", "teacher", "epochs", "distill", "nodistill", "flagfile"} <= known
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "queue_*.txt"))):
        rq.check_entries(rq.parse_queue(open(path).read(), "/tmp/runs"), known)
    bad = rq.parse_queue("x --flagfile=configs/real8_bifsmnv2.flags --epoch=3\n"
                         "y --flagfile=configs/missing.flags\n"
                         "z @teacher=t @baseline=nope --epochs=3", "/tmp/runs")
    with pytest.raises(rq.QueueError, match=r"(?s)x: pipeline.train has no flag --epoch.*"
                                             r"y: --flagfile 'configs/missing.flags'.*"
                                             r"z: @teacher=t is not an entry.*"
                                             r"z: @baseline=nope is not a group"):
        rq.check_entries(bad, known)


def test_eval_overrides_replace_the_runs_own_data_flags():
    """@eval_<flag>: a run trained on 35 % silence is scored on the protocol's 10 %; the other
    data flags are the run's own; an override of a flag that is not a data flag is refused."""
    (e,) = rq.parse_queue("s @eval_silence_percentage=10 --silence_percentage=35\n", "/r")
    recorded = {"data_dir": "/d", "wanted_words": ["yes", "no"], "silence_percentage": 35,
                "split_salt": None, "lr": 0.1}
    assert rq.eval_data_flags(e, recorded) == [
        "--data_dir=/d", "--wanted_words=yes,no", "--silence_percentage=10"]
    (plain,) = rq.parse_queue("s --silence_percentage=35\n", "/r")
    assert "--silence_percentage=35" in rq.eval_data_flags(plain, recorded)
    (bad,) = rq.parse_queue("s @eval_lr=1\n", "/r")
    with pytest.raises(rq.QueueError, match="@eval_lr"):
        rq.check_entries([bad], {"silence_percentage", "lr"})
