"""The recipe-search report as a picture: every run's test accuracy per group and depth.

One panel per depth (deepest first). Per group (a row of `pipeline.run_queue`'s report, the
queue's order): each evaluated run as a dot, the mean as a bar with the sample standard
deviation as its error bar when the group has two or more runs. Groups trained without a
``@teacher`` (the teachers) are drawn in a second colour, and the deepest-depth accuracy of
each run some entry names as its ``@teacher`` is a dashed line across the deepest panel, so
the gap the report tabulates is the distance from a student's bar to its teacher's line. Seeds
and folds of one group sit side by side, so run-to-run noise is visible next to the
differences between arms.
"""
import statistics
from typing import Dict, List, Optional

STUDENT_COLOR = "#1f77b4"
TEACHER_COLOR = "#d62728"


def plot_points(records: List[dict], split: str = "testing") -> Dict[int, List[dict]]:
    """Per depth: one item per group with runs evaluated at that depth, in queue order:
    ``{"group", "values" (fractions), "mean", "std" (None below 2 runs), "teacher_group"}``."""
    order: List[str] = []
    for r in records:
        if r["group"] not in order:
            order.append(r["group"])
    depths = sorted({d for r in records for d in r.get(split, {})}, reverse=True)
    points: Dict[int, List[dict]] = {}
    for d in depths:
        items = []
        for g in order:
            runs = [r for r in records if r["group"] == g]
            vals = [r[split][d] for r in runs if d in r.get(split, {})]
            if not vals:
                continue
            items.append({"group": g, "values": vals, "mean": statistics.mean(vals),
                          "std": statistics.stdev(vals) if len(vals) > 1 else None,
                          "teacher_group": all(not r.get("teacher") for r in runs)})
        points[d] = items
    return points


def plot_report(records: List[dict], path: str, split: str = "testing",
                title: Optional[str] = None) -> Optional[Dict[int, List[dict]]]:
    """Write the figure to ``path`` (PNG); returns what it drew (`plot_points`), or None and
    writes nothing when no run has been evaluated on ``split``."""
    points = plot_points(records, split)
    if not points or not any(points.values()):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = list(points)
    n_groups = max(len(items) for items in points.values())
    fig, axes = plt.subplots(1, len(depths), figsize=(max(6.0, 0.45 * n_groups * len(depths)) + 2,
                                                      4.8), sharey=True, squeeze=False)
    by_name = {r["name"]: r for r in records}
    teacher_runs = sorted({r["teacher"] for r in records if r.get("teacher")} & set(by_name))
    for ax, d in zip(axes[0], depths):
        items = points[d]
        for x, it in enumerate(items):
            color = TEACHER_COLOR if it["teacher_group"] else STUDENT_COLOR
            ax.bar(x, 100 * it["mean"], width=0.6, color=color, alpha=0.25,
                   yerr=None if it["std"] is None else 100 * it["std"], capsize=3,
                   error_kw={"elinewidth": 1.0, "ecolor": color})
            jitter = [(i - (len(it["values"]) - 1) / 2) * 0.12 for i in range(len(it["values"]))]
            ax.scatter([x + j for j in jitter], [100 * v for v in it["values"]], s=14,
                       color=color, zorder=3)
        if d == depths[0]:
            for t in teacher_runs:
                acc = by_name[t].get(split, {}).get(d)
                if acc is not None:
                    ax.axhline(100 * acc, color=TEACHER_COLOR, lw=0.8, ls="--")
                    ax.annotate(t, (len(items) - 0.5, 100 * acc), fontsize=7, ha="right",
                                va="bottom", color=TEACHER_COLOR)
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([it["group"] for it in items], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"depth {d}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    lo = min(v for items in points.values() for it in items for v in it["values"])
    hi = max(v for items in points.values() for it in items for v in it["values"])
    axes[0][0].set_ylim(100 * lo - 1.0, 100 * hi + 0.5)
    axes[0][0].set_ylabel(f"{split} accuracy, %")
    fig.suptitle(title or f"Recipe search: {split} accuracy (dots: runs; bars: each group's mean "
                 f"± s.d.; red: teachers; dashed: each teacher run at depth {depths[0]})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return points
