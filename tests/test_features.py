"""Log-mel features against an independent NumPy implementation, and the tf.data pipeline."""
import numpy as np
import pytest
import tensorflow as tf

from pipeline import augment as aug
from pipeline import features as feat
from pipeline import speech_commands as sc
from pipeline.input_pipeline import DataConfig, InputPipeline, index_from_config


def numpy_log_mel(x, sr=16000, n_fft=2048, hop=512, n_mels=32, f_min=0.0, f_max=8000.0):
    """The definition in pipeline/features.py, written from scratch in float64 NumPy."""
    x = np.asarray(x, np.float64)
    xp = np.pad(x, n_fft // 2, mode="reflect")
    n = np.arange(n_fft)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    frames = 1 + (len(xp) - n_fft) // hop
    spec = np.stack([np.fft.rfft(w * xp[t * hop:t * hop + n_fft]) for t in range(frames)])
    power = np.abs(spec) ** 2 / np.sum(w ** 2)
    # HTK mel triangles built in mel space on the bin frequencies; DC bin gets no weight
    mel = lambda f: 1127.0 * np.log1p(f / 700.0)  # noqa: E731
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = np.linspace(mel(f_min), mel(f_max), n_mels + 2)
    m = mel(bins)[:, None]
    lower = (m - edges[None, :-2]) / (edges[1:-1] - edges[:-2])[None, :]
    upper = (edges[None, 2:] - m) / (edges[2:] - edges[1:-1])[None, :]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights[0, :] = 0.0
    return 10.0 * np.log10(np.maximum(power @ weights, 1e-10))


def test_log_mel_matches_numpy_reference():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    clips = [0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(16000),
             0.5 * rng.standard_normal(16000),
             np.concatenate([np.zeros(8000), 0.2 * np.sin(2 * np.pi * 1500 * t[:8000])])]
    got = feat.log_mel(np.stack(clips).astype(np.float32)).numpy()
    assert got.shape == (3, 32, 32) == (3,) + feat.DEFAULT.shape
    for g, x in zip(got, clips):
        ref = numpy_log_mel(x)
        # float32 STFT vs float64: |dB error| stays below 0.01 dB where the power is above
        # -80 dB; the floor (1e-10 -> -100 dB) is reached identically.
        loud = ref > -80
        np.testing.assert_allclose(g[loud], ref[loud], atol=1e-2)
        np.testing.assert_allclose(g, ref, atol=0.5)


def test_log_mel_layer_matches_function():
    x = np.random.default_rng(1).standard_normal((2, 16000)).astype(np.float32) * 0.1
    layer = feat.LogMel()
    np.testing.assert_allclose(layer(x).numpy(), feat.log_mel(x).numpy(), rtol=0, atol=1e-5)


# -- augmentation against NumPy ---------------------------------------------------------------
class FixedRng:
    """Stands in for SeedStream with prescribed draws, to check the math exactly."""

    def __init__(self, *values):
        self.values = list(values)

    def uniform(self, shape, minval=0.0, maxval=1.0, dtype=tf.float32):
        return tf.cast(tf.reshape(self.values.pop(0), shape), dtype)


def test_time_shift_and_gain_are_exact():
    x = np.random.default_rng(2).standard_normal((2, 100)).astype(np.float32)
    y = aug.time_shift(x, FixedRng([[5], [-3]]), 10).numpy()
    np.testing.assert_array_equal(y[0], np.concatenate([np.zeros(5), x[0, :-5]]))
    np.testing.assert_array_equal(y[1], np.concatenate([x[1, 3:], np.zeros(3)]))
    g = aug.random_gain(x, FixedRng([[6.0], [-6.0]]), 6.0).numpy()
    np.testing.assert_allclose(g[0], x[0] * 10 ** (6 / 20), rtol=1e-6)


def test_speed_change_is_linear_interpolation_about_centre():
    x = np.random.default_rng(3).standard_normal((1, 200)).astype(np.float32)
    f = 1.1
    y = aug.speed_change(x, FixedRng([[f]]), 0.1).numpy()[0]
    pos = 100 + (np.arange(200) - 100) * f
    ref = np.interp(pos, np.arange(200), x[0], left=0, right=0)
    inside = (pos >= 0) & (pos <= 199)
    # float32 read positions (~1.5e-5 resolution near 200) times the local slope: 1e-4
    np.testing.assert_allclose(y[inside], ref[inside], atol=1e-4)


def test_noise_mix_respects_relative_scale():
    rng = np.random.default_rng(4)
    x = (0.1 * rng.standard_normal((3, 16000))).astype(np.float32)
    bank = rng.standard_normal((5, 16000)).astype(np.float32)
    y = aug.mix_noise(x, bank, aug.SeedStream([1, 2]), probability=1.0, volume=0.3).numpy()
    ratio = np.sqrt(np.mean((y - x) ** 2, 1)) / np.sqrt(np.mean(x ** 2, 1))
    assert np.all(ratio <= 0.3 + 1e-4) and np.all(ratio > 0)
    sil = aug.silence_like(bank, aug.SeedStream([3, 4]), 256).numpy()
    db = 20 * np.log10(np.sqrt(np.mean(sil ** 2, 1)))
    lo, hi = sc.SILENCE_RMS_DB_RANGE
    assert db.min() >= lo - 0.01 and db.max() <= hi + 0.01 and db.max() - db.min() > 40


def test_spec_augment_masks_per_example():
    x = tf.random.normal([8, 32, 32])
    cfg = aug.AugmentConfig(spec_augment=True, freq_masks=1, freq_mask_width=8, time_masks=0)
    y = aug.spec_augment(x, aug.SeedStream([5, 6]), cfg).numpy()
    masked = np.any(y != x.numpy(), axis=1)  # [B, F]: which frequency bins changed
    assert len({tuple(m) for m in masked}) > 1  # not one mask for the whole batch


# -- the tf.data pipeline ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe(tiny_corpus):
    cfg = DataConfig(data_dir=tiny_corpus, wanted_words="yes,no,up,down")
    return InputPipeline(index_from_config(cfg), cfg)


def test_train_batches_shapes_and_determinism(pipe):
    a = [(x.numpy(), y.numpy()) for x, y in pipe.train(8, epoch=0)]
    b = [(x.numpy(), y.numpy()) for x, y in pipe.train(8, epoch=0)]
    c = [(x.numpy(), y.numpy()) for x, y in pipe.train(8, epoch=1)]
    assert a[0][0].shape == (8, 32, 32) and a[0][1].shape == (8,)
    assert len(a) == pipe.num_examples("training") // 8
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])
    assert np.isfinite(a[0][0]).all()


def test_eval_batches_are_fixed_and_complete(pipe):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in pipe.eval("validation", 16)])
    ys = np.concatenate(ys)
    np.testing.assert_array_equal(ys, pipe.index.splits["validation"].labels)
    xs2 = np.concatenate([x.numpy() for x, _ in pipe.eval("validation", 16)])
    np.testing.assert_array_equal(np.concatenate(xs), xs2)
    # silence examples are noise crops at their indexed loudness, not zeros
    audio = np.concatenate([a.numpy() for a, _ in pipe.eval_audio("validation")])
    sil = ys == pipe.labels.index("_silence_")
    if sil.any():
        rms_db = 20 * np.log10(np.sqrt(np.mean(audio[sil] ** 2, 1)))
        np.testing.assert_allclose(rms_db, pipe.index.splits["validation"].rms_db[sil], atol=0.1)
