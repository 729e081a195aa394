"""Integrity of models (issue 14): exports record the SHA-256 of their bytes and the tools warn
when a file no longer matches it; a .tflite whose input or output does not fit what the feature
pipeline feeds and the sidecar promises is refused before it runs; NaN / inf logits are an error.

The cases are made from the committed float export (pretrained/real8/exports) with the
flatbuffer object API (``pipeline.bdfsmn.read_model`` / ``write_model``) or by flipping bytes.
"""
import glob
import hashlib
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from lce_kernels import ops
from pipeline import bdfsmn, model_contract, predictors, tflite_metadata
from pipeline.checkpoints import CheckpointError
from pipeline.model_contract import TensorSig

ROOT = os.path.join(os.path.dirname(__file__), "..")
EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")
FLOAT = os.path.join(EXPORTS, "dfsmn_float_d2.tflite")
INT8 = os.path.join(EXPORTS, "dfsmn_int8_d2.tflite")
REAL8 = os.path.join(ROOT, "..", "shared", "data", "speech_commands_real8")
REAL8_WORDS = "yes,no,up,down,left,right,stop,go"


def sidecar(path):
    with open(os.path.splitext(path)[0] + ".json") as f:
        return json.load(f)


def place(tmp_path, data: bytes, meta: dict, name="model") -> str:
    """Write ``data`` as tmp_path/<name>.tflite with ``meta`` as its sidecar."""
    path = str(tmp_path / f"{name}.tflite")
    with open(path, "wb") as f:
        f.write(data)
    with open(str(tmp_path / f"{name}.json"), "w") as f:
        json.dump(meta, f)
    return path


def largest_buffer(data: bytes):
    """(offset, length) of the largest constant buffer (weights) in the file's bytes."""
    model = bdfsmn.read_model(data)
    buf = max((b.data for b in model.buffers if b.data is not None), key=len)
    raw = np.asarray(buf, np.uint8).tobytes()
    offset = data.find(raw)
    assert offset > 0 and data.find(raw, offset + 1) < 0
    return offset, len(raw)


def features(n=4):
    return np.random.default_rng(0).normal(-40, 15, (n, 32, 32)).astype(np.float32)


# -- digests --------------------------------------------------------------------------------------
def test_committed_sidecars_record_the_digest_of_their_file():
    tflites = sorted(glob.glob(os.path.join(EXPORTS, "*.tflite")))
    assert len(tflites) == 15  # float, int8, lce, bdfsmn, binary at depths 8 / 4 / 2
    for path in tflites:
        with open(path, "rb") as f:
            assert sidecar(path)["sha256"] == hashlib.sha256(f.read()).hexdigest(), path


def test_a_byte_flipped_weight_is_reported_in_one_warning_line(tmp_path, caplog):
    """The issue's case: flipped weights changed predictions and nothing noticed."""
    data = bytearray(open(FLOAT, "rb").read())
    meta = sidecar(FLOAT)
    intact = place(tmp_path, bytes(data), meta, "intact")
    with caplog.at_level(logging.WARNING):
        predictors.load_predictor(intact).predict(features())
    assert not [r for r in caplog.records if "SHA-256" in r.getMessage()]

    offset, length = largest_buffer(bytes(data))
    data[offset + length // 2] ^= 0x01  # the lowest mantissa bit of one float weight
    flipped = place(tmp_path, bytes(data), meta, "flipped")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pred = predictors.load_predictor(flipped)
    lines = [r.getMessage() for r in caplog.records if "SHA-256" in r.getMessage()]
    assert len(lines) == 1 and flipped in lines[0] and "\n" not in lines[0]
    assert "changed since" in lines[0]
    assert pred.predict(features()).shape == (4, 9)  # it still runs: a warning, not a refusal


def test_nan_weights_give_an_error_not_an_accuracy(tmp_path):
    data = bytearray(open(FLOAT, "rb").read())
    offset, length = largest_buffer(bytes(data))
    data[offset:offset + length] = np.full(length // 4, np.nan, "<f4").tobytes()
    pred = predictors.load_predictor(place(tmp_path, bytes(data), sidecar(FLOAT)))
    with pytest.raises(CheckpointError, match=r"non-finite logits \(NaN/inf\) for 4 of 4"):
        pred.predict(features())


def test_check_logits():
    y = np.zeros((3, 9), np.float32)
    assert model_contract.check_logits("m", y) is not None
    y[1, 2] = np.inf
    with pytest.raises(CheckpointError, match="1 of 3 input"):
        model_contract.check_logits("m", y)


# -- inputs and outputs ---------------------------------------------------------------------------
def retyped_input(path, tensor_type, scale=None):
    """The model with its input tensor's type changed (quantization params optional)."""
    S = ops.schema()
    model = bdfsmn.read_model(open(path, "rb").read())
    sub = model.subgraphs[0]
    t = sub.tensors[sub.inputs[0]]
    t.type = tensor_type
    if scale is not None:
        t.quantization = S.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [scale], [0]
    return bdfsmn.write_model(model)


def test_input_dtype_edited_to_int8_is_refused_before_it_runs(tmp_path):
    """The issue's case: a float model whose input type was changed to int8 'evaluated' to
    0.111 with exit 0 (the runner divided by the missing scale, 0)."""
    S = ops.schema()
    data = retyped_input(FLOAT, S.TensorType.INT8)
    meta = dict(sidecar(FLOAT), sha256=model_contract.sha256(data))
    with pytest.raises(CheckpointError) as err:
        predictors.load_predictor(place(tmp_path, data, meta))
    msg = str(err.value)
    assert "input" in msg and "int8 [1, 32, 32], scale [] zero point []" in msg
    assert "expected int8 with per-tensor quantization" in msg
    # a zero scale: refused too (by the structural check, pipeline.model_verify, if present)
    data = retyped_input(FLOAT, S.TensorType.INT8, scale=0.0)
    with pytest.raises(ValueError, match="scale") as err:
        predictors.load_predictor(place(tmp_path, data, meta, "zero_scale"))
    assert type(err.value).__name__ in ("CheckpointError", "ModelError")
    data = retyped_input(FLOAT, S.TensorType.INT16, scale=0.5)
    with pytest.raises(CheckpointError, match="type int16"):
        predictors.load_predictor(place(tmp_path, data, meta, "int16"))


@pytest.mark.skipif(not os.path.isdir(REAL8), reason="real Speech Commands pack not present")
def test_int8_edited_model_cli_evaluate_exits_2(tmp_path):
    """The issue's case end to end: evaluate used to print accuracy 0.111 and exit 0."""
    S = ops.schema()
    data = retyped_input(FLOAT, S.TensorType.INT8)
    path = place(tmp_path, data, sidecar(FLOAT))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate", f"--model={path}", f"--data_dir={REAL8}",
         f"--wanted_words={REAL8_WORDS}", "--unknown_percentage=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "int8 [1, 32, 32]" in proc.stderr
    assert "accuracy" not in proc.stdout


def test_sidecar_that_does_not_fit_the_model_is_refused(tmp_path):
    """Files exported before models described themselves (no metadata: the sidecar is all
    there is). A described file wins over its sidecar (tests/test_tflite_metadata.py)."""
    data = tflite_metadata.remove(open(FLOAT, "rb").read())
    meta = sidecar(FLOAT)
    fewer = dict(meta, labels=meta["labels"][:-1])
    with pytest.raises(CheckpointError, match=r"output .* float32 \[1, 9\].*expected float32 "
                                              r"\[1, 8\]"):
        predictors.load_predictor(place(tmp_path, data, fewer, "fewer"))
    pcm = dict(meta, input="audio")
    with pytest.raises(CheckpointError, match=r"shape \[1, 32, 32\].*expected float32 "
                                              r"\[1, 16000\]"):
        predictors.load_predictor(place(tmp_path, data, pcm, "pcm"))
    odd = dict(meta, input="spectrogram")
    with pytest.raises(CheckpointError, match="input 'spectrogram'"):
        predictors.load_predictor(place(tmp_path, data, odd, "odd"))
    bad_labels = dict(meta, labels="yes,no")
    with pytest.raises(CheckpointError, match="list of class names"):
        predictors.load_predictor(place(tmp_path, data, bad_labels, "labels"))


@pytest.mark.parametrize("name", ["dfsmn_float_d8", "dfsmn_int8_d8", "bifsmnv2_lce_d4"])
def test_committed_exports_fit_the_contract(name):
    """Positive controls: float, int8 (valid scale) and LCE-runtime exports load and run."""
    pred = predictors.load_predictor(os.path.join(EXPORTS, f"{name}.tflite"))
    y = pred.predict(features(2))
    assert y.shape == (2, 9) and np.isfinite(y).all()


def test_check_io_rules():
    feat = (1, 32, 32)
    ok_in = TensorSig("x", np.dtype(np.float32), feat)
    ok_out = TensorSig("y", np.dtype(np.float32), (1, 9))
    model_contract.check_io("m", [ok_in], [ok_out], "features", 9)
    q = dict(dtype=np.dtype(np.int8), shape=feat)
    model_contract.check_io("m", [TensorSig("x", scales=(0.5,), zero_points=(-3,), **q)],
                            [ok_out], "features", 9)
    cases = [
        ([TensorSig("x", scales=(float("nan"),), zero_points=(0,), **q)], [ok_out],
         "finite quantization scale"),
        ([TensorSig("x", scales=(0.5, 0.5), zero_points=(0, 0), **q)], [ok_out],
         "per-tensor"),
        ([TensorSig("x", scales=(0.5,), zero_points=(300,), **q)], [ok_out], "zero point in"),
        ([TensorSig("x", np.dtype(np.uint8), feat, (0.5,), (0,))], [ok_out], "type uint8"),
        ([ok_in, ok_in], [ok_out], "2 input"),
        ([ok_in], [], "0 output"),
        ([TensorSig("x", np.dtype(np.float32), (1, 32, 31))], [ok_out], r"shape \[1, 32, 31\]"),
    ]
    for inputs, outputs, message in cases:
        with pytest.raises(CheckpointError, match=message):
            model_contract.check_io("m", inputs, outputs, "features", 9)
