"""Several always-on streams, one table: hit rate, false accepts per hour, mean over seeds.

Reads: the details .json files that firmware_sim.stream writes next to each stream (--streams:
  files or folders; the ground-truth .truth.json files beside them are skipped).
Writes: a Markdown table on stdout (one row per model and loop: every stream's hit rate, false
  accepts, wrong words and median latency, and their means; then the operating curve, the
  --sweep thresholds averaged over the streams; with --baseline, every other row paired with
  that one keyword by keyword on the same streams: hit-rate difference with McNemar's exact
  test, false accepts with the exact test of two counts); the same as JSON (--json_out).

    python -m firmware_sim.stream --model M --data_dir D ... --minutes 60 --seed 0 --out_dir S
    python -m firmware_sim.stream --model M --data_dir D ... --minutes 60 --seed 1 --out_dir S
    python -m firmware_sim.stream_report --streams S

One 10-minute stream holds 100 keywords: one false accept is 6 per hour, and a model that makes
3 per hour shows 0 on half of its 10-minute streams. Comparing two loops needs several long
streams (different seeds place other clips at other times over other noise) and their spread,
which is what this prints: the mean and the per-stream values side by side. The streams of one
row should share their settings (length, split, detector); the table names the seeds it found
and refuses rows whose streams differ in length or detector threshold.

``--baseline NAME`` (a model path, or a part of it that names one row) adds a PAIRED
comparison of every other row with it on the same streams (same seeds, hence the same
keywords at the same times): per keyword, hit by one and missed by the other, and McNemar's
exact test on those discordant keywords (``paired_comparison``); false accepts, the two counts
over the same hours, with the exact conditional test (given their sum, each is a fair coin's
count under equal rates). A difference of a point in hit rate on 3 x 60 minutes (about 18
keywords of 1,800) can be noise; this says whether it is.

Everything comes from the .json files (and the .truth.json beside each): no model runs, no
audio is read. To re-score the cached
posteriors with another detector, run firmware_sim.stream again (the model runs in seconds on
the host).
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import app, flags

from firmware_sim import detector as det
from firmware_sim.stream_audio import StreamError, parse_truth

FLAGS = flags.FLAGS
_SEED = re.compile(r"_s(\d+)\.json$")


class ReportError(ValueError):
    """The given files are not firmware_sim.stream results, or one row mixes settings."""


def define_flags():
    flags.DEFINE_list("streams", None, "Details .json files of firmware_sim.stream, or folders "
                      "holding them (comma separated).")
    flags.DEFINE_string("baseline", None, "Compare every other row with this one, keyword by "
                        "keyword on the same streams (a model path or a part of it naming one "
                        "row; optionally 'NAME@loop').")


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
    truth_path, truth = path[:-len(".json")] + ".truth.json", None
    if os.path.exists(truth_path):
        try:
            with open(truth_path) as f:
                truth = json.load(f)
        except (OSError, ValueError) as e:
            raise ReportError(f"{path}: its {truth_path} cannot be read ({e})") from e
    seed = truth.get("seed") if isinstance(truth, dict) else None
    if seed is None:
        m = _SEED.search(os.path.basename(path))
        seed = int(m.group(1)) if m else None
    return {"path": path, "model": d["model"], "depth": d.get("depth"),
            "loop": d.get("loop", "windowed"), "seed": seed,
            "audio_seconds": float(d["audio_seconds"]), "threshold": d.get("threshold"),
            "metrics": d["metrics"], "sweep": d.get("sweep") or [],
            "keywords": None if truth is None else _keyword_hits(path, truth_path, truth, d)}


def _keyword_hits(path: str, truth_path: str, truth_data, d: dict):
    """Per keyword of the stream's ground truth (``truth_data``, the loaded .truth.json):
    (word, onset, hit?), re-scored from the stored detections with the stream's tolerances
    (the defaults when an older file lacks them). Checked against the stored hit count."""
    try:
        truth = parse_truth(truth_data, truth_path)
        dets = [det.Detection(float(x["time"]), str(x["word"]), float(x["score"]))
                for x in d.get("detections") or []]
    except (StreamError, KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{path}: its detections or {truth_path} cannot be read ({e})") from e
    m = det.score_detections(truth, dets, float(d["audio_seconds"]),
                             float(d.get("tolerance_before", 0.25)),
                             float(d.get("tolerance_after", 1.5)))
    if m["hits"] != d["metrics"].get("hits"):
        raise ReportError(f"{path}: re-scoring its detections gives {m['hits']} hits, the file "
                          f"says {d['metrics'].get('hits')} (other tolerances?)")
    return [(k.word, round(k.onset, 4), bool(h)) for k, h in zip(truth, m["hit_mask"])]


def _mean(values):
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(streams: Sequence[dict]) -> List[dict]:
    """Rows: one per (model, loop), streams in seed order; means over the streams."""
    groups: Dict[tuple, List[dict]] = {}
    for s in streams:
        groups.setdefault((s["model"], s["depth"], s["loop"]), []).append(s)
    rows = []
    for (path, depth, loop), ss in groups.items():
        # a run directory runs at any depth: the row's name says which (files since session 30)
        model = path if depth is None or path.endswith(".tflite") else f"{path} (depth {depth})"
        ss = sorted(ss, key=lambda s: (s["seed"] is None, s["seed"] or 0, s["path"]))
        seeds = [s["seed"] for s in ss if s["seed"] is not None]
        if len(seeds) != len(set(seeds)):
            raise ReportError(f"{model} ({loop}): two streams of the same seed ("
                              f"{', '.join(s['path'] for s in ss)}): runs of different settings "
                              "(another depth?) mixed in one row; report their folders apart")
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
            "_streams": ss,
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


def paired_comparison(base: dict, other: dict) -> dict:
    """``other`` against ``base`` (two rows of `summarize`) on the streams they share (same
    seed, same keywords at the same onsets; others are left out and counted).

    Hits: ``base_only`` keywords hit by the baseline alone, ``other_only`` by the other alone;
    McNemar's exact test: under equal hit rates each discordant keyword is a fair coin, p =
    the two-sided binomial test of ``other_only`` in ``base_only + other_only``. False accepts:
    the two totals over the same hours; under equal rates (Poisson), given their sum the
    other's count is Binomial(sum, 1/2): p = the two-sided binomial test."""
    from scipy import stats  # only the comparison needs it
    by_seed = {s["seed"]: s for s in base["_streams"]}
    shared, skipped = [], 0
    for s in other["_streams"]:
        b = by_seed.get(s["seed"])
        if (b is None or s["keywords"] is None or b["keywords"] is None or
                [k[:2] for k in s["keywords"]] != [k[:2] for k in b["keywords"]] or
                s["audio_seconds"] != b["audio_seconds"]):
            skipped += 1
            continue
        shared.append((b, s))
    if not shared:
        raise ReportError(f"{other['model']} and the baseline {base['model']} share no stream "
                          "(the same seed with the same keywords): nothing to pair")
    base_only = sum(kb[2] and not ko[2] for b, s in shared
                    for kb, ko in zip(b["keywords"], s["keywords"]))
    other_only = sum(ko[2] and not kb[2] for b, s in shared
                     for kb, ko in zip(b["keywords"], s["keywords"]))
    n_kw = sum(len(b["keywords"]) for b, _ in shared)
    fa_b = sum(b["metrics"]["false_accepts"] for b, _ in shared)
    fa_o = sum(s["metrics"]["false_accepts"] for _, s in shared)
    discordant = base_only + other_only
    return {
        "model": other["model"], "loop": other["loop"], "baseline": base["model"],
        "baseline_loop": base["loop"], "streams": len(shared), "streams_skipped": skipped,
        "keywords": n_kw, "base_only": base_only, "other_only": other_only,
        "hit_rate_difference": (other_only - base_only) / max(1, n_kw),
        "hits_p": float(stats.binomtest(other_only, discordant, 0.5).pvalue) if discordant
        else 1.0,
        "false_accepts": fa_o, "baseline_false_accepts": fa_b,
        "hours": sum(s["audio_seconds"] for _, s in shared) / 3600.0,
        "false_accepts_p": float(stats.binomtest(fa_o, fa_b + fa_o, 0.5).pvalue)
        if fa_b + fa_o else 1.0,
    }


def pick_baseline(rows: Sequence[dict], name: str) -> dict:
    """The one row whose model is ``name`` or contains it (``NAME@loop`` also matches the
    loop)."""
    want, _, loop = name.partition("@")
    exact = [r for r in rows if r["model"] == want and (not loop or r["loop"] == loop)]
    found = exact or [r for r in rows if want in r["model"] and (not loop or r["loop"] == loop)]
    if len(found) != 1:
        raise ReportError(f"--baseline {name} names {len(found)} rows "
                          f"({', '.join(r['model'] + '@' + r['loop'] for r in found) or 'none'}); "
                          "it must name exactly one (add @loop or more of the path)")
    return found[0]


def format_comparisons(pairs: Sequence[dict]) -> str:
    if not pairs:
        return ""
    p0 = pairs[0]
    out = [f"\nPaired against {p0['baseline']} ({p0['baseline_loop']}), keyword by keyword on "
           "the same streams (McNemar's exact test; false accepts: exact test of the two counts "
           "over the same hours; a difference is beyond the streams' noise when p < 0.05):",
           "| model | loop | streams | hit rate, this - baseline | hit by the baseline only / "
           "by this only | p (hits) | false accepts, this / baseline | p (false accepts) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in pairs:
        out.append(f"| {c['model']} | {c['loop']} | {c['streams']}"
                   + (f" (+{c['streams_skipped']} unpaired)" if c["streams_skipped"] else "")
                   + f" | {100 * c['hit_rate_difference']:+.2f} points | {c['base_only']} / "
                   f"{c['other_only']} | {c['hits_p']:.2f} | {c['false_accepts']} / "
                   f"{c['baseline_false_accepts']} in {c['hours']:g} h | "
                   f"{c['false_accepts_p']:.2f} |")
    return "\n".join(out)


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


def run(paths: Sequence[str], baseline: Optional[str] = None):
    """Rows (`summarize`) and, with ``baseline``, every other row paired against it."""
    rows = summarize([read_stream(p) for p in stream_files(paths)])
    pairs = []
    if baseline:
        base = pick_baseline(rows, baseline)
        pairs = [paired_comparison(base, r) for r in rows if r is not base]
    return rows, pairs


def main(argv):
    del argv
    if not FLAGS.streams:
        raise app.UsageError("--streams is required: the .json files of firmware_sim.stream, "
                             "or their folders")
    rows, pairs = run(FLAGS.streams, FLAGS.baseline)
    print(format_table(rows))
    if pairs:
        print(format_comparisons(pairs))
    return {"rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
            "paired": pairs}


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags, errors=(ReportError,))
