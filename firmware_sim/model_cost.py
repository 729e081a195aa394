"""Whole-model cost: one inference of each .tflite in the firmware, counted on emulated ARMv8.

Used by ``python -m firmware_sim.cost`` (its model section). Each model file runs in the
aarch64 firmware (firmware_sim/firmware: TensorFlow Lite Micro + the project's ops, NEON path;
float ops on XNNPACK's kernels with ``float_kernels='xnnpack'``, TFLM's reference kernels
otherwise; int8 ops always on TFLM's reference kernels) under ``qemu-aarch64 -cpu cortex-a53``
with firmware_sim/qemu_plugin/insn_count.so:

- region 1 = one ``MicroInterpreter::Invoke()`` (the whole model: every op, TFLM's dispatch,
  nothing else), after two warm-up Invokes outside every region (XNNPACK binds its pointers in
  the first); ``runs`` counted Invokes, divided;
- regions 100 + i = op i of the graph (a second interpreter whose MicroProfiler marks each op;
  the profiler's own calls sit outside the op regions, so the ops sum to slightly less than
  region 1).

The input is one deterministic pseudo-random feature image (normal(-2, 2), seed 0; quantized
with the model's scale / zero point for an int8 model): XNNPACK's and TFLM's float / int8
kernels are data-independent and the bitwise kernels nearly so.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

from firmware_sim import firmware_runner as fw

ROOT = fw.ROOT
EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")
WHOLE_REGION = 1


def default_models() -> List[str]:
    """The float teacher d8, the int8 teacher d8 and the binary artifact d8/d4/d2/d1 that
    exist in pretrained/real8/exports."""
    names = ["dfsmn_float_d8", "dfsmn_int8_d8"] + [f"bifsmnv2_binary_d{d}" for d in (8, 4, 2, 1)]
    paths = [os.path.join(EXPORTS, n + ".tflite") for n in names]
    return [p for p in paths if os.path.exists(p)]


def describe(path: str) -> dict:
    """(flavor, depth) of a model from its own description (pipeline.tflite_metadata), or
    guessed from the file name for files without one."""
    from pipeline import tflite_metadata
    with open(path, "rb") as f:
        desc = tflite_metadata.read(f.read(), path) or {}
    name = os.path.basename(path)
    flavor = desc.get("flavor")
    depth = desc.get("depth")
    if flavor is None:
        flavor = next((k for k in ("binary", "int8", "float", "lce", "bdfsmn") if k in name),
                      "?")
    if depth is None and "_d" in name:
        try:
            depth = int(name.rsplit("_d", 1)[1].split(".")[0])
        except ValueError:
            depth = None
    return {"flavor": flavor, "depth": depth, "name": os.path.splitext(name)[0]}


def synthetic_input(report: dict, seed: int = 0) -> np.ndarray:
    """One input item for the model of ``report`` (the firmware's info)."""
    tin = report["input"]
    x = np.random.default_rng(seed).normal(-2.0, 2.0, tin["shape"]).astype(np.float32)
    dtype = fw.tensor_file.DTYPES[tin["type"]]
    if dtype != np.float32:
        x = fw.quantize(x, dtype, tin["scale"], tin["zero_point"])
    return x[None]


def count_model(path: str, work: str, runs: int = 1, float_kernels: str = "xnnpack",
                cpuinfo: Optional[str] = None) -> dict:
    """Instructions of one inference of ``path`` in the aarch64 firmware, whole and per op."""
    rep0 = fw.info(path, target="aarch64", float_kernels=float_kernels, build_first=False)
    x = synthetic_input(rep0)
    stem = os.path.splitext(os.path.basename(path))[0]
    plug = os.path.join(work, f"{stem}.insn.json")
    _, rep = fw.run(path, x, target="aarch64", float_kernels=float_kernels, count=runs,
                    per_op=True, plugin_json=plug, cpuinfo=cpuinfo, build_first=False)
    with open(plug) as f:
        counts = json.load(f)
    if counts.get("errors_total"):
        raise fw.FirmwareError(f"{path}: marker errors {counts['errors']}")
    regions = counts["regions"]

    def per_entry(rid):
        r = regions.get(str(rid))
        if r is None:
            raise fw.FirmwareError(f"{path}: region {rid} missing from the plugin output")
        return r["insns"] / max(r["entries"], 1)

    whole = per_entry(WHOLE_REGION)
    ops = []
    base = rep["op_region_base"]
    for i, (name, kernel) in enumerate(rep["ops"]):
        rid = base + i
        ops.append({"index": i, "op": name, "kernel": kernel,
                    "insns": per_entry(rid) if str(rid) in regions else None})
    by_type: Dict[str, dict] = {}
    for o in ops:
        t = by_type.setdefault(o["op"], {"count": 0, "insns": 0.0, "kernel": o["kernel"]})
        t["count"] += 1
        t["insns"] += o["insns"] or 0.0
    d = describe(path)
    return dict(d, path=os.path.relpath(path, ROOT) if path.startswith(ROOT) else path,
                insns=whole, ops_sum=sum(o["insns"] or 0.0 for o in ops), ops=ops,
                by_type=by_type, float_kernels=float_kernels, kernel_path=rep["kernel_path"],
                arena_used_bytes=rep["arena_used_bytes"], heap=rep["heap"],
                allocations_during_invoke=rep["allocations_during_invoke"],
                model_bytes=rep["model_bytes"], runs=runs)


def measure(paths, work: str, runs: int = 1, float_kernels: str = "xnnpack",
            cpuinfo: Optional[str] = None) -> List[dict]:
    fw.build("aarch64")
    return [count_model(p, work, runs, float_kernels, cpuinfo) for p in paths]


def teacher_of(results: List[dict]) -> Optional[dict]:
    """The float teacher the ratios are taken against: the deepest float-flavor model."""
    floats = [r for r in results if r["flavor"] == "float"]
    return max(floats, key=lambda r: r["depth"] or 0) if floats else None


def summary(results: List[dict], uarch: str) -> dict:
    """The JSON keys: model_instruction_ratio (depth -> float teacher / binary model, both one
    whole inference), model_insns, binary_runtime."""
    teacher = teacher_of(results)
    binaries = [r for r in results if r["flavor"] == "binary"]
    ratio = {}
    if teacher is not None:
        ratio = {str(r["depth"]): round(teacher["insns"] / r["insns"], 4) for r in binaries}
    runtime = None
    if binaries:
        b = binaries[0]
        runtime = {
            "runtime": "TensorFlow Lite Micro 90b983c (firmware_sim/firmware) + lce_kernels/tflm",
            "target": "aarch64 (aarch64-linux-gnu-g++ -O2 -march=armv8-a), qemu-aarch64 -cpu "
                      f"{fw.QEMU_CPU}",
            "project_ops_kernel_path": b["kernel_path"],
            "float_kernels": b["float_kernels"],
            "xnnpack_uarch": uarch,
            "kernels": {name: t["kernel"] for name, t in sorted(b["by_type"].items())},
            "measured": "region 1 = one MicroInterpreter::Invoke() per model file",
        }
    return {
        "model_instruction_ratio": ratio,
        "model_insns": {r["name"]: r["insns"] for r in results},
        "float_teacher": teacher["name"] if teacher else None,
        "binary_runtime": runtime,
    }


def fmt(n):
    return "-" if n is None else f"{n:,.0f}"


def report(results: List[dict], uarch: str, p=print) -> None:
    """The whole-model table and the per-op table."""
    if not results:
        return
    teacher = teacher_of(results)
    p("Whole models, one inference each (region 1 = MicroInterpreter::Invoke(); firmware "
      f"TFLM 90b983c + lce_kernels/tflm; qemu-aarch64 -cpu {fw.QEMU_CPU}; XNNPACK uarch "
      f"{uarch}):")
    p(f"{'model':24s} {'flavor':7s} {'depth':>5s} {'float ops':>10s} {'instructions':>14s} "
      f"{'teacher/this':>12s} {'arena B':>9s} {'heap B':>9s} {'flash B':>9s}")
    for r in results:
        ratio = f"{teacher['insns'] / r['insns']:.2f}x" if teacher else "-"
        heap = r["heap"]["ops_after_prepare"] + r["heap"]["xnnpack_after_prepare"]
        p(f"{r['name']:24s} {r['flavor']:7s} {str(r['depth']):>5s} {r['float_kernels']:>10s} "
          f"{fmt(r['insns']):>14s} {ratio:>12s} {r['arena_used_bytes']:>9,d} {heap:>9,d} "
          f"{r['model_bytes']:>9,d}")
    p("  (arena: TFLM arena used at 1 MiB; heap: what the ops hold outside the arena after "
      "Prepare: the kernel core's weight copies and scratch, XNNPACK's packed weights; flash: "
      "the .tflite)")
    p("")
    types = sorted({t for r in results for t in r["by_type"]},
                   key=lambda t: -max(r["by_type"].get(t, {}).get("insns", 0) for r in results))
    p("Per op (instructions per inference, all instances of the op; instances in parentheses; "
      "kernel: xnnpack / reference (TFLM) / project:<path>):")
    head = f"{'op':18s}" + "".join(f"{r['name'][-18:]:>24s}" for r in results)
    p(head)
    for t in types:
        row = f"{t:18s}"
        for r in results:
            v = r["by_type"].get(t)
            cell = "" if v is None else f"{fmt(v['insns'])} ({v['count']}) {v['kernel'][:4]}"
            row += f"{cell:>24s}"
        p(row)
    row = f"{'sum of ops':18s}" + "".join(f"{fmt(r['ops_sum']):>24s}" for r in results)
    p(row)
    row = f"{'whole Invoke()':18s}" + "".join(f"{fmt(r['insns']):>24s}" for r in results)
    p(row)
