"""pipeline.device_profile: the benchmark_model output parser, outputs, device handling.

tests/data holds two hand-made outputs in the format of TFLite's benchmark_model
(tensorflow/lite/tools/benchmark + profiling/profile_summarizer, stats_calculator tables):
  lce_benchmark_rpi4_bifsmnv2_lce_d8_t1.txt   newer layout (no [start] column, 36-wide
      node type, "INFO: " prefixes), LCE ops incl. ``ops.BCONV2D``, 1 thread;
  benchmark_model_android_dfsmn_float_d8_t4.txt   older layout ([start] column), XNNPACK
      op names with spaces and commas, 4 threads.
Both contain the initialization section's own "Summary by node type", which must be skipped.
The numbers in them are invented (consistent with each other), not measurements.

The CSV profile (--profiling_output_csv_file, TFLite's ProfileSummaryCSVFormatter) of the same
two runs, with the same numbers, in the format TFLite writes it (tests/data/README.md):
  lce_csv_rpi4_bifsmnv2_lce_d8_t1.csv + .txt   the CSV (newer layout) and the stdout of that
      run (no profile tables: they went to the file);
  benchmark_model_csv_android_dfsmn_float_d8_t4.csv   older layout ([start] column), op types
      with ", " in them, no stdout.
"""
import os
import subprocess
import sys

import pytest

from lce_kernels import ops
from pipeline import device_profile as dp

DATA = os.path.join(os.path.dirname(__file__), "data")
LCE = os.path.join(DATA, "lce_benchmark_rpi4_bifsmnv2_lce_d8_t1.txt")
XNN = os.path.join(DATA, "benchmark_model_android_dfsmn_float_d8_t4.txt")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LCE_CSV = os.path.join(DATA, "lce_csv_rpi4_bifsmnv2_lce_d8_t1.csv")
LCE_CSV_STDOUT = os.path.join(DATA, "lce_csv_rpi4_bifsmnv2_lce_d8_t1.txt")
XNN_CSV = os.path.join(DATA, "benchmark_model_csv_android_dfsmn_float_d8_t4.csv")


def test_parse_lce_output():
    r = dp.parse_benchmark_output(open(LCE).read())
    by_type = {o["type"]: o for o in r["ops"]}
    assert len(r["ops"]) == 13 and r["ops"][0]["type"] == ops.BCONV2D
    assert by_type[ops.BCONV2D] == {"type": ops.BCONV2D, "count": 36, "avg_ms": 0.412,
                                 "percent": 39.163, "cdf_percent": 39.163, "mem_kb": 0.0,
                                 "times_called": 36}
    assert by_type["DEPTHWISE_CONV_2D"]["count"] == 8 and by_type["RESHAPE"]["avg_ms"] == 0.002
    assert sum(o["count"] for o in r["ops"]) == 365
    assert r["ops_total_ms"] == pytest.approx(1.052)
    assert r["ops"][-1]["cdf_percent"] == pytest.approx(100.0, abs=0.01)
    assert "ModifyGraphWithDelegate" not in by_type  # the initialization table is skipped
    assert r["avg_inference_ms"] == pytest.approx(1.09841)
    assert r["init_ms"] == pytest.approx(3.81) and r["first_inference_ms"] == pytest.approx(1.702)
    assert r["profiled_avg_ms"] == pytest.approx(1.0612) and r["profiled_runs"] == 887
    assert r["threads"] == 1 and r["graph"].endswith("bifsmnv2_lce_d8.tflite")


def test_parse_older_layout_with_xnnpack_names():
    r = dp.parse_benchmark_output(open(XNN).read())
    by_type = {o["type"]: o for o in r["ops"]}
    assert r["ops"][0]["type"] == "Convolution (NHWC, F32) IGEMM"
    assert by_type["Convolution (NHWC, F32) IGEMM"]["count"] == 17
    assert by_type["Add (ND, F32)"]["avg_ms"] == 0.032
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
    assert f"| {ops.BCONV2D} | 36 | 0.412 | 39.2% |" in md and "Lce* ops" in md
    summary = open(tmp_path / "device_profile.md").read()
    assert "bifsmnv2_lce_d8_t1" in summary and "dfsmn_float_d8_t4" in summary
    assert os.path.exists(tmp_path / "device_profile.json")


# -- the CSV profile --------------------------------------------------------------------------
def test_csv_profile_gives_the_table_stdout_gives():
    """Same run, same numbers: the CSV's op table equals the one parsed from stdout (the
    CSV prints 50.38% where stdout prints 50.380%, 0 for 0.000)."""
    from_csv = dp.parse_profile_csv(open(LCE_CSV).read(), open(LCE_CSV_STDOUT).read())
    from_stdout = dp.parse_benchmark_output(open(LCE).read())
    assert from_csv["ops"] == from_stdout["ops"]
    assert "ModifyGraphWithDelegate" not in {o["type"] for o in from_csv["ops"]}
    for key in ("ops_total_ms", "avg_inference_ms", "init_ms", "first_inference_ms",
                "profiled_avg_ms", "profiled_runs", "threads", "graph"):
        assert from_csv[key] == from_stdout[key], key
    assert "Summary by node type" not in open(LCE_CSV_STDOUT).read()


def test_csv_older_layout_keeps_op_types_with_commas():
    r = dp.parse_profile_csv(open(XNN_CSV).read())  # no stdout: only the profile's facts
    ops = {o["type"]: o for o in r["ops"]}
    assert r["ops"] == dp.parse_benchmark_output(open(XNN).read())["ops"]
    assert ops["Convolution (NHWC, F32) IGEMM"] == {
        "type": "Convolution (NHWC, F32) IGEMM", "count": 17, "avg_ms": 0.388,
        "percent": 60.155, "cdf_percent": 60.155, "mem_kb": 0.0, "times_called": 17}
    assert r["avg_inference_ms"] == pytest.approx(0.645)  # the profile's Timings avg
    assert r["threads"] is None


def test_csv_errors_and_fallback(capsys):
    text = open(LCE_CSV).read()
    with pytest.raises(dp.DeviceError, match="enable_op_profiling"):
        dp.parse_profile_csv(text.split("Operator-wise")[0])
    with pytest.raises(dp.DeviceError, match="cannot parse CSV op row: 'SUB, 86, x"):
        dp.parse_profile_csv(text.replace("SUB, 86, 0.094", "SUB, 86, x"))
    with pytest.raises(dp.DeviceError, match="unexpected 'Summary by node type' CSV header"):
        dp.parse_profile_csv(text.replace("avg %, cdf %", "avg%, cdf%"))
    # the run: CSV first, stdout the fallback
    assert dp.parse_benchmark_run(open(LCE_CSV_STDOUT).read(), text)["profile_source"] == "csv"
    assert dp.parse_benchmark_run(open(LCE).read(), None)["profile_source"] == "stdout"
    broken = text.replace("SUB, 86, 0.094", "SUB, 86, x")
    r = dp.parse_benchmark_run(open(LCE).read(), broken, "m_t1.csv")
    assert r["profile_source"] == "stdout" and "m_t1.csv unreadable" in capsys.readouterr().err
    with pytest.raises(dp.DeviceError, match="m_t1.csv: cannot parse CSV op row.*stdout has "
                                             "no profile either"):
        dp.parse_benchmark_run(open(LCE_CSV_STDOUT).read(), broken, "m_t1.csv")


def test_parse_saved_pairs_stdout_and_csv(tmp_path):
    for src, name in ((LCE_CSV, "run_t1.csv"), (LCE_CSV_STDOUT, "run_t1.txt"),
                      (XNN_CSV, "xnn_t4.csv"), (LCE, "old_t1.txt")):
        (tmp_path / name).write_text(open(src).read())
    res = dp.parse_saved([str(tmp_path / "run_t1.txt"), str(tmp_path / "xnn_t4.csv"),
                          str(tmp_path / "old_t1.txt")])
    assert set(res) == {"run_t1", "xnn_t4", "old_t1"}
    assert res["run_t1"]["profile_source"] == "csv" and res["run_t1"]["threads"] == 1
    assert res["run_t1"]["avg_inference_ms"] == pytest.approx(1.09841)  # from the .txt beside
    assert res["xnn_t4"]["profile_source"] == "csv"
    assert res["old_t1"]["profile_source"] == "stdout"
    # the same run given twice (both files) is one run
    assert set(dp.parse_saved([str(tmp_path / "run_t1.txt"),
                               str(tmp_path / "run_t1.csv")])) == {"run_t1"}


class FakeDevice:
    """Records commands; answers `uname -m` and the benchmark run. ``csv``: a binary that
    writes the CSV profile (stdout without the tables; `adb pull` / `scp` copy the sample CSV);
    otherwise one that prints the profile to stdout (and a pull fails: no such file)."""

    def __init__(self, csv=True):
        self.cmds = []
        self.csv = csv

    def __call__(self, cmd):
        self.cmds.append(cmd)
        out, rc = "", 0
        if cmd[-1] == "uname -m":
            out = "aarch64\n"
        elif "--enable_op_profiling=true" in cmd[-1]:
            out = open(LCE_CSV_STDOUT if self.csv else LCE).read()
        elif cmd[:1] == ["scp"] and ":" in cmd[2] or "pull" in cmd:
            if self.csv:
                with open(cmd[-1], "w") as f:
                    f.write(open(LCE_CSV).read())
            else:
                rc = 1
        return subprocess.CompletedProcess(cmd, rc, out, "" if rc == 0 else "no such file")


def test_adb_and_ssh_command_flow(tmp_path):
    model, binary = tmp_path / "m.tflite", tmp_path / "lce_benchmark_model"
    model.write_bytes(b"x")
    binary.write_bytes(b"x")
    fake = FakeDevice()
    remote = dp.Remote(adb="SERIAL1", runner=fake)
    res = dp.profile_on_device(remote, [str(model)], str(binary), ["1", "4"],
                               out_dir=str(tmp_path / "out"))
    assert set(res) == {"m_t1", "m_t4"} and res["m_t4"]["ops"][0]["type"] == ops.BCONV2D
    assert res["m_t1"]["profile_source"] == "csv"
    assert res["m_t1"]["avg_inference_ms"] == pytest.approx(1.09841)  # stdout's facts
    assert ["adb", "-s", "SERIAL1", "push", str(model),
            "/data/local/tmp/bifsmn_profile/m.tflite"] in fake.cmds
    remote = "/data/local/tmp/bifsmn_profile"
    runs = [c[-1] for c in fake.cmds if "--enable_op_profiling=true" in c[-1]]
    assert runs == [f"{remote}/lce_benchmark_model --graph={remote}/m.tflite --num_threads={n} "
                    f"--enable_op_profiling=true --profiling_output_csv_file={remote}/m_t{n}.csv"
                    for n in (1, 4)]
    shell = [c[-1] for c in fake.cmds if c[:4] == ["adb", "-s", "SERIAL1", "shell"]]
    # a stale CSV of an earlier run is removed before each run
    assert shell.index(f"rm -f {remote}/m_t1.csv") < shell.index(runs[0])
    assert ["adb", "-s", "SERIAL1", "pull", f"{remote}/m_t4.csv",
            str(tmp_path / "out" / "m_t4.csv")] in fake.cmds
    assert os.path.exists(tmp_path / "out" / "m_t4.txt")
    assert os.path.exists(tmp_path / "out" / "m_t4.csv")
    fake = FakeDevice()
    res = dp.profile_on_device(dp.Remote(ssh="pi@rpi4", runner=fake), [str(model)],
                               str(binary), ["1"], out_dir=str(tmp_path / "out2"))
    assert ["scp", "-q", str(model), "pi@rpi4:/tmp/bifsmn_profile/m.tflite"] in fake.cmds
    assert ["scp", "-q", "pi@rpi4:/tmp/bifsmn_profile/m_t1.csv",
            str(tmp_path / "out2" / "m_t1.csv")] in fake.cmds
    assert any(c[:2] == ["ssh", "pi@rpi4"] and "--num_threads=1" in c[-1] for c in fake.cmds)
    assert res["m_t1"]["profile_source"] == "csv"


def test_binary_without_csv_falls_back_to_stdout(tmp_path, capsys):
    model, binary = tmp_path / "m.tflite", tmp_path / "lce_benchmark_model"
    model.write_bytes(b"x")
    binary.write_bytes(b"x")
    res = dp.profile_on_device(dp.Remote(adb="SERIAL1", runner=FakeDevice(csv=False)),
                               [str(model)], str(binary), ["1"], out_dir=str(tmp_path / "out"))
    assert res["m_t1"]["profile_source"] == "stdout"
    assert res["m_t1"]["ops"] == dp.parse_benchmark_output(open(LCE).read())["ops"]
    assert "no CSV profile from the device" in capsys.readouterr().err


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
    assert f"| {ops.BCONV2D} | 36 |" in proc.stdout
    assert os.path.exists(tmp_path / "lce_benchmark_rpi4_bifsmnv2_lce_d8_t1.png")
