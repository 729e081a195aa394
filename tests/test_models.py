"""Tests of the models package: shapes, parameter counts, NumPy reference, gradients,
save/load, teacher -> student initialisation. Fast (tiny batches, no training)."""
import models  # noqa: F401  (must precede tensorflow: selects Keras 2)

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import numpy_ref as R
import ties
from models.summary import model_stats

DEPTHS = [8, 4, 2, 1]
NUM_CLASSES = 12


def _x(batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 32, 32)).astype(np.float32)


# ---------------------------------------------------------------- architecture / shapes
def test_registry():
    assert models.list_models() == ["bifsmnv2", "bifsmnv2_ste", "bifsmnv2_stream", "dfsmn",
                                    "dfsmn_stream"]
    with pytest.raises(KeyError):
        models.get_model("nope")


def test_layer_sets():
    assert [models.layer_set(d) for d in range(4)] == [
        list(range(8)), [1, 3, 5, 7], [3, 7], [7]]
    assert [models.depth_index(d) for d in DEPTHS] == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["dfsmn", "bifsmnv2"])
def test_output_shapes_every_depth(name):
    x = _x()
    for depth in DEPTHS:
        model = models.get_model(name, depth=depth, num_classes=NUM_CLASSES)
        assert model.output_shape == (None, NUM_CLASSES)
        assert model(x, training=False).shape == (2, NUM_CLASSES)


def test_training_model_outputs():
    model = models.get_model("bifsmnv2", training_depths=DEPTHS)
    out = model(_x(), training=True)
    logits, feats = models.split_training_outputs(out)
    assert sorted(logits) == sorted(DEPTHS)
    for depth in DEPTHS:
        assert logits[depth].shape == (2, NUM_CLASSES)
        d = models.depth_index(depth)
        assert list(feats[depth]) == models.layer_set(d)
        # distillation rule: layer j is matched at depth index d iff (j + 1) % 2**d == 0
        assert all((j + 1) % 2**d == 0 for j in feats[depth])
        for f in feats[depth].values():
            assert f.shape == (2, 8, 1, 128)


# ---------------------------------------------------------------- parameter counts
def _expected_counts(binary, depth=8, classes=NUM_CLASSES):
    """By hand from the layer list of REFERENCE.md (independent of Keras)."""
    T, C, H, K = 8, 128, 256, 5
    L = depth
    kernels = {
        "conv1": 5 * 5 * 1 * 16,            # 400
        "conv2": 5 * 5 * 16 * 32,           # 12,800
        "linear": 256 * C,                  # 32,768
        "memory": L * K * C,                # 640 per layer
        "pw1": L * C * H,                   # 32,768 per layer
        "pw2": L * H * C,                   # 32,768 per layer
        "classifier": T * C * classes,      # 12,288
    }
    macs = (16 * 16 * 16 * 25 * 1           # conv1: 16x16 outputs x 16 ch x 25 taps
            + 8 * 8 * 32 * 25 * 16          # conv2
            + T * 256 * C                   # linear
            + L * T * (K * C + C * H + H * C)  # memory, pw1, pw2
            + T * C * classes)              # classifier
    # every other variable the forward pass reads (BN: gamma, beta, mean, var)
    other = (4 * 16 + 4 * 32 + C            # conv1 BN, conv2 BN, linear bias
             + L * (4 * C + C               # memory BN + PReLU
                    + 4 * H                 # pw1 BN
                    + 4 * C + C)            # pw2 BN_d + PReLU_d (one depth)
             + classes)                     # classifier bias
    if binary:
        other += (3 * 16 + 3 + 3 * 256 + 3                       # conv2, linear: t0..2, alphas
                  + L * (3 * C + 3 + 3 * C + 3 + H + 3 * H + 3))  # memory, pw1 (+PReLU), pw2
    binary_w = sum(v for k, v in kernels.items() if k not in ("conv1", "classifier"))
    return sum(kernels.values()), macs, sum(kernels.values()) + other, binary_w if binary else 0


def test_parameter_counts_reference():
    # REFERENCE.md: "about 0.59 M weights, about 5.4 M multiply-accumulates per clip"
    kernels, macs, params, _ = _expected_counts(False)
    assert kernels == 587_664
    assert macs == 5_431_296
    assert params == 606_428
    teacher = models.get_model("dfsmn", depth=8)
    _, tot = model_stats(teacher)
    assert tot["kernel_weights"] == 587_664
    assert tot["macs"] == 5_431_296
    assert tot["params"] == 606_428
    # the model owns the BNs of all four depths (switchable BN: memory, pw1, pw2) and
    # act0..act3 of every layer: per layer 3 extra x (memory BN + pw1 BN + pw2 BN + PReLU)
    assert teacher.count_params() == 606_428 + 8 * 3 * (4 * 128 + 4 * 256 + 4 * 128 + 128) \
        == 658_652


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_counts_student(depth):
    kernels, macs, params, binary_w = _expected_counts(True, depth)
    student = models.get_model("bifsmnv2", depth=depth)
    _, tot = model_stats(student)
    assert (tot["kernel_weights"], tot["macs"], tot["params"], tot["binary_weights"]) == (
        kernels, macs, params, binary_w)
    if depth == 8:
        assert (params, binary_w) == (621_658, 574_976)
        assert student.count_params() == 621_658 + 8 * 3 * (4 * 128 + 4 * 256 + 4 * 128 + 128) \
            == 673_882
        # 1 bit per binary weight, 32 per other parameter
        assert tot["memory_bits"] == 574_976 + 32 * (621_658 - 574_976)


# ---------------------------------------------------------------- numerics vs NumPy
@pytest.mark.parametrize("name,binary,depth", [
    ("bifsmnv2", True, 8), ("bifsmnv2", True, 2), ("bifsmnv2_ste", True, 1), ("dfsmn", False, 4)])
def test_forward_matches_numpy_reference(name, binary, depth):
    tf.keras.utils.set_random_seed(depth)  # kernels: not from the suite's global generator
    model = models.get_model(name, depth=depth)
    R.randomize_weights(model, seed=depth)
    if not binary:  # no sign(): every sample to float32 rounding
        x = _x(batch=3, seed=1)
        got = model(x, training=False).numpy().astype(np.float64)
        ref = R.forward(x, R.Params(model), binary, models.depth_index(depth))
        R.assert_nontrivial(ref)
        err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
        assert err < 1e-5, err
        return
    # float32 vs float64: a binarizer input within rounding of its threshold may flip a bit,
    # so compare the tie-free samples (the NumPy reference runs on those only)
    x = _x(batch=32, seed=1)
    got, margin = ties.keras_with_margins(model, x)
    clean = ties.tie_free(margin)
    ref = R.forward(x[clean], R.Params(model), binary, models.depth_index(depth))
    R.assert_nontrivial(ref)
    ties.assert_close_except_ties(got[clean], ref, margin[clean], tol=1e-5,
                                  label=f"{name} d{depth}: Keras vs NumPy")


# ---------------------------------------------------------------- quantizers / gradients
def test_lpb_gradient_formula():
    x = tf.constant([-2.0, -0.9, -0.2, 0.0, 0.3, 1.2, 3.0])
    alpha = tf.Variable(0.8)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = models.lpb_sign(x, tf.convert_to_tensor(alpha))
        loss = tf.reduce_sum(y * tf.range(1.0, 8.0))
    np.testing.assert_array_equal(y.numpy(), [-1, -1, -1, 1, 1, 1, 1])
    dy = np.arange(1.0, 8.0)
    mask = (np.abs(0.8 * x.numpy()) <= 1).astype(float)
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), dy * 0.8 * mask, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, alpha).numpy(),
                               np.sum(dy * x.numpy() * mask), rtol=1e-6)


def test_weight_quantizer_is_one_bit_per_output_channel():
    q = models.ScaledSignWeight()
    w = tf.random.normal((1, 1, 16, 8))
    wq = q(w).numpy()
    for o in range(8):
        vals = np.unique(np.abs(wq[..., o]))
        assert len(vals) == 1
        np.testing.assert_allclose(vals[0], np.mean(np.abs(w.numpy()[..., o])), rtol=1e-6)


def test_weight_scale_floor_keeps_dead_channels_binary():
    """A dead output channel (latent weights decayed to ~1e-31) gets the scale floor, so LCE's
    converter still lowers the conv to its binary conv (it refuses any channel scale at or
    below float32 epsilon); the live channels keep mean |w|."""
    from lce_kernels import ops
    from models.lce_census import op_census
    from models.quantizers import MIN_WEIGHT_SCALE
    from pipeline import kernel_ref
    lce = pytest.importorskip("larq_compute_engine")
    assert MIN_WEIGHT_SCALE == kernel_ref.MIN_WEIGHT_SCALE > np.finfo(np.float32).eps
    w = np.random.default_rng(0).normal(size=(1, 1, 64, 8)).astype(np.float32)
    w[..., 3] *= 1e-30
    wq = models.ScaledSignWeight()(tf.constant(w)).numpy()
    assert np.all(np.abs(wq[..., 3]) == np.float32(MIN_WEIGHT_SCALE))
    np.testing.assert_allclose(np.abs(wq[0, 0, 0, :3]), np.mean(np.abs(w[..., :3]), (0, 1, 2)),
                               rtol=1e-6)
    inp = tf.keras.Input((4, 4, 64))
    conv = lq.layers.QuantConv2D(8, 1, use_bias=False, input_quantizer="ste_sign",
                                 kernel_quantizer=models.ScaledSignWeight(learnable=False))
    model = tf.keras.Model(inp, conv(inp))
    conv.set_weights([w])
    census = op_census(lce.convert_keras_model(model))
    assert census[ops.BCONV2D] == 1 and census["CONV_2D"] == 0, census


def test_gradients_reach_alpha_and_thresholds():
    model = models.get_model("bifsmnv2", depth=8)
    # the classifier is zero-initialised (training stability), which zeroes every upstream
    # gradient at init: give it random values first
    kernel = model.get_layer("classifier").kernel
    kernel.assign(tf.random.normal(kernel.shape, stddev=0.03, seed=1))
    qv = models.quant_variables(model)
    names = [v.name for v in qv]
    n_thr = sum("threshold_t" in n for n in names)
    n_alpha = sum("lpb_alpha" in n for n in names)
    # 26 dual-scale activations (conv2, linear, 8 x memory/pw1/pw2), 3 weights-quantizers each
    assert (n_thr, n_alpha) == (3 * 26, 3 * 26)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(_x(batch=4), training=True) ** 2)
    grads = tape.gradient(loss, qv)
    for v, g in zip(qv, grads):
        assert g is not None, v.name
        g = g.numpy()
        assert np.all(np.isfinite(g)), v.name
        assert np.any(g != 0), v.name


def test_ste_ablation_has_no_alpha():
    model = models.get_model("bifsmnv2_ste", depth=1)
    names = [v.name for v in models.quant_variables(model)]
    assert names and all("threshold_t" in n for n in names)


def test_quantizer_loads_by_name():
    assert isinstance(lq.quantizers.get("lpb_sign"), models.LPBSign)
    q = tf.keras.utils.deserialize_keras_object(
        tf.keras.utils.serialize_keras_object(models.LPBSign(learnable=False)))
    assert isinstance(q, models.LPBSign) and q.learnable is False
    layer = lq.layers.QuantConv2D(4, 1, input_quantizer="lpb_sign",
                                  kernel_quantizer="scaled_sign_weight")
    clone = lq.layers.QuantConv2D.from_config(layer.get_config())
    assert isinstance(clone.input_quantizer, models.LPBSign)
    assert isinstance(clone.kernel_quantizer, models.ScaledSignWeight)


# ---------------------------------------------------------------- save / load
def test_whole_model_save_load(tmp_path):
    model = models.get_model("bifsmnv2", depth=4)
    R.randomize_weights(model, seed=3)
    x = _x(seed=2)
    ref = model(x, training=False).numpy()
    R.assert_nontrivial(ref)
    for fname in ("student.keras", "student.h5"):
        model.save(tmp_path / fname)
        loaded = tf.keras.models.load_model(tmp_path / fname)  # custom objects registered
        np.testing.assert_array_equal(loaded(x, training=False).numpy(), ref)


def test_weights_checkpoint_across_training_and_export_models(tmp_path):
    train = models.get_model("bifsmnv2", training_depths=DEPTHS)
    R.randomize_weights(train, seed=4)
    x = _x(seed=3)
    logits, _ = models.split_training_outputs(train(x, training=False))
    R.assert_nontrivial(logits[2].numpy())
    for fmt in ("ckpt.h5", "ckpt"):
        path = str(tmp_path / fmt)
        train.save_weights(path)
        for depth in (8, 2):
            export = models.get_model("bifsmnv2", depth=depth)
            assert [v.name for v in export.weights] == [v.name for v in train.weights]
            status = export.load_weights(path)
            if fmt == "ckpt":
                status.assert_existing_objects_matched()
            np.testing.assert_array_equal(export(x, training=False).numpy(),
                                          logits[depth].numpy())
    # and back: export checkpoint -> training model
    export.save_weights(str(tmp_path / "e.h5"))
    train2 = models.get_model("bifsmnv2", training_depths=DEPTHS)
    train2.load_weights(str(tmp_path / "e.h5"))
    for a, b in zip(train2.weights, train.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------- teacher -> student
def test_init_student_from_teacher():
    teacher = models.get_model("dfsmn", depth=8)
    R.randomize_weights(teacher, seed=5)
    student = models.get_model("bifsmnv2", depth=8)
    report = models.init_student_from_teacher(student, teacher, verbose=False)
    assert report["teacher_only"] == [] and report["shape_mismatch"] == []
    # 270 variables + per layer 3 extra depths x 2 switchable BNs (memory, pw1) x 4 variables
    assert len(report["copied"]) == len(teacher.weights) == 270 + 8 * 3 * 2 * 4
    for n in report["student_only"]:
        assert "threshold_t" in n or "lpb_alpha" in n or n.endswith("pw1_act/alpha"), n
    t_vals = {v.name: v.numpy() for v in teacher.weights}
    for v in student.weights:
        if v.name in t_vals:
            np.testing.assert_array_equal(v.numpy(), t_vals[v.name])
    # the full-precision front (conv1 + BN + ReLU) now gives identical outputs
    x = _x(seed=4)
    sub = lambda m: tf.keras.Model(m.input, m.get_layer("conv1_relu").output)  # noqa: E731
    np.testing.assert_array_equal(sub(student)(x).numpy(), sub(teacher)(x).numpy())
    # the student's binary conv2 uses sign(teacher kernel) * per-output-channel mean|w|
    wq = student.get_layer("conv2").quantized_kernel().numpy()
    wt = teacher.get_layer("conv2").conv.kernel.numpy()
    np.testing.assert_allclose(wq, np.sign(wt) * np.abs(wt).mean(axis=(0, 1, 2)), rtol=1e-6)
