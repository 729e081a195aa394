"""firmware_sim.cost: instructions per inference on emulated ARMv8 (bitwise kernel vs XNNPACK).

The default test runs the tool on a tiny configuration (T=4, C=32, H=64, 2 layers, 1 counted
run; without and with two model files counted whole in the aarch64 firmware) and the
model-size configuration (8 layers of T=8, C=128, H=256, 1 counted run, and the default model
files: float / int8 teacher d8, binary artifact d8/d4/d2): seconds to a minute of emulation.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
from lce_kernels import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("qemu-aarch64", "aarch64-linux-gnu-g++", "gcc", "make")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
if not os.path.exists("/usr/include/xnnpack.h"):
    MISSING.append("libxnnpack-dev:arm64 (make -C firmware_sim deps)")
needs_tools = pytest.mark.skipif(bool(MISSING), reason="needs " + ", ".join(MISSING))


def run_cost(tmp_path, *extra):
    out = tmp_path / "cost.json"
    r = subprocess.run([sys.executable, "-m", "firmware_sim.cost", "--json_out", str(out),
                        *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last == json.loads(out.read_text())
    return r.stdout, last


def test_depth_sets():
    from firmware_sim.cost import depth_sets
    assert depth_sets(8) == {8: list(range(8)), 4: [1, 3, 5, 7], 2: [3, 7], 1: [7]}
    assert depth_sets(2) == {2: [0, 1], 1: [1]}


def test_streaming_floor_arithmetic():
    """streaming_vs_windowed's floor, by hand: windowed binary D=8 of 1000 instructions per
    inference (8 layers of 80, a classifier of 40), a depth-4 streaming export of 4 hops per
    window, 5 hops per second, 250 per hop."""
    from firmware_sim import model_cost, stream
    win = {"name": "w", "flavor": "binary", "depth": 8, "streaming": None, "insns": 1000.0,
           "by_type": {ops.BDFSMN: {"count": 8, "insns": 640.0},
                       "FULLY_CONNECTED": {"count": 1, "insns": 40.0}}}
    st = {"name": "s", "flavor": "binary", "depth": 4, "streaming": {"window_hops": 4},
          "insns": 250.0, "hops_per_second": 5.0, "insns_per_second": 1250.0, "by_type": {}}
    sw = model_cost.streaming_vs_windowed([win, st])
    per_s = 1000.0 * 1000.0 / stream.DEFAULT_STRIDE_MS
    hop = (1000.0 - 4 * 80.0 - 40.0) / 4 + 40.0            # 200 per hop
    assert sw["ratio"]["s"] == pytest.approx(per_s / 1250.0, abs=1e-4)
    assert sw["floor"]["s"] == {"hop_insns": 200, "ratio": pytest.approx(per_s / (hop * 5.0),
                                                                         abs=1e-4),
                                "overhead": 50}
    lines = []
    model_cost.report_streaming_ratio([win, st], lines.append)
    assert "floor" in lines[1] and "overhead 50" in lines[1]
    # a windowed model without exactly one classifier op: ratio only
    two_fc = dict(win, by_type=dict(win["by_type"], FULLY_CONNECTED={"count": 2, "insns": 1}))
    assert "floor" not in model_cost.streaming_vs_windowed([two_fc, st])


@needs_tools
def test_cost_tiny(tmp_path):
    text, res = run_cost(tmp_path, "--T", "4", "--C", "32", "--H", "64", "--layers", "2",
                         "--runs", "1", "--models", "")
    for key in ("backbone_instruction_ratio", "layer_instruction_ratio", "model_instruction_ratio",
                "binary_model_insns", "teacher_model_insns", "latency_ms_a53_1p2ghz", "limits",
                "raw", "meta"):
        assert key in res
    assert res["backbone_instruction_ratio"] > 0
    assert res["model_instruction_ratio"] == {} and res["models"] == []  # no model files
    assert set(res["model_instruction_ratio_sum_of_regions"]) == {"2", "1"}
    raw = res["raw"]
    assert len(raw["bitwise"]["layer"]) == 2 and len(raw["float"]["layer"]) == 2
    assert all(v > 0 for v in raw["bitwise"]["stages"].values())
    # the backbone region equals its layers (up to the few marker-dispatch instructions)
    assert abs(raw["bitwise"]["backbone"] - sum(raw["bitwise"]["layer"])) < 100
    assert abs(raw["float"]["backbone"] - sum(raw["float"]["layer"])) < 100
    # the stage-by-stage replica counts the same work as Layer::Eval
    assert abs(sum(raw["bitwise"]["stages"].values()) - raw["bitwise"]["backbone"]) \
        < 0.02 * raw["bitwise"]["backbone"]
    # both drivers checked their output against a reference
    assert any("ok" in ln for ln in res["meta"]["bitwise_check"])
    assert any("ok" in ln for ln in res["meta"]["float_check"])
    assert "What limits it" in text and "Latency estimate" in text


EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")
FLOAT_D8 = os.path.join(EXPORTS, "dfsmn_float_d8.tflite")
BINARY = {d: os.path.join(EXPORTS, f"bifsmnv2_binary_d{d}.tflite") for d in (8, 4, 2, 1)}
needs_exports = pytest.mark.skipif(
    not all(map(os.path.exists, [FLOAT_D8, BINARY[8], BINARY[2]])), reason="exports missing")


@needs_tools
@needs_exports
def test_cost_whole_model_files(tmp_path):
    """Model files counted whole in the aarch64 firmware: the float teacher (XNNPACK) against
    the binary artifact; the ops' regions add up to the whole Invoke()."""
    text, res = run_cost(tmp_path, "--T", "4", "--C", "32", "--H", "64", "--layers", "2",
                         "--runs", "1", "--models", f"{FLOAT_D8},{BINARY[2]}")
    assert set(res["model_instruction_ratio"]) == {"2"}
    assert res["model_instruction_ratio"]["2"] > 1.0 and res["float_teacher"] == "dfsmn_float_d8"
    rt = res["binary_runtime"]
    assert rt["project_ops_kernel_path"] == "neon" and rt["float_kernels"] == "xnnpack"
    assert rt["kernels"][ops.BDFSMN] == "project:neon" and rt["kernels"]["CONV_2D"] == "xnnpack"
    by_name = {m["name"]: m for m in res["models"]}
    for m in by_name.values():
        assert m["allocations_during_invoke"] == 0
        assert 0.98 * m["insns"] < m["ops_sum"] <= m["insns"]  # profiler calls outside the ops
        assert all(t["insns"] > 0 and t["count"] >= 1 for t in m["by_type"].values())
    assert set(by_name["bifsmnv2_binary_d2"]["by_type"][ops.BDFSMN]) >= {"count", "insns"}
    assert by_name["bifsmnv2_binary_d2"]["by_type"][ops.BDFSMN]["count"] == 2
    assert res["binary_model_insns"]["2"] == by_name["bifsmnv2_binary_d2"]["insns"]
    assert "Whole models, one inference each" in text and "Per op" in text


@needs_tools
def test_cost_model_size(tmp_path):
    _, res = run_cost(tmp_path, "--runs", "1")
    assert set(res["model_instruction_ratio_sum_of_regions"]) == {"8", "4", "2", "1"}
    r = res["model_instruction_ratio_sum_of_regions"]
    assert r["1"] > r["2"] > r["4"] > r["8"] > 1.0  # thinner binary models cost less
    assert res["backbone_instruction_ratio"] > 1.0
    depths = {str(d) for d, p in BINARY.items() if os.path.exists(p)}
    if os.path.exists(FLOAT_D8) and depths:  # the whole model files (pretrained/real8)
        m = res["model_instruction_ratio"]
        assert set(m) == depths
        ds = sorted(m, key=int)
        assert all(m[a] > m[b] for a, b in zip(ds, ds[1:])) and m[ds[-1]] > 1.0
