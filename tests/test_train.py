"""Training: FID math against independent references, the objective, resume, NaN stop, evaluate."""
import json
import os

import numpy as np
import pytest
import pywt
import tensorflow as tf

from pipeline import cli, distill
from pipeline import evaluate as ev
from pipeline.input_pipeline import DataConfig
from pipeline.train import NonFiniteLoss, Trainer

TINY = dict(channels=16, hidden=16, num_layers=8, left=2, right=2, dilation=1, dropout=0.2)


# -- FID math ------------------------------------------------------------------------------------
def pywt_bands(x, levels):
    """Low/high reconstructions with PyWavelets (zero mode), one 2-D image at a time."""
    lows, highs = [], []
    for img in x:
        coeffs = pywt.wavedec2(img, "haar", mode="zero", level=levels)
        low = [coeffs[0]] + [tuple(np.zeros_like(c) for c in d) for d in coeffs[1:]]
        high = [np.zeros_like(coeffs[0])] + list(coeffs[1:])
        r, c = img.shape
        lows.append(pywt.waverec2(low, "haar", mode="zero")[:r, :c])
        highs.append(pywt.waverec2(high, "haar", mode="zero")[:r, :c])
    return np.stack(lows), np.stack(highs)


@pytest.mark.parametrize("shape,levels", [((3, 16, 8), 1), ((2, 16, 8), 2), ((2, 12, 8), 3),
                                          ((2, 7, 5), 1)])
def test_haar_bands_match_pywavelets(shape, levels):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    high, low = distill.bands(tf.constant(x), "fid", levels)
    ref_low, ref_high = pywt_bands(x.astype(np.float64), levels)
    np.testing.assert_allclose(low.numpy(), ref_low, atol=1e-5)
    np.testing.assert_allclose(high.numpy(), ref_high, atol=1e-5)
    (only_high,) = distill.bands(tf.constant(x), "high", levels)
    np.testing.assert_allclose(only_high.numpy(), ref_high, atol=1e-5)
    (raw,) = distill.bands(tf.constant(x), "no", levels)
    np.testing.assert_array_equal(raw.numpy(), x)


def test_r2b_loss_matches_numpy():
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((4, 16, 8)), rng.standard_normal((4, 16, 8))
    qs, qt = (s ** 2).reshape(4, -1), (t ** 2).reshape(4, -1)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    qt /= np.linalg.norm(qt, axis=1, keepdims=True)
    ref = np.mean(np.linalg.norm(qs - qt, axis=1))
    got = distill.r2b_loss(tf.constant(s, tf.float32), tf.constant(t, tf.float32)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert distill.r2b_loss(tf.constant(s, tf.float32), tf.constant(3 * s, tf.float32)) < 1e-6


def test_student_loss_weighting_per_depth():
    rng = np.random.default_rng(2)
    y = np.array([0, 2, 1])
    logits = {d: tf.constant(rng.standard_normal((3, 4)), tf.float32) for d in (8, 4, 2)}
    t_logits = tf.constant(rng.standard_normal((3, 4)), tf.float32)
    # layer outputs (B, T, 1, C); depth 8 runs layers 0..7, depth 4 1,3,5,7, depth 2 3,7
    t_feats = {j: tf.constant(rng.standard_normal((3, 8, 1, 16)), tf.float32) for j in range(8)}
    sets = {8: range(8), 4: [1, 3, 5, 7], 2: [3, 7]}
    feats = {d: {j: tf.constant(rng.standard_normal((3, 8, 1, 16)), tf.float32)
                 for j in sets[d]} for d in sets}
    weights = distill.depth_weights([8, 4, 2])
    assert weights == {8: 1.0, 4: 0.5, 2: 0.25}
    assert distill.depth_weights([8, 2]) == {8: 1.0, 2: 0.25}
    total, terms = distill.student_loss(y, logits, weights, feats, t_logits, t_feats, alpha=0.01)

    def ce(z):
        z = z - z.max(1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(3), y])

    def r2b(a, b):
        qa, qb = (a ** 2).reshape(3, -1), (b ** 2).reshape(3, -1)
        qa /= np.linalg.norm(qa, axis=1, keepdims=True)
        qb /= np.linalg.norm(qb, axis=1, keepdims=True)
        return np.mean(np.linalg.norm(qa - qb, axis=1))

    ref = 0.0
    for d, w in weights.items():
        z = logits[d].numpy()
        fid = 0.0
        for j in sets[d]:
            s = feats[d][j].numpy()[:, :, 0, :].transpose(0, 2, 1)
            t = t_feats[j].numpy()[:, :, 0, :].transpose(0, 2, 1)
            sl, tl = pywt_bands(s, 1)[0], pywt_bands(t, 1)[0]
            fid += r2b(s - sl, t - tl) + r2b(sl, tl)
        kd = np.mean((z - t_logits.numpy()) ** 2)
        ref += w * ce(z) + w * 0.01 * (fid + kd)
        np.testing.assert_allclose(terms[f"ce_d{d}"].numpy(), ce(z), rtol=1e-5)
    np.testing.assert_allclose(total.numpy(), ref, rtol=1e-5)


def test_kl_logit_loss_matches_numpy_and_weights():
    """--logit_loss=kl: tau^2 * mean KL(softmax(z_T / tau) || softmax(z_S / tau)) against a NumPy
    reference; --kd_weight / --ce_weight weight the terms (FID still alpha)."""
    rng = np.random.default_rng(3)
    zs, zt = rng.standard_normal((5, 9)) * 3, rng.standard_normal((5, 9)) * 3
    tau = 4.0

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ps, pt = softmax(zs / tau), softmax(zt / tau)
    ref = tau ** 2 * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))
    got = distill.logit_loss(tf.constant(zs, tf.float32), tf.constant(zt, tf.float32), "kl", tau)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5)
    assert distill.logit_loss(tf.constant(zt, tf.float32), tf.constant(zt, tf.float32), "kl",
                              tau).numpy() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="logit loss"):
        distill.logit_loss(tf.constant(zs), tf.constant(zt), "l1")
    # the gradient of tau^2 KL w.r.t. z_S is tau (p_S - p_T) / B: the CE's scale at tau 1
    z = tf.Variable(zs, dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = distill.logit_loss(z, tf.constant(zt, tf.float32), "kl", tau)
    np.testing.assert_allclose(tape.gradient(loss, z).numpy(), tau * (ps - pt) / 5, atol=1e-6)

    y = np.array([0, 3, 8, 1, 2])
    logits = {8: tf.constant(zs, tf.float32)}
    total, terms = distill.student_loss(y, logits, {8: 1.0}, None, tf.constant(zt, tf.float32),
                                        None, alpha=0.01, logit_kind="kl", temperature=tau,
                                        kd_weight=0.7, ce_weight=0.2)
    z = zs - zs.max(1, keepdims=True)
    ce = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(5), y])
    np.testing.assert_allclose(terms["kd_d8"].numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(total.numpy(), 0.2 * ce + 0.7 * ref, rtol=1e-5)


# -- runs on a tiny corpus ---------------------------------------------------------------------------
def tiny_cfg(corpus):
    return DataConfig(data_dir=corpus, wanted_words="yes,no,up,down")


def make_trainer(corpus, out, model="dfsmn", epochs=2, resume=False, **kw):
    args = dict(epochs=epochs, batch_size=16, lr=5e-3, thin_n=1 if model == "dfsmn" else 3,
                steps_per_epoch=3, eval_batch_size=64, resume=resume)
    args.update(kw)
    return Trainer(tiny_cfg(corpus), model, dict(TINY), str(out), **args)


@pytest.fixture(scope="module")
def tiny_teacher(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    metrics = make_trainer(tiny_corpus, out, epochs=2).fit()
    return str(out), metrics


def test_teacher_run_writes_everything(tiny_teacher):
    out, metrics = tiny_teacher
    # (flags.json is written by the command line, which has flags to record)
    for name in ("model.json", "best.weights.h5", "last.weights.h5", "metrics.json",
                 "history.json", "ckpt", "tb"):
        assert os.path.exists(os.path.join(out, name)), name
    assert metrics["epochs"] == 2 and 0.0 <= metrics["best_val_acc"] <= 1.0
    hist = json.load(open(os.path.join(out, "history.json")))
    assert [h["epoch"] for h in hist] == [1, 2] and all(h["steps_per_s"] > 0 for h in hist)


def test_resume_continues_identically(tiny_corpus, tmp_path):
    tf.config.experimental.enable_op_determinism()
    straight = make_trainer(tiny_corpus, tmp_path / "a", epochs=2)
    straight.fit()
    # the same run, killed right after epoch 1's checkpoint is written
    first = make_trainer(tiny_corpus, tmp_path / "b", epochs=2)
    save = first.manager.save

    def save_then_die():
        save()
        raise KeyboardInterrupt

    first.manager.save = save_then_die
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    resumed = make_trainer(tiny_corpus, tmp_path / "b", epochs=2, resume=True)
    assert int(resumed.epoch.numpy()) == 1
    resumed.fit()
    for va, vb in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.name)
    ha = json.load(open(tmp_path / "a" / "history.json"))
    hb = json.load(open(tmp_path / "b" / "history.json"))
    assert ha[-1]["loss"] == hb[-1]["loss"] and len(hb) == 2


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_corpus, tmp_path):
    ok = make_trainer(tiny_corpus, tmp_path, epochs=1)
    ok.fit()
    good = ok.manager.latest_checkpoint
    bad = make_trainer(tiny_corpus, tmp_path, epochs=3, resume=True, lr=1e30, clip_norm=0.0)
    with pytest.raises(NonFiniteLoss, match="last good checkpoint is kept"):
        bad.fit()
    assert bad.manager.latest_checkpoint == good


def test_student_with_fid_from_teacher(tiny_corpus, tiny_teacher, tmp_path):
    teacher_dir, _ = tiny_teacher
    trainer = make_trainer(tiny_corpus, tmp_path, model="bifsmnv2", epochs=1,
                           teacher_dir=teacher_dir)
    assert trainer.teacher is not None and trainer.depths == [8, 4, 2]
    assert trainer.quant_vars, "thresholds / LPB alphas must train at 0.1x lr"
    # --init_from_teacher: the copied variables, BN statistics included, are the teacher's
    # exactly (no training call after the copy moves them)
    t_vals = {v.name: v.numpy() for v in trainer.teacher.weights}
    stats = [v for v in trainer.model.weights if "moving_" in v.name and v.name in t_vals]
    assert stats
    for v in stats:
        np.testing.assert_array_equal(v.numpy(), t_vals[v.name], err_msg=v.name)
    metrics = trainer.fit()
    assert set(metrics["final_val"]) == {"val_acc_d8", "val_acc_d4", "val_acc_d2"}
    hist = json.load(open(tmp_path / "history.json"))
    assert hist[0]["fid_d8"] > 0 and hist[0]["kd_d8"] > 0 and np.isfinite(hist[0]["loss"])


def test_kl_student_and_bad_objective_flags(tiny_corpus, tiny_teacher, tmp_path):
    teacher_dir, _ = tiny_teacher
    with pytest.raises(cli.UserError, match="--ce_weight=0"):
        make_trainer(tiny_corpus, tmp_path / "a", ce_weight=0.0)
    with pytest.raises(cli.UserError, match="--kd_temperature"):
        make_trainer(tiny_corpus, tmp_path / "b", model="bifsmnv2", teacher_dir=teacher_dir,
                     logit_loss="kl", kd_temperature=0.0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    trainer = make_trainer(tiny_corpus, tmp_path / "kl", model="bifsmnv2", epochs=1,
                           teacher_dir=teacher_dir, logit_loss="kl", kd_temperature=2.0,
                           kd_weight=1.0, ce_weight=0.0)
    trainer.fit()
    flags = json.load(open(tmp_path / "kl" / "flags.json"))
    assert (flags["logit_loss"], flags["kd_temperature"], flags["kd_weight"],
            flags["ce_weight"]) == ("kl", 2.0, 1.0, 0.0)
    hist = json.load(open(tmp_path / "kl" / "history.json"))
    assert hist[0]["kd_d8"] >= 0 and np.isfinite(hist[0]["loss"])


def test_evaluate_both_layouts(tiny_teacher, tiny_corpus, tiny_test_set, tmp_path, capsys):
    teacher_dir, _ = tiny_teacher
    # --plot into a folder that does not exist yet: it is made
    png = tmp_path / "plots" / "cm.png"
    res = ev.run(teacher_dir, tiny_cfg(tiny_corpus), "testing", plot=str(png))
    r = next(iter(res.values()))
    assert r["n"] == sum(np.array(r["confusion"]).sum(1)) and 0 <= r["accuracy"] <= 1
    assert os.path.getsize(png) > 1000
    assert set(r["per_class"]) == {"_silence_", "_unknown_", "yes", "no", "up", "down"}
    # official test-set layout: _silence_ / _unknown_ folders map to the model's classes
    res = ev.run(teacher_dir, DataConfig(data_dir=tiny_test_set), "testing", plot=False,
                 reference=teacher_dir)  # the same model as reference: every clip agrees
    r = next(iter(res.values()))
    assert r["agreement_with_reference"] == 1.0 and r["reference_differs"] == 0
    assert r["n"] == 4 * 4 + 3 + 3 and r["skipped_unknown"] == 0
    assert "accuracy" in capsys.readouterr().out
