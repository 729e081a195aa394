"""The .tflite verifier (lce_kernels/tflite/model_verify.cc via pipeline/model_verify.py).

* every committed export verifies (and so does its object-API round trip, the base of the
  crafted cases);
* crafted bad models are refused with a message naming what is wrong and where: truncated
  file, wrong identifier, out-of-range buffer / tensor / opcode / metadata indices, a
  constant buffer of the wrong size, an op reading its own (or a later op's) output, a
  tensor written twice, a mismatched builtin options type, bad shapes and quantization,
  non-UTF-8 names, ``ops.BDFSMN`` with damaged options, the issue's 3.77 GB options length;
* the same crafted files give the same verdicts in the ASan/UBSan build of the verifier,
  which also checks 300 byte-level variants of every committed export without a report;
* models/lce_census.py and predictors.TFLiteRunner raise ModelError on damaged files;
* the property that matters: byte-flip / truncation variants of committed models (fixed
  seed) never crash the verifier, and every variant it ACCEPTS builds and runs in the TFLite
  interpreter without a signal (each batch in a subprocess, restarted after a crash so that
  every crash is counted).
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from lce_kernels import ops

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TESTS = os.path.dirname(os.path.abspath(__file__))
KDIR = os.path.join(ROOT, "lce_kernels")
ASAN_CLI = os.path.join(KDIR, "build", "asan", "tflite_verify")
EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")
BDFSMN = os.path.join(EXPORTS, "bifsmnv2_bdfsmn_d2.tflite")
INT8 = os.path.join(EXPORTS, "dfsmn_int8_d2.tflite")
LCE = os.path.join(EXPORTS, "bifsmnv2_lce_d2.tflite")
PREFIX = "x.tflite is not a valid TFLite model: "


@pytest.fixture(scope="module")
def mv():
    from pipeline import model_verify
    model_verify.library()  # builds lce_kernels/build/libtflite_verify.so if missing
    return model_verify


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _exports():
    files = sorted(f for f in os.listdir(EXPORTS) if f.endswith(".tflite"))
    assert len(files) >= 12, files
    return [os.path.join(EXPORTS, f) for f in files]


def test_committed_exports_verify(mv):
    for path in _exports():
        assert mv.problem(_read(path)) is None, path
        mv.verify_file(path)


def test_bad_arguments(mv, tmp_path):
    with pytest.raises(TypeError):
        mv.verify_model("not bytes", "x.tflite")
    with pytest.raises(mv.ModelError, match="cannot read model"):
        mv.verify_file(str(tmp_path))  # a folder
    with pytest.raises(mv.ModelError, match="cannot read model"):
        mv.verify_file(str(tmp_path / "missing.tflite"))


# ---- crafted bad models ----------------------------------------------------------------------
def _schema():
    return ops.schema()


def _edit(path, fn):
    """``fn(model, S)`` edits the object-API model of ``path``; returns the packed bytes."""
    from pipeline import bdfsmn
    m = bdfsmn.read_model(_read(path))
    fn(m, _schema())
    return bdfsmn.write_model(m)


def _vector_length_pos(data, subgraph, op, slot):
    """Byte position of the uint32 length prefix of a vector field of an operator."""
    S = _schema()
    tab = S.Model.GetRootAs(bytearray(data), 0).Subgraphs(subgraph).Operators(op)._tab
    return tab.Vector(tab.Offset(slot)) - 4


def _first(m, custom_code):
    """Index of the first operator of subgraph 0 with this custom code."""
    codes = [ops.custom_code(c) for c in m.operatorCodes]
    return next(i for i, o in enumerate(m.subgraphs[0].operators)
                if codes[o.opcodeIndex] == custom_code)


def _bdfsmn_op(m):
    return _first(m, ops.BDFSMN)


def _huge_options_length(data):
    """The issue's case: the custom_options length prefix of ``ops.BDFSMN`` made ~3.77 GB."""
    from pipeline import bdfsmn
    i = _bdfsmn_op(bdfsmn.read_model(data))
    pos = _vector_length_pos(data, 0, i, 14)  # Operator.custom_options
    b = bytearray(data)
    b[pos:pos + 4] = (0xE0B0C0D0).to_bytes(4, "little")
    return bytes(b)


def _set(attr_path, value):
    def fn(m, S):
        obj = m
        for a in attr_path[:-1]:
            obj = obj[a] if isinstance(a, int) else getattr(obj, a)
        setattr(obj, attr_path[-1], value(m, S) if callable(value) else value)
    return fn


def _sg(fn):
    return lambda m, S: fn(m.subgraphs[0], m, S)


def _conv_with_add_options(sg, m, S):
    sg.operators[1].builtinOptionsType = S.BuiltinOptions.AddOptions
    sg.operators[1].builtinOptions = S.AddOptionsT()


def _options(**kv):
    from flatbuffers import flexbuffers
    return np.frombuffer(bytes(flexbuffers.Dumps(kv)), np.uint8).copy()


def _reencoded(options, **changes):
    """A FlexBuffers map decoded, changed and encoded again."""
    from flatbuffers import flexbuffers
    m = dict(flexbuffers.Loads(bytes(options)), **changes)
    return np.frombuffer(bytes(flexbuffers.Dumps(m)), np.uint8).copy()


def _bd_options(value):
    def fn(m, S):
        m.subgraphs[0].operators[_bdfsmn_op(m)].customOptions = value(
            m.subgraphs[0].operators[_bdfsmn_op(m)].customOptions)
    return fn


def _quant(t, **kv):
    def fn(m, S):
        q = m.subgraphs[0].tensors[t].quantization
        for k, v in kv.items():
            setattr(q, k, v)
    return fn


# (id, source, edit -> bytes, expected substring of the reason)
BYTE_CASES = [
    ("truncated", BDFSMN, lambda d: d[:len(d) // 2], "tflite::VerifyModelBuffer failed"),
    ("truncated_tail", INT8, lambda d: d[:-3], "tflite::VerifyModelBuffer failed"),
    ("tiny", BDFSMN, lambda d: d[:5], "file too short (5 bytes)"),
    ("empty", BDFSMN, lambda d: b"", "file too short (0 bytes)"),
    ("identifier", BDFSMN, lambda d: d[:4] + b"TFL2" + d[8:],
     "file identifier is 'TFL2', expected 'TFL3'"),
    ("huge_options_length", BDFSMN, _huge_options_length, "tflite::VerifyModelBuffer failed"),
]

EDIT_CASES = [
    ("tensor_buffer_index", BDFSMN, _sg(lambda sg, m, S: setattr(sg.tensors[8], "buffer",
                                                                 len(m.buffers) + 7)),
     "subgraph 0 tensor 8 'arith.constant7': buffer index 87 out of range (model has 80"),
    ("op_input_index", BDFSMN, _sg(lambda sg, m, S: sg.operators[1].inputs.__setitem__(
        0, len(sg.tensors) + 3)),
     "subgraph 0 operator 1 (CONV_2D): input 0 is tensor 81, out of range [-1, 78)"),
    ("optional_input_where_none_is", BDFSMN, _sg(lambda sg, m, S: sg.operators[0].inputs
                                                 .__setitem__(0, -1)),
     "subgraph 0 operator 0 (RESHAPE): input 0 is -1 (no tensor), which this operator does "
     "not accept there"),
    ("lce_optional_input", LCE, _sg(lambda sg, m, S: sg.operators[_first(m, ops.BCONV2D)]
                                    .inputs.__setitem__(1, -1)),
     f"({ops.BCONV2D}): input 1 is -1 (no tensor), which {ops.BCONV2D} does not accept there"),
    ("lce_options_absent", LCE, _sg(lambda sg, m, S: setattr(
        sg.operators[_first(m, ops.BCONV2D)], "customOptions", None)),
     f"({ops.BCONV2D}): no custom_options ({ops.BCONV2D} reads a FlexBuffers map)"),
    ("lce_options_stride_zero", LCE, _sg(lambda sg, m, S: setattr(
        sg.operators[_first(m, ops.BCONV2D)], "customOptions", _reencoded(
            sg.operators[_first(m, ops.BCONV2D)].customOptions, stride_width=0))),
     f"({ops.BCONV2D}): option 'stride_width' = 0 outside [1, 1073741824]"),
    ("resource_activation", BDFSMN, _sg(lambda sg, m, S: setattr(sg.tensors[31], "type",
                                                                 S.TensorType.RESOURCE)),
     "operator 11 (MEAN): output 0 (tensor 31) is a RESOURCE handle, which this operator does "
     "not take"),
    ("op_output_index", BDFSMN, _sg(lambda sg, m, S: setattr(sg.operators[3], "outputs",
                                                             [-1])),
     "subgraph 0 operator 3 (SIGN): output 0 is tensor -1, out of range [0, 78)"),
    ("opcode_index", BDFSMN, _sg(lambda sg, m, S: setattr(sg.operators[2], "opcodeIndex",
                                                          len(m.operatorCodes) + 1)),
     "operator 2 (opcode 12): opcode_index 12 out of range (model has 11 operator codes)"),
    ("constant_size", BDFSMN, lambda m, S: setattr(
        m.buffers[m.subgraphs[0].tensors[8].buffer], "data",
        m.buffers[m.subgraphs[0].tensors[8].buffer].data[:-4]),
     "subgraph 0 tensor 8 'arith.constant7': constant data of"),
    ("reads_own_output", BDFSMN, _sg(lambda sg, m, S: sg.operators[3].inputs.__setitem__(
        0, sg.operators[3].outputs[0])),
     "subgraph 0 operator 3 (SIGN): input 0 (tensor 23) is written by this operator itself"),
    ("reads_later_output", BDFSMN, _sg(lambda sg, m, S: sg.operators[3].inputs.__setitem__(
        0, sg.operators[5].outputs[0])),
     "operator 3 (SIGN): input 0 (tensor 25) is written by the later operator 5"),
    ("written_twice", BDFSMN, _sg(lambda sg, m, S: setattr(
        sg.operators[5], "outputs", list(sg.operators[3].outputs))),
     "operator 5 (SIGN): output 0 (tensor 23) is also written by operator 3"),
    ("writes_constant", BDFSMN, _sg(lambda sg, m, S: setattr(sg.operators[3], "outputs", [8])),
     "operator 3 (SIGN): output 0 (tensor 8) is a constant tensor"),
    ("writes_input", BDFSMN, _sg(lambda sg, m, S: setattr(sg.operators[3], "outputs", [0])),
     "operator 3 (SIGN): output 0 (tensor 0) is a subgraph input"),
    ("conv_options_type", BDFSMN, _sg(_conv_with_add_options),
     "operator 1 (CONV_2D): builtin options of type AddOptions, expected Conv2DOptions"),
    ("conv_options_absent", INT8, _sg(lambda sg, m, S: (
        setattr(sg.operators[4], "builtinOptionsType", 0),
        setattr(sg.operators[4], "builtinOptions", None))),
     "operator 4 (CONV_2D): no builtin options (expected Conv2DOptions"),
    ("depthwise_stride_zero", INT8, _sg(lambda sg, m, S: setattr(
        sg.operators[6].builtinOptions, "strideW", 0)),
     "operator 6 (DEPTHWISE_CONV_2D): option stride_w = 0, expected >= 1"),
    ("depthwise_without_bias", INT8, _sg(lambda sg, m, S: setattr(
        sg.operators[6], "inputs", list(sg.operators[6].inputs)[:2])),
     "operator 6 (DEPTHWISE_CONV_2D): 2 inputs / 1 outputs, expected 3 / 1"),
    ("sign_without_output", BDFSMN, _sg(lambda sg, m, S: setattr(sg.operators[3], "outputs",
                                                                 [])),
     "operator 3 (SIGN): 1 inputs / 0 outputs, expected 1 / 1"),
    ("metadata_buffer", BDFSMN, lambda m, S: setattr(m.metadata[0], "buffer", 10000),
     "metadata 0 'min_runtime_version': buffer index 10000 out of range (model has 80"),
    ("schema_version", BDFSMN, _set(["version"], 2), "schema version 2, expected 3"),
    ("negative_dim", BDFSMN, _sg(lambda sg, m, S: setattr(sg.tensors[0], "shape",
                                                          [1, -32, 32])),
     "subgraph 0 tensor 0 'serving_default_x:0': negative dimension -32"),
    ("shape_overflow", BDFSMN, _sg(lambda sg, m, S: setattr(sg.tensors[0], "shape",
                                                            [1 << 20, 1 << 20, 1 << 20])),
     "tensor 0 'serving_default_x:0': more than 268435456 bytes"),
    ("tensor_name_utf8", BDFSMN, _sg(lambda sg, m, S: setattr(sg.tensors[2], "name",
                                                              b"\xff\xfeabc")),
     "subgraph 0 tensor 2 '': name is not valid UTF-8"),
    ("subgraph_output", BDFSMN, _sg(lambda sg, m, S: setattr(sg, "outputs",
                                                             [len(sg.tensors)])),
     "subgraph 0: output 0 is tensor 78, out of range [0, 78)"),
    ("bdfsmn_options_truncated", BDFSMN, _bd_options(lambda o: o[:-5]),
     f"operator 35 ({ops.BDFSMN}): custom_options is not a valid FlexBuffer"),
    ("bdfsmn_options_garbage", BDFSMN, _bd_options(lambda o: np.full(len(o), 0xA5, np.uint8)),
     f"operator 35 ({ops.BDFSMN}): custom_options is not a valid FlexBuffer"),
    ("bdfsmn_options_missing_key", BDFSMN, _bd_options(lambda o: _options(
        channels=128, hidden=256, left=2, right=2)),
     f"operator 35 ({ops.BDFSMN}): missing option 'dilation'"),
    ("bdfsmn_options_float", BDFSMN, _bd_options(lambda o: _options(
        channels=128, hidden=256, left=2, right=2, dilation=1.5)),
     f"operator 35 ({ops.BDFSMN}): option 'dilation' must be a (small) integer"),
    ("bdfsmn_options_absent", BDFSMN, _bd_options(lambda o: None),
     f"operator 35 ({ops.BDFSMN}): no custom_options"),
    ("quant_lengths", INT8, _quant(0, scale=np.array([0.5, 0.5], np.float32)),
     "tensor 0 'serving_default_features:0': quantization has 2 scales and 1 zero points"),
    ("quant_dimension", INT8, _quant(6, quantizedDimension=3),
     "tensor 6 'tfl.pseudo_qconst1': quantized_dimension 3 out of range [0, 2)"),
    ("quant_zero_point_range", INT8, _quant(0, zeroPoint=np.array([300], np.int64)),
     "tensor 0 'serving_default_features:0': zero point 300 outside [-128, 127]"),
    ("quant_add_scales", INT8, _sg(lambda sg, m, S: setattr(
        sg.tensors[sg.operators[8].inputs[0]].quantization, "scale",
        np.array([1e16], np.float32))),
     "operator 8 (ADD): quantized scales must be positive with 2 x max(input scales) < 2^20 x "
     "output scale"),
    ("quant_add_unquantized", INT8, _sg(lambda sg, m, S: setattr(
        sg.tensors[sg.operators[8].outputs[0]], "quantization", None)),
     "operator 8 (ADD): quantized scales must be positive"),
    ("quant_scale_nan", INT8, _quant(0, scale=np.array([math.nan], np.float32)),
     "quantization scale 0 is not a positive finite number"),
]


def _crafted(case):
    _, src, edit, _ = case
    data = _read(src)
    return edit(data) if case in BYTE_CASES else _edit(src, edit)


def test_round_trip_is_valid(mv):
    """The base of the edit cases: read_model -> write_model unchanged verifies."""
    for src in (BDFSMN, INT8, LCE):
        assert mv.problem(_edit(src, lambda m, S: None)) is None


@pytest.mark.parametrize("case", BYTE_CASES + EDIT_CASES, ids=[c[0] for c in BYTE_CASES +
                                                                   EDIT_CASES])
def test_crafted_model_refused(mv, case):
    with pytest.raises(mv.ModelError) as e:
        mv.verify_model(_crafted(case), "x.tflite")
    msg = str(e.value)
    assert msg.startswith(PREFIX), msg
    assert case[3] in msg, msg


def test_asan_verifier_agrees_and_survives_variants(mv, tmp_path):
    """The ASan/UBSan CLI refuses every crafted file with the same reason as the library,
    accepts the committed exports, and survives 300 variants of each export."""
    proc = subprocess.run(["make", "-C", KDIR, "build/asan/tflite_verify"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files, want = [], {}
    for case in BYTE_CASES + EDIT_CASES:
        path = str(tmp_path / f"{case[0]}.tflite")
        data = _crafted(case)
        with open(path, "wb") as f:
            f.write(data)
        files.append(path)
        want[path] = mv.problem(data)
    proc = subprocess.run([ASAN_CLI] + files + _exports(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])  # refused, no signal
    lines = proc.stdout.splitlines()
    assert len(lines) == len(files) + len(_exports()), proc.stdout
    for line in lines:
        if line.startswith("OK "):
            assert line[3:] in _exports(), line
        else:
            path, _, reason = line[len("REFUSED "):].partition(": ")
            assert reason == want[path][:511], (line, want[path])
    proc = subprocess.run([ASAN_CLI, "--mutate", "300", "--seed", "0"] + _exports(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    counts = [dict(kv.split("=") for kv in ln.split()[2:]) for ln in proc.stdout.splitlines()]
    assert len(counts) == len(_exports()) and all(c["variants"] == "300" for c in counts)
    accepted = sum(int(c["accepted"]) for c in counts)
    refused = sum(int(c["refused"]) for c in counts)
    assert accepted > 0 and refused > 0, counts  # the variants exercise both outcomes
    print(f"ASan verifier: {len(counts)} exports x 300 variants: accepted {accepted}, "
          f"refused {refused}")


# ---- readers and the runner raise ModelError -------------------------------------------------
def test_lce_census_raises_model_error(mv):
    from models import lce_census
    data = _read(BDFSMN)
    assert lce_census.op_census(data)[ops.BDFSMN] == 2
    refused = 0
    for _, _, b in _variants(data, seed=3, n=120):
        try:
            lce_census.op_census(b)
            lce_census.constant_bytes(b)
        except mv.ModelError as e:
            assert "is not a valid TFLite model" in str(e)
            refused += 1
    assert refused > 0
    with pytest.raises(mv.ModelError, match="no subgraph 3"):
        lce_census.op_list(data, subgraph=3)


def test_runner_refuses_damaged_model(mv, tmp_path):
    from pipeline import predictors
    path = tmp_path / "damaged.tflite"
    path.write_bytes(_read(INT8)[:5000])
    with pytest.raises(mv.ModelError, match=f"{path} is not a valid TFLite model"):
        predictors.TFLiteRunner(str(path))


# ---- fuzz: the verifier never crashes, what it accepts runs without a signal ------------------
def _structure_spans(data):
    """[start, end) byte ranges outside constant-buffer data (tables, vtables, offsets)."""
    S = _schema()
    m = S.Model.GetRootAs(bytearray(data), 0)
    spans = []
    for i in range(m.BuffersLength()):
        tab = m.Buffers(i)._tab
        o = tab.Offset(4)
        if o:
            spans.append((tab.Vector(o), tab.Vector(o) + tab.VectorLen(o)))
    free, pos = [], 0
    for a, b in sorted(spans):
        if a > pos:
            free.append((pos, a))
        pos = max(pos, b)
    if pos < len(data):
        free.append((pos, len(data)))
    return free


def _variants(data, seed, n):
    """n damaged copies (index, kind, bytes), deterministic in (data, seed): 1-4 random bytes
    anywhere / in the structure (most of a model is weights), a truncation, a plausible wrong
    32-bit value (index, length, offset) at an aligned position in the structure."""
    rng = np.random.default_rng(seed)
    free = _structure_spans(data)
    sizes = np.array([b - a for a, b in free], float)

    def struct_pos():
        a, b = free[int(rng.choice(len(free), p=sizes / sizes.sum()))]
        return int(rng.integers(a, b))

    for i in range(n):
        b = bytearray(data)
        kind = ("anywhere", "structure", "truncate", "int32")[i % 4]
        if kind in ("anywhere", "structure"):
            for _ in range(int(rng.integers(1, 5))):
                p = int(rng.integers(len(b))) if kind == "anywhere" else struct_pos()
                b[p] = int(rng.integers(256))
        elif kind == "truncate":
            b = b[:int(rng.integers(len(b)))]
        else:
            p = struct_pos() & ~3
            v = int(rng.choice([0, 1, 2, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, len(data),
                                int(rng.integers(0, 4096))]))
            b[p:p + 4] = v.to_bytes(4, "little")[:len(b) - p]
        yield i, kind, bytes(b)


def _worker(path, seed, n, start):
    """Subprocess body: for variants start..n-1 print 'V i kind refused|ran|error'; 'START i'
    before an accepted variant's interpreter is built, so a crash leaves it unmatched."""
    import models  # noqa: F401  (Keras 2 before TensorFlow)
    import tensorflow as tf
    from tensorflow.lite.python.interpreter import InterpreterWithCustomOps

    from models import lce_census
    from pipeline.model_verify import problem
    regs = None
    for i, kind, b in _variants(_read(path), seed, n):
        if i < start:
            continue
        if problem(b) is not None:
            print(f"V {i} {kind} refused", flush=True)
            continue
        print(f"START {i} {kind}", flush=True)
        try:  # as predictors.TFLiteRunner builds it (LCE models: see the slow test)
            if lce_census.has_own_ops(b):
                regs = regs or ops.registerers()
                it = InterpreterWithCustomOps(model_content=b, custom_op_registerers=regs)
            elif lce_census.has_lce_ops(b):
                from larq_compute_engine.tflite.python.interpreter import Interpreter
                it = Interpreter(b, num_threads=1)
                it.predict(np.zeros(it.input_shapes[0], np.float32))
                print(f"V {i} {kind} ran", flush=True)
                continue
            else:
                it = tf.lite.Interpreter(model_content=b)
            it.allocate_tensors()
            d = it.get_input_details()[0]
            x = np.random.default_rng(i).standard_normal(d["shape"]) * 30
            it.set_tensor(d["index"], x.astype(np.float32) if d["dtype"] == np.float32
                          else np.clip(x, -128, 127).astype(d["dtype"]))
            it.invoke()
            it.get_tensor(it.get_output_details()[0]["index"])
            print(f"V {i} {kind} ran", flush=True)
        except (RuntimeError, ValueError) as e:  # the interpreter refused it: a message
            print(f"V {i} {kind} error {str(e).splitlines()[0][:80] if str(e) else ''}",
                  flush=True)


def _fuzz(path, seed, n):
    """Runs _worker over all n variants, restarting it after a crash. Returns (counts by
    outcome, [(variant, kind, returncode)] of crashes, lines that are neither)."""
    counts, crashes, other, start = {}, [], [], 0
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    code = (f"import sys; sys.path.insert(0, {TESTS!r}); import test_model_verify as T; "
            f"T._worker({path!r}, {seed}, {n}, {{}})")
    while start < n:
        proc = subprocess.run([sys.executable, "-c", code.format(start)], capture_output=True,
                              text=True, timeout=1200, env=env, cwd=ROOT)
        pending, last = None, start - 1
        for line in proc.stdout.splitlines():
            f = line.split()
            if f[:1] == ["START"]:
                pending = (int(f[1]), f[2])
            elif f[:1] == ["V"]:
                last, pending = int(f[1]), None
                counts[f[3]] = counts.get(f[3], 0) + 1
            else:
                other.append(line)
        if proc.returncode == 0:
            break
        if pending is None:  # died outside a variant: a traceback or crash of the harness
            raise AssertionError(f"worker exit {proc.returncode}: {proc.stderr[-3000:]}")
        crashes.append((pending[0], pending[1], proc.returncode))
        start = pending[0] + 1
    return counts, crashes, other


@pytest.mark.parametrize("path", [BDFSMN, INT8], ids=["bdfsmn_d2", "int8_d2"])
def test_fuzzed_variants_never_crash(mv, path):
    n = 200
    counts, crashes, other = _fuzz(path, seed=0, n=n)
    print(f"{os.path.basename(path)}: {n} variants {counts}, crashes {crashes}")
    assert not crashes, crashes
    assert sum(counts.values()) == n and not other, (counts, other[:5])
    assert counts.get("refused", 0) > 0 and counts.get("ran", 0) > 0, counts


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bifsmnv2_lce_d2", "dfsmn_float_d2", "bifsmnv2_bdfsmn_d8",
                                  "dfsmn_int8_d8"])
def test_fuzzed_variants_never_crash_more(mv, name):
    """300 more variants (another seed) of the other flavors and the depth-8 models; LCE
    models run on LCE's interpreter, as the tools run them."""
    n = 300
    counts, crashes, other = _fuzz(os.path.join(EXPORTS, name + ".tflite"), seed=1, n=n)
    print(f"{name}: {n} variants {counts}, crashes {crashes}")
    assert not crashes, crashes
    assert sum(counts.values()) == n and not other, (counts, other[:5])
