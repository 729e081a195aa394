"""The always-on loop as a picture: an excerpt of the stream (waveform, smoothed posteriors,
keywords and detections, coloured by outcome) and, for long streams, the whole stream one row
per ``row_s`` seconds (``plot_stream``; the excerpt is where most errors are, ``pick_excerpt``).
"""
from __future__ import annotations

import math

import numpy as np

from firmware_sim import detector as det
from firmware_sim.stream_audio import SAMPLE_RATE


def pick_excerpt(truth, detections, outcomes, seconds, length, start=None):
    """Excerpt start: given, or the ``length`` s window with the most errors (misses, false
    accepts, wrong words), or the beginning."""
    if seconds <= length:
        return 0.0
    if start is not None:
        return float(min(max(start, 0.0), seconds - length))
    bad = [k.onset for k, hit in truth if not hit] + \
        [d.time for d, o in zip(detections, outcomes) if o != "hit"]
    if not bad:
        return 0.0
    bad = np.sort(bad)
    best = max(bad, key=lambda b: np.sum((bad >= b - 2) & (bad < b - 2 + length)))
    return float(min(max(best - 2.0, 0.0), seconds - length))


def plot_stream(path, audio, times_ms, trace: det.DetectorTrace, truth, metrics, threshold,
                title, excerpt_s=30.0, excerpt_start=None, row_s=150.0):
    """PNG: an excerpt (waveform; smoothed posteriors, keywords and detections) and, for long
    streams, a summary of the whole stream (one row per ``row_s`` seconds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = len(audio) / SAMPLE_RATE
    labels = trace.labels
    avg = trace.averaged()
    t = np.asarray(times_ms) / 1000.0
    dets = trace.detections
    outcomes = metrics["outcomes"] if metrics else ["?"] * len(dets)
    hits = metrics["hit_mask"] if metrics else [False] * len(truth)
    kw_words = [l for l in labels if l not in (det.SILENCE_LABEL, det.UNKNOWN_LABEL)]
    cmap = plt.get_cmap("tab10")
    color = {w: cmap(i % 10) for i, w in enumerate(kw_words)}
    color.update({det.SILENCE_LABEL: "0.6", det.UNKNOWN_LABEL: "0.35"})
    ocolor = {"hit": "tab:green", "wrong_word": "tab:orange", "duplicate": "tab:purple",
              "false_accept": "tab:red", "?": "k"}

    start = pick_excerpt(list(zip(truth, hits)), dets, outcomes, seconds, excerpt_s,
                         excerpt_start)
    stop = min(start + excerpt_s, seconds)
    n_rows = int(math.ceil(seconds / row_s)) if seconds > excerpt_s else 0
    fig = plt.figure(figsize=(16, 6.5 + 1.1 * n_rows))
    heights = [1.2, 2.2] + ([0.45] + [0.8] * n_rows if n_rows else [])
    gs = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.35)
    ax_w = fig.add_subplot(gs[0])
    ax_p = fig.add_subplot(gs[1], sharex=ax_w)

    a, b = int(start * SAMPLE_RATE), int(stop * SAMPLE_RATE)
    x = np.asarray(audio[a:b])
    step = max(1, len(x) // 8000)
    ax_w.plot(start + np.arange(0, len(x), step) / SAMPLE_RATE, x[::step], lw=0.4, color="0.2")
    ax_w.set_ylabel("audio")
    ax_w.set_title(title, fontsize=10)
    sel = (t >= start) & (t <= stop)
    for i, l in enumerate(labels):
        ax_p.plot(t[sel], avg[sel, i], lw=1.3 if l in kw_words else 0.9,
                  color=color.get(l, "k"), label=l.strip("_"), ls="-" if l in kw_words else ":")
    ax_p.axhline(threshold, color="k", lw=0.7, ls="--")
    ax_p.set_ylim(-0.02, 1.12)
    ax_p.set_ylabel("smoothed posterior")
    ax_p.set_xlabel("time (s); posteriors and detections at the end of their window",
                    fontsize=9)
    for k, hit in zip(truth, hits):
        if k.offset < start or k.onset > stop:
            continue
        for ax in (ax_w, ax_p):
            ax.axvspan(k.onset, k.offset, color=color.get(k.word, "0.5"), alpha=0.18, lw=0)
        ax_w.text(k.onset, 0.97, " " + k.word + ("" if hit or not metrics else " (miss)"),
                  transform=ax_w.get_xaxis_transform(), fontsize=8, va="top",
                  color="tab:red" if metrics and not hit else "k")
    for d, o in zip(dets, outcomes):
        if start <= d.time <= stop:
            ax_p.plot(d.time, 1.06, marker="v", ms=8, color=ocolor.get(o, "k"))
            ax_p.text(d.time, 1.08, f" {d.word} {d.score:.2f}", fontsize=7, va="bottom",
                      color=ocolor.get(o, "k"))
    ax_p.set_xlim(start, stop)
    ax_p.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)

    if n_rows:
        ax_t = fig.add_subplot(gs[2])
        ax_t.axis("off")
        summary = (f"whole stream ({seconds / 60:.1f} min): shaded = the excerpt above; "
                   "keywords: green hit, red miss (below the line); detections: green hit, "
                   "red false accept, orange wrong word, purple duplicate (above)")
        ax_t.text(0, 0.15, summary, fontsize=9, va="center")
        for r in range(n_rows):
            lo, hi = r * row_s, min((r + 1) * row_s, seconds)
            ax = fig.add_subplot(gs[3 + r])
            top = np.full(len(t), np.nan)
            if kw_words:
                kw_avg = avg[:, [labels.index(w) for w in kw_words]]
                ok = ~np.isnan(kw_avg).any(axis=1)
                top[ok] = kw_avg[ok].max(axis=1)
            s2 = (t >= lo) & (t <= hi)
            ax.plot(t[s2], top[s2], lw=0.6, color="0.4")
            ax.axhline(threshold, color="k", lw=0.5, ls="--")
            for k, hit in zip(truth, hits):
                if lo <= k.onset < hi:
                    c = "tab:green" if hit else "tab:red"
                    ax.plot(k.onset, -0.25, marker="^", ms=6, color=c)
                    ax.text(k.onset, -0.75, k.word, fontsize=6, ha="center", color=c)
            for d, o in zip(dets, outcomes):
                if lo <= d.time < hi:
                    ax.plot(d.time, 1.25, marker="v", ms=6, color=ocolor.get(o, "k"))
                    if o != "hit":
                        ax.text(d.time, 1.45, d.word, fontsize=6, ha="center",
                                color=ocolor.get(o, "k"))
            if start < hi and stop > lo:
                ax.axvspan(max(start, lo), min(stop, hi), color="tab:blue", alpha=0.08, lw=0)
            ax.set_xlim(lo, lo + row_s if n_rows > 1 else seconds)
            ax.set_ylim(-1.0, 1.8)
            ax.set_yticks([0, 1])
            ax.tick_params(labelsize=7)
            ax.set_ylabel("top kw", fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
