"""The product in miniature (``make demo``): corpus, teacher, binary student, exports, streaming.

Reads: the training recipes configs/demo_teacher.flags and configs/demo_bifsmnv2.flags; the
  corpus in --data_dir (default: one synthesised with espeak-ng into OUT_DIR/synth).
Writes: into --out_dir (default build/demo): synth/, the runs teacher/ and bifsmnv2/,
  exports/, stream/, summary.png, summary.json and demo.log; the summary (--json_out).

    python -m pipeline.demo [--out_dir build/demo] [--stream_minutes 3] [--reuse_runs]

Stages, each through the project's library (the same code as the tools):

1. corpus    ``pipeline.synth.build_corpus``: 35 words x 50 espeak-ng voices + noise (a no-op
             when OUT_DIR/synth already holds it)
2. teacher   ``python -m pipeline.train --flagfile configs/demo_teacher.flags``: the
             full-precision DFSMN, thinnable (depths 8 / 4 / 2 at once)
3. student   ``python -m pipeline.train --flagfile configs/demo_bifsmnv2.flags --teacher ...``:
             the 1-bit BiFSMNv2 student with Frequency Independent Distillation, depths 8/4/2.
             Training runs as the command line does (a child process, so that each run
             directory is exactly what the documented command writes: flags.json, run.flags,
             metrics.json; the flagfiles are read by pipeline.train's own flags); its progress
             is read from the run's history.json.
4. export    ``pipeline.export.export_one`` (what ``export.run`` does per model: convert,
             describe, verify against Keras on the validation clips, write): ``bdfsmn`` (each
             DFSMN layer one bitwise ``lce_kernels.ops.BDFSMN`` op) at every trained depth;
             ``binary`` (the deployment artifact) and ``lce`` (the LCE converter: binary convs
             -> ``ops.BCONV2D``) at the deepest
5. evaluate  test-split accuracy of the teacher and the student in Keras (every depth) and of
             every .tflite as the tools run it (``pipeline.predictors``,
             ``pipeline.evaluate.evaluate_predictor``), on one cached copy of the clips
6. latency   ``pipeline.benchmark.benchmark``: host latency of every export, interleaved
7. streaming ``firmware_sim.stream.run``: the binary artifact at the deepest depth on a
             generated stream (test-split keywords over the corpus' background noise), TFLite
             Micro's detector
8. summary   one table (accuracy per depth Keras vs exported, file sizes, latency, detections)
             and ``summary.png``; ``summary.json`` with every number and the time of each stage

What the terminal shows: one progress line per stage and the summary. Everything the libraries
print (TensorFlow's C++ and Python logs, autograph warnings, the training logs, the export
reports) goes to ``OUT_DIR/demo.log``: file descriptors 1 and 2 point there while the demo
runs, the terminal gets its own copy of the original stdout. (TensorFlow's import-time lines
come before this module runs: ``make demo`` sends the process's stderr to the same log.)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

from absl import app, flags

from pipeline import cli, output_paths

FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER_FLAGS = os.path.join(ROOT, "configs", "demo_teacher.flags")
STUDENT_FLAGS = os.path.join(ROOT, "configs", "demo_bifsmnv2.flags")
FLAVORS = ("bdfsmn", "binary", "lce")   # the table's order
STREAM_FLAVOR = "binary"            # the streaming run: the deployment artifact, deepest depth
LOG_NAME = "demo.log"


class DemoError(cli.UserError):
    """A stage of the demo failed for a reason the user can act on (message says which)."""


def define_flags():
    """Flags of this tool (defined only when it runs, so tools can import each other)."""
    flags.DEFINE_string("out_dir", os.path.join("build", "demo"), "Folder of everything the "
                        "demo writes (corpus, runs, exports, stream, summary, log).")
    flags.DEFINE_string("data_dir", None, "Use this Speech Commands folder (it needs the v2-12 "
                        "words) instead of synthesising the corpus into OUT_DIR/synth.")
    flags.DEFINE_float("stream_minutes", 3.0, "Length of the generated stream.")
    flags.DEFINE_integer("bench_runs", 200, "Timed runs per model for the host latency.")
    flags.DEFINE_bool("reuse_runs", False, "Keep the teacher / student runs of an earlier demo "
                      "in OUT_DIR when they finished (metrics.json), instead of training again.")


# -- the terminal and the log ------------------------------------------------------------------
class Console:
    """While active, file descriptors 1 and 2 (Python's prints, TensorFlow's C++ logs, child
    processes) go to the log file; ``out`` is the terminal (a copy of the original stdout).

    If stderr already points at the log (``make demo`` redirects it there, to catch
    TensorFlow's import-time lines) the log is continued, else it is started afresh."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        self.out = None
        self.log_fd = None
        self.stderr_is_log = False
        self._saved = ()

    def __enter__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self.stderr_is_log = self._is_log(2)
        if self.stderr_is_log:
            self.log_fd = os.dup(2)        # shares stderr's offset: appends after its lines
        else:
            self.log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
        os.dup2(self.log_fd, 1)
        os.dup2(self.log_fd, 2)
        return self

    def _is_log(self, fd) -> bool:
        try:
            a, b = os.fstat(fd), os.stat(self.log_path)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        self.out.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in (*self._saved, self.log_fd):
            os.close(fd)
        self.out.close()
        return False

    def print(self, *args, **kwargs):
        print(*args, file=self.out, flush=True, **kwargs)

    def bar(self, **kwargs):
        """A tqdm progress bar on the terminal."""
        from tqdm import tqdm
        kwargs.setdefault("dynamic_ncols", True)
        kwargs.setdefault("mininterval", 0.5)
        return tqdm(file=self.out, **kwargs)

    @contextlib.contextmanager
    def stderr_to_terminal(self):
        """For library code whose own tqdm bar writes to ``sys.stderr`` (synth, stream)."""
        with contextlib.redirect_stderr(self.out):
            yield


def _log_tail(path, offset, n=400):
    """The log from ``offset`` on, last ``n`` lines."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.replace("\r", "\n").splitlines()[-n:]


# -- stages ------------------------------------------------------------------------------------
def make_corpus(con: Console, out_dir: str) -> str:
    """The synthetic corpus in OUT_DIR/synth (pipeline.synth; a no-op when it is there)."""
    from pipeline import synth
    path = os.path.join(out_dir, "synth")
    t0 = time.perf_counter()
    with con.stderr_to_terminal():
        summary = synth.build_corpus(path, progress=True)
    secs = time.perf_counter() - t0
    per = summary["per_split"]
    con.print(f"corpus: {path}: {summary['clips']:,} clips, {len(summary['per_word'])} words, "
              f"{len(summary['speakers'])} voices (training {per['training']:,}, validation "
              f"{per['validation']}, testing {per['testing']})" +
              (" (already there)" if summary["skipped"] else f" in {secs:.0f} s"))
    return path


def _read_json(path) -> Optional[object]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _run_finished(run_dir) -> bool:
    return all(os.path.exists(os.path.join(run_dir, n))
               for n in ("metrics.json", "model.json", "best.weights.h5"))


def train_stage(con: Console, name: str, flagfile: str, data_dir: str, run_dir: str,
                teacher: Optional[str] = None, reuse: bool = False) -> dict:
    """``python -m pipeline.train --flagfile FLAGFILE`` into ``run_dir`` (a child process,
    output to the log); a progress bar over epochs from the run's history.json. Returns the
    run's metrics.json."""
    if reuse and _run_finished(run_dir):
        metrics = _read_json(os.path.join(run_dir, "metrics.json"))
        con.print(f"{name}: reusing {run_dir} ({metrics.get('epochs')} epochs, --reuse_runs)")
        return metrics
    cmd = [sys.executable, "-m", "pipeline.train", f"--flagfile={flagfile}",
           f"--data_dir={data_dir}", f"--out_dir={run_dir}", "--overwrite"]
    if teacher:
        cmd.append(f"--teacher={teacher}")
    sys.stdout.flush()
    offset = os.lseek(con.log_fd, 0, os.SEEK_END)
    os.write(con.log_fd, f"\n==== {name}: {' '.join(cmd)}\n".encode())
    t0 = time.time()
    history_path = os.path.join(run_dir, "history.json")
    bar = con.bar(desc=f"{name:8s}", unit="epoch", total=None)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=con.log_fd,
                            stderr=con.log_fd)
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            if bar.total is None:
                settings = _read_json(os.path.join(run_dir, "flags.json"))
                if isinstance(settings, dict) and os.path.getmtime(
                        os.path.join(run_dir, "flags.json")) >= t0 - 1:
                    bar.total = int(settings.get("epochs") or 0) or None
                    bar.refresh()
            if os.path.exists(history_path) and os.path.getmtime(history_path) >= t0:
                hist = _read_json(history_path)
                if isinstance(hist, list) and hist and len(hist) != bar.n:
                    last = hist[-1]
                    bar.update(len(hist) - bar.n)
                    bar.set_postfix_str("val acc " + " / ".join(
                        f"d{k[len('val_acc_d'):]} {v:.0%}" for k, v in last.items()
                        if k.startswith("val_acc_d")))
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    finally:
        bar.close()
    if proc.returncode != 0:
        lines = _log_tail(con.log_path, offset)
        errors = [l for l in lines if "pipeline.train: error:" in l]
        if errors:
            why = errors[-1].split("error:", 1)[1].strip()
        elif proc.returncode < 0:
            import signal
            why = (f"the training process was stopped by {signal.Signals(-proc.returncode).name}"
                   f" (killed from outside?); its output is in {con.log_path}")
        else:
            why = f"exit status {proc.returncode}; the traceback is in {con.log_path}"
        raise DemoError(f"training the {name} failed: {why}")
    metrics = _read_json(os.path.join(run_dir, "metrics.json")) or {}
    return metrics


def data_config(run_dir: str):
    """The data settings a run was trained with (its flags.json), for evaluating it."""
    from pipeline.input_pipeline import DataConfig
    stored = _read_json(os.path.join(run_dir, "flags.json")) or {}
    fields = {f.name for f in dataclasses.fields(DataConfig)} - {"augment", "features"}
    kwargs = {k: stored[k] for k in fields if stored.get(k) is not None}
    if isinstance(kwargs.get("wanted_words"), list):
        kwargs["wanted_words"] = ",".join(kwargs["wanted_words"])
    return DataConfig(**kwargs)


def eval_pipeline(cfg, labels):
    """One input pipeline for everything after training: the validation clips the exports are
    verified on, the test split every model is scored on (decoded once, cached)."""
    from pipeline.input_pipeline import InputPipeline, index_from_config
    return InputPipeline(index_from_config(cfg, labels=labels), cfg)


def keras_accuracy(run_dir: str, pipe) -> Dict[int, float]:
    """Test-split accuracy of a run at every trained depth, in one pass over the clips: the
    all-depth model (every depth's logits from one call, as pipeline.train validates) with the
    run's best weights (what pipeline.evaluate and pipeline.export load)."""
    import numpy as np
    import tensorflow as tf

    import models
    from pipeline import checkpoints
    spec = checkpoints.read_model_json(run_dir)
    model, _ = checkpoints.load_model(run_dir, training_depths=spec["training_depths"])
    if spec["labels"] != pipe.labels:
        raise DemoError(f"{run_dir} has classes {spec['labels']}, the data {pipe.labels}")
    logits = tf.function(lambda x: models.split_training_outputs(model(x, training=False))[0])
    correct, n = {}, 0
    for x, y in pipe.eval("testing"):
        for d, z in logits(x).items():
            correct[d] = correct.get(d, 0) + int(np.sum(np.argmax(z.numpy(), -1) == y.numpy()))
        n += len(y)
    return {int(d): c / n for d, c in sorted(correct.items(), reverse=True)}


def export_jobs(depths: List[int]):
    """(flavor, depth) of every export: bdfsmn (every DFSMN layer one bitwise ``ops.BDFSMN``
    op, the front end as float ops) at every trained depth; binary (the deployment artifact:
    LCE's converter output with each DFSMN layer one ``ops.BDFSMN``, bitwise from front end to
    classifier) and lce (LCE's converter alone) at the deepest. Each export costs a Keras build
    and trace (~20-30 s of CPU); ``python -m pipeline.export`` makes the others."""
    return [("bdfsmn", d) for d in depths] + [("binary", max(depths)), ("lce", max(depths))]


def export_stage(con: Console, student: str, out_dir: str, pipe, cfg,
                 depths: List[int]) -> list:
    """The exports of ``export_jobs``: ``pipeline.export.export_one`` (what ``export.run``
    runs per model: convert, describe, census, verify against Keras on the validation clips,
    write) with the clips read once, then the folder's index (exports.md). The test split is
    scored afterwards, on the same cached clips as the Keras models (``tflite_accuracy``)."""
    from pipeline import export
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)   # this demo's own folder: no exports of an earlier run
    os.makedirs(out_dir)
    data = export.clips(pipe, "validation", 500)
    jobs = export_jobs(depths)
    reports = []
    with con.bar(desc="export  ", total=len(jobs), unit="model") as bar:
        for fl, d in jobs:
            bar.set_postfix_str(f"{fl} d{d}")
            reports.append(export.export_one(student, fl, d, out_dir, pipe, cfg, data,
                                             test_accuracy=False))
            bar.update(1)
    export.update_index(out_dir, reports)
    failed = [r["name"] for r in reports if not r.get("written")]
    if failed:
        raise DemoError(f"export verification failed for {', '.join(failed)}: the .tflite "
                        f"does not agree with Keras (reports: {out_dir}/<name>.md)")
    return reports


def tflite_accuracy(paths: List[str], pipe) -> Dict[str, float]:
    """Test-split accuracy of each exported file, run as every tool runs it
    (pipeline.predictors, pipeline.evaluate.evaluate_predictor)."""
    from pipeline import evaluate, predictors
    return {os.path.basename(p): evaluate.evaluate_predictor(
        predictors.load_predictor(p), pipe, ["testing"])["accuracy"] for p in paths}


def latency_stage(con: Console, paths: List[str], runs: int) -> dict:
    """Host latency of every export, interleaved (pipeline.benchmark.benchmark)."""
    from pipeline import benchmark
    t0 = time.perf_counter()
    res = benchmark.benchmark(paths, threads=1, runs=runs, warmup=10)
    con.print(f"latency : {len(paths)} models x {runs} interleaved runs, 1 thread, in "
              f"{time.perf_counter() - t0:.0f} s")
    return res


def stream_stage(con: Console, model: str, cfg, out_dir: str, minutes: float) -> dict:
    """A generated stream through the model and TFLite Micro's detector
    (firmware_sim.stream.run)."""
    from firmware_sim import stream
    settings = stream.StreamSettings(minutes=minutes, split="testing", seed=0,
                                     plot=os.path.join(out_dir, "stream.png"), progress=True)
    with con.stderr_to_terminal():
        out = stream.run(model, settings, data_cfg=cfg)
    out["summary"]["snr_db"] = settings.snr_db
    return out


# -- summary -----------------------------------------------------------------------------------
def summary_table(s: dict) -> str:
    """The one table: per depth, test accuracy (Keras teacher / student, each export), file
    sizes and host latency of each export; then the streaming result."""
    data = s["data"]
    lines = [f"Test split of {data['data_dir']}: {data['test_clips']} clips, {data['classes']} "
             f"classes ({', '.join(data['labels'])}; chance {100 / data['classes']:.1f} %)", ""]
    groups = [("test accuracy (%)", ["teacher", "student", *FLAVORS]),
              ("file (KiB)", list(FLAVORS)), ("host ms, 1 thread", list(FLAVORS))]
    head = ["depth"] + [c for _, cols in groups for c in cols]
    rows = []
    for d in s["depths"]:
        ex = {fl: s["exports"].get(f"{fl}_d{d}") for fl in FLAVORS}

        def num(v, fmt):
            return "-" if v is None else format(v, fmt)

        rows.append([str(d), num(s["teacher"].get(str(d)), ".1%"),
                     num(s["student"].get(str(d)), ".1%"),
                     *[num(ex[fl] and ex[fl]["test_accuracy"], ".1%") for fl in FLAVORS],
                     *[num(ex[fl] and ex[fl]["file_bytes"] / 1024, ",.1f") for fl in FLAVORS],
                     *[num(ex[fl] and ex[fl]["median_ms"], ".3f") for fl in FLAVORS]])
    rows = [[c.rstrip("%") for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    top, i = [" " * widths[0]], 1
    for title, cols in groups:   # the group titles over their columns
        span = sum(widths[i:i + len(cols)]) + 2 * (len(cols) - 1)
        top.append(title.center(span, "-") if len(title) < span else title[:span])
        i += len(cols)
    lines.append("  ".join(top))
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("(teacher / student: Keras; then each .tflite; ms: median on this x86 host, not "
                 "a device: LCE's fast binary kernels are aarch64-only)")
    st = s.get("stream")
    if st:
        hr = "-" if st["hit_rate"] is None else f"{st['hit_rate']:.0%}"
        lines += ["", f"Streaming ({st['model']}, {st['audio_seconds'] / 60:.1f} min generated "
                  f"stream, {st['keywords']} test-split keywords at {st['snr_db']:g} dB SNR, "
                  f"detector threshold {st['threshold']:g}):",
                  f"  {st['detections']} detections: {st['hits']} of {st['keywords']} keywords "
                  f"found (hit rate {hr}), {st['wrong_word']} wrong word, "
                  f"{st['false_accepts']} false accepts ({st['false_accepts_per_hour']:.1f} / h)"
                  + (f", median latency {st['median_latency_s']:.2f} s after onset"
                     if st.get("median_latency_s") is not None else "")]
    return "\n".join(lines)


def summary_plot(s: dict, path: str):
    """summary.png: test accuracy per depth (Keras vs exports), file size and host latency
    of each export."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    depths = s["depths"]
    color = {"teacher": "C0", "student": "C1", "bdfsmn": "C3", "binary": "C4", "lce": "C2"}
    series = [("teacher (Keras)", color["teacher"], [s["teacher"].get(str(d)) for d in depths]),
              ("student (Keras)", color["student"], [s["student"].get(str(d)) for d in depths])]
    series += [(f"{fl} .tflite", color[fl], [s["exports"].get(f"{fl}_d{d}", {}).get(
        "test_accuracy") for d in depths]) for fl in FLAVORS]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    x = np.arange(len(depths))
    w = 0.8 / len(series)
    ax = axes[0]
    for i, (label, c, vals) in enumerate(series):
        v = [100 * a if a is not None else np.nan for a in vals]  # nan: not exported
        ax.bar(x + (i - (len(series) - 1) / 2) * w, v, w, label=label, color=c)
    ax.axhline(100 / s["data"]["classes"], color="gray", ls="--", lw=1, label="chance")
    ax.set_xticks(x, [f"depth {d}" for d in depths])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("Test accuracy per depth: Keras vs exported", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    keys = [k for k in (f"{fl}_d{d}" for fl in FLAVORS for d in depths) if k in s["exports"]]
    colors = [color[k.split("_d")[0]] for k in keys]
    labels = [k.replace("_", "\n") for k in keys]
    for ax, field, scale, unit, title in (
            (axes[1], "file_bytes", 1 / 1024, "KiB", ".tflite file size"),
            (axes[2], "median_ms", 1.0, "median ms", "Host latency, 1 thread (x86: LCE runs its\n"
             "portable kernels here, not a device number)")):
        vals = [s["exports"][k][field] * scale for k in keys]
        bars = ax.bar(range(len(keys)), vals, color=colors)
        ax.bar_label(bars, [f"{v:,.0f}" if unit == "KiB" else f"{v:.2f}" for v in vals],
                     fontsize=8)
        ax.set_xticks(range(len(keys)), labels, fontsize=8)
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"BiFSMNv2 demo on {s['data']['data_dir']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the whole demo ----------------------------------------------------------------------------
class Clock:
    """Wall and CPU seconds per stage (CPU: this process plus its finished children, i.e. the
    training runs and synth's espeak-ng / sox)."""

    def __init__(self):
        self.wall, self.cpu = {}, {}
        self._t = self._now()
        self._start = self._t

    @staticmethod
    def _now():
        import resource
        me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))
        return (time.perf_counter(),
                me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)

    def lap(self, name):
        now = self._now()
        self.wall[name] = round(now[0] - self._t[0], 1)
        self.cpu[name] = round(now[1] - self._t[1], 1)
        self._t = now

    def totals(self):
        now = self._now()
        return round(now[0] - self._start[0], 1), round(now[1] - self._start[1], 1)


def run(out_dir: str, con: Console, data_dir: Optional[str] = None,
        stream_minutes: float = 3.0, bench_runs: int = 200, reuse_runs: bool = False,
        teacher_flags: str = TEACHER_FLAGS, student_flags: str = STUDENT_FLAGS) -> dict:
    """Every stage (module docstring); returns the summary (also OUT_DIR/summary.json).
    ``teacher_flags`` / ``student_flags``: the flagfiles of the two training runs (the tests
    use tiny ones)."""
    import tensorflow as tf
    tf.autograph.set_verbosity(0)
    clock = Clock()

    data = data_dir or make_corpus(con, out_dir)
    clock.lap("corpus")

    teacher_dir = os.path.join(out_dir, "teacher")
    student_dir = os.path.join(out_dir, "bifsmnv2")
    train_stage(con, "teacher", teacher_flags, data, teacher_dir, reuse=reuse_runs)
    clock.lap("teacher")
    metrics = train_stage(con, "student", student_flags, data, student_dir, teacher=teacher_dir,
                          reuse=reuse_runs)
    clock.lap("student")

    cfg = data_config(student_dir)
    labels = list(metrics.get("labels") or [])
    depths = sorted(metrics.get("depths") or [8], reverse=True)
    pipe = eval_pipeline(cfg, labels)
    exports_dir = os.path.join(out_dir, "exports")
    reports = export_stage(con, student_dir, exports_dir, pipe, cfg, depths)
    clock.lap("export")

    t0 = time.perf_counter()
    keras_t = keras_accuracy(teacher_dir, pipe)
    keras_s = keras_accuracy(student_dir, pipe)
    paths = [os.path.join(exports_dir, r["file"]) for r in reports]
    acc = tflite_accuracy(paths, pipe)
    con.print(f"evaluate: teacher and student (Keras, each depth) and {len(paths)} .tflite "
              f"files on {pipe.num_examples('testing')} test clips in "
              f"{time.perf_counter() - t0:.0f} s")
    clock.lap("evaluate")

    lat = latency_stage(con, paths, bench_runs)
    clock.lap("latency")

    stream_dir = os.path.join(out_dir, "stream")
    if os.path.isdir(stream_dir):
        shutil.rmtree(stream_dir)
    [model] = [os.path.join(exports_dir, r["file"]) for r in reports
               if r["flavor"] == STREAM_FLAVOR and r["depth"] == max(depths)]
    st = stream_stage(con, model, cfg, stream_dir, stream_minutes)
    clock.lap("stream")

    summary = {
        "data": {"data_dir": data, "labels": labels, "classes": len(labels),
                 "test_clips": pipe.num_examples("testing")},
        "depths": depths,
        "teacher": {str(d): a for d, a in keras_t.items()},
        "student": {str(d): a for d, a in keras_s.items()},
        "exports": {f"{r['flavor']}_d{r['depth']}": {
            "file": os.path.join(exports_dir, r["file"]), "file_bytes": r["file_bytes"],
            "test_accuracy": acc[r["file"]],
            "top1_agreement_validation": r["verification"]["top1_agreement"],
            "median_ms": lat[r["file"]]["median_ms"], "runtime": lat[r["file"]]["runtime"]}
            for r in reports},
        "stream": dict({k: st["summary"].get(k) for k in (
            "hit_rate", "hits", "misses", "keywords", "wrong_word", "false_accepts",
            "false_accepts_per_hour", "median_latency_s", "detections", "threshold",
            "audio_seconds", "snr_db")}, model=os.path.basename(model),
            plot=st["paths"].get("plot"), sweep=st.get("sweep")),
        "runs": {"teacher": teacher_dir, "student": student_dir, "exports": exports_dir},
    }
    png = os.path.join(out_dir, "summary.png")
    summary_plot(summary, png)
    clock.lap("summary")
    wall, cpu = clock.totals()
    summary.update(png=png, seconds=dict(clock.wall, total=wall),
                   cpu_seconds=dict(clock.cpu, total=cpu))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    out_dir = FLAGS.out_dir
    output_paths.check_dir(out_dir, "--out_dir")
    if FLAGS.data_dir and not os.path.isdir(FLAGS.data_dir):
        raise DemoError(f"--data_dir {FLAGS.data_dir} is not a folder; expected a Speech "
                        "Commands folder with the v2-12 words (or leave it out: the demo "
                        "synthesises one)")
    if not FLAGS.stream_minutes > 0:
        raise app.UsageError(f"--stream_minutes {FLAGS.stream_minutes}: expected > 0")
    if FLAGS.bench_runs < 1:
        raise app.UsageError(f"--bench_runs {FLAGS.bench_runs}: expected >= 1")
    os.makedirs(out_dir, exist_ok=True)
    log = os.path.join(out_dir, LOG_NAME)
    t0 = time.perf_counter()
    with Console(log) as con:
        con.print(f"BiFSMNv2 demo: corpus -> teacher -> binary student -> exports -> "
                  f"evaluation -> latency -> streaming (log: {log})")
        try:
            s = run(out_dir, con, FLAGS.data_dir, FLAGS.stream_minutes, FLAGS.bench_runs,
                    FLAGS.reuse_runs)
        except BaseException as e:
            # cli.run reports the error on stderr, as for every tool; under `make demo` stderr
            # is the log, so the terminal gets the reason here too (and where the traceback is)
            if con.stderr_is_log and not isinstance(e, KeyboardInterrupt):
                msg = cli.user_error_message(e, (DemoError,))
                con.print(f"\npipeline.demo: error: {msg}" if msg else
                          f"\npipeline.demo: failed ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:300]}); the traceback is in {log}")
            raise
        con.print("")
        con.print(summary_table(s))
        con.print("")
        con.print("time (wall / CPU s): " + ", ".join(
            f"{k} {v:.0f} / {s['cpu_seconds'][k]:.0f}" for k, v in s["seconds"].items()
            if k != "total") + f"; total {(time.perf_counter() - t0) / 60:.1f} min wall, "
            f"{s['cpu_seconds']['total'] / 60:.1f} min CPU; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        con.print(f"runs: {s['runs']['teacher']}, {s['runs']['student']}; exports: "
                  f"{s['runs']['exports']}; details: {log}")
        if s["stream"].get("plot"):
            con.print(f"stream PNG: {s['stream']['plot']}")
        con.print(f"summary PNG: {s['png']}")
    return s  # --json_out


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(DemoError,))
