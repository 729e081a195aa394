"""Per-op profile of .tflite models on an ARM64 device with lce_benchmark_model.

Reads: --models (.tflite files, pushed to the device with --benchmark_binary), or saved
  benchmark output and CSV profiles (--parse).
Writes: into --out_dir: per run <model>_t<N>.txt / .csv / .md / .png, device_profile.md /
  .json; the per-run summary (--json_out).

    # Android phone (USB debugging on; serial from `adb devices`)
    python -m pipeline.device_profile --adb SERIAL --models build/export/bifsmnv2_lce_d8.tflite \\
        build/export/dfsmn_float_d8.tflite --benchmark_binary bin/lce_benchmark_model \\
        --threads 1,4 [--out_dir build/device_profile]
    # Raspberry Pi 4 (64-bit OS) over ssh (key login; HOST as for ssh, e.g. pi@raspberrypi)
    python -m pipeline.device_profile --ssh pi@raspberrypi --models ... --benchmark_binary ...
    # parse saved output(s) only
    python -m pipeline.device_profile --parse run1.txt [--parse run2.csv]

For every (model, thread count) it pushes the model and the binary (adb push / scp, into
``--remote_dir``), runs

    lce_benchmark_model --graph=MODEL --num_threads=N --enable_op_profiling=true \
        --profiling_output_csv_file=REMOTE_DIR/<model>_t<N>.csv [extra]

saves its stdout (``OUT/<model>_t<N>.txt``), fetches the CSV profile (``OUT/<model>_t<N>.csv``)
and reads the "Operator-wise Profiling Info for Regular Benchmark Runs" section's "Summary by
node type" table (op type, count, avg ms, % of total; the "Profiling Info for Benchmark
Initialization" section before it is skipped) from the CSV (``parse_profile_csv``: TFLite's
ProfileSummaryCSVFormatter, the stats tables with ``format_as_csv``), and the overall average
inference time ("Inference timings in us: ... Inference (avg): X"; older versions print
"Average inference timings in us") from stdout. When there is no CSV (a benchmark binary
without the flag writes the profile to stdout instead, or the file could not be fetched), the
table is parsed from stdout (``parse_benchmark_output``, the fallback); each result says which
(``profile_source``). Writes ``OUT/<model>_t<N>.md`` (table) and ``OUT/<model>_t<N>.png``
(horizontal bar chart of ms per op type), plus ``OUT/device_profile.md`` / ``.json`` over all
runs. The parsers read both the newer (TF >= 2.13, no [start] column) and the older layout,
with or without "INFO: " prefixes, and XNNPACK-internal op names with spaces (and, in the
CSV, with the commas they contain: "Convolution (NHWC, F32) IGEMM" stays one op type).

Times with op profiling on include the profiler's own overhead (small per op, but these
models have ~100-400 small ops): quote "Inference (avg)" of a run without
``--enable_op_profiling`` for the headline latency and use this table for the split.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from absl import flags

from pipeline import cli, output_paths

FLAGS = flags.FLAGS

REGULAR = "Operator-wise Profiling Info for Regular Benchmark Runs"
SUMMARY = "Summary by node type"
_ROW = re.compile(r"^\s*(?P<type>.+?)\s+(?P<count>\d+)\s+(?P<avg_ms>[\d.]+)\s+"
                  r"(?P<pct>[\d.]+)%\s+(?P<cdf>[\d.]+)%\s+(?P<mem_kb>[\d.]+)\s+"
                  r"(?P<times>\d+)\s*$")
_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


class DeviceError(RuntimeError):
    """No device to talk to, a failed push / run, or output without a profile."""


def define_flags():
    flags.DEFINE_string("adb", None, "Android device serial (see `adb devices`).")
    flags.DEFINE_string("ssh", None, "ssh destination of an aarch64 Linux board (user@host).")
    flags.DEFINE_list("models", [], "The .tflite files (more may follow as plain arguments).")
    flags.DEFINE_string("benchmark_binary", None, "Local lce_benchmark_model built for the "
                        "device (Android arm64 or aarch64 Linux).")
    flags.DEFINE_list("threads", ["1"], "Thread counts, e.g. 1,4.")
    flags.DEFINE_string("remote_dir", None, "Working folder on the device (default "
                        "/data/local/tmp/bifsmn_profile for adb, /tmp/bifsmn_profile for ssh).")
    flags.DEFINE_string("extra_args", "", "More benchmark flags, e.g. '--num_runs=200 "
                        "--warmup_runs=20'.")
    flags.DEFINE_string("out_dir", "build/device_profile", "Local output folder.")
    flags.DEFINE_multi_string("parse", None, "Only parse saved runs: stdout (.txt) and/or CSV "
                              "profile (.csv) files; the other of a pair beside it is read too.")


# -- parsing -----------------------------------------------------------------------------------
def _strip(line):
    line = line.rstrip("\n")
    s = line.lstrip()
    return s[len("INFO: "):] if s.startswith("INFO: ") else line


def _run_facts(lines) -> dict:
    """What stdout says about the whole run: timings, threads, graph (not the op table)."""
    res = {"ops": [], "avg_inference_ms": None, "init_ms": None, "first_inference_ms": None,
           "warmup_avg_ms": None, "profiled_avg_ms": None, "profiled_runs": None,
           "threads": None, "graph": None}
    for l in lines:
        m = re.search(r"Inference \(avg\):\s*" + _NUM, l)
        if m and "timings in us" in l:
            res["avg_inference_ms"] = float(m.group(1)) / 1e3
            for key, label in (("init_ms", "Init"), ("first_inference_ms", "First inference"),
                               ("warmup_avg_ms", r"Warmup \(avg\)")):
                mm = re.search(label + r":\s*" + _NUM, l)
                if mm:
                    res[key] = float(mm.group(1)) / 1e3
        elif "Average inference timings in us" in l:  # older tools
            mm = re.search(r"Warmup:\s*" + _NUM, l)
            res["warmup_avg_ms"] = float(mm.group(1)) / 1e3 if mm else None
            mm = re.search(r"Init:\s*" + _NUM, l)
            res["init_ms"] = float(mm.group(1)) / 1e3 if mm else None
            mm = re.search(r"(?:no stats|Inference \(avg\)):\s*" + _NUM, l)
            if mm:
                res["avg_inference_ms"] = float(mm.group(1)) / 1e3
        m = re.search(r"(?:#threads used for CPU inference|Num threads):\s*\[(\d+)\]", l)
        if m and res["threads"] is None:
            res["threads"] = int(m.group(1))
        m = re.search(r"Graph:\s*\[(.*)\]", l)
        if m and res["graph"] is None:
            res["graph"] = m.group(1)
    return res


def _profiled_timings(section, res):
    """The regular runs' "Timings (microseconds): count=N ... avg=X" line of a profile."""
    for l in section:
        m = re.match(r"\s*Timings \(microseconds\):\s*count=(\d+).*?avg=" + _NUM, l)
        if m:
            res["profiled_runs"], res["profiled_avg_ms"] = int(m.group(1)), float(m.group(2)) / 1e3
            break
    res["ops_total_ms"] = round(sum(o["avg_ms"] for o in res["ops"]), 6)
    if res["avg_inference_ms"] is None:
        res["avg_inference_ms"] = res["profiled_avg_ms"]
    return res


def parse_benchmark_output(text: str) -> dict:
    """Parse the stdout of (lce_)benchmark_model --enable_op_profiling=true (without
    --profiling_output_csv_file: the profile tables are then in stdout).

    Returns {"ops": [{"type", "count", "avg_ms", "percent", "cdf_percent", "mem_kb",
    "times_called"}] (as printed: slowest first), "ops_total_ms" (sum of avg ms),
    "avg_inference_ms" ("Inference (avg)", or the profile's "Timings" avg), "init_ms",
    "first_inference_ms", "warmup_avg_ms", "profiled_avg_ms" (the regular runs' Timings avg),
    "profiled_runs", "threads", "graph"}."""
    lines = [_strip(l) for l in text.splitlines()]
    res = _run_facts(lines)
    starts = [i for i, l in enumerate(lines) if REGULAR in l]
    if not starts:
        raise DeviceError(f"no '{REGULAR}' section: was the benchmark run with "
                          "--enable_op_profiling=true (and did it finish)?")
    section = lines[starts[-1]:]
    heads = [i for i, l in enumerate(section) if SUMMARY in l]
    if not heads:
        raise DeviceError(f"no '{SUMMARY}' table after '{REGULAR}'")
    i = heads[0] + 1
    header = section[i] if i < len(section) else ""
    columns = re.findall(r"\[([^\]]+)\]", header)
    if columns[:3] != ["Node type", "count", "avg ms"]:
        raise DeviceError(f"unexpected '{SUMMARY}' header: {header.strip()!r}")
    for l in section[i + 1:]:
        if not l.strip():
            break
        m = _ROW.match(l.replace("\t", " "))
        if not m:
            raise DeviceError(f"cannot parse op row: {l.strip()!r}")
        res["ops"].append({"type": m["type"].strip(), "count": int(m["count"]),
                           "avg_ms": float(m["avg_ms"]), "percent": float(m["pct"]),
                           "cdf_percent": float(m["cdf"]), "mem_kb": float(m["mem_kb"]),
                           "times_called": int(m["times"])})
    return _profiled_timings(section, res)


#: the CSV header of the "Summary by node type" table (StatsCalculator::GetStatsByNodeType with
#: format_as_csv; the same in TF's old tensorflow/core/util and its newer tsl/util copy)
CSV_TYPE_COLUMNS = ["node type", "count", "avg_ms", "avg %", "cdf %", "mem KB", "times called"]


def parse_profile_csv(text: str, stdout: str = "") -> dict:
    """Parse the file (lce_)benchmark_model writes with --profiling_output_csv_file.

    Its layout (TFLite's ProfileSummaryCSVFormatter): the section titles of the stdout
    profile ("Profiling Info for Benchmark Initialization:", then "Operator-wise Profiling Info
    for Regular Benchmark Runs:"), each with the stats tables as comma-separated lines ("Run
    Order", "Top by Computation Time", "Summary by node type": ``CSV_TYPE_COLUMNS``, numbers in
    C++'s default format, percentages with "%") and the "Timings (microseconds)" line. Op types
    are not quoted and XNNPACK's contain ", ": the last six fields of a row are the numbers,
    the rest is the type. ``stdout``: the same run's stdout, for the facts the CSV lacks
    (Inference (avg), init, threads, graph). Returns what ``parse_benchmark_output`` returns."""
    lines = [l.rstrip("\r") for l in text.splitlines()]
    res = _run_facts([_strip(l) for l in stdout.splitlines()])
    starts = [i for i, l in enumerate(lines) if REGULAR in l]
    if not starts:
        raise DeviceError(f"no '{REGULAR}' section in the CSV profile: was the benchmark run "
                          "with --enable_op_profiling=true, and did it finish?")
    section = lines[starts[-1]:]
    heads = [i for i, l in enumerate(section) if SUMMARY in l]
    if not heads:
        raise DeviceError(f"no '{SUMMARY}' table after '{REGULAR}' in the CSV profile")
    i = heads[0] + 1
    header = next(csv.reader([section[i] if i < len(section) else ""], skipinitialspace=True),
                  [])
    if header != CSV_TYPE_COLUMNS:
        raise DeviceError(f"unexpected '{SUMMARY}' CSV header: {section[i:i + 1]!r}; expected "
                          f"{', '.join(CSV_TYPE_COLUMNS)}")
    for l in section[i + 1:]:
        if not l.strip():
            break
        row = next(csv.reader([l], skipinitialspace=True))
        try:
            if len(row) < 7:
                raise ValueError(f"{len(row)} fields")
            count, avg, pct, cdf, mem, times = row[-6:]
            res["ops"].append({"type": ", ".join(row[:-6]).strip(), "count": int(count),
                               "avg_ms": float(avg), "percent": float(pct.rstrip("%")),
                               "cdf_percent": float(cdf.rstrip("%")), "mem_kb": float(mem),
                               "times_called": int(times)})
        except ValueError as e:
            raise DeviceError(f"cannot parse CSV op row: {l.strip()!r} ({e})") from e
    return _profiled_timings(section, res)


def parse_benchmark_run(stdout: str, csv_text: str = None, csv_name: str = "CSV") -> dict:
    """One benchmark run: the op table from its CSV profile when there is one, else from
    stdout (the fallback: a binary without --profiling_output_csv_file, or no file fetched);
    run facts from stdout. Adds ``profile_source`` ("csv" / "stdout"). A CSV that cannot be
    read falls back to stdout when stdout has the table, and is named in the error otherwise."""
    csv_error = None
    if csv_text and csv_text.strip():
        try:
            res = parse_profile_csv(csv_text, stdout)
            res["profile_source"] = "csv"
            return res
        except DeviceError as e:
            csv_error = e
    try:
        res = parse_benchmark_output(stdout)
    except DeviceError as e:
        if csv_error is not None:
            raise DeviceError(f"{csv_name}: {csv_error}; and stdout has no profile either "
                              f"({e})") from e
        raise
    if csv_error is not None:
        print(f"warning: {csv_name} unreadable ({csv_error}); used the profile in stdout",
              file=sys.stderr)
    res["profile_source"] = "stdout"
    return res


def format_markdown(result, title):
    lines = [f"## {title}", ""]
    facts = []
    if result.get("threads") is not None:
        facts.append(f"threads {result['threads']}")
    if result.get("avg_inference_ms") is not None:
        facts.append(f"average inference {result['avg_inference_ms']:.3f} ms (with op "
                     "profiling on)")
    if result.get("init_ms") is not None:
        facts.append(f"init {result['init_ms']:.2f} ms")
    facts.append(f"sum of op averages {result['ops_total_ms']:.3f} ms")
    if result.get("profile_source"):
        facts.append("op table from the CSV profile" if result["profile_source"] == "csv"
                     else "op table from stdout")
    lines += ["- " + ", ".join(facts), "",
              "| op type | count | avg ms | % of total |", "|---|---:|---:|---:|"]
    lines += [f"| {o['type']} | {o['count']} | {o['avg_ms']:.3f} | {o['percent']:.1f}% |"
              for o in result["ops"]]
    from lce_kernels import ops
    binary = sum(o["avg_ms"] for o in result["ops"] if o["type"].startswith(ops.LCE_PREFIX))
    if binary:
        lines += ["", f"Lce* ops: {binary:.3f} ms = {100 * binary / result['ops_total_ms']:.1f}% "
                  f"of the op time ({ops.BCONV2D} = binary convs; {ops.QUANTIZE} / "
                  f"{ops.DEQUANTIZE} = bit-packing of activations)."]
    return "\n".join(lines) + "\n"


def plot_ops(result, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ops = sorted(result["ops"], key=lambda o: o["avg_ms"])
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * max(len(ops), 1)))
    colors = ["tab:orange" if o["type"].startswith("Lce") else "tab:blue" for o in ops]
    bars = ax.barh([f"{o['type']} (x{o['count']})" for o in ops],
                   [o["avg_ms"] for o in ops], color=colors)
    for b, o in zip(bars, ops):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {o['percent']:.1f}%",
                va="center", fontsize=7)
    ax.set_xlabel("average ms per inference (all nodes of the type)")
    sub = f"total {result['ops_total_ms']:.3f} ms"
    if result.get("avg_inference_ms"):
        sub += f", inference (avg) {result['avg_inference_ms']:.3f} ms"
    ax.set_title(f"{title}\n{sub}", fontsize=9)
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(results, out_dir):
    """results: {title: parsed}; writes per-run md + png and the summary md / json."""
    os.makedirs(out_dir, exist_ok=True)
    md = ["# Device profile", "",
          "| run | threads | inference avg ms | sum of ops ms | slowest op type |",
          "|---|---:|---:|---:|---|"]
    for title, r in results.items():
        base = os.path.join(out_dir, title)
        with open(base + ".md", "w") as f:
            f.write(format_markdown(r, title))
        r["png"] = plot_ops(r, base + ".png", title)
        top = r["ops"][0] if r["ops"] else None
        avg = f"{r['avg_inference_ms']:.3f}" if r["avg_inference_ms"] is not None else "-"
        md.append(f"| [{title}]({title}.md) | {r['threads'] if r['threads'] else '-'} | {avg} | "
                  f"{r['ops_total_ms']:.3f} | "
                  f"{top['type'] + ' (%.0f%%)' % top['percent'] if top else '-'} |")
    md += [""] + [format_markdown(r, t) for t, r in results.items()]
    with open(os.path.join(out_dir, "device_profile.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(out_dir, "device_profile.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


# -- running on a device -----------------------------------------------------------------------
class Remote:
    """adb or ssh transport. ``runner(cmd) -> CompletedProcess`` is injectable for tests."""

    def __init__(self, adb=None, ssh=None, remote_dir=None, runner=None):
        if bool(adb) == bool(ssh):
            raise DeviceError(
                "no device given: pass --adb SERIAL (Android, see `adb devices`) or --ssh "
                "user@host (aarch64 Linux, e.g. a Raspberry Pi 4 with a 64-bit OS), not both; "
                "or --parse FILE to parse a saved lce_benchmark_model output")
        self.kind = "adb" if adb else "ssh"
        self.target = adb or ssh
        tool = "adb" if adb else "ssh"
        if runner is None and shutil.which(tool) is None:
            raise DeviceError(f"`{tool}` is not installed or not on PATH: install "
                              + ("Android platform-tools" if adb else "an OpenSSH client")
                              + " or use --parse FILE on output saved elsewhere")
        self.remote_dir = remote_dir or ("/data/local/tmp/bifsmn_profile" if adb else
                                         "/tmp/bifsmn_profile")
        self.runner = runner or (lambda cmd: subprocess.run(cmd, capture_output=True,
                                                            text=True, timeout=1800))

    def _run(self, cmd):
        proc = self.runner(cmd)
        if proc.returncode != 0:
            raise DeviceError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                              f"{(proc.stderr or '')[-2000:]}")
        return proc.stdout

    def shell(self, command: str):
        if self.kind == "adb":
            return self._run(["adb", "-s", self.target, "shell", command])
        return self._run(["ssh", self.target, command])

    def pull(self, remote, local):
        """Copy a file from the device (adb pull / scp); DeviceError if that fails."""
        if self.kind == "adb":
            self._run(["adb", "-s", self.target, "pull", remote, local])
        else:
            self._run(["scp", "-q", f"{self.target}:{remote}", local])
        return local

    def push(self, local, remote_name=None):
        remote = f"{self.remote_dir}/{remote_name or os.path.basename(local)}"
        if self.kind == "adb":
            self._run(["adb", "-s", self.target, "push", local, remote])
        else:
            self._run(["scp", "-q", local, f"{self.target}:{remote}"])
        return remote


def profile_on_device(remote, models, binary, threads, extra_args="", out_dir="."):
    """Push, run every model at every thread count, save stdout and the CSV profile, parse
    them (``parse_benchmark_run``): {title: parsed}."""
    if not binary or not os.path.exists(binary):
        raise DeviceError(f"--benchmark_binary {binary!r} not found: download "
                          "lce_benchmark_model for the device from the LCE GitHub releases or "
                          "build it with Bazel (docs/deploy.md)")
    remote.shell(f"mkdir -p {shlex.quote(remote.remote_dir)}")
    rbin = remote.push(binary, "lce_benchmark_model")
    remote.shell(f"chmod +x {shlex.quote(rbin)}")
    arch = remote.shell("uname -m").strip()
    if arch and arch not in ("aarch64", "arm64", "armv8l"):
        print(f"warning: the device reports {arch!r}, not aarch64: LCE's optimized kernels "
              "need ARM64", file=sys.stderr)
    os.makedirs(out_dir, exist_ok=True)
    results = {}
    for model in models:
        rmodel = remote.push(model)
        stem = os.path.splitext(os.path.basename(model))[0]
        for n in threads:
            title = f"{stem}_t{n}"
            rcsv = f"{remote.remote_dir}/{title}.csv"
            remote.shell(f"rm -f {shlex.quote(rcsv)}")  # never read a CSV of an earlier run
            cmd = (f"{shlex.quote(rbin)} --graph={shlex.quote(rmodel)} --num_threads={int(n)} "
                   f"--enable_op_profiling=true --profiling_output_csv_file={shlex.quote(rcsv)} "
                   f"{extra_args}").strip()
            print(f"[{remote.kind} {remote.target}] {cmd}", flush=True)
            out = remote.shell(cmd)
            with open(os.path.join(out_dir, title + ".txt"), "w") as f:
                f.write(out)
            local_csv = os.path.join(out_dir, title + ".csv")
            csv_text = None
            try:
                remote.pull(rcsv, local_csv)
                with open(local_csv, errors="replace") as f:
                    csv_text = f.read()
            except (DeviceError, OSError) as e:
                print(f"warning: no CSV profile from the device ({str(e).splitlines()[0]}); "
                      "parsing the profile in stdout", file=sys.stderr)
            results[title] = parse_benchmark_run(out, csv_text, local_csv)
            results[title]["device"] = f"{remote.kind}:{remote.target} ({arch})"
    return results


def parse_saved(paths) -> dict:
    """--parse: saved runs, {title: parsed}. A run is its stdout (``X.txt``, any name) and/or
    its CSV profile (``X.csv``); given one, the other beside it with the same stem is read too
    (``profile_on_device`` saves both), so ``--parse OUT/m_t1.txt`` uses the CSV."""
    runs = {}
    for path in paths:
        stem, ext = os.path.splitext(path)
        run = runs.setdefault(stem, {})
        run["csv" if ext.lower() == ".csv" else "stdout"] = path
    results = {}
    for stem, run in runs.items():
        if "csv" not in run and os.path.exists(stem + ".csv"):
            run["csv"] = stem + ".csv"
        if "stdout" not in run:
            for ext in (".txt", ".log"):
                if os.path.exists(stem + ext):
                    run["stdout"] = stem + ext
        texts = {}
        for kind, path in run.items():
            with open(path, errors="replace") as f:  # not text: "no ... section" below
                texts[kind] = f.read()
        results[os.path.basename(stem)] = parse_benchmark_run(
            texts.get("stdout", ""), texts.get("csv"), run.get("csv", "CSV"))
    return results


def main(argv):
    models = list(FLAGS.models) + list(argv[1:])
    output_paths.check_dir(FLAGS.out_dir, "--out_dir")
    if FLAGS.parse:
        results = parse_saved(FLAGS.parse)
    else:
        if not models:
            raise DeviceError("give the .tflite files to profile (--models ...)")
        remote = Remote(FLAGS.adb, FLAGS.ssh, FLAGS.remote_dir)
        results = profile_on_device(remote, models, FLAGS.benchmark_binary, FLAGS.threads,
                                    FLAGS.extra_args, FLAGS.out_dir)
    write_outputs(results, FLAGS.out_dir)
    for title, r in results.items():
        print(format_markdown(r, title))
    print(f"written: {os.path.join(FLAGS.out_dir, 'device_profile.md')} (+ per-run .md / .png)")
    summary = {t: {"avg_inference_ms": r["avg_inference_ms"],
                   "ops_total_ms": r["ops_total_ms"], "threads": r["threads"]}
               for t, r in results.items()}
    print(json.dumps(summary))
    return {"runs": summary, "profiles": results}  # --json_out


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(DeviceError,))
