"""Evaluate a run directory or a .tflite on a Speech Commands folder.

Reads: --model (run directory, .weights.h5 or .tflite), the clips of --split in --data_dir,
  --reference (a second model, optional).
Writes: confusion-matrix PNGs (--plot, default next to the model); the result (--json_out);
  prints per-class accuracy, the confusion matrix and one JSON line.

    python -m pipeline.evaluate --model pretrained/real8/bifsmnv2 \\
        --data_dir ../shared/data/speech_commands_real8 --split testing [--depth 8|4|2|1|all]

Prints per-class and overall accuracy and the confusion matrix, writes a confusion-matrix PNG
(``--plot``, default next to the model), and prints one JSON line last with ``accuracy``, ``n``
and ``per_class``. The class list comes from the model. In the official test-set layout,
``_silence_`` clips are silence and ``_unknown_`` (or any word the model does not know) unknown;
without an unknown class those clips are skipped and counted.

``--reference OTHER`` (a run directory or .tflite, at the same depth) also runs OTHER on the same
clips and reports the per-clip top-1 agreement (``agreement_with_reference`` and the number of
clips where the two differ): e.g. an exported .tflite against its Keras checkpoint on the test
split.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from pipeline import checkpoints, cli, data_flags, output_paths, predictors
from pipeline.input_pipeline import InputPipeline, index_from_config
from pipeline.speech_commands import DataError

FLAGS = flags.FLAGS


def define_flags():
    """Flags of this tool (defined only when it runs, so tools can import each other)."""
    data_flags.define_flags()
    flags.DEFINE_string("model", None, "Run directory, .weights.h5, or .tflite.")
    flags.DEFINE_enum("split", "testing", ["testing", "validation", "training", "all"],
                      "Which split to evaluate ('all': every clip; the test-set layout has only "
                      "testing).")
    flags.DEFINE_string("depth", None, "Thinnable depth of a checkpoint (8/4/2/1 or 'all'; "
                        "default: the deepest).")
    flags.DEFINE_string("plot", None, "Confusion-matrix PNG path (default: next to the model).")
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.")
    flags.DEFINE_string("reference", None, "Another model (run directory or .tflite) run on the "
                        "same clips: per-clip top-1 agreement with --model.")


def confusion(y_true, y_pred, n):
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def clip_pipeline(cfg, labels) -> InputPipeline:
    """The clips of the data flags ``cfg`` labelled with the model's ``labels`` (its classes,
    in its order); says how many clips of classes the model lacks are skipped."""
    index = index_from_config(cfg, labels=labels)
    if any(index.ignored.values()):
        print(f"skipped {sum(index.ignored.values())} clip(s) of classes the model does not "
              "have (no _unknown_ class)")
    return InputPipeline(index, cfg)


def evaluate_predictor(pred: predictors.Predictor, pipe: InputPipeline, splits,
                       batch_size=256):
    ys, ps = [], []
    for split in splits:
        if not pipe.num_examples(split):
            continue
        ds = pipe.eval_audio(split, batch_size) if pred.input_kind == "audio" else \
            pipe.eval(split, batch_size)
        for x, y in ds:
            ps.append(np.argmax(pred.predict(x.numpy()), -1))
            ys.append(y.numpy())
    if not ys:
        raise DataError(f"no examples in split(s) {splits}")
    y, p = np.concatenate(ys), np.concatenate(ps)
    labels = pred.labels
    cm = confusion(y, p, len(labels))
    per_class = {l: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None)
                 for i, l in enumerate(labels)}
    return {"accuracy": float(np.mean(y == p)), "n": int(len(y)), "per_class": per_class,
            "confusion": cm.tolist(), "labels": labels, "predictions": p}


def format_report(result, title):
    labels, cm = result["labels"], np.array(result["confusion"])
    w = max(len(l) for l in labels) + 1
    lines = [f"{title}: accuracy {result['accuracy']:.4f} on {result['n']} clips", "",
             "class".ljust(w) + "   acc      n"]
    for i, l in enumerate(labels):
        acc = result["per_class"][l]
        lines.append(l.ljust(w) + (f"{acc:7.4f}" if acc is not None else "      -") +
                     f"{cm[i].sum():7d}")
    lines += ["", "confusion (rows: true, columns: predicted)",
              " " * w + "".join(f"{l[:6]:>7}" for l in labels)]
    lines += [l.ljust(w) + "".join(f"{v:7d}" for v in row) for l, row in zip(labels, cm)]
    return "\n".join(lines)


def plot_confusion(result, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.array(result["confusion"], float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(result["labels"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), result["labels"], rotation=60, ha="right")
    ax.set_yticks(range(n), result["labels"])
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {result['accuracy']:.2%} (n={result['n']})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(model_path, cfg, split="testing", depth=None, plot=None, batch_size=256, reference=None):
    """Evaluate; returns {depth-or-'tflite': result}. Used by the CLI and by tests.
    ``reference``: another model run on the same clips (a checkpoint at depth ``d``, or at the
    depth recorded with an exported ``model_path``; a .tflite reference runs once); each result
    then has ``agreement_with_reference`` and ``reference_differs``."""
    if model_path.endswith(".tflite"):
        depths = [None]
    else:
        trained = sorted(checkpoints.read_model_json(model_path)["training_depths"],
                         reverse=True)
        depths = trained if depth == "all" else [int(depth) if depth else trained[0]]
    results = {}
    pipe = None
    ref_predictions = {}  # reference depth -> its predictions on the evaluated clips
    for d in depths:
        pred = predictors.load_predictor(model_path, depth=d)
        if pipe is None:
            pipe = clip_pipeline(cfg, pred.labels)
        splits = ["training", "validation", "testing"] if split == "all" else [split]
        res = evaluate_predictor(pred, pipe, splits, batch_size)
        if reference:
            # a checkpoint reference runs at the depth evaluated: d, or the export's own
            ref_depth = None if reference.endswith(".tflite") else (
                d if d else (pred.description or {}).get("depth"))
            if ref_depth not in ref_predictions:
                ref = predictors.load_predictor(reference, depth=ref_depth)
                if ref.labels != pred.labels:
                    raise checkpoints.CheckpointError(
                        f"--reference {reference} has classes {ref.labels}, --model has "
                        f"{pred.labels}")
                ref_predictions[ref_depth] = evaluate_predictor(
                    ref, pipe, splits, batch_size)["predictions"]
            rp = ref_predictions[ref_depth]
            res["reference"] = reference
            res["agreement_with_reference"] = float(np.mean(rp == res["predictions"]))
            res["reference_differs"] = int(np.sum(rp != res["predictions"]))
        key = f"depth {d}" if d else pred.name
        res["model"], res["depth"], res["split"] = model_path, d, split
        res["skipped_unknown"] = int(sum(pipe.index.ignored.values()))
        print(format_report(res, f"{os.path.basename(model_path.rstrip('/'))} [{key}]"))
        if reference:
            print(f"top-1 agreement with {reference}: {res['agreement_with_reference']:.4f} "
                  f"({res['reference_differs']} of {res['n']} clips differ)")
        print()
        if plot is not False:
            base = model_path.rstrip("/")
            png = plot or (os.path.join(base, f"confusion_{split}_d{d}.png") if
                           os.path.isdir(base) else os.path.splitext(base)[0] +
                           f"_confusion_{split}.png")
            if len(depths) > 1 and plot:
                png = os.path.splitext(plot)[0] + f"_d{d}.png"
            plot_confusion(res, png, f"{os.path.basename(base)} [{key}], {split}")
            print(f"confusion matrix: {png}")
        results[d or pred.name] = res
    return results


def main(argv):
    del argv
    if not FLAGS.model:
        raise app.UsageError("--model is required (run directory, .weights.h5 or .tflite)")
    if not os.path.exists(FLAGS.model):
        raise checkpoints.CheckpointError(
            f"--model {FLAGS.model} does not exist; expected a run directory of pipeline.train, "
            "a .weights.h5 in one, or an exported .tflite")
    if FLAGS.plot:
        output_paths.check_file(FLAGS.plot, "--plot")
    else:  # the default: next to the model
        base = FLAGS.model.rstrip("/")
        output_paths.check_dir(base if os.path.isdir(base) else os.path.dirname(base) or ".",
                               "--plot (default: next to --model; pass --plot elsewhere)")
    output_paths.check_dir(FLAGS.cache_dir, "--cache_dir")
    results = run(FLAGS.model, data_flags.config_from_flags(), FLAGS.split, FLAGS.depth,
                  FLAGS.plot, FLAGS.batch_size, FLAGS.reference)
    if len(results) > 1:
        print("depth  accuracy      n")
        for k, v in results.items():
            print(f"{k!s:>5}  {v['accuracy']:8.4f}  {v['n']:5d}")
    first = next(iter(results.values()))
    summary = {k: first[k] for k in ("accuracy", "n", "per_class", "model", "depth", "split",
                                     "skipped_unknown", "reference", "agreement_with_reference",
                                     "reference_differs") if k in first}
    if len(results) > 1:
        summary["by_depth"] = {str(k): v["accuracy"] for k, v in results.items()}
    print(json.dumps(summary))
    # --json_out: the summary plus each depth's full result (without per-clip predictions)
    return dict(summary, results={str(k): {kk: vv for kk, vv in v.items() if kk != "predictions"}
                                  for k, v in results.items()})


if __name__ == "__main__":
    cli.run(main, define=define_flags)
