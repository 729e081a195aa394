"""pipeline.demo (``make demo``): the terminal gets progress and the summary, the log the rest;
the stages chain; a failed training says why.

The whole demo on the real recipes takes minutes (measured in README.md); here it runs end to
end on the tiny tone corpus with tiny flagfiles (``@pytest.mark.slow``), and its parts quickly.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

CONSOLE_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    from pipeline.demo import Console
    log = sys.argv[1]
    print("before", flush=True)                         # the terminal: not redirected yet
    with Console(log) as con:
        print("python print", flush=True)               # -> log
        sys.stderr.write("python stderr\\n")             # -> log
        os.write(1, b"fd1 write\\n")                      # C-level stdout -> log
        os.write(2, b"fd2 write\\n")                      # C-level stderr (TF's C++ logs) -> log
        subprocess.run(["echo", "child process"])       # a training run's output -> log
        con.print("to the terminal")
    print("after", flush=True)
""")


def _run_console(tmp_path, stderr_to_log):
    log = tmp_path / "demo.log"
    if stderr_to_log:  # as `make demo` starts it: `2>demo.log`
        with open(log, "w") as err:
            err.write("import-time line\n")
            err.flush()
            proc = subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT, str(log)], env=ENV,
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    else:
        proc = subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT, str(log)], env=ENV,
                              cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc, log.read_text()


@pytest.mark.parametrize("stderr_to_log", [False, True])
def test_console_terminal_gets_only_its_lines(tmp_path, stderr_to_log):
    proc, log = _run_console(tmp_path, stderr_to_log)
    assert proc.stdout.splitlines() == ["before", "to the terminal", "after"]
    for line in ("python print", "python stderr", "fd1 write", "fd2 write", "child process"):
        assert line in log.splitlines(), (line, log)
    assert "to the terminal" not in log
    if stderr_to_log:  # the log is continued, not overwritten
        assert log.splitlines()[0] == "import-time line", log
    else:
        assert "python stderr" not in proc.stderr


def _summary():
    exports = {f"bdfsmn_d{d}": {"file": f"x/bifsmnv2_bdfsmn_d{d}.tflite", "file_bytes": 1024 * d,
                                "test_accuracy": 0.5 + d / 100, "median_ms": 0.1 * d}
               for d in (8, 4, 2)}
    exports["binary_d8"] = {"file": "x/bifsmnv2_binary_d8.tflite", "file_bytes": 3072,
                            "test_accuracy": 0.56, "median_ms": 0.25}
    exports["lce_d8"] = {"file": "x/bifsmnv2_lce_d8.tflite", "file_bytes": 2048,
                         "test_accuracy": 0.55, "median_ms": 1.5}
    return {"data": {"data_dir": "corpus", "labels": ["_silence_", "a", "b", "c"],
                     "classes": 4, "test_clips": 40},
            "depths": [8, 4, 2], "teacher": {"8": 0.9, "4": 0.85, "2": 0.8},
            "student": {"8": 0.58, "4": 0.54, "2": 0.52}, "exports": exports,
            "stream": {"model": "bifsmnv2_binary_d8.tflite", "audio_seconds": 180.0,
                       "keywords": 30, "snr_db": 20.0, "threshold": 0.5, "detections": 21,
                       "hits": 20, "hit_rate": 20 / 30, "wrong_word": 1, "false_accepts": 0,
                       "false_accepts_per_hour": 0.0, "median_latency_s": 0.87}}


def test_summary_table_and_plot(tmp_path):
    s = _summary()
    table = demo.summary_table(s)
    lines = table.splitlines()
    head = next(line.split() for line in lines if line.startswith("depth"))
    assert head == ["depth", "teacher", "student", "bdfsmn", "binary", "lce",
                    "bdfsmn", "binary", "lce", "bdfsmn", "binary", "lce"]
    rows = {line.split()[0]: line.split() for line in lines
            if line.split() and line.split()[0] in ("8", "4", "2")}
    assert rows["8"] == ["8", "90.0", "58.0", "58.0", "56.0", "55.0", "8.0", "3.0", "2.0",
                         "0.800", "0.250", "1.500"]
    assert rows["4"] == ["4", "85.0", "54.0", "54.0", "-", "-", "4.0", "-", "-", "0.400",
                         "-", "-"]     # binary and lce only at the deepest depth
    assert "20 of 30 keywords found (hit rate 67%)" in table
    png = tmp_path / "summary.png"
    demo.summary_plot(s, str(png))
    assert png.stat().st_size > 10_000


def test_export_jobs():
    assert demo.export_jobs([8, 4, 2]) == [("bdfsmn", 8), ("bdfsmn", 4), ("bdfsmn", 2),
                                           ("binary", 8), ("lce", 8)]
    assert demo.export_jobs([4]) == [("bdfsmn", 4), ("binary", 4), ("lce", 4)]


def test_data_config_is_the_runs(tmp_path):
    (tmp_path / "flags.json").write_text(json.dumps({
        "data_dir": "/d", "task": None, "wanted_words": ["yes", "no"], "unknown_percentage": 0.0,
        "seed": 7, "split_salt": None, "epochs": 3, "arch": "dfsmn"}))
    cfg = demo.data_config(str(tmp_path))
    assert (cfg.data_dir, cfg.wanted_words, cfg.unknown_percentage, cfg.seed) == \
        ("/d", "yes,no", 0.0, 7)


def test_failed_training_says_why(tmp_path):
    """The child's one-line error reaches the terminal as the demo's error."""
    flagfile = tmp_path / "bad.flags"
    flagfile.write_text("--arch=dfsmn\n--wanted_words=yes,no\n--epochs=1\n")
    log = tmp_path / "demo.log"
    script = textwrap.dedent(f"""
        import sys
        from pipeline import demo
        with demo.Console({str(log)!r}) as con:
            try:
                demo.train_stage(con, "teacher", {str(flagfile)!r}, {str(tmp_path / 'none')!r},
                                 {str(tmp_path / 'run')!r})
            except demo.DemoError as e:
                con.print("DemoError:", e)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("DemoError: training the teacher failed: "), proc.stdout
    assert "none" in last and "traceback" not in last, last   # names the missing data folder


TINY_TEACHER = """--wanted_words=yes,no,up,down
--arch=dfsmn
--channels=16
--hidden=16
--num_layers=4
--thin_n=2
--epochs=1
--steps_per_epoch=3
--batch_size=16
--optimizer=adam
--lr=2e-3
--eval_batch_size=64
"""
TINY_STUDENT = TINY_TEACHER.replace("--arch=dfsmn", "--arch=bifsmnv2") + "--distill\n"


@pytest.mark.slow
def test_demo_end_to_end_on_a_tiny_corpus(tiny_corpus, tmp_path):
    """Every stage on the tone corpus with 1-epoch tiny runs: the summary has every number,
    the files are there, the terminal has the table and the log the training output."""
    (tmp_path / "t.flags").write_text(TINY_TEACHER)
    (tmp_path / "s.flags").write_text(TINY_STUDENT)
    out = tmp_path / "demo"
    script = textwrap.dedent(f"""
        import json
        from pipeline import demo
        out = {str(out)!r}
        with demo.Console(out + "/demo.log") as con:
            s = demo.run(out, con, data_dir={tiny_corpus!r}, stream_minutes=0.5,
                         bench_runs=5, teacher_flags={str(tmp_path / 't.flags')!r},
                         student_flags={str(tmp_path / 's.flags')!r})
            con.print(demo.summary_table(s))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "summary.json") as f:
        s = json.load(f)
    assert s["depths"] == [4, 2]                        # --num_layers=4 --thin_n=2
    assert set(s["exports"]) == {"bdfsmn_d4", "bdfsmn_d2", "binary_d4", "lce_d4"}
    for e in s["exports"].values():
        assert os.path.exists(e["file"]) and e["file_bytes"] > 0
        assert 0.0 <= e["test_accuracy"] <= 1.0 and e["median_ms"] > 0
        assert e["top1_agreement_validation"] >= 0.99
    assert set(s["teacher"]) == set(s["student"]) == {"4", "2"}
    assert s["stream"]["keywords"] == 5 and s["stream"]["plot"]
    assert s["stream"]["model"] == "bifsmnv2_binary_d4.tflite"
    assert os.path.exists(s["stream"]["plot"]) and os.path.exists(out / "summary.png")
    assert (out / "teacher" / "run.flags").exists() and (out / "bifsmnv2" / "metrics.json").exists()
    # the terminal: progress lines and the table, no library output
    terminal = proc.stdout.replace("\r", "\n")
    assert "depth  teacher  student  bdfsmn  binary" in terminal and "Streaming (" in terminal
    assert "val_acc_d4" not in terminal and "verification:" not in terminal
    log = (out / "demo.log").read_text()
    assert "==== teacher:" in log and "val_acc_d4" in log and "verification:" in log
