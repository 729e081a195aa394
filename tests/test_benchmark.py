"""pipeline.benchmark on two tiny models (one with LCE's binary conv, one float)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import models  # noqa: F401  (Keras 2 before TensorFlow)
import larq as lq
import tensorflow as tf

from pipeline import benchmark

lce = pytest.importorskip("larq_compute_engine")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    inp = tf.keras.Input((8, 8, 32))
    x = lq.layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False,
                              input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip")(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    out = tf.keras.layers.Dense(4)(tf.keras.layers.Flatten()(x))
    binary = tf.keras.Model(inp, out)
    (d / "tiny_lce.tflite").write_bytes(lce.convert_keras_model(binary))
    inp = tf.keras.Input((32, 32))
    out = tf.keras.layers.Dense(4)(tf.keras.layers.Flatten()(inp))
    (d / "tiny_float.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert())
    return str(d / "tiny_lce.tflite"), str(d / "tiny_float.tflite")


def test_benchmark_function(tiny_models):
    res = benchmark.benchmark(list(tiny_models), threads=1, runs=8, warmup=2)
    assert list(res) == ["tiny_lce.tflite", "tiny_float.tflite"]
    assert res["tiny_lce.tflite"]["runtime"] == "lce"
    assert res["tiny_float.tflite"]["runtime"] == "tflite+xnnpack"
    for r in res.values():
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] and r["runs"] == 8


def test_burst_runs_models_in_turns(tiny_models, monkeypatch):
    """--burst N: each model runs N times in a row per turn, turns still rotate; every run is
    timed, a last short turn completes --runs."""
    order = []
    real_model = benchmark._Model

    class Traced(real_model):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            inner = self.run
            self.run = lambda: (order.append(self.name), inner())[1]

    monkeypatch.setattr(benchmark, "_Model", Traced)
    res = benchmark.benchmark(list(tiny_models), threads=1, runs=7, warmup=1, burst=3)
    timed = order[2:]  # after one warm-up run of each
    lce_name, flt_name = "tiny_lce.tflite", "tiny_float.tflite"
    assert timed == ([lce_name] * 3 + [flt_name] * 3 + [flt_name] * 3 + [lce_name] * 3 +
                     [lce_name] + [flt_name])
    for r in res.values():
        assert r["runs"] == 7 and r["burst"] == 3
    with pytest.raises(benchmark.BenchmarkError, match="burst"):
        benchmark.benchmark(list(tiny_models), runs=4, burst=0)


def test_cli_json_last_line(tiny_models):
    proc = subprocess.run([sys.executable, "-m", "pipeline.benchmark", "--models",
                           tiny_models[0], tiny_models[1], "--runs", "5", "--warmup", "1",
                           "--threads", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    last = json.loads(lines[-1])
    assert set(last) == {"tiny_lce.tflite", "tiny_float.tflite"}
    for entry in last.values():
        assert {"median_ms", "p90_ms", "runtime"} <= set(entry)
        assert np.isfinite(entry["median_ms"]) and entry["p90_ms"] >= entry["median_ms"]
    assert "NOT device numbers" in proc.stdout and "ARM64" in proc.stdout
    assert "median ms" in proc.stdout
