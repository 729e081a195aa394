"""pipeline.export --flavor bdfsmn: every DFSMN layer one ``ops.BDFSMN`` op, the rest builtin.

A tiny student (tests/test_export.make_run_dir: TINY sizes, randomised non-degenerate
weights) is exported at depths 8 and 2; the op census has one ``ops.BDFSMN`` per layer and only
builtin ops otherwise; the .tflite (TensorFlow's InterpreterWithCustomOps with the op
library, through pipeline.predictors) agrees with the Keras student; the backbone benchmark
(pipeline.benchmark --backbone) prints backbone_speedup in its JSON line; a malformed model
fails with a TFLite error at allocate_tensors (the op's Prepare), not a crash (subprocess).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline import kernel_ref as K
import numpy_ref as R
from test_export import (VERIFY, assert_export_matches_keras, make_run_dir,
                         verification_features)
from test_train import tiny_cfg

from lce_kernels import ops
from pipeline import bdfsmn, export
from pipeline.input_pipeline import index_from_config
from models.lce_census import _BUILTIN_NAMES, op_census

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def oplib():
    import tensorflow as tf
    if not tf.__version__.startswith("2.16."):
        pytest.skip(f"lce_kernels/tflite/tflite_abi.h is pinned to TF 2.16, found {tf.__version__}")
    return ops.op_library()


@pytest.fixture(scope="module")
def student(tiny_corpus, tmp_path_factory):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(5)  # kernels keep their (random) initialisation: fix them
    base = tmp_path_factory.mktemp("bdfsmn_runs")
    labels = index_from_config(tiny_cfg(tiny_corpus)).labels
    return make_run_dir(str(base / "student"), "bifsmnv2", [8, 4, 2], labels, seed=2)


@pytest.fixture(scope="module")
def exported(oplib, student, tiny_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bdfsmn_exports"))
    reps = export.run(student, out, tiny_cfg(tiny_corpus), depths=[8, 2], flavors=["bdfsmn"],
                      verify_clips=VERIFY, test_accuracy=False)
    return out, {r["name"]: r for r in reps}


def test_census_one_op_per_layer(exported):
    out, reps = exported
    assert set(reps) == {"bifsmnv2_bdfsmn_d8", "bifsmnv2_bdfsmn_d2"}
    builtin = set(_BUILTIN_NAMES.values())
    for depth in (8, 2):
        r = reps[f"bifsmnv2_bdfsmn_d{depth}"]
        path = os.path.join(out, r["file"])
        assert r["written"] and os.path.exists(path)
        census = op_census(open(path, "rb").read())
        print(f"d{depth}: {r['file_bytes']:,} B, {dict(census)}")
        assert census[ops.BDFSMN] == depth
        assert all(n in builtin for n in census if n != ops.BDFSMN), census
        assert not any(ops.is_lce_op(n) for n in census)
        b = r["bdfsmn"]
        assert b[ops.BDFSMN] == b["layers"] == depth and b["builtin_only_otherwise"]
        assert b["layer_indices"] == [j for j in range(8) if (j + 1) % (8 // depth) == 0]
        wb = b["backbone_weight_bytes"]
        # bit rows padded to 32 bits: C = H = 16 (TINY) -> 16x; 128 / 256 -> 32x
        assert wb["packed"]["bit_weights"] == depth * 4 * (5 * 1 + 16 * 1 + 16 * 1)
        assert wb["float32_weights"] == depth * 4 * (5 * 16 + 2 * 16 * 16)
        assert wb["ratio_weights_only"] == 16.0
        assert {x["status"] for x in r["binary_layers"] if x["layer"].startswith("dfsmn/")} \
            == {ops.BDFSMN}
        assert r["verification"]["checks"] == {"top1_agreement": True,
                                               f"one_{ops.BDFSMN}_per_layer": True,
                                               "builtin_only_otherwise": True}
        side = json.load(open(os.path.join(out, r["name"] + ".json")))
        for key in ("labels", "input", "flavor", "depth", "file_bytes", "op_census", "bdfsmn",
                    "verification"):
            assert key in side
        assert side["flavor"] == "bdfsmn" and side["depth"] == depth
        # the file describes itself (pipeline.tflite_metadata), as the report says
        from pipeline import tflite_metadata
        desc = tflite_metadata.read(open(path, "rb").read(), path)
        assert desc == side["description"] and (desc["flavor"], desc["depth"]) == (
            "bdfsmn", depth) and desc["labels"] == side["labels"]
        assert ops.BDFSMN in open(os.path.join(out, r["name"] + ".md")).read()


def test_predictions_equal_keras(exported, student, tiny_corpus):
    """The export's own verification passed, and per clip, on the same validation clips and
    on random inputs: equal to Keras up to float rounding on every tie-free clip (`ties`; a
    clip with a binarizer input within rounding of its threshold may flip one bit)."""
    out, reps = exported
    feats = verification_features(tiny_corpus)
    x_random = np.random.default_rng(0).normal(-2, 2, (32, 32, 32)).astype(np.float32)
    for depth in (8, 2):
        r = reps[f"bifsmnv2_bdfsmn_d{depth}"]
        v = r["verification"]
        print(f"d{depth}: agreement {v['top1_agreement']}, max|d| {v['max_abs_logit_diff']:.2e}"
              f" (scale {v['logit_scale']:.2f}), runtime {v['runtime']}")
        assert v["passed"] and v["clips"] == len(feats) > 10
        assert v["runtime"] == "tf+custom_ops"
        path = os.path.join(out, f"bifsmnv2_bdfsmn_d{depth}.tflite")
        pred, compared = assert_export_matches_keras(
            student, depth, path, {"validation clips": feats, "random inputs": x_random},
            f"d{depth}")
        assert pred.runtime == "tf+custom_ops"
        for ref, got, clean in compared.values():
            R.assert_nontrivial(ref)
            assert np.array_equal(ref.argmax(-1)[clean], got.argmax(-1)[clean])


def test_fold_matches_kernel_ref(student):
    """The layer's own folding (``DFSMNLayer.folded_params``, what the exports use) equals the
    independent NumPy reference's (``kernel_ref.fold`` of the raw parameters) exactly, as the
    inference-form dict and as the op's constant inputs."""
    model, _ = export.load_keras(student, 4)
    P = R.Params(model)
    blocks = model.get_layer("dfsmn").blocks
    for j, d in ((1, 1), (7, 1), (3, 0), (7, 3)):
        got = blocks[j].folded_params(d)
        want = K.fold(K.raw_from_params(P, j), d)
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), (j, d, k)
        for x, y in zip(ops.bdfsmn_inputs(got), ops.bdfsmn_inputs(want)):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    # what the exporter feeds the op (every layer of depth 4)
    for scope, inputs, _ in bdfsmn.student_layers(model, 4, 8, 16, 16, 2, 2, 1):
        j = int(scope.rsplit("layer", 1)[1])
        want = ops.bdfsmn_inputs(K.fold(K.raw_from_params(P, j), 1))
        assert all(np.array_equal(x, y) for x, y in zip(inputs, want)), scope
    with pytest.raises(ValueError, match="depth index 4"):
        blocks[0].folded_params(4)


def test_op_library_error_is_clear(tmp_path):
    with pytest.raises(ops.OpLibraryError, match="does not exist"):
        ops.op_library(str(tmp_path / "nope.so"), build=False)


def test_backbone_benchmark(exported, tmp_path):
    """In process: the two backbone models and the call-overhead model, one interleaved run,
    the JSON keys."""
    from pipeline import benchmark
    out, _ = exported
    path = os.path.join(out, "bifsmnv2_bdfsmn_d8.tflite")
    bit, flt, nop, storage = benchmark.backbone_models(path, str(tmp_path))
    res = benchmark.benchmark([path, bit, flt, nop], threads=1, runs=5, warmup=1)
    lines = benchmark.add_backbone(res, storage)
    print("\n".join(lines))
    last = json.loads(json.dumps(res))
    assert last["backbone_speedup"] > 0 and "speedup" in lines[0]
    assert last["call_overhead_ms"] > 0
    assert op_census(open(nop, "rb").read()) == {"ABS": 1}
    if "backbone_speedup_net" in last:  # both backbones slower than one ABS op (noise aside)
        assert last["backbone_speedup_net"] > 0
    for name, rt in (("bifsmnv2_bdfsmn_d8.tflite", f"tflite+{ops.BDFSMN}"),
                     ("bdfsmn_backbone.tflite", f"tflite+{ops.BDFSMN}"),
                     ("float_backbone.tflite", "tflite+xnnpack")):
        assert last[name]["runtime"] == rt and last[name]["median_ms"] > 0
    w = last["backbone_weight_bytes"]
    assert w["layers"] == 8 and w["packed"]["total"] < w["float32_weights"]
    assert op_census(open(bit, "rb").read()) == {ops.BDFSMN: 8}
    fc = op_census(open(flt, "rb").read())
    assert fc["DEPTHWISE_CONV_2D"] == 8 and ops.BDFSMN not in fc
    assert fc.get("CONV_2D", 0) + fc.get("FULLY_CONNECTED", 0) == 16, fc
    layers, shape = ops.extract_bdfsmn_layers(open(path, "rb").read())
    assert shape == [1, 8, 1, 16] and len(layers) == 8


@pytest.mark.slow  # a fresh process (TensorFlow import + conversion): ~40 s on a loaded machine
def test_backbone_benchmark_cli_json(exported, tmp_path):
    out, _ = exported
    path = os.path.join(out, "bifsmnv2_bdfsmn_d8.tflite")
    proc = subprocess.run([sys.executable, "-m", "pipeline.benchmark", "--models", path,
                           "--backbone", path, "--out_dir", str(tmp_path), "--runs", "5",
                           "--warmup", "1", "--threads", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    print(proc.stdout.strip().splitlines()[-4:-1])
    assert last["backbone_speedup"] > 0
    for name, rt in (("bifsmnv2_bdfsmn_d8.tflite", f"tflite+{ops.BDFSMN}"),
                     ("bdfsmn_backbone.tflite", f"tflite+{ops.BDFSMN}"),
                     ("float_backbone.tflite", "tflite+xnnpack")):
        assert last[name]["runtime"] == rt and last[name]["median_ms"] > 0
        assert last[name]["p90_ms"] >= last[name]["median_ms"]
    w = last["backbone_weight_bytes"]
    assert w["layers"] == 8 and w["packed"]["total"] < w["float32_weights"]
    bit = open(tmp_path / "bdfsmn_backbone.tflite", "rb").read()
    flt = open(tmp_path / "float_backbone.tflite", "rb").read()
    assert op_census(bit) == {ops.BDFSMN: 8}
    assert "DEPTHWISE_CONV_2D" in op_census(flt) and ops.BDFSMN not in op_census(flt)


MALFORMED = r"""
import sys
import numpy as np
from lce_kernels import ops
from pipeline import bdfsmn
from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
data = open({path!r}, "rb").read()

def variant(kind):
    m = bdfsmn.read_model(data)
    sg = m.subgraphs[0]
    code = [i for i, c in enumerate(m.operatorCodes) if ops.custom_code(c) == ops.BDFSMN][0]
    op = [o for o in sg.operators if o.opcodeIndex == code][{which}]
    if kind == "channels":
        o = ops.read_options(bytes(op.customOptions))
        o["channels"] += 1
        op.customOptions = np.frombuffer(ops.bdfsmn_options(**o), np.uint8).copy()
    elif kind == "truncated_options":
        raw = bytes(bytearray(op.customOptions))
        op.customOptions = np.frombuffer(raw[:-3] + b"\x07\x01", np.uint8).copy()
    elif kind == "short_param":  # mem_p with 5 rows instead of 6
        t = sg.tensors[op.inputs[ops.BDfsmnInput.MEM_P]]
        t.shape = [5, t.shape[1]]
        b = m.buffers[t.buffer]
        b.data = b.data[: 5 * t.shape[1] * 4]
    return bdfsmn.write_model(m)

for kind in ("channels", "truncated_options", "short_param"):
    try:
        it = InterpreterWithCustomOps(model_content=variant(kind),
                                      custom_op_registerers=ops.registerers())
        it.allocate_tensors()
        print("NOERROR", kind)
    except (RuntimeError, ValueError) as e:
        print("ERR", kind, str(e).replace("\n", " ")[:300])
"""


def test_malformed_model_fails_in_prepare(exported):
    out, _ = exported
    code = MALFORMED.format(path=os.path.join(out, "bifsmnv2_bdfsmn_d8.tflite"), which=3)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith(("ERR", "NOERROR"))]
    print("\n".join(lines))
    assert len(lines) == 3 and all(l.startswith("ERR") for l in lines), proc.stdout
    assert all(f"{ops.BDFSMN}: " in l for l in lines), lines
