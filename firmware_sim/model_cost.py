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

STREAMING models (``pipeline.export --streaming``, recognised by the ``streaming`` entry of
their description): MEASURED hop by hop, not estimated. ``hops`` hops (default 16; the same
pseudo-random features, seed 0, one [hop_frames, mels] hop after another) from zero state, the
firmware feeding every new state back to its input outside the counted regions
(firmware/firmware.cc): region 1 = each hop's ``Invoke()`` (its mean: instructions per hop),
region 2 + h = hop h alone (minus its markers' own calls, region 66); per op the mean over the
same hops (regions 100 + i, in runs of 150 ops for larger graphs). Instructions per second of
audio = per hop x 1000 / hop_ms.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

from firmware_sim import firmware_runner as fw
from lce_kernels import ops

ROOT = fw.ROOT
EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")
WHOLE_REGION = 1


def default_models() -> List[str]:
    """The float teacher d8, the int8 teacher d8 and the binary artifact d8/d4/d2/d1 that
    exist in pretrained/real8/exports."""
    names = ["dfsmn_float_d8", "dfsmn_int8_d8"] + [f"bifsmnv2_binary_d{d}" for d in (8, 4, 2, 1)]
    paths = [os.path.join(EXPORTS, n + ".tflite") for n in names]
    return [p for p in paths if os.path.exists(p)]


DEFAULT_HOPS = 16
OP_REGIONS = 150        # per-op regions per firmware run (firmware.cc: regions 100..249)


def describe(path: str) -> dict:
    """(flavor, depth) of a model from its own description (pipeline.tflite_metadata), or
    guessed from the file name for files without one; ``streaming``: the description's
    streaming entry (None for a windowed model)."""
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
    return {"flavor": flavor, "depth": depth, "name": os.path.splitext(name)[0],
            "arch": desc.get("arch"), "streaming": desc.get("streaming") or None}


def synthetic_input(report: dict, seed: int = 0) -> np.ndarray:
    """One input item for the model of ``report`` (the firmware's info)."""
    tin = report["input"]
    x = np.random.default_rng(seed).normal(-2.0, 2.0, tin["shape"]).astype(np.float32)
    dtype = fw.tensor_file.DTYPES[tin["type"]]
    if dtype != np.float32:
        x = fw.quantize(x, dtype, tin["scale"], tin["zero_point"])
    return x[None]


def synthetic_hops(report: dict, hops: int, seed: int = 0) -> np.ndarray:
    """``hops`` input items (hops) for the streaming model of ``report``: normal(-2, 2)."""
    tin = report["input"]
    x = np.random.default_rng(seed).normal(-2.0, 2.0, (hops,) + tuple(tin["shape"]))
    dtype = fw.tensor_file.DTYPES[tin["type"]]
    x = x.astype(np.float32)
    return x if dtype == np.float32 else fw.quantize(x, dtype, tin["scale"], tin["zero_point"])


def _load_counts(path: str, plug: str) -> dict:
    with open(plug) as f:
        counts = json.load(f)
    if counts.get("errors_total"):
        raise fw.FirmwareError(f"{path}: marker errors {counts['errors']}")
    return counts["regions"]


def _per_entry(regions: dict, rid: int, path: str) -> float:
    """Mean instructions per entry of plugin region ``rid`` (an error naming ``path`` if the
    plugin did not see it)."""
    r = regions.get(str(rid))
    if r is None:
        raise fw.FirmwareError(f"{path}: region {rid} missing from the plugin output")
    return r["insns"] / max(r["entries"], 1)


def _by_type(ops: List[dict]) -> Dict[str, dict]:
    """Per op type: instances, summed instructions, kernel."""
    by_type: Dict[str, dict] = {}
    for o in ops:
        t = by_type.setdefault(o["op"], {"count": 0, "insns": 0.0, "kernel": o["kernel"]})
        t["count"] += 1
        t["insns"] += o["insns"] or 0.0
    return by_type


def count_streaming(path: str, work: str, hops: int = DEFAULT_HOPS,
                    float_kernels: str = "xnnpack", cpuinfo: Optional[str] = None) -> dict:
    """A streaming model MEASURED hop by hop (module doc): per hop, per second of audio, per op
    (mean per hop), arena."""
    d = describe(path)
    rep0 = fw.info(path, target="aarch64", float_kernels=float_kernels, build_first=False)
    if not rep0.get("streaming"):
        raise fw.FirmwareError(f"{path}: its description says streaming, but the model has one "
                               "input (pipeline.export --streaming writes hop + states)")
    x = synthetic_hops(rep0, hops)
    stem = os.path.splitext(os.path.basename(path))[0]
    n_ops = len(rep0["ops"])
    regions, rep = {}, None
    op_insns: Dict[int, float] = {}
    for offset in range(0, max(n_ops, 1), OP_REGIONS):
        plug = os.path.join(work, f"{stem}.op{offset}.insn.json")
        _, r = fw.run(path, x, target="aarch64", float_kernels=float_kernels, count=hops,
                      per_op=True, op_offset=offset, plugin_json=plug, cpuinfo=cpuinfo,
                      build_first=False)
        reg = _load_counts(path, plug)
        if rep is None:
            rep, regions = r, reg
        base = r["op_region_base"]
        for i in range(offset, min(n_ops, offset + OP_REGIONS)):
            e = reg.get(str(base + i - offset))
            if e is not None:
                op_insns[i] = e["insns"] / max(e["entries"], 1)

    def per_entry(rid):
        return _per_entry(regions, rid, path)

    whole = per_entry(WHOLE_REGION)
    if regions[str(WHOLE_REGION)]["entries"] != hops:
        raise fw.FirmwareError(f"{path}: {regions[str(WHOLE_REGION)]['entries']} hops counted, "
                               f"expected {hops}")
    # hop h: its region minus the instructions of the hop markers' own calls (region 66)
    overhead = per_entry(rep["hop_overhead_region"]) if rep["hop_regions"] else 0.0
    per_hop = [per_entry(rep["hop_region_base"] + h) - overhead
               for h in range(rep["hop_regions"])]
    ops = [{"index": i, "op": name, "kernel": kernel, "insns": op_insns.get(i)}
           for i, (name, kernel) in enumerate(rep["ops"])]
    by_type = _by_type(ops)
    hop_ms = float(d["streaming"]["hop_ms"])
    return dict(d, path=os.path.relpath(path, ROOT) if path.startswith(ROOT) else path,
                insns=whole, hop_insns=per_hop, hops=hops, hop_ms=hop_ms,
                hops_per_second=1000.0 / hop_ms, insns_per_second=whole * 1000.0 / hop_ms,
                ops_sum=sum(o["insns"] or 0.0 for o in ops), ops=ops, by_type=by_type,
                float_kernels=float_kernels, kernel_path=rep["kernel_path"],
                arena_used_bytes=rep["arena_used_bytes"], heap=rep["heap"],
                state_bytes=rep["state_bytes"],
                allocations_during_invoke=rep["allocations_during_invoke"],
                model_bytes=rep["model_bytes"], runs=hops,
                inputs=f"{hops} hops of normal(-2, 2) features, seed 0, from zero state")


def count_model(path: str, work: str, runs: int = 1, float_kernels: str = "xnnpack",
                cpuinfo: Optional[str] = None) -> dict:
    """Instructions of one inference of ``path`` in the aarch64 firmware, whole and per op."""
    rep0 = fw.info(path, target="aarch64", float_kernels=float_kernels, build_first=False)
    x = synthetic_input(rep0)
    stem = os.path.splitext(os.path.basename(path))[0]
    plug = os.path.join(work, f"{stem}.insn.json")
    _, rep = fw.run(path, x, target="aarch64", float_kernels=float_kernels, count=runs,
                    per_op=True, plugin_json=plug, cpuinfo=cpuinfo, build_first=False)
    regions = _load_counts(path, plug)

    def per_entry(rid):
        return _per_entry(regions, rid, path)

    whole = per_entry(WHOLE_REGION)
    ops = []
    base = rep["op_region_base"]
    for i, (name, kernel) in enumerate(rep["ops"]):
        rid = base + i
        ops.append({"index": i, "op": name, "kernel": kernel,
                    "insns": per_entry(rid) if str(rid) in regions else None})
    by_type = _by_type(ops)
    d = describe(path)
    return dict(d, path=os.path.relpath(path, ROOT) if path.startswith(ROOT) else path,
                insns=whole, ops_sum=sum(o["insns"] or 0.0 for o in ops), ops=ops,
                by_type=by_type, float_kernels=float_kernels, kernel_path=rep["kernel_path"],
                arena_used_bytes=rep["arena_used_bytes"], heap=rep["heap"],
                allocations_during_invoke=rep["allocations_during_invoke"],
                model_bytes=rep["model_bytes"], runs=runs)


def measure(paths, work: str, runs: int = 1, float_kernels: str = "xnnpack",
            cpuinfo: Optional[str] = None, hops: int = DEFAULT_HOPS) -> List[dict]:
    """Each model counted: windowed models one Invoke() (``runs`` times), streaming models
    (their description) ``hops`` hops."""
    fw.build("aarch64")
    return [count_streaming(p, work, hops, float_kernels, cpuinfo) if describe(p)["streaming"]
            else count_model(p, work, runs, float_kernels, cpuinfo) for p in paths]


def teacher_of(results: List[dict]) -> Optional[dict]:
    """The float teacher the ratios are taken against: the deepest windowed float model."""
    floats = [r for r in results if r["flavor"] == "float" and not r.get("streaming")]
    return max(floats, key=lambda r: r["depth"] or 0) if floats else None


def summary(results: List[dict], uarch: str) -> dict:
    """The JSON keys: model_instruction_ratio (depth -> float teacher / binary model, both one
    whole inference), model_insns (windowed: per inference; streaming: per hop),
    binary_runtime, streaming_hop_insns / streaming_insns_per_second (streaming models:
    MEASURED mean per hop, and per second of audio), streaming_models (their details)."""
    teacher = teacher_of(results)
    streams = [r for r in results if r.get("streaming")]
    # the windowed binary artifacts (a streaming binary export is counted per hop, below)
    binaries = [r for r in results if r["flavor"] == "binary" and not r.get("streaming")]
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
        "streaming_vs_windowed": streaming_vs_windowed(results),
        "model_insns": {r["name"]: r["insns"] for r in results},
        "float_teacher": teacher["name"] if teacher else None,
        "binary_runtime": runtime,
        "streaming_hop_insns": {r["name"]: r["insns"] for r in streams},
        "streaming_insns_per_second": {r["name"]: r["insns_per_second"] for r in streams},
        "streaming_models": [{
            "name": r["name"], "arch": r["arch"], "flavor": r["flavor"], "depth": r["depth"],
            "hop_insns": r["insns"], "insns_per_second": r["insns_per_second"],
            "hop_ms": r["hop_ms"], "hops": r["hops"], "per_hop": r["hop_insns"],
            "arena_used_bytes": r["arena_used_bytes"], "state_bytes": r["state_bytes"],
            "measured": "mean of region 1 (one Invoke() per hop) over the hops, states fed "
                        "back by the firmware outside the regions"} for r in streams],
    }


def streaming_vs_windowed(results: List[dict]) -> Optional[dict]:
    """Per second of audio: the windowed loop (the deepest windowed binary artifact measured,
    one inference every ``firmware_sim.stream.DEFAULT_STRIDE_MS``) over each streaming binary
    export (its measured hops per second); None without both kinds in ``results``.

    With it, ``floor``: the ratio a streaming model of the same depth would reach if it
    computed every frame exactly once and nothing else, derived (not measured) from the
    windowed model's per-op counts. The windowed model at the streaming depth d is its
    measured count minus (D - d) layers (L = its bitwise DFSMN op's count / instances); all of it but
    the classifier C (its one FULLY_CONNECTED) runs on frames, 1 / window_hops of which are
    new at each hop; the classifier reads the whole ring at every hop:
    ``floor_hop = (W - (D - d) L - C) / window_hops + C``. Kernels that make every op cheaper
    move both sides; what moves only the streaming side is the graph's own overhead,
    ``hop_insns - floor_hop``."""
    from firmware_sim.stream import DEFAULT_STRIDE_MS
    windowed = [r for r in results if r["flavor"] == "binary" and not r.get("streaming")]
    streams = [r for r in results if r["flavor"] == "binary" and r.get("streaming")]
    if not windowed or not streams:
        return None
    ref = max(windowed, key=lambda r: r["depth"] or 0)
    per_s = ref["insns"] * 1000.0 / DEFAULT_STRIDE_MS
    out = {"windowed": ref["name"], "windowed_stride_ms": DEFAULT_STRIDE_MS,
           "windowed_insns_per_second": per_s,
           "ratio": {r["name"]: round(per_s / r["insns_per_second"], 4) for r in streams}}
    layers, fc = ref["by_type"].get(ops.BDFSMN), ref["by_type"].get("FULLY_CONNECTED")
    if not layers or not fc or fc["count"] != 1 or not ref["depth"]:
        return out
    per_layer = layers["insns"] / layers["count"]
    floor = {}
    for r in streams:
        hops = (r.get("streaming") or {}).get("window_hops")
        if not hops or not r["depth"]:
            continue
        at_depth = ref["insns"] - (ref["depth"] - r["depth"]) * per_layer
        hop = (at_depth - fc["insns"]) / hops + fc["insns"]
        floor[r["name"]] = {"hop_insns": round(hop), "ratio": round(
            per_s / (hop * r["hops_per_second"]), 4), "overhead": round(r["insns"] - hop)}
    out["floor"] = floor
    return out


def fmt(n):
    return "-" if n is None else f"{n:,.0f}"


def report(results: List[dict], uarch: str, p=print) -> None:
    """The whole-model table and the per-op table (windowed models), then the streaming
    models' (report_streaming)."""
    streams = [r for r in results if r.get("streaming")]
    results = [r for r in results if not r.get("streaming")]
    if results:
        _report_windowed(results, uarch, p)
    if streams:
        if results:
            p("")
        report_streaming(streams, uarch, p)
        if results:
            p("")
            report_streaming_ratio(results + streams, p)


def _per_op_table(results: List[dict], p, what: str) -> None:
    types = sorted({t for r in results for t in r["by_type"]},
                   key=lambda t: -max(r["by_type"].get(t, {}).get("insns", 0) for r in results))
    p(f"Per op (instructions per {what}, all instances of the op; instances in parentheses; "
      "kernel: xnnpack / reference (TFLM) / project:<path>):")
    p(f"{'op':18s}" + "".join(f"{r['name'][-22:]:>24s}" for r in results))
    for t in types:
        row = f"{t:18s}"
        for r in results:
            v = r["by_type"].get(t)
            cell = "" if v is None else f"{fmt(v['insns'])} ({v['count']}) {v['kernel'][:4]}"
            row += f"{cell:>24s}"
        p(row)
    p(f"{'sum of ops':18s}" + "".join(f"{fmt(r['ops_sum']):>24s}" for r in results))
    p(f"{'whole Invoke()':18s}" + "".join(f"{fmt(r['insns']):>24s}" for r in results))


def report_streaming(results: List[dict], uarch: str, p=print) -> None:
    """Streaming models: MEASURED instructions per hop (mean, min / max over the hops), per
    second of audio, arena, state; the per-op table per hop."""
    p(f"Streaming models, MEASURED hop by hop (region 1 = one MicroInterpreter::Invoke() per "
      f"hop, states fed back outside the regions; firmware TFLM 90b983c + lce_kernels/tflm; "
      f"qemu-aarch64 -cpu {fw.QEMU_CPU}; XNNPACK uarch {uarch}):")
    p(f"{'model':36s} {'flavor':6s} {'depth':>5s} {'hops':>4s} {'insns / hop':>12s} "
      f"{'min..max over hops':>21s} {'hops/s':>6s} {'insns / s audio':>16s} {'arena B':>8s} "
      f"{'state B':>8s} {'flash B':>8s}")
    for r in results:
        lo, hi = (min(r["hop_insns"]), max(r["hop_insns"])) if r["hop_insns"] else (None, None)
        p(f"{r['name'][:36]:36s} {r['flavor']:6s} {str(r['depth']):>5s} {r['hops']:>4d} "
          f"{fmt(r['insns']):>12s} {fmt(lo) + '..' + fmt(hi):>21s} {r['hops_per_second']:>6.2f} "
          f"{fmt(r['insns_per_second']):>16s} {r['arena_used_bytes']:>8,d} "
          f"{r['state_bytes']:>8,d} {r['model_bytes']:>8,d}")
    p("  (per hop: the mean over the hops from zero state, normal(-2, 2) features, seed 0; "
      "per hop h: " + "; ".join(f"{r['name']}: " + ", ".join(fmt(v) for v in r["hop_insns"][:8])
                               + (" ..." if len(r["hop_insns"]) > 8 else "")
                               for r in results) + ")")
    p("")
    _per_op_table(results, p, "hop")


def report_streaming_ratio(results: List[dict], p=print) -> None:
    """One line per streaming binary export: the windowed loop's instructions per second of
    audio over its own (streaming_vs_windowed)."""
    sw = streaming_vs_windowed(results)
    if sw is None:
        return
    p(f"Per second of audio against the windowed loop ({sw['windowed']}, one inference every "
      f"{sw['windowed_stride_ms']:g} ms: {fmt(sw['windowed_insns_per_second'])} instructions):")
    floor = sw.get("floor") or {}
    for name, ratio in sw["ratio"].items():
        f = floor.get(name)
        p(f"  {name}: {ratio:.2f}x fewer" + (
            f" (floor {f['ratio']:.2f}x: {fmt(f['hop_insns'])} per hop if every frame were "
            f"computed once, the classifier at every hop; the streaming graph's overhead "
            f"{fmt(f['overhead'])})" if f else ""))
    if floor:
        p("  (floor: derived from the windowed model's per-op counts, not measured; see "
          "model_cost.streaming_vs_windowed)")


def _report_windowed(results: List[dict], uarch: str, p) -> None:
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
    _per_op_table(results, p, "inference")
