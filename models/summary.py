"""Parameters, 1-bit vs 32-bit weights, weight memory and MACs per clip of a model.

Reads: --arch (a registry name, default size) or --model (a run directory's model.json).
Writes: nothing; prints the per-layer table and totals (also to --json_out).

    python -m models.summary --arch bifsmnv2 --depth 8 [--larq]
    python -m models.summary --model pretrained/real8/bifsmnv2 --depth 2

Counts cover what runs at the chosen depth (the model owns the variables of every depth:
all 8 layers and bn0..bn3 / act0..act3; the unused ones are excluded here, and listed as
"owned but inactive"). Conventions:

- kernel weights: conv / depthwise / dense kernels (the paper's "~0.59 M weights");
- parameters: every variable that the forward pass at this depth reads, including BN moving
  statistics, biases, PReLU slopes, thresholds and LPB alphas;
- 1-bit weights: kernels of binary layers (student conv2, linear, memory depthwise, pw1, pw2);
  memory = 1 bit per binary weight + 32 bits per other parameter (the paper's storage
  accounting, not a file size: see the LCE export for bytes);
  "kernel-only memory" counts kernels only (1 bit binary, 32 bit float), the closest match
  to the paper's 20.2x storage figure;
- MACs per clip: one multiply-accumulate per kernel tap and output element (bias / BN /
  activation / thresholds excluded). For dual-scale binary convs the binary-op count is twice
  that (two bit planes share the kernel), reported as `binary_ops`.

`larq.models.summary` (with `--larq`) is printed too: it sees the top-level layers only,
counts every owned variable (all depths) and gives no MACs for our composite layers.
"""
import os

import numpy as np

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before tensorflow)
import tensorflow as tf

from models.dfsmn import DFSMNBackbone
from models.dual_scale import QuantConvBN
from models.memory_block import MemoryBlock
from models.thinnable import layer_set

__all__ = ["model_stats", "format_stats", "main"]


def _n(v):
    return int(np.prod(v.shape))


def _row(name, kernel, other_vars, macs, binary, bit_planes=1):
    kernel_n = _n(kernel) if kernel is not None else 0
    other_n = sum(_n(v) for v in other_vars)
    return {
        "name": name,
        "kernel_weights": kernel_n,
        "params": kernel_n + other_n,
        "binary_weights": kernel_n if binary else 0,
        "macs": int(macs),
        "binary_ops": int(macs * bit_planes) if binary else 0,
        "binary": bool(binary),
        "vars": ([kernel] if kernel is not None else []) + list(other_vars),
    }


def _conv_bn_row(layer: QuantConvBN, out_positions: int, bn_index: int = 0, prefix=""):
    k = layer.conv.kernel
    kh, kw, cin, cout = k.shape
    macs = out_positions * kh * kw * cin * cout
    other = []
    if layer.use_bias:
        other.append(layer.bias)
    if layer.bns:
        other += list(layer.bns[bn_index].weights)
    if layer.binary:
        other += list(layer.dual_scale.weights)  # t0, t1, t2, sign alphas
        other += list(layer.conv.kernel_quantizer.weights)
    return _row(prefix + layer.name, k, other, macs, layer.binary, bit_planes=2)


def _memory_row(layer: MemoryBlock, frames: int, prefix="", bn_index: int = 0):
    k = layer.dwconv.depthwise_kernel
    macs = frames * int(np.prod(k.shape))  # (l+r+1) taps x C channels per frame
    other = list(layer.bns[bn_index].weights) + list(layer.act.weights)
    if layer.binary:
        other += list(layer.dual_scale.weights) + list(layer.dwconv.depthwise_quantizer.weights)
    return _row(prefix + layer.name, k, other, macs, layer.binary, bit_planes=2)


def model_stats(model: tf.keras.Model, depth: int = None):
    """Per-layer rows and totals for `model` run at `depth` (default: the model's depth)."""
    rows = []
    for layer in model.layers:
        if isinstance(layer, QuantConvBN):
            out = layer.output_shape
            rows.append(_conv_bn_row(layer, int(np.prod(out[1:-1]))))
        elif isinstance(layer, DFSMNBackbone):
            frames = int(layer.input_shape[1]) * int(layer.input_shape[2])
            dep = depth if depth is not None else layer.depths[0]
            d = models.depth_index(dep, layer.num_layers)
            for j in layer_set(d, layer.num_layers):
                blk = layer.blocks[j]
                pre = f"{layer.name}/{blk.name}/"
                rows.append(_memory_row(blk.memory, frames, pre, d))
                rows.append(_conv_bn_row(blk.pw1, frames, d, pre))
                if blk.pw1_act.weights:
                    rows.append(_row(pre + "pw1_act", None, blk.pw1_act.weights, 0, False))
                r = _conv_bn_row(blk.pw2, frames, d, pre)
                r["vars"] += list(blk.acts[d].weights)
                r["params"] += sum(_n(v) for v in blk.acts[d].weights)
                r["name"] += f" (+bn{d}, act{d})"
                rows.append(r)
        elif isinstance(layer, tf.keras.layers.Dense):
            rows.append(_row(layer.name, layer.kernel, [layer.bias], _n(layer.kernel), False))
        elif layer.weights:
            rows.append(_row(layer.name, None, layer.weights, 0, False))
    used = {id(v) for r in rows for v in r["vars"]}
    owned = sum(_n(v) for v in model.weights)
    tot = {k: sum(r[k] for r in rows) for k in
           ("kernel_weights", "params", "binary_weights", "macs", "binary_ops")}
    tot["float_params"] = tot["params"] - tot["binary_weights"]
    tot["memory_bits"] = tot["binary_weights"] + 32 * tot["float_params"]
    tot["memory_bits_fp32"] = 32 * tot["params"]
    tot["compression"] = tot["memory_bits_fp32"] / tot["memory_bits"]
    float_kernels = tot["kernel_weights"] - tot["binary_weights"]
    tot["kernel_memory_bits"] = tot["binary_weights"] + 32 * float_kernels
    tot["kernel_compression"] = 32 * tot["kernel_weights"] / tot["kernel_memory_bits"]
    tot["float_macs"] = tot["macs"] - sum(r["macs"] for r in rows if r["binary"])
    tot["owned_params"] = owned
    tot["inactive_params"] = owned - sum(_n(v) for v in model.weights if id(v) in used)
    return rows, tot


def format_stats(rows, tot, title=""):
    lines = [title] if title else []
    lines.append(f"{'layer':44s} {'bin':>3s} {'kernel w':>10s} {'params':>9s} {'MACs':>11s}")
    for r in rows:
        lines.append(f"{r['name']:44s} {'1' if r['binary'] else '32':>3s} "
                     f"{r['kernel_weights']:>10,d} {r['params']:>9,d} {r['macs']:>11,d}")
    kib = lambda bits: bits / 8 / 1024  # noqa: E731
    lines += [
        f"kernel weights          {tot['kernel_weights']:,}",
        f"parameters (active)     {tot['params']:,}  (owned {tot['owned_params']:,}, "
        f"inactive at this depth {tot['inactive_params']:,})",
        f"1-bit weights           {tot['binary_weights']:,}",
        f"32-bit parameters       {tot['float_params']:,}",
        f"weight memory           {kib(tot['memory_bits']):,.2f} KiB "
        f"(all-float32: {kib(tot['memory_bits_fp32']):,.2f} KiB, "
        f"{tot['compression']:.1f}x smaller)",
        f"kernel-only memory      {kib(tot['kernel_memory_bits']):,.2f} KiB "
        f"(binary kernels 1 bit, float kernels 32 bit, BN/PReLU/thresholds excluded: "
        f"{tot['kernel_compression']:.1f}x smaller than float32 kernels)",
        f"MACs per clip           {tot['macs']:,}  (float {tot['float_macs']:,}; binary "
        f"{tot['macs'] - tot['float_macs']:,} = {tot['binary_ops']:,} binary ops over 2 bit "
        f"planes)",
    ]
    return "\n".join(lines)


def define_flags():
    """The tool's flags."""
    from absl import flags
    flags.DEFINE_enum("arch", "bifsmnv2", models.list_models(),
                      "Architecture (registry name), at its default size.")
    flags.DEFINE_string("model", None, "A run directory (model.json): its architecture, size "
                        "flags and classes instead of --arch's (weights are not read).")
    flags.DEFINE_integer("depth", 8, "Thinnable depth (8, 4, 2 or 1).")
    flags.DEFINE_integer("num_classes", 12, "Classifier outputs (with --arch; a --model has its "
                         "own classes).", lower_bound=1)
    flags.DEFINE_bool("larq", False, "Also print larq.models.summary.")


def _from_run_dir(path, depth):
    """The model a run directory's model.json describes, at ``depth``."""
    from absl import app

    from pipeline import checkpoints
    if path.endswith(".tflite"):
        raise app.UsageError(f"--model {path}: a .tflite has no Keras layers to count; expected "
                             "a run directory (model.json), or use python -m models.lce_census "
                             f"--model {path}")
    spec = checkpoints.read_model_json(path)
    layers = spec["model_kwargs"].get("num_layers", 8)
    if depth not in models.valid_depths(layers):
        raise app.UsageError(f"--depth {depth}: expected one of {models.valid_depths(layers)} "
                             f"for {path}")
    return checkpoints.build_from_spec(spec, depth=depth), spec["model"]


def arch_and_run_dir():
    """(--arch, --model); ``--model NAME`` (a registry name that is no path) keeps its old
    meaning, the architecture (now --arch), with a deprecation line."""
    from absl import flags

    from pipeline import cli_vocabulary
    f = flags.FLAGS
    arch, run_dir = f.arch, f.model
    if run_dir and run_dir in models.list_models() and not os.path.exists(run_dir):
        cli_vocabulary.warn_deprecated("model", "arch", " as a registry name here")
        arch, run_dir = run_dir, None
    return arch, run_dir


def main(argv):
    from absl import app, flags
    f = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    arch, run_dir = arch_and_run_dir()
    if run_dir:
        model, arch = _from_run_dir(run_dir, f.depth)
        if f["arch"].present and f.arch != arch:
            raise app.UsageError(f"--arch {f.arch} but --model {run_dir} is a {arch!r} model; "
                                 "expected one of them")
        title = f"{run_dir} ({arch}) depth {f.depth}"
    else:
        if f.depth not in models.valid_depths(8):
            raise app.UsageError(f"--depth {f.depth}: expected one of {models.valid_depths(8)}")
        model = models.get_model(arch, depth=f.depth, num_classes=f.num_classes)
        title = f"{arch} depth {f.depth}"
    rows, tot = model_stats(model)
    print(format_stats(rows, tot, title))
    if f.larq:
        import larq as lq

        lq.models.summary(model)
    return {"arch": arch, "model": run_dir, "depth": f.depth,  # --json_out
            "totals": tot, "layers": [{k: v for k, v in r.items() if k != "vars"}
                                      for r in rows]}


if __name__ == "__main__":
    from pipeline import cli
    cli.run(main, define=define_flags)
