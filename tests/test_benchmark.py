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
