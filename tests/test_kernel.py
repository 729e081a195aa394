"""Tests of the bitwise binary DFSMN kernel (lce_kernels/) and its NumPy reference.

- packing (``lce_kernels.ops.pack_bits`` / ``unpack_bits``, used by the reference too):
  LSB-first 32-bit words, bit = 1 for -1, zero pad bits, round trip, int32 = uint32 bits;
- the inference form (`kernel_ref.fold` + `packed_forward`, integer accumulators) equals the
  textbook layer (`kernel_ref.raw_forward`) on random shapes, and equals
  `numpy_ref.dfsmn_layer` and the Keras layer itself on a real BiFSMNv2 student layer;
- the C++ runner (host -O2 and ASan/UBSan builds, and the static aarch64 build under
  qemu-aarch64 when the cross tools exist) on generated vectors, including vectors made from
  the Keras student's own layers: exact integer accumulators, float output within
  1e-5 * max(1, |ref|), identical checksums across builds;
- the runner is not vacuous: corrupted references make it fail.
"""
import os
import platform
import re
import shutil
import subprocess

import numpy as np
import pytest

from lce_kernels import ops
from pipeline import kernel_ref as K
import numpy_ref as R

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KDIR = os.path.join(ROOT, "lce_kernels")
BUILD = os.path.join(KDIR, "build")
TOL = 1e-5


# ------------------------------------------------------------------ packing
def test_pack_bits_layout():
    neg = np.zeros(70, bool)
    neg[[0, 5, 31, 32, 69]] = True
    w = ops.pack_bits(neg, np.uint32)
    assert w.dtype == np.uint32 and w.shape == (3,)
    assert w[0] == (1 | (1 << 5) | (1 << 31))
    assert w[1] == 1
    assert w[2] == 1 << (69 - 64)        # pad bits 70..95 are zero
    np.testing.assert_array_equal(ops.unpack_bits(w, 70), neg)
    w32 = ops.pack_bits(neg)             # the tensors' type: the same bits as int32
    assert w32.dtype == np.int32 and w32[0] == np.int32(-(1 << 31) | 1 | (1 << 5))
    np.testing.assert_array_equal(w32.view(np.uint32), w)
    np.testing.assert_array_equal(ops.unpack_bits(w32, 70), neg)
    assert ops.packed_words(70) == 3 and ops.packed_words(64) == 2


@pytest.mark.parametrize("n", [1, 31, 32, 33, 37, 100, 128, 200])
def test_pack_bits_roundtrip_and_pads(n):
    rng = np.random.default_rng(n)
    neg = rng.random((5, n)) < 0.5
    w = ops.pack_bits(neg, np.uint32)
    assert w.shape == (5, (n + 31) // 32)
    np.testing.assert_array_equal(ops.unpack_bits(w, n), neg)
    if n % 32:
        assert np.all(w[:, -1] >> np.uint32(n % 32) == 0), "pad bits must be zero"
    # garbage in the pad bits is ignored by unpack (the kernel clears them itself)
    if n % 32:
        dirty = w.copy()
        dirty[:, -1] |= np.uint32((0xFFFFFFFF << (n % 32)) & 0xFFFFFFFF)
        np.testing.assert_array_equal(ops.unpack_bits(dirty, n), neg)


def test_sign_zero_is_plus_one():
    n1, n2, s, _, _ = K.binarize(np.array([[0.5, 0.0]]), np.array([0.5, 0.0]),
                                 np.array([0.0, 0.0]))
    # x - t0 = 0 -> b1 = +1 (bit 0); r = 0.5 - 1 = -0.5 -> bit 1 ; r = 0 - 1 = -1 -> bit 1
    assert not n1.any()
    assert n2.tolist() == [[True, True]]
    assert np.isclose(s[0], 0.75)


# ------------------------------------------------------------------ reference self-consistency
@pytest.mark.parametrize("shape", K.case_shapes(16, seed=5))
def test_folded_form_equals_textbook_layer(shape):
    T, C, H, l, r, dil, d = shape
    rng = np.random.default_rng(sum(shape))
    raw = K.random_raw_layer(rng, C, H, l, r)
    x = rng.normal(size=(T, C))
    want = K.raw_forward(x, raw, l, r, dil, d)
    got = K.packed_forward(x, K.fold(raw, d), l, r, dil)
    np.testing.assert_allclose(got["out"], want, rtol=1e-10, atol=1e-10)
    assert np.std(want) > 0.1
    # integer accumulators within their ranges and of the right parity
    assert np.all(np.abs(got["pw1_p1"]) <= C) and np.all((got["pw1_p1"] - C) % 2 == 0)
    assert np.all(np.abs(got["pw2_p2"]) <= H) and np.all((got["pw2_p2"] - H) % 2 == 0)
    assert np.all(np.abs(got["mem_d1"]) <= l + r + 1)


# ------------------------------------------------------------------ tie to the Keras model
@pytest.fixture(scope="module")
def student():
    import models  # noqa: F401  (Keras 2 before TensorFlow)

    model = models.get_model("bifsmnv2", depth=8, num_classes=9)
    R.randomize_weights(model, seed=3)
    return model, R.Params(model)


@pytest.mark.parametrize("j", [0, 3, 7])
def test_packed_layer_equals_numpy_ref_and_keras(student, j):
    import tensorflow as tf

    model, P = student
    raw = K.raw_from_params(P, j)
    block = model.get_layer("dfsmn").blocks[j]
    rng = np.random.default_rng(j)
    for d in range(K.NUM_DEPTHS):
        p = K.fold(raw, d)
        x, got = K.tie_free_input(rng, p, 8, 128, 2, 2, 1, margin=1e-4)
        xb = x[None, :, None, :]
        want = R.dfsmn_layer(xb, P, j, d, binary=True)[0, :, 0, :]
        np.testing.assert_allclose(got["out"], want, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(K.raw_forward(x, raw, 2, 2, 1, d), want, rtol=1e-9,
                                   atol=1e-9)
        keras = block(tf.constant(xb, tf.float32), depth_index=d, training=False)
        keras = np.asarray(keras)[0, :, 0, :]
        err = np.abs(keras - want) / np.maximum(1.0, np.abs(want))
        assert err.max() < 1e-4, (j, d, err.max())


# ------------------------------------------------------------------ C++ runner
def _make(*targets):
    proc = subprocess.run(["make", "-C", KDIR, "-j2", *targets], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    m = re.search(r"^SUMMARY .*$", proc.stdout, re.M)
    assert m, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = dict(kv.split("=", 1) for kv in m.group(0).split()[1:])
    return proc.returncode, summary, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def vectors(tmp_path_factory, student):
    """Random-shape vectors plus one per (student layer, depth) pair of layers 1 and 6."""
    out = tmp_path_factory.mktemp("bdfsmn_vectors")
    paths = K.write_vectors(str(out), n_cases=32, seed=11)
    _, P = student
    rng = np.random.default_rng(99)
    for j in (1, 6):
        raw = K.raw_from_params(P, j)
        for d in range(K.NUM_DEPTHS):
            p = K.to_float32(K.fold(raw, d))
            x, ref = K.tie_free_input(rng, p, 8, 128, 2, 2, 1)
            path = os.path.join(str(out), f"keras_layer{j}_depth{d}.bdv")
            K.write_case(path, K.case_records(p, x, ref, (8, 128, 256, 2, 2, 1, d)))
            paths.append(path)
    return str(out), len(paths)


@pytest.fixture(scope="module")
def host_builds():
    _make("all", "asan")
    return os.path.join(BUILD, "bdfsmn_test"), os.path.join(BUILD, "asan", "bdfsmn_test")


def _check(summary, n):
    assert int(summary["cases"]) == n
    assert int(summary["failures"]) == 0
    assert int(summary["int_mismatches"]) == 0
    assert int(summary["ints_checked"]) > 0
    assert float(summary["max_scaled_out"]) <= TOL


def test_runner_host_and_sanitizers(host_builds, vectors):
    vdir, n = vectors
    rc, host, log = _run([host_builds[0], "--quiet", vdir])
    assert rc == 0, log[-3000:]
    _check(host, n)
    rc, asan, log = _run([host_builds[1], "--quiet", vdir])
    assert rc == 0, log[-3000:]
    _check(asan, n)
    assert asan["checksum"] == host["checksum"]
    # x86-64 CPUs with AVX512F + VPOPCNTDQ also run (and compare bit for bit) the AVX-512 path
    if platform.machine() == "x86_64" and _cpu_has_avx512():
        assert host["paths"] == asan["paths"] == "portable+avx512"


def _cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            flags_line = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return {"avx512f", "avx512_vpopcntdq"} <= set(flags_line.split())


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
                    reason="aarch64 cross compiler or qemu-aarch64 not installed")
def test_runner_aarch64_neon_under_qemu(host_builds, vectors):
    vdir, n = vectors
    _make("aarch64")
    rc, arm, log = _run(["qemu-aarch64", os.path.join(BUILD, "aarch64", "bdfsmn_test"),
                         "--quiet", vdir])
    assert rc == 0, log[-3000:]
    assert arm["paths"] == "portable+neon"
    _check(arm, n)
    _, host, _ = _run([host_builds[0], "--quiet", vdir])
    assert arm["checksum"] == host["checksum"], "aarch64 and host results differ in bits"


def test_runner_detects_corrupted_reference(host_builds, tmp_path):
    rng = np.random.default_rng(5)
    rec, _ = K.make_case(rng, 3, 37, 100, 1, 2, 1, 2)
    K.write_case(str(tmp_path / "good.bdv"), rec)
    rc, s, log = _run([host_builds[0], str(tmp_path / "good.bdv")])
    assert rc == 0 and int(s["failures"]) == 0, log
    bad = dict(rec)
    bad["ref_out"] = rec["ref_out"].copy()
    bad["ref_out"][1, 7] += 1e-3
    K.write_case(str(tmp_path / "bad_float.bdv"), bad)
    rc, s, _ = _run([host_builds[0], str(tmp_path / "bad_float.bdv")])
    n_paths = len(s["paths"].split("+"))  # every kernel path checks against the reference
    assert rc != 0 and int(s["failures"]) == 1  # failed cases
    bad = dict(rec)
    bad["ref_pw1_p1"] = rec["ref_pw1_p1"].copy()
    bad["ref_pw1_p1"][0, 3] += 2
    K.write_case(str(tmp_path / "bad_int.bdv"), bad)
    rc, s, _ = _run([host_builds[0], str(tmp_path / "bad_int.bdv")])
    assert rc != 0 and int(s["int_mismatches"]) == n_paths
