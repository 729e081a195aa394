"""Accuracy of a .tflite in the firmware (TFLite Micro + the project's ops), host or aarch64.

Reads: --model (a .tflite, which describes itself), the clips of --split in --data_dir,
  --reference (a second model, optional: a run directory or .tflite, run as pipeline.evaluate
  runs it).
Writes: a confusion-matrix PNG (--plot, default next to the model, `_firmware_<target>` in its
  name); the result (--json_out); prints per-class accuracy, the confusion matrix and one JSON
  line.

    python -m firmware_sim.run --model pretrained/real8/exports/bifsmnv2_binary_d8.tflite \\
        --data_dir ../shared/data/speech_commands_real8 --wanted_words yes,no,up,down,left,right,stop,go \\
        --unknown_percentage 0 --split testing --reference pretrained/real8/bifsmnv2 [--target aarch64]

The output and JSON of pipeline.evaluate, on the host build (x86-64) or the aarch64 build under
qemu-aarch64. The features come from the project's pipeline exactly as pipeline.evaluate makes them
(pipeline.input_pipeline; an int8 model's input quantized with its scale / zero point as
pipeline.predictors does); each batch of clips goes to the firmware (firmware_sim/firmware,
built by `make -C firmware_sim firmware`) as one tensor file, which runs every clip through
``MicroInterpreter::Invoke`` and writes the logits back. ``--target host`` is the x86-64 build,
``aarch64`` the ARMv8-A build under ``qemu-aarch64 -cpu cortex-a53``; ``--float_kernels
reference`` (TFLM's kernels, the default: bit-identical on both targets) or ``xnnpack``
(aarch64 only: XNNPACK's float kernels for the float ops). ``--reference`` reports the per-clip
top-1 agreement as pipeline.evaluate does (a checkpoint reference runs at the depth recorded in
the .tflite). The JSON line is pipeline.evaluate's plus ``firmware``: target, kernels, kernel
path, arena use, heap outside the arena, and ``logits_sha256`` (SHA-256 of every clip's float32
logits in order: equal on two targets means bit-identical outputs).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from absl import app, flags

from firmware_sim.firmware_runner import FirmwareError
from pipeline import checkpoints, cli, data_flags, output_paths, predictors
from pipeline.evaluate import clip_pipeline, evaluate_predictor, format_report, plot_confusion

FLAGS = flags.FLAGS


def define_flags():
    """Flags of this tool (defined only when it runs)."""
    from firmware_sim import firmware_runner as fw
    data_flags.define_flags()
    flags.DEFINE_string("model", None, "The .tflite to run in the firmware.")
    flags.DEFINE_enum("split", "testing", ["testing", "validation", "training", "all"],
                      "Which split to evaluate ('all': every clip).")
    flags.DEFINE_string("plot", None, "Confusion-matrix PNG path (default: next to the model).")
    flags.DEFINE_integer("batch_size", 256, "Clips per firmware run (one process each).",
                         lower_bound=1)
    flags.DEFINE_string("reference", None, "Another model (run directory or .tflite) run as "
                        "pipeline.evaluate runs it, on the same clips: per-clip top-1 agreement.")
    flags.DEFINE_enum("target", "host", list(fw.TARGETS), "host: the x86-64 firmware; aarch64: "
                      "the ARMv8-A firmware under qemu-aarch64 -cpu cortex-a53.")
    flags.DEFINE_enum("float_kernels", "reference", list(fw.FLOAT_KERNELS),
                      "Float ops on TFLM's reference kernels or on XNNPACK (aarch64 only).")
    flags.DEFINE_enum("kernel_path", "auto", list(fw.KERNEL_PATHS),
                      "Kernel path of the project's ops (a path the build lacks runs portable).")
    flags.DEFINE_integer("arena_size", 1 << 20, "TFLM arena in bytes.", lower_bound=1)


def run(model_path, cfg, split="testing", plot=None, batch_size=256, reference=None,
        target="host", float_kernels="reference", kernel_path="auto", arena_size=1 << 20):
    """Evaluate ``model_path`` in the firmware; returns the result dict (pipeline.evaluate's
    per-depth result, with ``firmware``). Used by the CLI and by tests."""
    from firmware_sim import firmware_runner as fw
    fw.build(target)
    pred = fw.predictor(model_path, target=target, float_kernels=float_kernels,
                        kernel_path=kernel_path, arena=arena_size)
    pipe = clip_pipeline(cfg, pred.labels)
    splits = ["training", "validation", "testing"] if split == "all" else [split]
    logits = hashlib.sha256()  # of every clip's float32 logits, in order: targets compare
    firmware_predict = pred.predict

    def predict(x):
        y = firmware_predict(x)
        logits.update(np.ascontiguousarray(y, np.float32).tobytes())
        return y

    pred.predict = predict
    res = evaluate_predictor(pred, pipe, splits, batch_size)
    if reference:
        ref_depth = None if reference.endswith(".tflite") else (pred.description or {}).get(
            "depth")
        ref = predictors.load_predictor(reference, depth=ref_depth)
        if ref.labels != pred.labels:
            raise checkpoints.CheckpointError(
                f"--reference {reference} has classes {ref.labels}, --model has {pred.labels}")
        rp = evaluate_predictor(ref, pipe, splits, batch_size)["predictions"]
        res["reference"] = reference
        res["agreement_with_reference"] = float(np.mean(rp == res["predictions"]))
        res["reference_differs"] = int(np.sum(rp != res["predictions"]))
    reps = pred.reports
    first = pred.firmware_info
    res["model"], res["depth"], res["split"] = model_path, (pred.description or {}).get(
        "depth"), split
    res["skipped_unknown"] = int(sum(pipe.index.ignored.values()))
    res["firmware"] = {
        "target": target, "float_kernels": float_kernels,
        "kernel_path": first["kernel_path"], "runtime": "TFLM 90b983c + lce_kernels/tflm",
        "kernels": sorted({f"{name}: {kernel}" for name, kernel in first["ops"]}),
        "arena_size": arena_size, "arena_used_bytes": first["arena_used_bytes"],
        "heap_bytes_after_prepare": first["heap"]["ops_after_prepare"],
        "xnnpack_heap_bytes": first["heap"]["xnnpack_after_prepare"],
        "allocations_during_invoke": int(sum(r["allocations_during_invoke"] for r in reps)),
        "firmware_runs": len(reps),
        "invoke_seconds": round(float(sum(r["invoke_seconds"] for r in reps)), 3),
        "logits_sha256": logits.hexdigest()}
    key = f"{pred.name} [firmware {target}, {float_kernels}]"
    print(format_report(res, key))
    if reference:
        print(f"top-1 agreement with {reference}: {res['agreement_with_reference']:.4f} "
              f"({res['reference_differs']} of {res['n']} clips differ)")
    print()
    if plot is not False:
        base = model_path.rstrip("/")
        png = plot or os.path.splitext(base)[0] + f"_firmware_{target}_confusion_{split}.png"
        plot_confusion(res, png, f"{os.path.basename(base)} [firmware {target}], {split}")
        print(f"confusion matrix: {png}")
    return res


def main(argv):
    del argv
    if not FLAGS.model:
        raise app.UsageError("--model is required (a .tflite)")
    if not FLAGS.model.endswith(".tflite") or not os.path.isfile(FLAGS.model):
        raise checkpoints.CheckpointError(
            f"--model {FLAGS.model} is not a .tflite file; the firmware runs exported models "
            "(pipeline.export)")
    if FLAGS.float_kernels == "xnnpack" and FLAGS.target != "aarch64":
        raise app.UsageError("--float_kernels xnnpack needs --target aarch64 (the host build "
                             "has TFLM's reference kernels only)")
    if FLAGS.plot:
        output_paths.check_file(FLAGS.plot, "--plot")
    else:
        output_paths.check_dir(os.path.dirname(FLAGS.model) or ".",
                               "--plot (default: next to --model; pass --plot elsewhere)")
    output_paths.check_dir(FLAGS.cache_dir, "--cache_dir")
    res = run(FLAGS.model, data_flags.config_from_flags(), FLAGS.split, FLAGS.plot,
              FLAGS.batch_size, FLAGS.reference, FLAGS.target, FLAGS.float_kernels,
              FLAGS.kernel_path, FLAGS.arena_size)
    summary = {k: res[k] for k in ("accuracy", "n", "per_class", "model", "depth", "split",
                                   "skipped_unknown", "reference", "agreement_with_reference",
                                   "reference_differs", "firmware") if k in res}
    print(json.dumps(summary))
    return dict(summary, results={str(res["depth"] or os.path.basename(FLAGS.model)): {
        k: v for k, v in res.items() if k != "predictions"}})


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(FirmwareError,))
