"""Per-op profile of .tflite models on an ARM64 device with lce_benchmark_model.

    # Android phone (USB debugging on; serial from `adb devices`)
    python -m pipeline.device_profile --adb SERIAL --models build/export/bifsmnv2_lce_d8.tflite \\
        build/export/dfsmn_float_d8.tflite --benchmark_binary bin/lce_benchmark_model \\
        --threads 1,4 [--out_dir build/device_profile]
    # Raspberry Pi 4 (64-bit OS) over ssh (key login; HOST as for ssh, e.g. pi@raspberrypi)
    python -m pipeline.device_profile --ssh pi@raspberrypi --models ... --benchmark_binary ...
    # parse saved output(s) only
    python -m pipeline.device_profile --parse run1.txt [--parse run2.txt]

For every (model, thread count) it pushes the model and the binary (adb push / scp, into
``--remote_dir``), runs

    lce_benchmark_model --graph=MODEL --num_threads=N --enable_op_profiling=true [extra]

captures its stdout (saved as ``OUT/<model>_t<N>.txt``) and parses TFLite's benchmark
output: the "Operator-wise Profiling Info for Regular Benchmark Runs" section's "Summary by
node type" table (op type, count, avg ms, % of total; the "Profiling Info for Benchmark
Initialization" section before it is skipped) and the overall average inference time
("Inference timings in us: ... Inference (avg): X"; older versions print "Average inference
timings in us"). Writes ``OUT/<model>_t<N>.md`` (table) and ``OUT/<model>_t<N>.png``
(horizontal bar chart of ms per op type), plus ``OUT/device_profile.md`` / ``.json`` over all
runs. The parser reads both the newer (TF >= 2.13, no [start] column) and the older layout,
with or without "INFO: " prefixes, and XNNPACK-internal op names with spaces.

Times with op profiling on include the profiler's own overhead (small per op, but these
models have ~100-400 small ops): quote "Inference (avg)" of a run without
``--enable_op_profiling`` for the headline latency and use this table for the split.
"""
from __future__ import annotations

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
    flags.DEFINE_multi_string("parse", None, "Only parse saved benchmark output file(s).")


# -- parsing -----------------------------------------------------------------------------------
def _strip(line):
    line = line.rstrip("\n")
    s = line.lstrip()
    return s[len("INFO: "):] if s.startswith("INFO: ") else line


def parse_benchmark_output(text: str) -> dict:
    """Parse the stdout of (lce_)benchmark_model --enable_op_profiling=true.

    Returns {"ops": [{"type", "count", "avg_ms", "percent", "cdf_percent", "mem_kb",
    "times_called"}] (as printed: slowest first), "ops_total_ms" (sum of avg ms),
    "avg_inference_ms" ("Inference (avg)", or the profile's "Timings" avg), "init_ms",
    "first_inference_ms", "warmup_avg_ms", "profiled_avg_ms" (the regular runs' Timings avg),
    "profiled_runs", "threads", "graph"}."""
    lines = [_strip(l) for l in text.splitlines()]
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
    for l in section:
        m = re.match(r"\s*Timings \(microseconds\):\s*count=(\d+).*?avg=" + _NUM, l)
        if m:
            res["profiled_runs"], res["profiled_avg_ms"] = int(m.group(1)), float(m.group(2)) / 1e3
            break
    res["ops_total_ms"] = round(sum(o["avg_ms"] for o in res["ops"]), 6)
    if res["avg_inference_ms"] is None:
        res["avg_inference_ms"] = res["profiled_avg_ms"]
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
    lines += ["- " + ", ".join(facts), "",
              "| op type | count | avg ms | % of total |", "|---|---:|---:|---:|"]
    lines += [f"| {o['type']} | {o['count']} | {o['avg_ms']:.3f} | {o['percent']:.1f}% |"
              for o in result["ops"]]
    binary = sum(o["avg_ms"] for o in result["ops"] if o["type"].startswith("Lce"))
    if binary:
        lines += ["", f"Lce* ops: {binary:.3f} ms = {100 * binary / result['ops_total_ms']:.1f}% "
                  "of the op time (LceBconv2d = binary convs; LceQuantize / LceDequantize = "
                  "bit-packing of activations)."]
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

    def push(self, local, remote_name=None):
        remote = f"{self.remote_dir}/{remote_name or os.path.basename(local)}"
        if self.kind == "adb":
            self._run(["adb", "-s", self.target, "push", local, remote])
        else:
            self._run(["scp", "-q", local, f"{self.target}:{remote}"])
        return remote


def profile_on_device(remote, models, binary, threads, extra_args="", out_dir="."):
    """Push, run every model at every thread count, save + parse stdout: {title: parsed}."""
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
            cmd = (f"{shlex.quote(rbin)} --graph={shlex.quote(rmodel)} --num_threads={int(n)} "
                   f"--enable_op_profiling=true {extra_args}").strip()
            print(f"[{remote.kind} {remote.target}] {cmd}", flush=True)
            out = remote.shell(cmd)
            title = f"{stem}_t{n}"
            with open(os.path.join(out_dir, title + ".txt"), "w") as f:
                f.write(out)
            results[title] = parse_benchmark_output(out)
            results[title]["device"] = f"{remote.kind}:{remote.target} ({arch})"
    return results


def main(argv):
    models = list(FLAGS.models) + list(argv[1:])
    output_paths.check_dir(FLAGS.out_dir, "--out_dir")
    if FLAGS.parse:
        results = {}
        for path in FLAGS.parse:
            with open(path, errors="replace") as f:  # not text: "no ... section" below
                results[os.path.splitext(os.path.basename(path))[0]] = \
                    parse_benchmark_output(f.read())
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
    print(json.dumps({t: {"avg_inference_ms": r["avg_inference_ms"],
                          "ops_total_ms": r["ops_total_ms"], "threads": r["threads"]}
                      for t, r in results.items()}))


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(DeviceError,))
