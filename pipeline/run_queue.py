"""A queue of training runs that resumes across sessions, with evaluation and a report.

Reads: --queue (a text file of pipeline.train runs), the runs already in --out_dir.
Writes: one run directory per entry in --out_dir (with eval_validation.json / eval_testing.json),
  its log in --logs_dir, --out_dir/report.md / report.json / report.png; the report (--json_out).

    python -m pipeline.run_queue --queue configs/queue_real8.txt \
        --archive_dir docs/recipe_search                                     # run what is left
    python -m pipeline.run_queue --queue configs/queue_real8.txt --dry_run  # say what it would do
    python -m pipeline.run_queue --queue configs/queue_real8.txt --report   # tables only

Recipe searches on a 2-core machine take many hours (a 100-epoch student is ~35 min), longer
than one working session, so the runs are a queue: a text file, one run per line,

    # name           options                  pipeline.train flags
    teacher_a        @weights=best            --flagfile=configs/real8_teacher.flags --epochs=120
    student_a_s1     @group=student_a @teacher=teacher_a \\
                     --flagfile=configs/real8_bifsmnv2.flags --teacher={runs}/teacher_a --seed=1

(``\\`` continues a line; ``{runs}`` is ``--out_dir``). Runs go one at a time, in file order;
the file is read again after each run, so entries can be added while the queue runs. Each goes
into ``{runs}/<name>`` with its log in ``{logs}/<name>.log``. A run that finished (as many
epochs in its ``history.json`` as it asks for) is skipped; one that has a checkpoint continues
with ``--resume`` (bit-identical to an uninterrupted run, see pipeline.train); any other starts
afresh. So killing the queue and starting it again loses at most the epoch in progress, as long
as ``--out_dir`` survives. A new machine starts without it: with ``--archive_dir`` (the project
uses the committed ``docs/recipe_search``) every finished, evaluated run is archived (its
records, and the evaluated weights of a run another entry names as ``@teacher``) and restored
into an ``--out_dir`` that lacks it, so finished runs are never trained twice and students find
their teacher; only an unfinished run restarts there.

After training, each run is evaluated at every trained depth on the validation and the testing
split (``eval_validation.json``, ``eval_testing.json`` in its folder), with its own data flags
(including ``--split_salt``) but always the default ``--seed``: the evaluation clips (and the
silence crops among them) are then the same for every training seed.
``@eval_<flag>=VALUE`` replaces one of those data flags for the evaluation only
(``eval_data_flags``; e.g. ``@eval_silence_percentage=10`` for a run trained with more silence
examples). ``@weights=best|last`` picks the weights evaluated (default ``last``: the end of the
cosine schedule, the rule fixed for students; teachers are chosen on validation, ``best``).

``--report`` (also printed after every run) groups runs by ``@group`` (default: the name) and
prints mean and standard deviation (ddof=1) of test and validation accuracy per depth, the gap
of each group to its ``@teacher`` at depth 8, and what each run cost (epochs, seconds per
epoch, hours), as Markdown (``{runs}/report.md``), JSON (``{runs}/report.json``) and a figure
of every run's test accuracy per group and depth (``{runs}/report.png``,
`pipeline.report_plot`). A group whose entries name ``@baseline=GROUP`` is an ablation arm of
that group (the full recipe minus one component, same schedule): the report adds what the
baseline gains over the arm at each depth on test, with its standard error over the seeds and
Welch's t-test (``compare_groups``), so that "FID helps" is stated against the measured
run-to-run noise.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from absl import app, flags

from pipeline import report_plot

FLAGS = flags.FLAGS

# data flags a run's evaluation inherits from its flags.json (not --seed: see the docstring)
EVAL_DATA_FLAGS = ("data_dir", "task", "wanted_words", "protocol", "silence_percentage",
                   "unknown_percentage", "validation_percentage", "testing_percentage",
                   "split_salt")
SPLITS = ("validation", "testing")


def define_flags():
    flags.DEFINE_string("queue", None, "Queue file: one training run per line (see --help).")
    flags.DEFINE_string("out_dir", "runs/queue", "Where the run folders and the report go "
                        "({runs}).")
    flags.DEFINE_string("logs_dir", "logs", "Where each run's log goes.")
    flags.DEFINE_list("only", None, "Run only these entries (names).")
    flags.DEFINE_bool("dry_run", False, "Print what would be done, do nothing.")
    flags.DEFINE_bool("report", False, "Only write and print the report.")
    flags.DEFINE_string("python", sys.executable, "Python that runs pipeline.train/evaluate.")
    flags.DEFINE_bool("check_flags", True, "Before anything runs, check every entry's flags "
                      "(and those of its --flagfile) against what pipeline.train accepts.")
    flags.DEFINE_string("archive_dir", None, "Keep each finished run here (its records: flags, "
                        "history, metrics, evaluations; and the evaluated weights of every run "
                        "another entry names as @teacher), and restore runs from here that "
                        "--out_dir lacks: a queue then survives a machine that loses --out_dir "
                        "(e.g. docs/recipe_search, committed).")
    from pipeline import cli_vocabulary
    cli_vocabulary.define_aliases("pipeline.run_queue")  # --runs_dir (old name of --out_dir)


@dataclass
class Entry:
    name: str
    args: List[str]
    options: Dict[str, str] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return self.options.get("group", self.name)

    @property
    def eval_overrides(self) -> Dict[str, str]:
        """``@eval_<flag>=VALUE`` options as {flag: VALUE} (see ``eval_data_flags``)."""
        return {k[len("eval_"):]: v for k, v in self.options.items() if k.startswith("eval_")}


class QueueError(ValueError):
    """A malformed queue file."""


def parse_queue(text: str, runs_dir: str) -> List[Entry]:
    """Entries of a queue file (comments with #, ``\\`` continues a line)."""
    entries, logical = [], []
    buf = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            logical.append(buf)
        buf = ""
    if buf.strip():
        logical.append(buf)
    names = set()
    for line in logical:
        words = shlex.split(line.replace("{runs}", runs_dir))
        name, rest = words[0], words[1:]
        if name.startswith("-") or "/" in name:
            raise QueueError(f"queue line {line!r}: expected a run name first")
        if name in names:
            raise QueueError(f"queue: run name {name!r} appears twice")
        names.add(name)
        options = {}
        args = []
        for w in rest:
            if w.startswith("@"):
                key, _, value = w[1:].partition("=")
                options[key] = value
            else:
                args.append(w)
        if any(a.startswith("--out_dir") for a in args):
            raise QueueError(f"queue entry {name}: --out_dir is set by the queue ({{runs}}/NAME)")
        entries.append(Entry(name, args, options))
    return entries


def train_flag_names(python: str = sys.executable) -> set:
    """Every flag name pipeline.train accepts (absl's ``--helpxml`` of that Python), with the
    ``no`` forms of the booleans."""
    proc = subprocess.run([python, "-m", "pipeline.train", "--helpxml"], capture_output=True,
                          text=True)
    if "<AllFlags>" not in proc.stdout:  # (absl exits 1 after printing the help)
        raise QueueError("pipeline.train --helpxml failed (exit %d): %s" % (
            proc.returncode, proc.stderr.strip()[-500:]))
    root = ET.fromstring(proc.stdout)
    names, bools = set(), set()
    for f in root.iter("flag"):
        name = f.findtext("name")
        names.add(name)
        if f.findtext("type") == "bool":
            bools.add("no" + name)
    return names | bools | {"flagfile", "undefok"}  # absl's own, not in --helpxml


def _flag_words(words):
    """(name, value or None) of each ``--flag[=value]`` word; other words are values."""
    for w in words:
        if w.startswith("--"):
            name, eq, value = w[2:].partition("=")
            yield name, (value if eq else None)


def check_entries(entries: List[Entry], known: set) -> None:
    """Raise QueueError naming every flag pipeline.train would reject (and every @teacher /
    @baseline that names no entry / group), so that a typo fails when the queue starts, not
    hours later when its entry's turn comes."""
    problems = []
    names, groups = {e.name for e in entries}, {e.group for e in entries}
    for e in entries:
        if "teacher" in e.options and e.options["teacher"] not in names:
            problems.append(f"{e.name}: @teacher={e.options['teacher']} is not an entry")
        if "baseline" in e.options and e.options["baseline"] not in groups:
            problems.append(f"{e.name}: @baseline={e.options['baseline']} is not a group")
        for flag in e.eval_overrides:
            if flag not in EVAL_DATA_FLAGS:
                problems.append(f"{e.name}: @eval_{flag}: evaluation overrides only the data "
                                f"flags {', '.join(EVAL_DATA_FLAGS)}")
        for name, value in _flag_words(e.args):
            if name not in known:
                problems.append(f"{e.name}: pipeline.train has no flag --{name}")
            elif name == "flagfile":
                if not value or not os.path.isfile(value):
                    problems.append(f"{e.name}: --flagfile {value!r} does not exist")
                    continue
                with open(value) as f:
                    words = [ln.strip() for ln in f if ln.strip().startswith("--")]
                for inner, _ in _flag_words(words):
                    if inner not in known:
                        problems.append(f"{e.name}: {value}: pipeline.train has no flag "
                                        f"--{inner}")
    if problems:
        raise QueueError("queue entries pipeline.train would reject:\n  " +
                         "\n  ".join(problems))


def _json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def requested_epochs(entry: Entry, run_dir: str) -> Optional[int]:
    """The epochs a run asks for: its flags.json once it started (what pipeline.train records)."""
    for a in reversed(entry.args):
        if a.startswith("--epochs="):
            return int(a.split("=", 1)[1])
    recorded = _json(os.path.join(run_dir, "flags.json"))
    return recorded.get("epochs") if recorded else None


def state(entry: Entry, runs_dir: str) -> str:
    """'done', 'resume' or 'fresh'."""
    run_dir = os.path.join(runs_dir, entry.name)
    history = _json(os.path.join(run_dir, "history.json")) or []
    want = requested_epochs(entry, run_dir)
    ckpt = os.path.join(run_dir, "ckpt")
    if want and len(history) >= want and os.path.exists(os.path.join(run_dir, "metrics.json")):
        return "done"
    if os.path.isdir(ckpt) and os.listdir(ckpt):
        return "resume"
    return "fresh"


# what --archive_dir keeps of a finished run (the weights only for runs others build on)
ARCHIVED_RECORDS = ("flags.json", "run.flags", "history.json", "metrics.json", "model.json",
                    "eval_validation.json", "eval_testing.json")


def _weights_name(entry: Entry) -> str:
    return f"{entry.options.get('weights', 'last')}.weights.h5"


def archive(entry: Entry, entries: List[Entry], runs_dir: str, archive_dir: str) -> List[str]:
    """Copy a finished, evaluated run's records (and, when another entry names it as
    ``@teacher``, its evaluated weights) into ``archive_dir/<name>``; the files copied."""
    src, dst = os.path.join(runs_dir, entry.name), os.path.join(archive_dir, entry.name)
    if state(entry, runs_dir) != "done":
        return []
    names = [n for n in ARCHIVED_RECORDS if os.path.exists(os.path.join(src, n))]
    if any(e.options.get("teacher") == entry.name for e in entries):
        names.append(_weights_name(entry))
    os.makedirs(dst, exist_ok=True)
    for n in names:
        shutil.copyfile(os.path.join(src, n), os.path.join(dst, n + ".tmp"))
        os.replace(os.path.join(dst, n + ".tmp"), os.path.join(dst, n))
    return names


def restore(entry: Entry, runs_dir: str, archive_dir: str) -> bool:
    """Bring back an archived run into an ``runs_dir`` that lacks it (a new machine): True when
    it is then 'done' with both evaluations (the queue skips it; students find their teacher)."""
    src, dst = os.path.join(archive_dir, entry.name), os.path.join(runs_dir, entry.name)
    if os.path.exists(dst) or not os.path.isdir(src):
        return False
    os.makedirs(dst)
    for n in sorted(os.listdir(src)):
        if n in ARCHIVED_RECORDS or n.endswith(".weights.h5"):
            shutil.copyfile(os.path.join(src, n), os.path.join(dst, n))
    return state(entry, runs_dir) == "done" and all(
        os.path.exists(os.path.join(dst, f"eval_{s}.json")) for s in SPLITS)


def _run_logged(cmd, log_path):
    with open(log_path, "a") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def train(entry: Entry, runs_dir: str, logs_dir: str, python: str) -> int:
    run_dir = os.path.join(runs_dir, entry.name)
    how = state(entry, runs_dir)
    if how == "done":
        return 0
    cmd = [python, "-m", "pipeline.train", *entry.args, f"--out_dir={run_dir}"]
    if how == "resume":
        cmd.append("--resume")
    os.makedirs(logs_dir, exist_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {entry.name}: {how} -> {run_dir} "
          f"(log {logs_dir}/{entry.name}.log)", flush=True)
    return _run_logged(cmd, os.path.join(logs_dir, f"{entry.name}.log"))


def eval_data_flags(entry: Entry, recorded: dict) -> List[str]:
    """The data flags of a run's evaluation: those of ``EVAL_DATA_FLAGS`` it trained with
    (``recorded``: its flags.json), each replaced by the entry's ``@eval_<flag>=VALUE`` if
    any. A run that trains on another composition than the protocol's (e.g.
    ``--silence_percentage=35``) is still scored on the protocol's clips with
    ``@eval_silence_percentage=10``, so its accuracy compares with the other runs'."""
    values = {**{k: recorded.get(k) for k in EVAL_DATA_FLAGS}, **entry.eval_overrides}
    return [f"--{k}={','.join(v) if isinstance(v, list) else v}"
            for k, v in values.items() if v is not None]


def evaluate(entry: Entry, runs_dir: str, logs_dir: str, python: str) -> None:
    run_dir = os.path.join(runs_dir, entry.name)
    recorded = _json(os.path.join(run_dir, "flags.json")) or {}
    which = entry.options.get("weights", "last")
    os.makedirs(logs_dir, exist_ok=True)
    weights = os.path.join(run_dir, f"{which}.weights.h5")
    data = eval_data_flags(entry, recorded)
    for split in SPLITS:
        out = os.path.join(run_dir, f"eval_{split}.json")
        if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(weights):
            continue
        cmd = [python, "-m", "pipeline.evaluate", f"--model={weights}", *data,
               f"--split={split}", "--depth=all",
               f"--plot={os.path.join(run_dir, f'confusion_{split}.png')}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        with open(os.path.join(logs_dir, f"{entry.name}.log"), "a") as log:
            log.write(f"\n$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr[-4000:]}")
        if proc.returncode:
            print(f"  evaluation of {entry.name} on {split} failed (exit {proc.returncode}); "
                  f"see {logs_dir}/{entry.name}.log", flush=True)
            continue
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        summary["weights"] = which
        summary["data_flags"] = data
        with open(out + ".tmp", "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(out + ".tmp", out)


def run_record(entry: Entry, runs_dir: str) -> dict:
    run_dir = os.path.join(runs_dir, entry.name)
    history = _json(os.path.join(run_dir, "history.json")) or []
    secs = [h["seconds"] for h in history]
    rec = {"name": entry.name, "group": entry.group, "teacher": entry.options.get("teacher"),
           "baseline": entry.options.get("baseline"),
           "state": state(entry, runs_dir), "epochs": len(history),
           "seconds_per_epoch": statistics.median(secs) if secs else None,
           "steps_per_s": statistics.median([h["steps_per_s"] for h in history])
           if history else None, "hours": sum(secs) / 3600}
    for split in SPLITS:
        ev = _json(os.path.join(run_dir, f"eval_{split}.json"))
        if ev:
            rec[split] = {int(k): v for k, v in ev.get("by_depth", {}).items()} or \
                {int(ev["depth"]): ev["accuracy"]}
    return rec


def _mean_std(values):
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _fmt(mean, std):
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


# An arm "exceeds the noise" when Welch's t-test over the seeds of the two groups rejects equal
# means at this level (two-sided).
NOISE_ALPHA = 0.05


def compare_groups(baseline: List[float], arm: List[float]) -> Optional[dict]:
    """What the full recipe gains over an ablation arm, and whether the seeds' noise explains it.

    ``gain`` = mean(baseline) - mean(arm) (accuracy as fractions); ``se`` = the standard error
    of that difference, sqrt(s_b^2 / n_b + s_a^2 / n_a) (sample variances); ``p`` = the
    two-sided p-value of Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``, t = gain /
    se with Welch-Satterthwaite degrees of freedom). Needs at least 2 runs on each side (a
    variance on each side); None otherwise."""
    if len(baseline) < 2 or len(arm) < 2:
        return None
    from scipy import stats  # only the report needs it
    gain = statistics.mean(baseline) - statistics.mean(arm)
    se = (statistics.variance(baseline) / len(baseline) +
          statistics.variance(arm) / len(arm)) ** 0.5
    if se == 0.0:  # identical seeds on both sides: any difference is beyond the (zero) noise
        p = 1.0 if gain == 0.0 else 0.0
        df = float(len(baseline) + len(arm) - 2)
    else:
        res = stats.ttest_ind(baseline, arm, equal_var=False)
        p, df = float(res.pvalue), float(res.df)
    return {"gain": gain, "se": se, "p": p, "df": df, "n": [len(baseline), len(arm)],
            "exceeds_noise": p < NOISE_ALPHA}


def _test_accs(groups: Dict[str, List[dict]], group: str, depth: int) -> List[float]:
    return [r["testing"][depth] for r in groups.get(group, []) if depth in r.get("testing", {})]


def _ablation_lines(summary: dict, groups: Dict[str, List[dict]], depths) -> List[str]:
    """The ablation table: one row per group with ``@baseline``, per depth on test."""
    rows = []
    for g, item in summary.items():
        base = groups[g][0].get("baseline")
        if not base:
            continue
        item["ablation"] = {"baseline": base}
        cells = []
        for d in depths:
            b, a = _test_accs(groups, base, d), _test_accs(groups, g, d)
            c = compare_groups(b, a)
            item["ablation"][f"testing_d{d}"] = c
            if c is None:
                cells.append(f"- ({len(b)} / {len(a)} runs)")
            else:
                cells.append(f"{100 * c['gain']:+.2f} ± {100 * c['se']:.2f}, p {c['p']:.2f}: " +
                             ("beyond the noise" if c["exceeds_noise"] else "within the noise"))
        rows.append(f"| {g} | {base} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", f"Ablations: what the full recipe (baseline) gains over each arm on test, "
            f"points (mean difference ± its standard error over the seeds; Welch's t-test, "
            f"beyond the noise when p < {NOISE_ALPHA}):", "",
            "| arm | baseline | " + " | ".join(f"gain d{d}" for d in depths) + " |",
            "|---|---|" + "---|" * len(depths)] + rows


def report(entries: List[Entry], runs_dir: str) -> dict:
    records = [run_record(e, runs_dir) for e in entries]
    groups: Dict[str, List[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    depths = sorted({d for r in records for s in SPLITS for d in r.get(s, {})}, reverse=True)
    summary = {}
    for g, rs in groups.items():
        item = {"runs": [r["name"] for r in rs], "n": sum("testing" in r for r in rs),
                "teacher": rs[0]["teacher"], "hours": sum(r["hours"] for r in rs)}
        for split in SPLITS:
            for d in depths:
                vals = [r[split][d] for r in rs if d in r.get(split, {})]
                item[f"{split}_d{d}"] = _mean_std(vals)
        summary[g] = item
    by_name = {r["name"]: r for r in records}
    for g, item in summary.items():
        # gap of each run to its own teacher run at depth 8 (test), then mean/std per group:
        # seeds share one teacher, the folds of a speaker rotation each have their own
        for d in depths:
            gaps = []
            for r in groups[g]:
                t = by_name.get(r["teacher"] or "")
                if t and 8 in t.get("testing", {}) and d in r.get("testing", {}):
                    gaps.append(t["testing"][8] - r["testing"][d])
            if gaps:
                item[f"gap_d{d}"] = _mean_std(gaps)
    lines = ["| group | runs | " + " | ".join(f"test d{d}" for d in depths) + " | " +
             " | ".join(f"val d{d}" for d in depths) + " | gap to teacher d8 (test, points) |"
             " hours |", "|---|---:|" + "---:|" * (2 * len(depths)) + "---|---:|"]
    for g, item in summary.items():
        gaps = " / ".join(_fmt(*item[f"gap_d{d}"]) for d in depths
                          if item.get(f"gap_d{d}")) or "-"
        lines.append(f"| {g} | {item['n']}/{len(item['runs'])} | " +
                     " | ".join(_fmt(*item[f"testing_d{d}"]) for d in depths) + " | " +
                     " | ".join(_fmt(*item[f"validation_d{d}"]) for d in depths) +
                     f" | {gaps} | {item['hours']:.2f} |")
    ablation = _ablation_lines(summary, groups, depths) if depths else []
    lines += ablation
    lines += ["", "| run | state | epochs | s/epoch | steps/s | hours |", "|---|---|---:|---:|---:|---:|"]
    for r in records:
        spe = f"{r['seconds_per_epoch']:.1f}" if r["seconds_per_epoch"] else "-"
        sps = f"{r['steps_per_s']:.2f}" if r["steps_per_s"] else "-"
        lines.append(f"| {r['name']} | {r['state']} | {r['epochs']} | {spe} | {sps} | "
                     f"{r['hours']:.2f} |")
    if not depths:
        lines = lines[2 + len(summary) + 1:]  # nothing evaluated yet: the cost table only
    text = "\n".join(lines)
    os.makedirs(runs_dir, exist_ok=True)
    with open(os.path.join(runs_dir, "report.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(runs_dir, "report.json"), "w") as f:
        json.dump({"groups": summary, "runs": records}, f, indent=1)
    # the same records as a picture: runs as dots, groups as mean +- s.d., teachers as lines
    png = os.path.join(runs_dir, "report.png")
    plotted = report_plot.plot_report(records, png)
    return {"text": text, "groups": summary, "runs": records, "plot": png if plotted else None}


def main(argv):
    del argv
    if not FLAGS.queue:
        raise app.UsageError("--queue is required (a queue file, see --help)")
    runs_dir = FLAGS.out_dir
    with open(FLAGS.queue) as f:
        entries = parse_queue(f.read(), runs_dir)
    todo = [e for e in entries if not FLAGS.only or e.name in FLAGS.only]
    if FLAGS.check_flags and not FLAGS.report:
        check_entries(entries, train_flag_names(FLAGS.python))
    if FLAGS.archive_dir and not FLAGS.dry_run:
        for e in entries:
            if restore(e, runs_dir, FLAGS.archive_dir):
                print(f"{e.name}: restored from {FLAGS.archive_dir}", flush=True)
    if FLAGS.dry_run or FLAGS.report:
        if FLAGS.dry_run:
            for e in todo:
                print(f"{e.name:28s} {state(e, runs_dir):7s} {shlex.join(e.args)}")
        result = report(entries, runs_dir)
        print(result["text"])
        return result  # --json_out
    failed = set()
    while True:
        # the file is read again after every run: entries can be added while the queue runs
        with open(FLAGS.queue) as f:
            entries = parse_queue(f.read(), runs_dir)
        todo = [e for e in entries if (not FLAGS.only or e.name in FLAGS.only)
                and e.name not in failed]
        e = next((e for e in todo if state(e, runs_dir) != "done"
                  or not all(os.path.exists(os.path.join(runs_dir, e.name,
                                                         f"eval_{s}.json")) for s in SPLITS)),
                 None)
        if e is None:
            break
        code = train(e, runs_dir, FLAGS.logs_dir, FLAGS.python)
        if code:
            failed.add(e.name)
            print(f"  {e.name}: training exited {code}; see {FLAGS.logs_dir}/{e.name}.log; "
                  "going on with the next run", flush=True)
            continue
        evaluate(e, runs_dir, FLAGS.logs_dir, FLAGS.python)
        if not all(os.path.exists(os.path.join(runs_dir, e.name, f"eval_{s}.json"))
                   for s in SPLITS):
            failed.add(e.name)
        elif FLAGS.archive_dir:
            kept = archive(e, entries, runs_dir, FLAGS.archive_dir)
            print(f"  {e.name}: archived {len(kept)} files in {FLAGS.archive_dir}/{e.name}",
                  flush=True)
        print(report(entries, runs_dir)["text"], flush=True)
    return dict(report(entries, runs_dir), failed=sorted(failed))  # --json_out


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags, errors=(QueueError,))
