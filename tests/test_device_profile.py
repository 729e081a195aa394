"""pipeline.device_profile: the benchmark_model output parser, outputs, device handling.

tests/data holds two hand-made outputs in the format of TFLite's benchmark_model
(tensorflow/lite/tools/benchmark + profiling/profile_summarizer, stats_calculator tables):
  lce_benchmark_rpi4_bifsmnv2_lce_d8_t1.txt   newer layout (no [start] column, 36-wide
      node type, "INFO: " prefixes), LCE ops incl. LceBconv2d, 1 thread;
  benchmark_model_android_dfsmn_float_d8_t4.txt   older layout ([start] column), XNNPACK
      op names with spaces and commas, 4 threads.
Both contain the initialization section's own "Summary by node type", which must be skipped.
The numbers in them are invented (consistent with each other), not measurements.
"""
import os
import subprocess
import sys

import pytest

from pipeline import device_profile as dp

DATA = os.path.join(os.path.dirname(__file__), "data")
LCE = os.path.join(DATA, "lce_benchmark_rpi4_bifsmnv2_lce_d8_t1.txt")
XNN = os.path.join(DATA, "benchmark_model_android_dfsmn_float_d8_t4.txt")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_lce_output():
    r = dp.parse_benchmark_output(open(LCE).read())
    ops = {o["type"]: o for o in r["ops"]}
    assert len(r["ops"]) == 13 and r["ops"][0]["type"] == "LceBconv2d"
    assert ops["LceBconv2d"] == {"type": "LceBconv2d", "count": 36, "avg_ms": 0.412,
                                 "percent": 39.163, "cdf_percent": 39.163, "mem_kb": 0.0,
                                 "times_called": 36}
    assert ops["DEPTHWISE_CONV_2D"]["count"] == 8 and ops["RESHAPE"]["avg_ms"] == 0.002
    assert sum(o["count"] for o in r["ops"]) == 365
    assert r["ops_total_ms"] == pytest.approx(1.052)
    assert r["ops"][-1]["cdf_percent"] == pytest.approx(100.0, abs=0.01)
    assert "ModifyGraphWithDelegate" not in ops  # the initialization table is skipped
    assert r["avg_inference_ms"] == pytest.approx(1.09841)
    assert r["init_ms"] == pytest.approx(3.81) and r["first_inference_ms"] == pytest.approx(1.702)
    assert r["profiled_avg_ms"] == pytest.approx(1.0612) and r["profiled_runs"] == 887
    assert r["threads"] == 1 and r["graph"].endswith("bifsmnv2_lce_d8.tflite")


def test_parse_older_layout_with_xnnpack_names():
    r = dp.parse_benchmark_output(open(XNN).read())
    ops = {o["type"]: o for o in r["ops"]}
    assert r["ops"][0]["type"] == "Convolution (NHWC, F32) IGEMM"
    assert ops["Convolution (NHWC, F32) IGEMM"]["count"] == 17
    assert ops["Add (ND, F32)"]["avg_ms"] == 0.032
    assert r["ops_total_ms"] == pytest.approx(0.645)
    assert r["avg_inference_ms"] == pytest.approx(0.60487) and r["threads"] == 4


def test_parse_errors():
    with pytest.raises(dp.DeviceError, match="enable_op_profiling"):
        dp.parse_benchmark_output("INFO: Inference timings in us: Init: 1, Inference (avg): 2\n")
    text = open(LCE).read().replace("       36\t     0.412", "       xx\t     0.412")
    with pytest.raises(dp.DeviceError, match="cannot parse op row"):
        dp.parse_benchmark_output(text)


def test_outputs_table_and_chart(tmp_path):
    results = {"bifsmnv2_lce_d8_t1": dp.parse_benchmark_output(open(LCE).read()),
               "dfsmn_float_d8_t4": dp.parse_benchmark_output(open(XNN).read())}
    dp.write_outputs(results, str(tmp_path))
    for title in results:
        assert os.path.getsize(tmp_path / f"{title}.png") > 5000
        md = open(tmp_path / f"{title}.md").read()
        assert "| op type | count | avg ms | % of total |" in md
    md = open(tmp_path / "bifsmnv2_lce_d8_t1.md").read()
    assert "| LceBconv2d | 36 | 0.412 | 39.2% |" in md and "Lce* ops" in md
    summary = open(tmp_path / "device_profile.md").read()
    assert "bifsmnv2_lce_d8_t1" in summary and "dfsmn_float_d8_t4" in summary
    assert os.path.exists(tmp_path / "device_profile.json")


class FakeDevice:
    """Records commands; answers `uname -m` and the benchmark run with the sample output."""

    def __init__(self):
        self.cmds = []

    def __call__(self, cmd):
        self.cmds.append(cmd)
        out = ""
        if cmd[-1] == "uname -m":
            out = "aarch64\n"
        elif "--enable_op_profiling=true" in cmd[-1]:
            out = open(LCE).read()
        return subprocess.CompletedProcess(cmd, 0, out, "")


def test_adb_and_ssh_command_flow(tmp_path):
    model, binary = tmp_path / "m.tflite", tmp_path / "lce_benchmark_model"
    model.write_bytes(b"x")
    binary.write_bytes(b"x")
    fake = FakeDevice()
    remote = dp.Remote(adb="SERIAL1", runner=fake)
    res = dp.profile_on_device(remote, [str(model)], str(binary), ["1", "4"],
                               out_dir=str(tmp_path / "out"))
    assert set(res) == {"m_t1", "m_t4"} and res["m_t4"]["ops"][0]["type"] == "LceBconv2d"
    assert ["adb", "-s", "SERIAL1", "push", str(model),
            "/data/local/tmp/bifsmn_profile/m.tflite"] in fake.cmds
    runs = [c[-1] for c in fake.cmds if "--enable_op_profiling=true" in c[-1]]
    assert runs == [f"/data/local/tmp/bifsmn_profile/lce_benchmark_model --graph="
                    f"/data/local/tmp/bifsmn_profile/m.tflite --num_threads={n} "
                    "--enable_op_profiling=true" for n in (1, 4)]
    assert os.path.exists(tmp_path / "out" / "m_t4.txt")
    fake = FakeDevice()
    dp.profile_on_device(dp.Remote(ssh="pi@rpi4", runner=fake), [str(model)], str(binary),
                         ["1"], out_dir=str(tmp_path / "out2"))
    assert ["scp", "-q", str(model), "pi@rpi4:/tmp/bifsmn_profile/m.tflite"] in fake.cmds
    assert any(c[:2] == ["ssh", "pi@rpi4"] and "--num_threads=1" in c[-1] for c in fake.cmds)


def test_clear_error_without_device(tmp_path, monkeypatch):
    with pytest.raises(dp.DeviceError, match="--adb SERIAL.*--ssh"):
        dp.Remote()
    with pytest.raises(dp.DeviceError, match="not both"):
        dp.Remote(adb="A", ssh="B")
    monkeypatch.setattr(dp.shutil, "which", lambda tool: None)
    with pytest.raises(dp.DeviceError, match="`adb` is not installed"):
        dp.Remote(adb="SERIAL1")
    with pytest.raises(dp.DeviceError, match="`ssh` is not installed"):
        dp.Remote(ssh="pi@rpi4")
    proc = subprocess.run([sys.executable, "-m", "pipeline.device_profile", "--models",
                           LCE, "--benchmark_binary", LCE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no device given" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pipeline.device_profile", "--parse", LCE,
                           "--out_dir", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert "| LceBconv2d | 36 |" in proc.stdout
    assert os.path.exists(tmp_path / "lce_benchmark_rpi4_bifsmnv2_lce_d8_t1.png")
