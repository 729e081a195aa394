"""Host latency of .tflite models, side by side in one process.

Reads: --models (.tflite files), --backbone (a bdfsmn export, optional), --teacher (a teacher
  run directory for the float backbone's weights, optional).
Writes: the two backbone .tflite files into --out_dir (with --backbone; default a temporary
  folder); the timings (--json_out); prints a table and one JSON line.

    python -m pipeline.benchmark --models build/export/bifsmnv2_lce_d8.tflite \\
        build/export/dfsmn_float_d8.tflite build/export/dfsmn_int8_d8.tflite \\
        [--threads 1] [--runs 100] [--warmup 10]

Each model runs on the runtime it needs: a model with any Lce* op on the Larq Compute Engine
interpreter (``larq_compute_engine.tflite.python.interpreter``; XNNPACK off, as LCE's own
default), every other model on TensorFlow's ``tf.lite.Interpreter`` (XNNPACK delegate, the
default CPU path in TF 2.16). One timed run = set the input, invoke, read the output, batch 1,
on a fixed random input of the model's dtype / shape. After ``--warmup`` runs of each model
the ``--runs`` timed runs are interleaved round-robin (model order rotated every round), so
machine noise (other processes, frequency changes) hits every model alike; Python's garbage
collector is off while timing (as ``timeit`` does).

``--burst N``: each turn of the round-robin runs a model N times in a row (every run timed on
its own; default 1). With 1 the models alternate run by run, so every run starts with the
caches holding the OTHER models' data: a small model timed beside the 2.4 MB float teacher
(more than this host's 2 MB L2) reloads its weights from L3 at every run. With N > 1 each
model is timed in its steady state, as TFLite's ``benchmark_model`` and LCE's
``lce_benchmark_model`` time one model alone and as an always-on spotter runs its one model,
while the turns still interleave, so drift hits every model alike. Both are reported in
the README where they differ.

Output: a table (median / p90 / mean / min ms, runtime, threads), notes, and as the LAST
line one JSON object mapping each model file name to
``{"median_ms", "p90_ms", "mean_ms", "min_ms", "runtime", "threads", "runs", "burst"}``.

Models with the project's ``ops.BDFSMN`` custom ops (``pipeline.export --flavor bdfsmn`` or
``binary``) run on TensorFlow's ``InterpreterWithCustomOps`` with the project's registerer
(``ops.registerer``: every op of ``ops.ALL_OPS`` from lce_kernels/build/libbdfsmn_op.so,
built if missing; ``ops``: ``lce_kernels.ops``); XNNPACK still takes their builtin ops.
``--project_ops A.tflite`` times a model with LCE ops ALSO that way (as ``A@ops.tflite``),
beside LCE's own interpreter in the same run.

Backbone comparison (``--backbone EXPORT.tflite``, a bdfsmn export): two more models are
made and timed in the SAME interleaved run: ``bdfsmn_backbone.tflite`` (just the export's
``ops.BDFSMN`` ops: the DFSMN layers bitwise, same constants) and ``float_backbone.tflite`` (the
full-precision DFSMN backbone with the same shapes and layer count: depthwise conv + 1x1
convs, BN folded by the converter, ReLU / PReLU, residuals; TensorFlow's interpreter with
XNNPACK; teacher weights with ``--teacher``, else random: latency does not depend on
the values). They are written to ``--out_dir`` (default: a temporary folder). The last
JSON line then also has ``backbone_speedup`` (float median / bitwise median),
``kernel_path`` (the op's kernel path here: avx512 on x86-64 CPUs with AVX512F + VPOPCNTDQ,
else portable; neon on aarch64) and ``backbone_weight_bytes`` (packed bit words + per-channel
vectors vs float32). ``--bdfsmn_paths portable`` adds the bitwise backbone on other kernel
paths to the same interleaved run (``backbone_speedup_by_path``).

    python -m pipeline.benchmark --backbone build/export/bifsmnv2_bdfsmn_d8.tflite \\
        [--models build/export/bifsmnv2_bdfsmn_d8.tflite ...] --threads 1

THESE ARE HOST NUMBERS. LCE's optimized binary kernels (bit-packed bgemm with NEON) are built
for ARM64 (aarch64) only; on an x86-64 host the Lce* ops run portable C++ kernels, so LCE
timings here say nothing about a phone or a Raspberry Pi. Measure on the device with
``pipeline.device_profile`` (lce_benchmark_model).
"""
from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import sys
import time

import numpy as np
from absl import app, flags

import models  # noqa: F401  (Keras 2 before TensorFlow)
from lce_kernels import ops
from models.lce_census import constant_bytes, has_lce_ops, has_own_ops
from pipeline import cli, cli_vocabulary, output_paths

FLAGS = flags.FLAGS


class BenchmarkError(ValueError):
    """Models the benchmark cannot time as asked (missing, not a bdfsmn export, ...)."""

HOST_NOTE = ("LCE's optimized binary kernels are ARM64 (aarch64) only: on this {arch} host the "
             "Lce* ops run portable kernels, so LCE timings here are NOT device numbers "
             "(use pipeline.device_profile with lce_benchmark_model on the device).")


def define_flags():
    flags.DEFINE_list("models", [], "The .tflite files (comma separated; more may follow as "
                      "plain arguments).")
    flags.DEFINE_integer("threads", 1, "Interpreter threads.")
    flags.DEFINE_integer("runs", 100, "Timed runs per model.")
    flags.DEFINE_integer("warmup", 10, "Untimed runs per model first.")
    flags.DEFINE_integer("burst", 1, "Timed runs of a model in a row per round-robin turn "
                         "(1: the models alternate run by run, each starting with the others' "
                         "data in the caches; N > 1: each model's steady state, as "
                         "benchmark_model times one model alone).", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the random input.")
    flags.DEFINE_string("backbone", None, "A bdfsmn export: also time its DFSMN layers alone, "
                        f"bitwise ({ops.BDFSMN}) vs float TFLite + XNNPACK, side by side.")
    flags.DEFINE_string("teacher", None, "Teacher run directory: weights of the float "
                        "backbone (optional; latency does not depend on them).")
    flags.DEFINE_string("out_dir", None, "Where to write the two backbone .tflite files "
                        "(default: a temporary folder).")
    flags.DEFINE_list("bdfsmn_paths", [], "With --backbone: also time the bitwise backbone on "
                      "these kernel paths of the op (portable, avx512, neon), side by side in "
                      "the same run (one registerer per interpreter).")
    flags.DEFINE_list("project_ops", [], "Models with LCE ops (lce exports) to time ALSO "
                      "through the project's op library (TensorFlow's interpreter with "
                      "ops.registerers()), as <name>@ops.tflite beside LCE's interpreter "
                      "in the same run (copied into --out_dir).")
    cli_vocabulary.define_aliases("pipeline.benchmark")  # --backbone_teacher, --backbone_dir


class _Model:
    """One .tflite, ready to run on its runtime with a fixed input."""

    def __init__(self, path, threads, rng, kernel_path=None):
        """``kernel_path``: run the model through the project's op library (every op of
        ``ops.ALL_OPS``, ``ops.registerer(kernel_path)``) on TensorFlow's interpreter, even a
        model LCE's interpreter could run (an lce export)."""
        self.path, self.name = path, os.path.basename(path)
        with open(path, "rb") as f:
            data = f.read()
        from pipeline.model_verify import verify_model
        verify_model(data, path)  # before anything parses the bytes or builds an interpreter
        self.runtime = "lce" if has_lce_ops(data) else "tflite+xnnpack"
        registerers = None
        if kernel_path or has_own_ops(data):  # the project's ops: one registerer each
            registerers = [ops.registerer(kernel_path or "auto")]
            self.runtime = (f"tflite+{ops.BDFSMN}" if not has_lce_ops(data) else
                            "tflite+project_ops")
            if kernel_path:
                self.runtime += f"[{kernel_path}]"
        if self.runtime == "lce":
            from larq_compute_engine.tflite.python.interpreter import Interpreter
            self._lce = Interpreter(data, num_threads=threads).interpreter  # C++ wrapper
            shape, dtype = self._lce.input_shapes[0], self._lce.input_types[0]
            self.x = [self._random(rng, shape, dtype)]
            self.run = lambda: self._lce.predict(self.x)
        else:
            import tensorflow as tf
            if registerers:
                from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
                self._tf = InterpreterWithCustomOps(model_content=data, num_threads=threads,
                                                    custom_op_registerers=registerers)
            else:
                self._tf = tf.lite.Interpreter(model_content=data, num_threads=threads)
            self._tf.allocate_tensors()
            inp, out = self._tf.get_input_details()[0], self._tf.get_output_details()[0]
            self.x = self._random(rng, inp["shape"], inp["dtype"])
            self._in, self._out = inp["index"], out["index"]

            def run():
                self._tf.set_tensor(self._in, self.x)
                self._tf.invoke()
                return self._tf.get_tensor(self._out)

            self.run = run
        self.times = []

    @staticmethod
    def _random(rng, shape, dtype):
        shape = [max(1, int(s)) for s in shape]
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def benchmark(paths, threads=1, runs=100, warmup=10, seed=0, kernel_paths=None, burst=1):
    """{file name: stats} for the models, timed round-robin in one process.
    ``kernel_paths``: {file: kernel path} for models that should run through the project's op
    library (``ops.registerer(kernel_path)``) on that kernel path. ``burst``: timed runs of a
    model in a row per turn (module docstring)."""
    if burst < 1 or runs < 1:
        raise BenchmarkError(f"runs and burst must be at least 1 (runs={runs}, burst={burst})")
    rng = np.random.default_rng(seed)
    kernel_paths = kernel_paths or {}
    ms = [_Model(p, threads, rng, kernel_paths.get(p)) for p in paths]
    names = [m.name for m in ms]
    if len(set(names)) != len(names):
        raise BenchmarkError(f"model file names must be distinct: {names}")
    for m in ms:
        for _ in range(warmup):
            m.run()
    # Python's cyclic garbage collector stays off while timing (as timeit does): a collection
    # walks every object of the process (TensorFlow's are many) inside whichever run triggers
    # it, noise of tens of microseconds that belongs to no model.
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range((runs + burst - 1) // burst):
            k = r % len(ms)
            n = min(burst, runs - r * burst)
            for m in ms[k:] + ms[:k]:  # rotate the order: no model always runs first
                for _ in range(n):
                    t0 = time.perf_counter()
                    m.run()
                    m.times.append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    out = {}
    for m in ms:
        t = np.array(m.times) * 1e3
        out[m.name] = {"median_ms": round(float(np.median(t)), 4),
                       "p90_ms": round(float(np.percentile(t, 90)), 4),
                       "mean_ms": round(float(t.mean()), 4), "min_ms": round(float(t.min()), 4),
                       "runtime": m.runtime, "threads": threads, "runs": runs,
                       "burst": burst}
    return out


BIT_BACKBONE, FLOAT_BACKBONE = "bdfsmn_backbone.tflite", "float_backbone.tflite"
CALL_OVERHEAD = "call_overhead.tflite"  # one ABS op, the backbone's input shape
KERNEL_PATHS = ("auto", "portable", "avx512", "neon")


def backbone_models(export_path, out_dir, teacher=None):
    """Write the bitwise and the float backbone .tflite of a bdfsmn export, and the one-op
    call-overhead model, into ``out_dir``. Returns (bitwise, float, overhead paths, storage)."""
    from pipeline import bdfsmn
    with open(export_path, "rb") as f:
        data = f.read()
    from pipeline.model_verify import verify_model
    verify_model(data, export_path)  # before the flatbuffer reader parses it
    layers, x_shape = ops.extract_bdfsmn_layers(data)
    if not layers:
        raise BenchmarkError(f"{export_path} has no {ops.BDFSMN} ops; expected a bdfsmn export "
                             "(pipeline.export --flavor bdfsmn)")
    t_model = None
    if teacher:
        from pipeline import checkpoints
        t_model = checkpoints.load_model(teacher, depth=len(layers))
    bit = bdfsmn.backbone_model(layers, x_shape)
    flt = bdfsmn.float_backbone(layers, x_shape, teacher=t_model)
    nop = bdfsmn.call_overhead_model(x_shape)
    os.makedirs(out_dir, exist_ok=True)
    paths = tuple(os.path.join(out_dir, n) for n in (BIT_BACKBONE, FLOAT_BACKBONE, CALL_OVERHEAD))
    for p, fb in zip(paths, (bit, flt, nop)):
        with open(p, "wb") as f:
            f.write(fb)
    packed = bdfsmn.packed_bytes(layers)
    f32 = bdfsmn.float_weight_bytes(layers)
    flt_const = constant_bytes(flt)["total"]
    storage = {"layers": len(layers), "packed": packed,
               "float32_weights": f32, "float_tflite_constants": int(flt_const),
               "ratio_vs_float32_weights": round(f32 / packed["total"], 2),
               "ratio_vs_float_tflite_constants": round(flt_const / packed["total"], 2),
               "ratio_bit_words_vs_float32_weights": round(f32 / packed["bit_weights"], 2)}
    return paths[0], paths[1], paths[2], storage


def path_variant(name, kernel_path):
    """File name of the bitwise backbone timed on one kernel path."""
    return name.replace(".tflite", f"@{kernel_path}.tflite")


def add_backbone(results, storage, kernel_path="?", extra_paths=()):
    """Add ``backbone_speedup`` (float median / bitwise median), ``backbone_weight_bytes``,
    ``kernel_path`` (what the op's auto path resolves to) and, for ``extra_paths``,
    ``backbone_speedup_by_path`` to ``results`` (in place); returns the report lines."""
    bit, flt = results[BIT_BACKBONE], results[FLOAT_BACKBONE]
    speedup = flt["median_ms"] / bit["median_ms"]
    p = storage["packed"]
    results["backbone_speedup"] = round(speedup, 3)
    lines_net = []
    nop = results.get(CALL_OVERHEAD)
    if nop is not None:  # the same Python call around both: time of the layers alone
        o = nop["median_ms"]
        net_bit, net_flt = bit["median_ms"] - o, flt["median_ms"] - o
        results["call_overhead_ms"] = o
        if net_bit > 0 and net_flt > 0:
            results["backbone_speedup_net"] = round(net_flt / net_bit, 3)
            lines_net.append(
                f"  less the call overhead ({o:.4f} ms: a one-op model, same input, same run): "
                f"bitwise {net_bit:.4f} ms vs float {net_flt:.4f} ms, speedup "
                f"{net_flt / net_bit:.2f}x")
    results["kernel_path"] = kernel_path
    by_path = {}
    for kp in extra_paths:
        r = results.get(path_variant(BIT_BACKBONE, kp))
        if r:
            by_path[kp] = round(flt["median_ms"] / r["median_ms"], 3)
    if by_path:
        results["backbone_speedup_by_path"] = by_path
    results["backbone_weight_bytes"] = storage
    return [
        f"backbone ({storage['layers']} DFSMN layers): bitwise {ops.BDFSMN} "
        f"{bit['median_ms']:.3f} "
        f"ms vs float TFLite+XNNPACK {flt['median_ms']:.3f} ms ({flt['threads']} thread(s)): "
        f"speedup {speedup:.2f}x (op kernel path: {kernel_path})",
        *lines_net,
        *[f"  on kernel path {kp}: bitwise {results[path_variant(BIT_BACKBONE, kp)]['median_ms']:.3f}"
          f" ms, speedup {v:.2f}x" for kp, v in by_path.items()],
        f"backbone weights: packed {p['total']:,} B (bit words {p['bit_weights']:,} B + "
        f"per-channel vectors {p['per_channel_vectors']:,} B) vs float32 weights "
        f"{storage['float32_weights']:,} B ({storage['ratio_vs_float32_weights']}x; bit words "
        f"alone {storage['ratio_bit_words_vs_float32_weights']}x), float .tflite constants "
        f"{storage['float_tflite_constants']:,} B "
        f"({storage['ratio_vs_float_tflite_constants']}x)",
        f"NOTE: kernel paths of the op: portable (scalar 64-bit popcount), avx512 (x86-64 "
        f"CPUs with AVX512F + VPOPCNTDQ, chosen at run time), neon (aarch64); this "
        f"{platform.machine()} host runs '{kernel_path}' by default (--bdfsmn_paths adds others).",
    ]


def format_table(results):
    w = max([len(n) for n in results] + [5])
    lines = [f"{'model'.ljust(w)}  {'median ms':>10} {'p90 ms':>10} {'mean ms':>10} "
             f"{'min ms':>10}  runtime         threads"]
    for name, r in results.items():
        lines.append(f"{name.ljust(w)}  {r['median_ms']:10.3f} {r['p90_ms']:10.3f} "
                     f"{r['mean_ms']:10.3f} {r['min_ms']:10.3f}  {r['runtime']:15s} "
                     f"{r['threads']}")
    return "\n".join(lines)


def main(argv):
    paths = list(FLAGS.models) + list(argv[1:])
    if not paths and not FLAGS.backbone and not FLAGS.project_ops:
        raise app.UsageError("give the .tflite files: --models A.tflite B.tflite ... (and / or "
                             "--backbone BDFSMN_EXPORT.tflite)")
    missing = [p for p in paths + [FLAGS.backbone] if p and not os.path.exists(p)]
    if missing:
        raise BenchmarkError(f"no such file(s): {', '.join(missing)}; expected .tflite files")
    unknown = [kp for kp in FLAGS.bdfsmn_paths if kp not in KERNEL_PATHS]
    if unknown:
        raise app.UsageError(f"--bdfsmn_paths: unknown path(s) {unknown}; expected "
                             f"{', '.join(KERNEL_PATHS)}")
    output_paths.check_dir(FLAGS.out_dir, "--out_dir")
    storage, kernel_paths = None, {}
    if FLAGS.backbone:
        import tempfile
        out_dir = FLAGS.out_dir or tempfile.mkdtemp(prefix="backbone_")
        bit, flt, nop, storage = backbone_models(FLAGS.backbone, out_dir,
                                                 FLAGS.teacher)
        paths += [bit, flt, nop]
        for kp in FLAGS.bdfsmn_paths:
            variant = os.path.join(out_dir, path_variant(BIT_BACKBONE, kp))
            shutil.copyfile(bit, variant)
            paths.append(variant)
            kernel_paths[variant] = kp
    if FLAGS.project_ops:
        import tempfile
        missing = [p for p in FLAGS.project_ops if not os.path.exists(p)]
        if missing:
            raise BenchmarkError(f"--project_ops: no such file(s): {', '.join(missing)}")
        ops_dir = FLAGS.out_dir or tempfile.mkdtemp(prefix="project_ops_")
        os.makedirs(ops_dir, exist_ok=True)
        for p in FLAGS.project_ops:
            variant = os.path.join(ops_dir, path_variant(os.path.basename(p), "ops"))
            shutil.copyfile(p, variant)
            paths.append(variant)
            kernel_paths[variant] = "auto"
    results = benchmark(paths, FLAGS.threads, FLAGS.runs, FLAGS.warmup, FLAGS.seed,
                        kernel_paths, burst=FLAGS.burst)
    turn = ("models alternate run by run" if FLAGS.burst == 1 else
            f"{FLAGS.burst} runs of a model in a row per turn: steady state")
    print(f"host {platform.machine()} ({platform.processor() or platform.platform()}), "
          f"{os.cpu_count()} cores; {FLAGS.runs} runs per model after {FLAGS.warmup} warm-up, "
          f"interleaved round-robin ({turn}), batch 1")
    print(format_table(results))
    if any(r["runtime"] == "lce" for r in results.values()):
        print("NOTE: " + HOST_NOTE.format(arch=platform.machine()))
    if storage:
        for line in add_backbone(results, storage, ops.kernel_path(),
                                 FLAGS.bdfsmn_paths):
            print(line)
    sys.stdout.flush()
    print(json.dumps(results))
    return results  # --json_out


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(BenchmarkError,))
