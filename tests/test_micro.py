"""firmware_sim.micro: tensor lifetimes against hand-computed models, TFLM against TFLite on a
tiny int8 teacher, the minimal-arena search, the ``ops.BDFSMN`` budget against its formula.

Tiny models: a 4-op float Keras model (lifetimes by hand), the tiny teacher of
tests/test_export (TINY sizes, randomised weights) converted to int8 directly with
pipeline.export.convert (a hand-written sidecar with its labels), the tiny student spliced
with pipeline.bdfsmn.build (no op library needed: the budget reads the flatbuffer only), and a
backbone-only model of ``ops.BDFSMN`` ops with shapes that exercise the 128-bit padding.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import models  # noqa: F401  (Keras 2 before TensorFlow)
from firmware_sim import micro
from lce_kernels import ops
from pipeline import bdfsmn
from test_train import TINY, tiny_cfg

pytest.importorskip("tflite_micro")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")


# -- lifetimes ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_float(tmp_path_factory):
    """x[1,8] -> a = relu(FC 16) -> b = FC 16 (a) -> c = a + b -> FC 4 (c), float32."""
    import tensorflow as tf
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8,), batch_size=1)
    kw = dict(bias_initializer="random_normal")   # zero biases would be dropped
    a = tf.keras.layers.Dense(16, activation="relu", **kw)(inp)
    b = tf.keras.layers.Dense(16, **kw)(a)
    c = tf.keras.layers.Add()([a, b])
    out = tf.keras.layers.Dense(4, **kw)(c)
    fb = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert()
    path = str(tmp_path_factory.mktemp("tiny_float") / "tiny_float.tflite")
    open(path, "wb").write(fb)
    return path, fb


def test_lifetimes_hand_computed(tiny_float):
    path, fb = tiny_float
    g = micro.load_graph(fb)
    assert [op.name for op in g.ops] == ["FULLY_CONNECTED", "FULLY_CONNECTED", "ADD",
                                         "FULLY_CONNECTED"]
    # x 32 B, a 64, b 64, c 64, out 16 (float32):
    # op0 {x, a} = 96, op1 {a, b} = 128 (x read last by op0), op2 {a, b, c} = 192, op3 {c, out}
    prof = micro.live_profile(g)
    assert prof["per_op"] == [96, 128, 192, 80]
    assert (prof["peak"], prof["peak_op"], prof["peak_op_name"]) == (192, 2, "ADD")
    assert sorted(t[3] for t in prof["peak_tensors"]) == [64, 64, 64]
    # op-private scratch is added at its op only
    assert micro.live_profile(g, [0, 0, 0, 200])["per_op"] == [96, 128, 192, 280]
    b = micro.budget(path)
    # kernels + biases: 8x16 + 16, 16x16 + 16, 16x4 + 4 floats
    assert b["weights"]["total"] == 4 * (8 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4)
    assert b["weights"]["front_end"] == b["weights"]["total"]   # no DFSMN layer: all front end
    assert b["weights"]["binary_bits"] == b["weights"]["binary_vectors"] == 0
    assert b["io_bytes"] == {"input": 32, "output": 16}
    assert "bdfsmn" not in b


# -- ops.BDFSMN budget --------------------------------------------------------------------------
def backbone_layers(n, C, H, left, right):
    """n ``ops.BDFSMN`` layers with zero parameters of the op's input shapes."""
    K, wc, wh = left + right + 1, ops.packed_words(C), ops.packed_words(H)
    I = ops.BDfsmnInput  # noqa: E741
    shapes = {I.MEM_W: (K, wc), I.MEM_P: (len(ops.MEM_P_ROWS), C), I.PW1_W: (H, wc),
              I.PW1_T: (len(ops.THRESH_ROWS), C), I.PW1_P: (len(ops.PW_P_ROWS), H),
              I.PW2_W: (C, wh), I.PW2_T: (len(ops.THRESH_ROWS), H),
              I.PW2_P: (len(ops.PW_P_ROWS), C)}
    ins = [np.zeros(shapes[i], np.int32 if i in ops.BDFSMN_BIT_INPUTS else np.float32)
           for i in list(I)[1:]]
    opts = ops.bdfsmn_options(C, H, left, right, 1)
    return [(f"dfsmn/layer{j}", ins, opts) for j in range(n)]


def test_bdfsmn_scratch_formula_padded_shapes(tmp_path):
    # T=5, C=40, H=200, K=5: PaddedWords64(40) = 2, PaddedWords64(200) = 4
    T, C, H = 5, 40, 200
    layers = backbone_layers(2, C, H, 2, 2)
    path = str(tmp_path / "backbone.tflite")
    open(path, "wb").write(bdfsmn.backbone_model(layers, [1, T, 1, C]))
    b = micro.budget(path)
    bd = b["bdfsmn"]
    assert bd["count"] == 2 and [L["T"] for L in bd["layers"]] == [5, 5]
    s = bd["layers"][0]["scratch"]
    assert s == {"bit_planes": 8 * T * (4 * 2 + 2 * 4), "frame_scales": 3 * 4 * T,
                 "m": 4 * T * C, "h": 4 * T * H, "total": 640 + 60 + 800 + 4000}
    c = bd["layers"][0]["init_copy"]
    assert c == {"weights": 8 * (5 * 2 + 200 * 2 + 40 * 4), "vectors": 4 * (11 * 40 + 5 * 200),
                 "total": 4560 + 5760}
    assert bd["scratch_per_layer"] == 5500 and bd["scratch_sum"] == 11000
    assert bd["tflite_op_heap"] == 2 * (5500 + 10320)
    # stored: bits 4 * (K*ceil(C/32) + H*ceil(C/32) + C*ceil(H/32)), vectors 4 * (11 C + 5 H)
    w = b["weights"]
    assert w["binary_bits"] == 2 * 4 * (5 * 2 + 200 * 2 + 40 * 7)
    assert w["binary_vectors"] == 2 * 4 * (11 * 40 + 5 * 200)
    assert w["total"] == w["binary_bits"] + w["binary_vectors"]
    # tensors [1,5,1,40] float = 800 B: op0 {in, out0}, op1 {out0, out1}; + scratch at each op
    assert b["per_op_live"] == [1600, 1600]
    assert b["activations"]["peak"] == 1600
    assert bd["peak_with_scratch"]["peak"] == 1600 + 5500


@pytest.fixture(scope="module")
def tiny_bdfsmn(tiny_corpus, tmp_path_factory):
    """The tiny student (randomised) at depth 2, spliced as bdfsmn (no op library needed)."""
    import tensorflow as tf
    from pipeline import export
    from pipeline.input_pipeline import index_from_config
    from test_export import make_run_dir
    tf.keras.utils.set_random_seed(5)
    base = tmp_path_factory.mktemp("micro_student")
    labels = index_from_config(tiny_cfg(tiny_corpus)).labels
    run = make_run_dir(str(base / "student"), "bifsmnv2", [8, 4, 2], labels, seed=2)
    model, spec = export.load_keras(run, 2)
    fb, layers = bdfsmn.build(model, 2, spec)
    path = str(base / "tiny_bdfsmn_d2.tflite")
    open(path, "wb").write(fb)
    return path, fb, layers


def test_binary_budget_tiny_bdfsmn(tiny_bdfsmn):
    from models.lce_census import constant_bytes
    path, fb, layers = tiny_bdfsmn
    b = micro.budget(path)
    w, bd = b["weights"], b["bdfsmn"]
    C, H, T, K = TINY["channels"], TINY["hidden"], 8, TINY["left"] + TINY["right"] + 1
    # stored ops.BDFSMN weights: bit rows padded to 32 bits; 16 vectors of C or H floats
    assert w["binary_bits"] == bdfsmn.packed_bytes(layers)["bit_weights"] == \
        2 * 4 * (K * 1 + H * 1 + C * 1)
    assert w["binary_vectors"] == bdfsmn.packed_bytes(layers)["per_channel_vectors"] == \
        2 * 4 * (11 * C + 5 * H)
    assert w["total"] == constant_bytes(fb)["total"]
    assert w["front_end"] > 0 and w["classifier"] > 0 and w["backbone"] == 0
    assert w["total"] == sum(w[k] for k in ("binary_bits", "binary_vectors", "front_end",
                                            "backbone", "classifier", "unused"))
    # the front end's binary convs are float CONV_2D with sign(w) * scale kernels
    assert {x["tensor"] for x in w["binary_kernels_as_float"]} and all(
        x["section"] == "front_end" for x in w["binary_kernels_as_float"])
    # scratch (Layer::Prepare): C = H = 16 -> PaddedWords64 = 2
    per = 8 * T * (4 * 2 + 2 * 2) + 4 * 3 * T + 4 * T * C + 4 * T * H
    assert per == 1888
    assert [(L["T"], L["C"], L["H"]) for L in bd["layers"]] == [(T, C, H)] * 2
    assert [L["layer"] for L in bd["layers"]] == ["dfsmn/layer3", "dfsmn/layer7"]
    assert bd["scratch_per_layer"] == per and bd["scratch_sum"] == 2 * per
    copy = 8 * (K * 2 + H * 2 + C * 2) + 4 * (11 * C + 5 * H)
    assert bd["init_copy_sum"] == 2 * copy and bd["tflite_op_heap"] == 2 * (per + copy)
    # backbone part: input [1, 8, 1, 16] + output, float32, + this op's scratch
    assert b["by_section"]["backbone"]["peak"] == 2 * 4 * T * C + per
    assert b["by_section"]["backbone"]["op_name"] == ops.BDFSMN
    assert b["activations"]["peak"] >= b["by_section"]["backbone"]["tensors_only"]
    # and TFLM refuses it with its own message
    assert "find op" in micro.tflm_binary_attempt(path) or \
        "registration" in micro.tflm_binary_attempt(path)


# -- TFLM -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_int8(tiny_corpus, tmp_path_factory):
    """The tiny teacher (randomised weights) as int8 .tflite + sidecar with its labels."""
    from pipeline import export
    from pipeline.input_pipeline import InputPipeline, index_from_config
    from test_export import make_run_dir
    cfg = tiny_cfg(tiny_corpus)
    base = tmp_path_factory.mktemp("micro_teacher")
    labels = index_from_config(cfg).labels
    run = make_run_dir(str(base / "teacher"), "dfsmn", [8], labels, seed=1)
    model, _ = export.load_keras(run, 8)
    pipe = InputPipeline(index_from_config(cfg, labels=labels), cfg)
    _, feats, _ = export.clips(pipe, "training", 16)
    fb = export.convert(model, "int8", feats)
    path = str(base / "tiny_int8.tflite")
    open(path, "wb").write(fb)
    json.dump({"labels": labels, "input": "features"},
              open(os.path.splitext(path)[0] + ".json", "w"))
    return path, fb, cfg, labels


def test_min_arena_search(tiny_int8):
    path, fb, _, _ = tiny_int8
    r = micro.min_arena(fb)
    n = r["min_arena"]
    with micro.ArenaProbe(fb) as probe:    # (TFLM may crash on a too-small arena)
        assert probe(n)["ok"]
        below = probe(n - 1)
        assert not below["ok"] and ("allocate" in below["message"] or below["crashed"])
        assert not probe(int(0.9 * n))["ok"]
    assert r["one_byte_less"]["works"] is False and r["at_90_percent"]["works"] is False
    # the recorder's layout is below the minimum: planning needs temporary space
    with micro.captured_fds():
        it = micro.tflm_interpreter(fb, n)
        it.set_input(np.zeros((1, 32, 32), np.int8), 0)
        it.invoke()
    with micro.captured_fds() as box:
        it.print_allocations()
    rec = micro.parse_allocations(box["text"])
    assert rec["total"] == rec["head"] + rec["tail"] and 0 < rec["total"] <= n
    assert rec["by_type"]["NodeAndRegistration struct"]["count"] == len(micro.load_graph(fb).ops)
    # the planned tensors are the lifetime peak here (int8 activations, no sharing needed)
    assert rec["head"] >= micro.budget(path)["activations"]["peak"]


def test_tflm_matches_tflite_tiny_int8(tiny_int8):
    path, fb, cfg, labels = tiny_int8
    x, y = micro.test_features(cfg, labels, "testing")
    assert len(x) > 5 and x.shape[1:] == (32, 32)
    r = micro.compare(path, x, y)
    assert r["clips"] == len(x) and r["output_dtype"] == "int8"
    assert r["arena_bytes"] == r["arena_search"]["min_arena"]
    # TFLM's kernels are ports of TFLite's reference kernels: bit-identical
    ref = r["tflm_vs_tflite_ref"]
    assert ref["identical_fraction"] == 1.0 and ref["max_abs_output_diff"] == 0
    # TFLite's optimized kernels round differently: a step or two, same decisions mostly
    s = r["tflm_vs_tflite"]
    print(r["clips"], {k: r[k] for k in r if k.startswith("tflm_vs")}, r["accuracy"])
    assert s["max_abs_output_diff"] <= 8 and s["top1_agreement"] >= 0.7
    assert set(r["accuracy"]) == {"tflm", "tflite", "tflite_ref", "tflite_nodelegate"}
    assert r["accuracy"]["tflm"] == r["accuracy"]["tflite_ref"]
    out = r["_outputs"]
    assert out["tflm"].dtype == np.int8 and out["tflm"].shape == (len(x), len(labels))
    assert np.unique(out["tflm"]).size > 1                  # not a constant output


def test_cli_json_last(tiny_int8, tiny_bdfsmn, tiny_corpus, tmp_path):
    path, _, cfg, _ = tiny_int8
    bpath = tiny_bdfsmn[0]
    js = str(tmp_path / "micro.json")
    r = subprocess.run([sys.executable, "-m", "firmware_sim.micro", "--models",
                        f"{path},{bpath}", "--data_dir", tiny_corpus,
                        "--wanted_words", "yes,no,up,down", "--max_clips", "6",
                        "--json_out", js], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    last = json.loads(r.stdout.strip().splitlines()[-1])
    name = os.path.splitext(os.path.basename(path))[0]
    assert last["tflm"][name]["clips"] == 6
    assert last["tflm"][name]["arena_one_byte_less_fails"] is True
    bname = os.path.splitext(os.path.basename(bpath))[0]
    assert last["binary"][bname]["bdfsmn_scratch_per_layer"] == 1888
    assert "SIGN" in last["binary"][bname]["tflm"] or "find op" in last["binary"][bname]["tflm"]
    assert "minimal" in r.stdout and f"{ops.BDFSMN} x2" in r.stdout
    assert json.load(open(js))["tflm"][name]["arena_bytes"] == last["tflm"][name]["arena_bytes"]
    # wrong words for the model: a clear error, exit 2 (pipeline.cli: a user error); the old
    # spellings (--int8_model, --binary_model) still work, with a deprecation line
    r = subprocess.run([sys.executable, "-m", "firmware_sim.micro", "--int8_model", path,
                        "--binary_model=", "--data_dir", tiny_corpus, "--wanted_words", "cat",
                        "--max_clips", "2"], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert r.returncode == 2 and "wanted_words" in r.stderr and "Traceback" not in r.stderr
    assert "--int8_model is deprecated; use --models" in r.stderr


# -- the published models -------------------------------------------------------------------------
def test_pretrained_bdfsmn_budget():
    path = os.path.join(EXPORTS, "bifsmnv2_bdfsmn_d8.tflite")
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")
    side = json.load(open(os.path.splitext(path)[0] + ".json"))
    b = micro.budget(path)
    assert b["weights"]["total"] == side["weight_bytes"]["total"]
    packed = side["bdfsmn"]["backbone_weight_bytes"]["packed"]
    assert b["weights"]["binary_bits"] == packed["bit_weights"] == 66176
    assert b["weights"]["binary_vectors"] == packed["per_channel_vectors"]
    # T=8, C=128, H=256: 6 planes 1024 B + 96 B scales + m 4096 + h 8192
    assert b["bdfsmn"]["scratch_per_layer"] == 13408 and b["bdfsmn"]["count"] == 8


def test_real8_tflm_d2(real8):
    path = os.path.join(EXPORTS, "dfsmn_int8_d2.tflite")
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")
    from pipeline.input_pipeline import DataConfig
    labels = micro.model_labels(path)
    x, y = micro.test_features(DataConfig(data_dir=real8), labels, "testing", max_clips=40)
    r = micro.compare(path, x, y)
    assert r["tflm_vs_tflite_ref"]["identical_fraction"] == 1.0
    assert r["tflm_vs_tflite"]["top1_agreement"] >= 0.9
    assert r["accuracy"]["tflm"] > 0.6
