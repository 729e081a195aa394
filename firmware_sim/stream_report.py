"""Several always-on streams, one table: hit rate, false accepts per hour, mean over seeds.

Reads: the details .json files that firmware_sim.stream writes next to each stream (--streams:
  files or folders; the ground-truth .truth.json files beside them are skipped).
Writes: a Markdown table on stdout (one row per model and loop: every stream's hit rate, false
  accepts, wrong words and median latency, and their means; then the operating curve, the
  --sweep thresholds averaged over the streams); the same as JSON (--json_out).

    python -m firmware_sim.stream --model M --data_dir D ... --minutes 60 --seed 0 --out_dir S
    python -m firmware_sim.stream --model M --data_dir D ... --minutes 60 --seed 1 --out_dir S
    python -m firmware_sim.stream_report --streams S

One 10-minute stream holds 100 keywords: one false accept is 6 per hour, and a model that makes
3 per hour shows 0 on half of its 10-minute streams. Comparing two loops needs several long
streams (different seeds place other clips at other times over other noise) and their spread,
which is what this prints: the mean and the per-stream values side by side. The streams of one
row should share their settings (length, split, detector); the table names the seeds it found
and refuses rows whose streams differ in length or detector threshold.

Everything comes from the .json files: no model runs, no audio is read. To re-score the cached
posteriors with another detector, run firmware_sim.stream again (the model runs in seconds on
the host).
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, List, Sequence

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
_SEED = re.compile(r"_s(\d+)\.json$")


class ReportError(ValueError):
    """The given files are not firmware_sim.stream results, or one row mixes settings."""


def define_flags():
    flags.DEFINE_list("streams", None, "Details .json files of firmware_sim.stream, or folders "
                      "holding them (comma separated).")


def stream_files(paths: Sequence[str]) -> List[str]:
    """Every details .json under ``paths`` (files as given, folders searched one level)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(f for f in glob.glob(os.path.join(p, "*.json"))
                           if not f.endswith(".truth.json"))
            if not found:
                raise ReportError(f"{p}: no firmware_sim.stream .json in this folder")
            out += found
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ReportError(f"{p}: no such file or folder")
    return out


def read_stream(path: str) -> dict:
    """One firmware_sim.stream result: model, loop, seed, metrics and sweep rows."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: not readable as JSON ({e})") from e
    if not isinstance(d, dict) or not {"model", "metrics", "audio_seconds"} <= set(d):
        raise ReportError(f"{path}: not a firmware_sim.stream details .json (expected the keys "
                          "model, metrics, audio_seconds)")
    if not d["metrics"]:
        raise ReportError(f"{path}: a stream without ground truth (a --wav without --truth): "
                          "nothing to score")
    seed = None
    truth = path[:-len(".json")] + ".truth.json"
    if os.path.exists(truth):
        try:
            with open(truth) as f:
                seed = json.load(f).get("seed")
        except (OSError, ValueError, AttributeError):
            seed = None
    if seed is None:
        m = _SEED.search(os.path.basename(path))
        seed = int(m.group(1)) if m else None
    return {"path": path, "model": d["model"], "loop": d.get("loop", "windowed"), "seed": seed,
            "audio_seconds": float(d["audio_seconds"]), "threshold": d.get("threshold"),
            "metrics": d["metrics"], "sweep": d.get("sweep") or []}


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(streams: Sequence[dict]) -> List[dict]:
    """Rows: one per (model, loop), streams in seed order; means over the streams."""
    groups: Dict[tuple, List[dict]] = {}
    for s in streams:
        groups.setdefault((s["model"], s["loop"]), []).append(s)
    rows = []
    for (model, loop), ss in groups.items():
        ss = sorted(ss, key=lambda s: (s["seed"] is None, s["seed"] or 0, s["path"]))
        for key, what in (("audio_seconds", "lengths"), ("threshold", "detector thresholds")):
            if len({s[key] for s in ss}) > 1:
                raise ReportError(f"{model} ({loop}): the streams differ in {what} "
                                  f"({sorted({s[key] for s in ss})}); one row averages streams "
                                  "of the same settings")
        m = [s["metrics"] for s in ss]
        curve = {}
        for s in ss:
            for r in s["sweep"]:
                curve.setdefault(float(r["threshold"]), []).append(r)
        rows.append({
            "model": model, "loop": loop, "streams": len(ss), "seeds": [s["seed"] for s in ss],
            "minutes": ss[0]["audio_seconds"] / 60.0, "threshold": ss[0]["threshold"],
            "keywords": int(sum(x["keywords"] for x in m)),
            "hit_rate": [x["hit_rate"] for x in m],
            "false_accepts": [x["false_accepts"] for x in m],
            "false_accepts_per_hour": [x["false_accepts_per_hour"] for x in m],
            "wrong_word": [x["wrong_word"] for x in m],
            "median_latency_s": [x["median_latency_s"] for x in m],
            "mean": {"hit_rate": sum(x["hits"] for x in m) / max(1, sum(x["keywords"] for x in m)),
                     "false_accepts_per_hour": _mean(x["false_accepts_per_hour"] for x in m),
                     "wrong_word": _mean(x["wrong_word"] for x in m),
                     "median_latency_s": _mean(x["median_latency_s"] for x in m)},
            "curve": [{"threshold": th, "streams": len(rs),
                       "hit_rate": sum(r["hits"] for r in rs) /
                       max(1, sum(r["hits"] + r["misses"] for r in rs)),
                       "false_accepts_per_hour": _mean(r["false_accepts_per_hour"] for r in rs),
                       "wrong_word": _mean(r["wrong_word"] for r in rs)}
                      for th, rs in sorted(curve.items())],
        })
    return rows


def _fmt(values, f):
    return " / ".join("-" if v is None else f(v) for v in values)


def format_table(rows: Sequence[dict]) -> str:
    out = ["| model | loop | streams (seeds) | hits | false accepts / h | wrong words | "
           "median latency |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mn = r["mean"]
        out.append(
            f"| {r['model']} | {r['loop']} | {r['streams']} x {r['minutes']:g} min "
            f"({_fmt(r['seeds'], str)}) | {_fmt(r['hit_rate'], lambda v: f'{100 * v:.1f}')} % "
            f"(**{100 * mn['hit_rate']:.2f}**) | {_fmt(r['false_accepts_per_hour'], '{:g}'.format)}"
            f" (**{mn['false_accepts_per_hour']:.1f}**) | {_fmt(r['wrong_word'], str)} "
            f"({mn['wrong_word']:.1f}) | {_fmt(r['median_latency_s'], '{:.2f}'.format)} s |")
    out.append(f"(threshold {rows[0]['threshold'] if rows else '-'}; bold: the mean over the "
               "streams, hits pooled)")
    for r in rows:
        if r["curve"]:
            out.append(f"\noperating curve, {r['model']} ({r['loop']}), mean of "
                       f"{r['streams']} streams:")
            out.append("| threshold | hits | false accepts / h | wrong words |")
            out.append("|---:|---:|---:|---:|")
            for c in r["curve"]:
                out.append(f"| {c['threshold']:g} | {100 * c['hit_rate']:.2f} % | "
                           f"{c['false_accepts_per_hour']:.1f} | {c['wrong_word']:.1f} |")
    return "\n".join(out)


def run(paths: Sequence[str]) -> List[dict]:
    return summarize([read_stream(p) for p in stream_files(paths)])


def main(argv):
    del argv
    if not FLAGS.streams:
        raise app.UsageError("--streams is required: the .json files of firmware_sim.stream, "
                             "or their folders")
    rows = run(FLAGS.streams)
    print(format_table(rows))
    return {"rows": rows}


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags, errors=(ReportError,))
