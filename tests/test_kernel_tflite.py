"""Smoke tests of the TFLite custom op ``ops.BDFSMN`` (lce_kernels/tflite/bdfsmn_op.cc).

A .tflite holding just this op (``ops.bdfsmn_model``: the schema's object API, options a
FlexBuffers map from ``ops.bdfsmn_options``) runs in tensorflow's InterpreterWithCustomOps
with the op library registered (by symbol name and by a ctypes callable) and matches the NumPy
reference; a student layer of the Keras model runs through it too; malformed models
(missing/ill-typed options, wrong shapes/types, non-constant weights, garbage option bytes)
fail with a TFLite error instead of crashing. Pinned to TF 2.16 (see tflite_abi.h).
"""
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from lce_kernels import ops
from pipeline import kernel_ref as K
import numpy_ref as R

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KDIR = ops.KERNEL_DIR
LIB = ops.OP_LIB
TOL = 1e-5
#: the op library's one registerer (every op of the project, kernel path auto)
REGISTERER = ops.REGISTERER


def _model(x_shape, params, options, const_inputs=True):
    """A .tflite (bytes) holding one ``ops.BDFSMN`` op."""
    from pipeline.tflite_metadata import write_model
    return write_model(ops.bdfsmn_model(x_shape, params, options, const_inputs))


@pytest.fixture(scope="module")
def oplib():
    import tensorflow as tf

    if not tf.__version__.startswith("2.16."):
        pytest.skip(f"tflite_abi.h is pinned to TF 2.16, found {tf.__version__}")
    proc = subprocess.run(["make", "-C", KDIR, "op"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ctypes.CDLL(LIB, mode=ctypes.RTLD_GLOBAL)


def _interpreter(model, registerer=REGISTERER):
    from tensorflow.lite.python.interpreter import InterpreterWithCustomOps

    return InterpreterWithCustomOps(model_content=model, custom_op_registerers=[registerer])


def _run(model, x, registerer=REGISTERER):
    it = _interpreter(model, registerer)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _case(seed, T=8, C=100, H=200, l=2, r=1, dil=2, d=1, batch=2):
    rng = np.random.default_rng(seed)
    p = K.to_float32(K.fold(K.random_raw_layer(rng, C, H, l, r), d))
    xs, refs = zip(*[K.tie_free_input(rng, p, T, C, l, r, dil) for _ in range(batch)])
    return p, np.stack(xs).astype(np.float32), np.stack([q["out"] for q in refs]), (C, H, l, r, dil)


def _scaled_err(got, ref):
    return float(np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))))


@pytest.mark.parametrize("layout", ["BT1C", "BTC", "TC"])
def test_op_matches_reference(oplib, layout):
    p, x, ref, shp = _case(0, batch=1 if layout == "TC" else 2)
    if layout == "BT1C":
        x, ref = x[:, :, None, :], ref[:, :, None, :]
    elif layout == "TC":
        x, ref = x[0], ref[0]
    y = _run(_model(x.shape, ops.bdfsmn_inputs(p), ops.bdfsmn_options(*shp)), x)
    assert y.shape == x.shape
    assert _scaled_err(y, ref) <= TOL


def test_op_registered_by_callable(oplib):
    p, x, ref, shp = _case(1, T=3, C=37, H=128, l=0, r=3, dil=1, d=3, batch=1)
    fn = getattr(oplib, REGISTERER)
    fn.argtypes = [ctypes.c_void_p]
    y = _run(_model(x.shape, ops.bdfsmn_inputs(p), ops.bdfsmn_options(*shp)), x,
             registerer=lambda addr: fn(ctypes.c_void_p(addr)))
    assert _scaled_err(y, ref) <= TOL


def test_op_on_keras_student_layer(oplib):
    import models  # noqa: F401  (Keras 2 before TensorFlow)

    model = models.get_model("bifsmnv2", depth=8, num_classes=9)
    R.randomize_weights(model, seed=7)
    P = R.Params(model)
    rng = np.random.default_rng(7)
    for j, d in ((2, 0), (5, 2)):
        p = K.to_float32(K.fold(K.raw_from_params(P, j), d))
        x, _ = K.tie_free_input(rng, p, 8, 128, 2, 2, 1, margin=1e-4)
        xb = x[None, :, None, :].astype(np.float32)
        want = R.dfsmn_layer(xb.astype(np.float64), P, j, d, binary=True)
        y = _run(_model(xb.shape, ops.bdfsmn_inputs(p), ops.bdfsmn_options(128, 256, 2, 2, 1)),
                 xb)
        assert _scaled_err(y, want) <= TOL, (j, d)


def _expect_error(model):
    """Prepare must fail with the op's own message (not a crash, not another error)."""
    with pytest.raises((RuntimeError, ValueError), match=f"{ops.BDFSMN}: "):
        it = _interpreter(model)
        it.allocate_tensors()


def test_op_rejects_malformed_models(oplib):
    p, x, _, (C, H, l, r, dil) = _case(2, batch=1)
    x = x[:, :, None, :]
    good = ops.bdfsmn_inputs(p)
    opts = ops.bdfsmn_options(C, H, l, r, dil)
    _run(_model(x.shape, good, opts), x)  # the unmodified model works

    from flatbuffers import flexbuffers
    bad_opts = [
        b"",                                                       # no options at all
        bytes(flexbuffers.Dumps({"channels": C, "hidden": H, "left": l, "right": r})),
        bytes(flexbuffers.Dumps({"channels": C, "hidden": H, "left": l, "right": r,
                                 "dilation": 1.5})),               # float option
        bytes(flexbuffers.Dumps([C, H, l, r, dil])),               # not a map
        ops.bdfsmn_options(C + 1, H, l, r, dil),                   # channels mismatch
        ops.bdfsmn_options(C, H, l, r, 0),                         # dilation 0
        ops.bdfsmn_options(C, H, 9, 9, dil),                       # too many taps
        ops.bdfsmn_options(C, H, l + 1, r, dil),                   # K mismatch with mem_w
        ops.bdfsmn_options(C, -5, l, r, dil),
        opts[:-3] + b"\x07\x01",                                   # truncated / corrupted
    ]
    for o in bad_opts:
        _expect_error(_model(x.shape, good, o))

    def with_input(i, arr):
        q = list(good)
        q[i] = arr
        return q

    bad_params = [
        with_input(0, good[0][:, :-1]),                            # mem_w too narrow
        with_input(0, good[0].astype(np.float32)),                 # mem_w float
        with_input(1, good[1][:5]),                                # mem_p 5 rows
        with_input(2, good[2][:-1]),                               # pw1_w H-1 rows
        with_input(4, good[4].reshape(-1)),                        # pw1_p rank 1
        with_input(5, np.concatenate([good[5], good[5][:, :1]], 1)),  # pw2_w too wide
        with_input(7, good[7][:, :-1]),                            # pw2_p wrong C
        with_input(1, np.where(np.arange(good[1].size).reshape(good[1].shape) == 7, np.nan,
                               good[1]).astype(np.float32)),       # NaN parameter
    ]
    for q in bad_params:
        _expect_error(_model(x.shape, q, opts))
    _expect_error(_model(x.shape, good, opts, const_inputs=False))  # non-const
    _expect_error(_model((1, 8, 2, C), good, opts))      # x [B, T, 2, C]
    _expect_error(_model((1, 8, 1, C + 3), good, opts))  # x channels
    _expect_error(_model((C,), good, opts))              # x rank 1


FUZZ = r"""
import ctypes, sys
sys.path.insert(0, {root!r})
import numpy as np
from lce_kernels import ops
from pipeline import kernel_ref as K
from pipeline.tflite_metadata import write_model
ctypes.CDLL({lib!r}, mode=ctypes.RTLD_GLOBAL)
from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
rng = np.random.default_rng(0)
p = K.to_float32(K.fold(K.random_raw_layer(rng, 40, 70, 1, 1), 0))
good = ops.bdfsmn_inputs(p)
opts = ops.bdfsmn_options(40, 70, 1, 1, 1)
ok = err = 0
for i in range({n}):
    o = bytearray(opts)
    kind = i % 3
    if kind == 0:
        for _ in range(1 + i % 4):
            o[rng.integers(len(o))] = rng.integers(256)
    elif kind == 1:
        o = o[:rng.integers(len(o))]
    else:
        o = bytearray(rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes())
    try:
        model = write_model(ops.bdfsmn_model((1, 5, 1, 40), good, bytes(o)))
        it = InterpreterWithCustomOps(model_content=model,
                                      custom_op_registerers=[ops.REGISTERER])
        it.allocate_tensors()
        it.invoke()
        ok += 1
    except (RuntimeError, ValueError):
        err += 1
print("FUZZ ok=%d err=%d" % (ok, err))
"""


def test_op_survives_fuzzed_options(oplib):
    """Random corruptions of the FlexBuffers options never crash (own process)."""
    code = FUZZ.format(root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), lib=LIB, n=150)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FUZZ ok=" in proc.stdout, proc.stdout
    print(proc.stdout.strip().splitlines()[-1])


def test_op_kernel_path_by_registerer(oplib, monkeypatch):
    """The registerer picks the kernel path, nothing else: every path's registerer gives
    bit-identical outputs through TFLite, ``ops.KERNEL_PATH_FN`` names what runs, and the
    environment variable that once overrode the path is ignored."""
    p, x, ref, shp = _case(3, T=7, C=100, H=200)
    model = _model(x.shape, ops.bdfsmn_inputs(p), ops.bdfsmn_options(*shp))
    fn = getattr(oplib, ops.KERNEL_PATH_FN)
    fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_char_p]
    outs = {path: _run(model, x, registerer=ops.REGISTERERS[path]) for path in ops.REGISTERERS}
    for path in ops.REGISTERERS:
        assert fn(path.encode()).decode() in ("portable", "avx512", "neon"), path
        assert np.array_equal(outs[path], outs["portable"]), path
    assert fn(b"portable").decode() == "portable"
    assert fn(b"fastest").decode() == "invalid"
    assert _scaled_err(outs["auto"], ref) <= TOL
    monkeypatch.setenv("LCE_BDFSMN_PATH", "fastest")  # the old override: no effect now
    assert np.array_equal(_run(model, x), outs["auto"])


# ------------------------------------------------------------------ the streaming form
def _stream_case(seed, hops, hop, C=100, H=200, left=4, dil=1, d=1, margin=5e-5):
    """A random layer (right = 0) and hops x (hops, hop, C) whose chained float64 reference
    (``kernel_ref.layer_stream`` from zero state) is tie-free: (p, x, outs, states)."""
    rng = np.random.default_rng(seed)
    p = K.to_float32(K.fold(K.random_raw_layer(rng, C, H, left, 0), d))
    for _ in range(200):
        x = rng.normal(0.0, 1.0, (hops, hop, C)).astype(np.float32)
        state = np.zeros((left * dil, C))
        outs, states, ok = [], [], True
        for xh in x:
            r = K.layer_stream(xh, state, p, left, dil)
            ok = ok and r["margin"] > margin
            state = r["new_state"]
            outs.append(r["out"])
            states.append(state)
        if ok:
            return p, x, np.stack(outs), np.stack(states)
    raise AssertionError("no tie-free input found")


def _stream_model(p, hop, C, H, left, dil, batch=1, **kw):
    S = ops.bdfsmn_state_frames(left, dil)
    return _model_stream((batch, hop, 1, C), ops.bdfsmn_inputs(p),
                         ops.bdfsmn_options(C, H, left, 0, dil), (batch, S, 1, C), **kw)


def _model_stream(x_shape, params, options, state_shape, **kw):
    from pipeline.tflite_metadata import write_model
    return write_model(ops.bdfsmn_model(x_shape, params, options, state_shape=state_shape, **kw))


def _run_stream(model, x, registerer=REGISTERER):
    """Feed x (hops, hop, C) hop by hop, the new state back as the next state: (outs, states)."""
    it = _interpreter(model, registerer)
    it.allocate_tensors()
    ins, outs_d = it.get_input_details(), it.get_output_details()
    state = np.zeros(ins[1]["shape"], np.float32)
    outs, states = [], []
    for xh in x:
        it.set_tensor(ins[0]["index"], xh[None, :, None, :])
        it.set_tensor(ins[1]["index"], state)
        it.invoke()
        outs.append(it.get_tensor(outs_d[0]["index"])[0, :, 0])
        state = it.get_tensor(outs_d[1]["index"]).copy()
        states.append(state[0, :, 0])
    return np.stack(outs), np.stack(states)


@pytest.mark.parametrize("hop,left,dil", [(1, 4, 1), (2, 4, 1), (3, 2, 2)])
def test_streaming_op_matches_reference(oplib, hop, left, dil):
    """The streaming form hop by hop (state fed back) equals the float64 reference of its
    definition (``kernel_ref.layer_stream``) and, from zero state, the windowed layer with
    right = 0 on the whole sequence (``kernel_ref.packed_forward``: zero padding of a); every
    kernel path bit-identical."""
    C, H, hops = 100, 200, 5
    p, x, ref, ref_states = _stream_case(11 + hop, hops, hop, C, H, left, dil)
    model = _stream_model(p, hop, C, H, left, dil)
    got = {path: _run_stream(model, x, ops.REGISTERERS[path]) for path in ops.REGISTERERS}
    out, states = got["auto"]
    assert _scaled_err(out, ref) <= TOL
    assert _scaled_err(states, ref_states) <= TOL
    for path, (o, s) in got.items():
        assert np.array_equal(o, out) and np.array_equal(s, states), path
    window = K.packed_forward(x.reshape(-1, C), p, left, 0, dil)["out"]
    assert _scaled_err(out.reshape(-1, C), window) <= TOL


def test_streaming_op_rejects_malformed_models(oplib):
    C, H, left, dil = 40, 70, 3, 1
    p, x, _, _ = _stream_case(5, 2, 1, C, H, left, dil)
    good = ops.bdfsmn_inputs(p)
    _run_stream(_stream_model(p, 1, C, H, left, dil), x)  # the unmodified model works
    S = left * dil
    bad = [
        _model_stream((1, 1, 1, C), good, ops.bdfsmn_options(C, H, left, 1, dil),
                      (1, S, 1, C)),                                   # right != 0
        _model_stream((1, 1, 1, C), good, ops.bdfsmn_options(C, H, left, 0, dil),
                      (1, S + 1, 1, C)),                               # state rows
        _model_stream((1, 1, 1, C), good, ops.bdfsmn_options(C, H, left, 0, dil),
                      (1, S, C)),                                      # state rank
        _model_stream((1, 1, 1, C), good, ops.bdfsmn_options(C, H, left, 0, dil),
                      (2, S, 1, C)),                                   # state batch
        _model_stream((1, 1, 1, C), good, ops.bdfsmn_options(C, H, left, 0, dil),
                      (1, S, 1, C - 1)),                               # state channels
        _model_stream((1, 1, 1, C), good, ops.bdfsmn_options(C, H, 0, 0, dil),
                      (1, 0, 1, C)),                                   # no state (left 0)
    ]
    for model in bad:
        _expect_error(model)
    # a second output without a state input, and a state without a second output
    from pipeline.tflite_metadata import write_model
    m = ops.bdfsmn_model((1, 1, 1, C), good, ops.bdfsmn_options(C, H, left, 0, dil),
                         state_shape=(1, S, 1, C))
    m.subgraphs[0].operators[0].outputs = m.subgraphs[0].operators[0].outputs[:1]
    m.subgraphs[0].outputs = m.subgraphs[0].outputs[:1]
    _expect_error(write_model(m))
