"""What the always-on loop costs on the device: instructions per second of audio.

Compute budget: ``--instructions_per_inference N`` or ``--cost_json FILE`` (the output of
firmware_sim.cost: its last JSON line) gives instructions per second of audio = N x inferences
per second (1000 / stride_ms; a streaming model: per invoke x 1000 / 128), and the load of one
``--clock_mhz`` (1200: Cortex-A53) core at ``--ipc`` instructions per cycle. Only the network is
counted, not the features. For a streaming model, ``--cost_json`` without ``--cost_key`` gives the
MEASURED instructions per invoke when the cost tool counted that model hop by hop
(``streaming_measured_instructions``: its ``streaming_hop_insns`` under the .tflite's name, or
the one ``streaming_models`` entry of the same arch and depth, e.g. for a run directory),
and otherwise an ESTIMATE from firmware_sim.cost's measured parts of the windowed model
(``streaming_hop_instructions``: one T-th of conv1, conv2, linear and the depth's layers, which
all scale with the frames, plus the whole classifier). The table says which. A windowed
.tflite counted by the cost tool takes its ``model_insns`` entry of the same file name.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from firmware_sim.stream_audio import StreamError


INSTRUCTION_KEYS = ("instructions_per_inference", "instructions", "total_instructions",
                    "insns", "icount")


def _find_instruction_counts(obj, prefix=""):
    found = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}{k}"
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "ins" in k.lower():
                found[key] = float(v)
            elif isinstance(v, dict):
                found.update(_find_instruction_counts(v, key + "."))
    return found


def cost_object(path: str) -> dict:
    """The last line of ``path`` that is a JSON object (or the whole file)."""
    if not os.path.exists(path):
        raise StreamError(f"--cost_json {path} does not exist")
    text = open(path).read()
    for candidate in [text] + text.strip().splitlines()[::-1]:
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    raise StreamError(f"--cost_json {path}: no JSON object found (expected the output of "
                      "firmware_sim.cost, whose last line is JSON)")


def streaming_measured_instructions(path: str, model: str, arch=None, depth=None
                                    ) -> Optional[dict]:
    """The MEASURED instructions per hop of a streaming model from firmware_sim.cost's JSON
    (``streaming_hop_insns`` / ``streaming_models``, counted hop by hop in the aarch64
    firmware): the entry named as ``model``'s file (stem), else the only entry of the same
    ``arch`` and ``depth`` (a run directory and its export compute the same ops). None when the
    JSON has no such measurement (older output, windowed models only)."""
    obj = cost_object(path)
    hop = obj.get("streaming_hop_insns") or {}
    entries = [e for e in obj.get("streaming_models") or [] if isinstance(e, dict)]
    name = os.path.splitext(os.path.basename(str(model).rstrip("/")))[0]
    entry = next((e for e in entries if e.get("name") == name), None)
    how = "the same file"
    if entry is None and name in hop:
        entry = {"name": name, "hop_insns": hop[name]}
    if entry is None and arch is not None and depth is not None:
        same = [e for e in entries if e.get("arch") == arch and e.get("depth") == int(depth)]
        if len(same) == 1:
            entry, how = same[0], f"the export of the same arch {arch} and depth {depth}"
    if entry is None:
        return None
    try:
        total = float(entry["hop_insns"])
    except (KeyError, TypeError, ValueError) as e:
        raise StreamError(f"--cost_json {path}: streaming entry {entry.get('name')!r} has no "
                          "instruction count") from e
    return {"total": total, "model": entry.get("name"), "matched": how,
            "hops": entry.get("hops"),
            "measured": "firmware_sim.cost: one Invoke() per hop counted in the aarch64 "
                        "firmware (qemu-aarch64 -cpu cortex-a53), mean over the hops"}


def streaming_hop_instructions(path: str, depth: int, binary: bool = True) -> dict:
    """ESTIMATED instructions of one streaming invoke (one backbone frame) at ``depth``, from
    firmware_sim.cost's measured parts of the windowed model (its JSON: ``raw``, ``meta.T``):
    conv1, conv2, linear and each DFSMN layer scale with the frames (conv1 computes 2 of its
    2T output rows per hop, conv2 1 of T, linear and every layer 1 of T frames), the classifier
    runs whole every hop. Binary: conv2 is the cost tool's proxy of the binary conv, linear and
    the layers bitwise; float (teacher): XNNPACK's. The streaming model's own extra work (state
    copies, the receptive-field scale of conv2) is not in it. Returns the parts and the total."""
    obj = cost_object(path)
    try:
        raw, T = obj["raw"], int(obj["meta"]["T"])
        part = raw["bitwise"] if binary else raw["float"]
        layers = part["layer"]
        n = len(layers)
        sets, step = {}, 1
        while step <= n:   # thinnable layer sets (models/thinnable.py)
            sets[n // step] = [j for j in range(n) if (j + 1) % step == 0]
            step *= 2
        if depth not in sets:
            raise StreamError(f"--cost_json {path}: depth {depth} is not one of the measured "
                              f"model's depths {sorted(sets)}")
        parts = {"conv1": raw["float"]["conv1"] / T,
                 "conv2": (raw["bitwise"]["conv2_proxy"] if binary else raw["float"]["conv2"]) / T,
                 "linear": part["linear"] / T,
                 f"layers_d{depth}": sum(layers[j] for j in sets[depth]) / T,
                 "classifier": raw["float"]["classifier"]}
    except (KeyError, TypeError, ValueError, IndexError) as e:
        if isinstance(e, StreamError):
            raise
        raise StreamError(f"--cost_json {path}: not firmware_sim.cost's output ({e!r}); "
                          "expected its JSON line (raw, meta)") from e
    return {"parts": parts, "total": float(sum(parts.values())), "frames_measured": T,
            "estimate": "windowed parts / T frames + the whole classifier (not measured "
                        "as a streaming model)"}


def read_cost_json(path: str, key: Optional[str] = None) -> float:
    """Instructions per inference from the cost tool's output: the last line of ``path`` that
    is a JSON object (or the whole file), key ``key`` (dotted for nested) or the first of
    INSTRUCTION_KEYS present."""
    obj = cost_object(path)
    if key:
        v = obj
        for part in key.split("."):
            if not isinstance(v, dict) or part not in v:
                raise StreamError(f"--cost_json {path}: no key {key!r}; it has "
                                  f"{sorted(_find_instruction_counts(obj))}")
            v = v[part]
        return float(v)
    for k in INSTRUCTION_KEYS:
        if isinstance(obj.get(k), (int, float)):
            return float(obj[k])
    counts = _find_instruction_counts(obj)
    if len(counts) == 1:
        return next(iter(counts.values()))
    raise StreamError(f"--cost_json {path}: cannot tell which number is the instruction count "
                      f"per inference (candidates: {sorted(counts) or 'none'}); pass --cost_key")


def compute_budget(instructions_per_inference: float, stride_ms: float,
                   clock_mhz: float = 1200.0, ipc: float = 1.0) -> dict:
    inferences_per_s = 1000.0 / stride_ms
    ips = instructions_per_inference * inferences_per_s
    cycles = ips / ipc
    return {"instructions_per_inference": instructions_per_inference,
            "inferences_per_second": inferences_per_s, "stride_ms": stride_ms,
            "instructions_per_audio_second": ips,
            "cycles_per_audio_second": cycles,
            "clock_mhz": clock_mhz, "ipc": ipc,
            "core_load": cycles / (clock_mhz * 1e6)}
