"""The op contract has one home per language: lce_kernels/ops.py (Python) and
lce_kernels/core/op_contract.h (C++).

* searching the repository's .py / .h / .cc / BUILD files (build/, .venv/, docs/ and hidden
  folders left out) for an op name finds it in lce_kernels/ops.py only among the Python
  files and in lce_kernels/core/op_contract.h only among the C++ / Bazel files; the op
  library's registerer symbols are spelled in ops.py only among the Python files;
* the two statements agree: op names, the input order and option keys of ``ops.BDFSMN``,
  its parameter rows, the input order and option keys of ``ops.BCONV2D`` (read from the
  header);
* the Python helpers keep the contract: the operands ``bdfsmn_inputs`` makes have the
  documented shapes and dtypes, options round-trip, a one-op model round-trips through
  ``extract_bdfsmn_layers``;
* the Keras layer's own folding (``DFSMNLayer.folded_params``) equals the independent NumPy
  reference (``pipeline.kernel_ref.fold`` of the raw parameters) bit for bit.
"""
import os
import re

import numpy as np
import pytest

from lce_kernels import ops

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PY_HOME = os.path.join("lce_kernels", "ops.py")
CC_HOME = os.path.join("lce_kernels", "core", "op_contract.h")
OP_NAMES = (*ops.ALL_OPS, ops.BMAXPOOL2D)
SKIP_DIRS = {"build", "docs", ".venv", "__pycache__", "node_modules"}


def _sources():
    """Relative paths of the .py files and of the .h / .cc / BUILD files of the repository."""
    py, cc = [], []
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("."))
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(d, f), ROOT)
            if f.endswith(".py"):
                py.append(rel)
            elif f.endswith((".h", ".cc")) or f in ("BUILD", "BUILD.bazel"):
                cc.append(rel)
    return py, cc


def _read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8", errors="replace") as f:
        return f.read()


def _where(files, patterns):
    """{file: sorted names found} over ``files`` for {name: compiled regex}."""
    found = {}
    for rel in files:
        text = _read(rel)
        hits = sorted(n for n, rx in patterns.items() if rx.search(text))
        if hits:
            found[rel] = hits
    return found


def test_op_names_live_in_ops_py_only():
    """Any mention (a substring: also inside identifiers, comments, docstrings) of an op name
    in a Python file outside lce_kernels/ops.py is a second home of the contract."""
    py, _ = _sources()
    assert PY_HOME in py
    found = _where(py, {n: re.compile(re.escape(n)) for n in OP_NAMES})
    assert set(found) == {PY_HOME}, (
        "op names spelled outside lce_kernels/ops.py (use `from lce_kernels import ops`: "
        f"ops.BDFSMN, ops.BCONV2D, ...): { {k: v for k, v in found.items() if k != PY_HOME} }")
    assert found[PY_HOME] == sorted(OP_NAMES)


def test_registerer_symbols_live_in_ops_py_only():
    py, _ = _sources()
    symbols = {*ops.REGISTERERS.values(), ops.KERNEL_PATH_FN}
    # the names built from the op name (BDFSMN + "Registerer") are matched as written there
    found = _where(py, {s: re.compile(r"\b" + re.escape(s) + r"\b") for s in symbols})
    found.pop(PY_HOME, None)
    assert not found, f"op library symbols spelled outside {PY_HOME}: {found}"


def test_op_names_live_in_op_contract_h_only():
    """C++ / Bazel side: an op name as a word (identifiers that merely contain it, such as the
    exported ``...Registerer`` C symbols, are other names) appears in op_contract.h only."""
    _, cc = _sources()
    if CC_HOME not in cc:
        pytest.skip(f"{CC_HOME} does not exist yet (the C++ half of the contract)")
    found = _where(cc, {n: re.compile(r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])")
                        for n in OP_NAMES})
    assert set(found) == {CC_HOME}, (
        f"op names spelled outside {CC_HOME}: "
        f"{ {k: v for k, v in found.items() if k != CC_HOME} }")


# -------------------------------------------------------------- Python and C++ agree
def _header():
    path = os.path.join(ROOT, CC_HOME)
    if not os.path.exists(path):
        pytest.skip(f"{CC_HOME} does not exist yet (the C++ half of the contract)")
    return _read(CC_HOME)


def _namespace(text, name):
    m = re.search(r"namespace " + name + r" \{(.*?)\n\}\s*// namespace " + name, text, re.S)
    assert m, f"namespace {name} not found in {CC_HOME}"
    return m.group(1)


def _strings(text, array):
    """The string constants (by name or literal) of a C++ array initializer."""
    m = re.search(re.escape(array) + r"\[[^\]]*\]\s*=\s*\{(.*?)\};", text, re.S)
    assert m, f"{array} not found in {CC_HOME}"
    consts = dict(re.findall(r'char (\w+)\[\]\s*=\s*"([^"]*)"', text))
    out = []
    for item in re.findall(r'"[^"]*"|\w+', m.group(1)):
        out.append(item.strip('"') if item.startswith('"') else consts[item])
    return tuple(out)


def _enum(text, name):
    m = re.search(r"enum " + name + r"\b[^{]*\{(.*?)\};", text, re.S)
    assert m, f"enum {name} not found in {CC_HOME}"
    return [e.split("=")[0].strip() for e in m.group(1).split(",") if e.strip()]


def test_header_agrees_with_ops_py():
    h = _header()
    names = dict(re.findall(r'inline constexpr char (\w+)\[\]\s*=\s*"([^"]*)";', h))
    for attr in ("BDFSMN", "QUANTIZE", "DEQUANTIZE", "BCONV2D", "DUAL_QUANTIZE", "BMAXPOOL2D",
                 "LCE_PREFIX"):
        assert names.get(attr) == getattr(ops, attr), attr
    for array, want in (("PROJECT_OPS", ops.ALL_OPS), ("LCE_OPS", ops.LCE_OPS),
                        ("OWN_OPS", ops.OWN_OPS)):
        listed = re.search(array + r"\[\]\s*=\s*\{([^}]*)\}", h).group(1)
        assert tuple(names[n.strip()] for n in listed.split(",")) == want, array
    assert set(ops.LCE_OPS) | set(ops.OWN_OPS) == set(ops.ALL_OPS)

    dq = _namespace(h, "dual_quantize")
    assert _strings(dq, "kInputNames") == ops.DUAL_QUANTIZE_INPUTS
    assert _strings(dq, "kOutputNames") == ops.DUAL_QUANTIZE_OUTPUTS
    assert len(_enum(dq, "Input")) - 1 == len(ops.DualQuantizeInput)
    assert len(_enum(dq, "Output")) - 1 == len(ops.DualQuantizeOutput)

    bd = _namespace(h, "bdfsmn")
    assert _strings(bd, "kInputNames") == ops.BDFSMN_INPUTS
    assert len(_enum(bd, "Input")) == len(ops.BDfsmnInput) + 1  # + kNumInputs
    assert _strings(bd, "kOptionKeys") == ops.BDFSMN_OPTION_KEYS
    # the streaming form: the state after the nine inputs, outputs out and new_state
    assert re.search(r'char kStateName\[\]\s*=\s*"([^"]*)"', bd).group(1) == ops.BDFSMN_STATE
    assert _strings(bd, "kOutputNames") == ops.BDFSMN_OUTPUTS
    assert re.search(r"kState = kNumInputs;", bd) and ops.BDFSMN_STATE_INPUT == len(ops.BDfsmnInput)
    assert len(_enum(bd, "Output")) - 1 == len(ops.BDFSMN_OUTPUTS)
    assert len(_enum(bd, "MemRow")) - 1 == len(ops.MEM_P_ROWS)
    assert len(_enum(bd, "ThreshRow")) - 1 == len(ops.THRESH_ROWS)
    assert len(_enum(bd, "PwRow")) - 1 == len(ops.PW_P_ROWS)

    bc = _namespace(h, "bconv2d")
    assert len(_enum(bc, "Input")) - 1 == len(ops.BConv2dInput)
    assert _strings(bc, "kOptionKeys") == ops.BCONV2D_OPTION_KEYS
    enums = dict(re.findall(r"k(Padding\w+|Act\w+) = (\d+)", bc))
    assert (int(enums["PaddingSame"]), int(enums["PaddingValid"])) == (
        ops.PADDING["SAME"], ops.PADDING["VALID"])
    assert [int(enums[k]) for k in ("ActNone", "ActRelu", "ActReluN1To1", "ActRelu6")] == [
        ops.FUSED_ACTIVATION[k] for k in ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")]
    bm = _namespace(h, "bmaxpool2d")
    assert set(re.findall(r'"([^"]*)"', bm)) == set(ops.BMAXPOOL2D_OPTION_KEYS)


# ------------------------------------------------------------------- the Python helpers
def test_bdfsmn_operands_shapes_and_options():
    from pipeline import kernel_ref as K

    T, C, H, left, right, dil = 3, 40, 70, 1, 2, 2
    p = K.fold(K.random_raw_layer(np.random.default_rng(0), C, H, left, right), 1)
    ins = ops.bdfsmn_inputs(p)
    I, w = ops.BDfsmnInput, ops.packed_words
    want = {I.MEM_W: (left + right + 1, w(C)), I.MEM_P: (6, C), I.PW1_W: (H, w(C)),
            I.PW1_T: (2, C), I.PW1_P: (3, H), I.PW2_W: (C, w(H)), I.PW2_T: (2, H),
            I.PW2_P: (3, C)}
    assert len(ins) == len(ops.BDFSMN_INPUTS) - 1 == 8
    for i, a in zip(list(I)[1:], ins):
        assert a.shape == want[i], i
        assert a.dtype == (np.int32 if i in ops.BDFSMN_BIT_INPUTS else np.float32), i
    assert set(ops.BDFSMN_BIT_INPUTS) | set(ops.BDFSMN_VECTOR_INPUTS) == set(list(I)[1:])
    np.testing.assert_array_equal(ins[I.MEM_P - 1][ops.MEM_P_ROWS.index("bias")],
                                  np.float32(p["mem_bias"]))
    np.testing.assert_array_equal(ins[I.PW2_P - 1][ops.PW_P_ROWS.index("slope")],
                                  np.float32(p["pw2_slope"]))
    np.testing.assert_array_equal(ins[I.PW1_W - 1].view(np.uint32), p["pw1_weights"])

    opts = ops.bdfsmn_options(C, H, left, right, dil)
    assert ops.read_options(opts) == dict(zip(ops.BDFSMN_OPTION_KEYS, (C, H, left, right, dil)))
    assert ops.read_options(ops.bdfsmn_options(C, H, left, right, dil, extra=7))["extra"] == 7
    b = ops.read_options(ops.bconv2d_options(40, stride=(2, 1), padding="SAME",
                                             activation="RELU"))
    assert set(b) == set(ops.BCONV2D_OPTION_KEYS) and b["stride_height"] == 2
    assert b["padding"] == ops.PADDING["SAME"] and b["fused_activation_function"] == 1
    assert "padding" not in ops.read_options(ops.bconv2d_options(8, drop=("padding",)))


def test_one_op_model_round_trip():
    import models  # noqa: F401  (Keras 2 before TensorFlow)
    from models.lce_census import custom_ops, op_list
    from pipeline import kernel_ref as K
    from pipeline.tflite_metadata import write_model

    p = K.fold(K.random_raw_layer(np.random.default_rng(1), 40, 70, 1, 1), 0)
    ins, opts = ops.bdfsmn_inputs(p), ops.bdfsmn_options(40, 70, 1, 1, 1)
    data = write_model(ops.bdfsmn_model((1, 5, 1, 40), ins, opts))
    assert custom_ops(data) == [ops.BDFSMN]
    (op,) = op_list(data)
    assert [t[0] for t in op["inputs"]] == list(ops.BDFSMN_INPUTS)
    layers, x_shape = ops.extract_bdfsmn_layers(data)
    assert x_shape == [1, 5, 1, 40] and len(layers) == 1
    _, got, got_opts = layers[0]
    assert got_opts == opts
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(got, ins))
    assert ops.bdfsmn_scope(ops.bdfsmn_tensor_name("dfsmn/layer3", "out")) == "dfsmn/layer3"


def test_library_arguments_are_checked_before_loading(tmp_path):
    with pytest.raises(ValueError, match="kernel path 'fastest'"):
        ops.registerer("fastest")
    with pytest.raises(ops.OpLibraryError, match="does not exist"):
        ops.op_library(str(tmp_path / "nope.so"), build=False)
    assert ops.is_lce_op(ops.BCONV2D) and not ops.is_lce_op(ops.BDFSMN)
    assert not ops.is_lce_op(ops.DUAL_QUANTIZE)
    assert ops.dual_quantize_scale_shape((1, 16, 16, 16), (1, 2, 3)) == [1, 1, 1, 1]
    assert ops.dual_quantize_scale_shape((1, 8, 1, 256), (-1,)) == [1, 8, 1, 1]
    with pytest.raises(ValueError, match="batch"):
        ops.dual_quantize_scale_shape((2, 8, 4), (0,))
    assert not ops.is_lce_op("CONV_2D")


# ------------------------------------------------------- the layer's folding vs the oracle
def test_layer_folding_matches_reference():
    """``DFSMNLayer.folded_params`` (what the exports use) == ``kernel_ref.fold`` of the raw
    parameters (the test oracle), bit for bit, at every depth index, on random weights."""
    import models
    import numpy_ref as R
    from pipeline import kernel_ref as K

    model = models.build_dfsmn(binary=True, depth=8, channels=40, hidden=70, num_layers=8)
    R.randomize_weights(model, seed=3)
    P = R.Params(model)
    blocks = model.get_layer("dfsmn").blocks
    for j, d in ((0, 0), (3, 2), (5, 1), (7, 3)):
        got, want = blocks[j].folded_params(d), K.fold(K.raw_from_params(P, j), d)
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), (j, d, k)
    teacher = models.build_dfsmn(binary=False, depth=8, channels=40, hidden=70)
    with pytest.raises(ValueError, match="only a binary DFSMN layer"):
        teacher.get_layer("dfsmn").blocks[0].folded_params(0)
