"""The build descriptions of the ops and of the repository, and the TFLite headers they use.

* lce_kernels/BUILD and the top-level BUILD parse (Starlark's syntax here is a subset of
  Python's: the AST may hold only the node types listed in ``_STARLARK_NODES``; the file is
  then evaluated with the rule functions recorded and ``glob`` implemented), define unique
  targets, name only files that exist, and their local labels resolve;
* every kernel source file is owned by a target of lce_kernels/BUILD (tflm/, the TensorFlow
  Lite Micro glue, excepted: LCE's workspace has no TFLM);
* every external label of lce_kernels/BUILD is one Larq Compute Engine v0.16.0's own BUILD
  files use, and the TFLite headers of the in-tree branch (tflite/tflite_c.h) are ones LCE's
  own sources include; the registration header is shaped like LCE's;
* the top-level BUILD has one py_binary per tool of pipeline/cli_vocabulary.py TOOLS, and a
  WORKSPACE names the repository (so that LCE's WORKSPACE can take it as local_repository);
* TFLite headers of the op glue: the real tensorflow/lite/core/c/common.h (from the pinned
  TFLM tarball) and the hand-declared fallback tflite_abi.h give the same size / offset /
  enum value for everything the glue uses (lce_kernels/tests/tflite_layout.cc built both
  ways), ``make op`` picks the real header when the tarball is there, and the op libraries
  built both ways run every committed .tflite with custom ops to bit-identical outputs.
"""
import ast
import glob
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KDIR = os.path.join(ROOT, "lce_kernels")
THIRD_PARTY = os.path.join(ROOT, "..", "shared", "third_party")
LCE_TARBALL = os.path.join(THIRD_PARTY, "compute-engine-0.16.0.tar.gz")
TFLM_TARBALL = os.path.join(THIRD_PARTY,
                            "tflite-micro-90b983c2b3f1480642e040bbd2ddb37b998f3424.tar.gz")
EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")
RULES = {"cc_library", "cc_binary", "cc_test", "py_library", "py_binary", "alias", "filegroup"}
# Kernel directories not described by lce_kernels/BUILD, and why.
NOT_IN_BUILD = {"tflm": "TensorFlow Lite Micro glue: built by firmware_sim's Makefile against "
                        "the pinned TFLM tarball; LCE's workspace has no TFLM"}

_STARLARK_NODES = (ast.Module, ast.Expr, ast.Assign, ast.Call, ast.Name, ast.Load, ast.Store,
                   ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.keyword, ast.BinOp, ast.Add,
                   ast.Attribute, ast.ListComp, ast.comprehension)


# ------------------------------------------------------------------------ Starlark subset
def _glob(pkg_dir, include, exclude=(), allow_empty=True):
    """Bazel's glob: files (not directories) under the package, not in a sub-package."""
    out = set()
    for pattern in include:
        for p in glob.glob(os.path.join(pkg_dir, pattern), recursive=True):
            rel = os.path.relpath(p, pkg_dir)
            parts = rel.split(os.sep)
            sub = any(os.path.exists(os.path.join(pkg_dir, *parts[:i], "BUILD"))
                      for i in range(1, len(parts)))
            if os.path.isfile(p) and not sub and "__pycache__" not in parts:
                out.add(rel)
    for pattern in exclude:
        out -= {os.path.relpath(p, pkg_dir)
                for p in glob.glob(os.path.join(pkg_dir, pattern), recursive=True)}
    return sorted(out)


def _load_build(path):
    """{name: (rule kind, kwargs)} of a BUILD file, plus the other top-level calls."""
    with open(path) as f:
        src = f.read()
    tree = ast.parse(src, filename=path)
    for node in ast.walk(tree):
        assert isinstance(node, _STARLARK_NODES), (
            f"{path}:{getattr(node, 'lineno', '?')}: {type(node).__name__} is outside the "
            "Starlark subset these BUILD files use")
    for stmt in tree.body:  # Starlark BUILD files: rule calls, assignments, comprehensions
        assert isinstance(stmt, (ast.Assign, ast.Expr)), ast.dump(stmt)
    pkg_dir = os.path.dirname(path)
    targets, calls = {}, []

    def rule(kind):
        def record(*args, **kw):
            assert not args, f"{kind}: positional arguments are not Starlark rule style"
            assert kw["name"] not in targets, f"duplicate target {kw['name']}"
            targets[kw["name"]] = (kind, kw)
        return record

    def other(kind):
        return lambda *args, **kw: calls.append((kind, args, kw))

    env = {"__builtins__": {}, "glob": lambda *a, **k: _glob(pkg_dir, *a, **k)}
    env.update({k: rule(k) for k in RULES})
    env.update({k: other(k) for k in ("package", "licenses", "exports_files")})
    exec(compile(tree, path, "exec"), env)  # noqa: S102 (our own BUILD files, checked above)
    assert {k for k, _, _ in calls} <= {"package", "licenses", "exports_files"}
    return targets, calls


def _kernel_targets():
    return _load_build(os.path.join(KDIR, "BUILD"))[0]


def _files_of(kw):
    files = list(kw.get("srcs", [])) + list(kw.get("hdrs", [])) + list(kw.get("data", []))
    return files + ([kw["main"]] if "main" in kw else [])


def _check_package(pkg_dir, targets, other_packages):
    """Every file a target names exists; every label resolves (local, another package of
    this repository, or external)."""
    for name, (kind, kw) in targets.items():
        for path in _files_of(kw):
            if path.startswith((":", "//", "@")):
                continue
            assert os.path.isfile(os.path.join(pkg_dir, path)), f"{name}: {path} missing"
        labels = list(kw.get("deps", [])) + [x for x in kw.get("data", [])
                                              if x.startswith((":", "//"))]
        if kind == "alias":
            labels.append(kw["actual"])
        for dep in labels:
            if dep.startswith(":"):
                assert dep[1:] in targets, f"{name}: unknown local label {dep}"
            elif dep.startswith("//"):
                pkg, _, target = dep[2:].partition(":")
                assert pkg in other_packages and target in other_packages[pkg], (
                    f"{name}: unknown label {dep}")
            else:
                assert dep.startswith("@"), f"{name}: label {dep} must be local or external"
        assert all(isinstance(c, str) for c in kw.get("copts", []))


def _lce_tree():
    """(@-labels used by LCE v0.16.0's BUILD files, headers its sources #include)."""
    if not os.path.exists(LCE_TARBALL):
        pytest.skip(f"{LCE_TARBALL} not present")
    labels, includes = set(), set()
    with tarfile.open(LCE_TARBALL) as tf:
        for m in tf.getmembers():
            if not m.isfile():
                continue
            base = os.path.basename(m.name)
            if base in ("BUILD", "BUILD.bazel"):
                labels |= set(re.findall(r'"(@[^"]+)"', tf.extractfile(m).read().decode()))
            elif base.endswith((".h", ".cc")):
                includes |= set(re.findall(r'#include "([^"]+)"',
                                           tf.extractfile(m).read().decode(errors="replace")))
    return labels, includes


# ----------------------------------------------------------------------- lce_kernels/BUILD
def test_build_parses_and_names_existing_files():
    targets = _kernel_targets()
    assert {"op_contract", "kernel_path", "bdfsmn_core", "lce_core", "lce_ops",
            "lce_ops_standalone", "bdfsmn_test", "lce_ops_test", "tflite_layout",
            "ops_py"} <= set(targets)
    _check_package(KDIR, targets, {"lce_kernels": targets})
    named = {p for _, kw in targets.values() for p in _files_of(kw)}
    sources = {os.path.relpath(p, KDIR) for ext in ("cc", "h")
               for p in glob.glob(os.path.join(KDIR, "**", f"*.{ext}"), recursive=True)
               if "/build/" not in p}
    sources = {s for s in sources if s.split(os.sep)[0] not in NOT_IN_BUILD}
    assert sources <= named, f"files not in any target: {sorted(sources - named)}"
    # every target that includes the contract header depends on it
    for name, (kind, kw) in targets.items():
        if kind.startswith("cc_") and name != "op_contract":
            text = "".join(open(os.path.join(KDIR, p)).read() for p in _files_of(kw))
            if re.search(r'#include "[./]*(core/)?op_contract\.h"', text):
                deps = set(kw.get("deps", []))
                assert ":op_contract" in deps or any(
                    ":op_contract" in targets[d[1:]][1].get("deps", []) for d in deps
                    if d.startswith(":")), f"{name} includes op_contract.h without the dep"


def test_op_target_uses_tflite_tree_headers():
    """:lce_ops compiles the glue on TFLite's own headers, and `defines` (not local_defines)
    makes every target that includes lce_ops_register.h see the same ones."""
    kind, kw = _kernel_targets()["lce_ops"]
    assert kind == "cc_library" and kw.get("alwayslink") == 1
    assert "LCE_KERNELS_IN_TFLITE_TREE" in kw["defines"]
    assert "local_defines" not in kw
    assert any(d.startswith("@org_tensorflow//tensorflow/lite") for d in kw["deps"])
    with open(os.path.join(KDIR, "tflite", "tflite_c.h")) as f:
        assert "#if defined(LCE_KERNELS_IN_TFLITE_TREE)" in f.read()


def test_external_labels_and_headers_exist_in_lce_tree():
    """Every @-label of lce_kernels/BUILD appears in a BUILD file of LCE v0.16.0 (so the
    package builds inside LCE's workspace), the TFLite headers of the in-tree branch are
    headers LCE's own sources include, and the registration header is shaped like LCE's
    (its lce_ops_register.h: a Register function per op, one inline function that registers
    them on a MutableOpResolver), with the op names of core/op_contract.h."""
    lce_labels, lce_includes = _lce_tree()
    ours = {d for _, kw in _kernel_targets().values() for d in kw.get("deps", [])
            if d.startswith("@")}
    assert ours and ours <= lce_labels, f"not in LCE v0.16.0's tree: {sorted(ours - lce_labels)}"

    with open(os.path.join(KDIR, "tflite", "tflite_c.h")) as f:
        text = f.read()
    tree_branch = text[text.index("#if defined(LCE_KERNELS_IN_TFLITE_TREE)"):
                       text.index("#else  // stand-alone")]
    tree_includes = set(re.findall(r'#include "([^"]+)"', tree_branch))
    assert tree_includes and tree_includes <= lce_includes, sorted(tree_includes - lce_includes)

    with open(os.path.join(KDIR, "tflite", "lce_ops_register.h")) as f:
        header = f.read()
    assert "inline void RegisterLceOps(::tflite::MutableOpResolver* resolver" in header
    for const in ("QUANTIZE", "DEQUANTIZE", "BCONV2D", "BDFSMN"):
        assert f"resolver->AddCustom(::compute_engine::ops::{const}," in header, const


# -------------------------------------------------------------------- the top-level BUILD
def _tools():
    """Module names of pipeline/cli_vocabulary.py TOOLS (Tool("module", ...) entries)."""
    with open(os.path.join(ROOT, "pipeline", "cli_vocabulary.py")) as f:
        tree = ast.parse(f.read())
    return {n.args[0].value for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Tool"
            and n.args and isinstance(n.args[0], ast.Constant)}


def test_top_level_build():
    """Parses, names only existing files, one py_binary per tool (named by its module, main
    = its file), py_library per package, aliases of the ops that resolve in lce_kernels."""
    targets, calls = _load_build(os.path.join(ROOT, "BUILD"))
    kernel = _kernel_targets()
    _check_package(ROOT, targets, {"": targets, "lce_kernels": kernel})
    for pkg in ("models", "pipeline", "firmware_sim"):
        kind, kw = targets[pkg]
        assert kind == "py_library"
        want = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pkg, "*.py"))}
        assert want and set(kw["srcs"]) == want, pkg
    assert targets["ops_py"] == ("alias", {"name": "ops_py", "actual": "//lce_kernels:ops_py"})
    assert "ops.py" in kernel["ops_py"][1]["srcs"]

    binaries = {n: kw for n, (k, kw) in targets.items() if k == "py_binary"}
    tools = _tools()
    assert len(tools) >= 10 and set(binaries) == tools, (
        f"py_binary targets vs TOOLS: missing {sorted(tools - set(binaries))}, "
        f"extra {sorted(set(binaries) - tools)}")
    for module, kw in binaries.items():
        assert kw["main"] == module.replace(".", "/") + ".py" and kw["srcs"] == [kw["main"]]
        assert kw["deps"] == [":bkws"]
    for op in ("lce_ops", "lce_ops_standalone", "op_contract", "bdfsmn_core", "lce_core"):
        assert targets[op] == ("alias", {"name": op, "actual": f"//lce_kernels:{op}"}), op

    with open(os.path.join(ROOT, "WORKSPACE")) as f:
        assert re.search(r'^workspace\(name = "\w+"\)$', f.read(), re.M)


# ------------------------------------------------------------------- TFLite header variants
def _make(*targets):
    proc = subprocess.run(["make", "-C", KDIR, *targets], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _need_tflm():
    if not os.path.exists(TFLM_TARBALL):
        pytest.skip(f"{TFLM_TARBALL} not present: only the fallback header can be built")


def test_real_and_fallback_headers_give_same_layouts():
    _need_tflm()
    _make("layout")
    out = {v: subprocess.run([os.path.join(KDIR, "build", f"tflite_layout_{v}")],
                             capture_output=True, text=True, check=True).stdout.splitlines()
           for v in ("real", "abi")}
    assert out["real"][0] == "headers real" and out["abi"][0] == "headers abi"
    assert len(out["real"]) > 60
    assert out["real"][1:] == out["abi"][1:]
    sizes = dict(line.rsplit(" ", 1) for line in out["real"][1:])
    assert sizes["sizeof(TfLiteTensor)"] == "112" and sizes["sizeof(TfLiteRegistration)"] == "88"


_VERSION_SCRIPT = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.LceOpsTfliteHeaders.restype = ctypes.c_char_p
print(lib.LceOpsTfliteHeaders().decode())
"""


def test_make_op_uses_real_header_when_available():
    """`make op` (and so `make setup`) builds the op library on the real common.h whenever
    the TFLM tarball is there: the library says so itself."""
    _need_tflm()
    _make("op")
    lib = os.path.join(KDIR, "build", "libbdfsmn_op.so")
    out = subprocess.run([sys.executable, "-c", _VERSION_SCRIPT, lib], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "real"
    with open(os.path.join(KDIR, "build", "tflite_headers")) as f:
        assert f.read().strip() == "real"


# Runs every model given on the command line with one op library (registered through a
# ctypes callable, library loaded RTLD_LOCAL) on a fixed random input; saves the outputs.
_RUN_SCRIPT = r"""
import ctypes, sys
import numpy as np
import tensorflow as tf
from tensorflow.lite.python.interpreter import InterpreterWithCustomOps

lib = ctypes.CDLL(sys.argv[1])
lib.LceOpsTfliteHeaders.restype = ctypes.c_char_p
from lce_kernels import ops
fn = getattr(lib, ops.REGISTERERS["portable"])
fn.argtypes = [ctypes.c_void_p]
out = {"headers": np.array(lib.LceOpsTfliteHeaders().decode())}
for i, path in enumerate(sys.argv[3:]):
    it = InterpreterWithCustomOps(model_path=path, num_threads=1,
                                  custom_op_registerers=[lambda a: fn(ctypes.c_void_p(a))])
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.random.default_rng(i).normal(size=d["shape"]).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    it.invoke()
    out[path] = it.get_tensor(it.get_output_details()[0]["index"])
np.savez(sys.argv[2], **out)
"""


def test_real_and_fallback_op_libraries_run_committed_models_identically(tmp_path):
    """The op library built on the real header and the one on the fallback run every
    committed .tflite with the project's custom ops (bdfsmn, binary and lce exports, every
    depth) to bit-identical outputs."""
    _need_tflm()
    import tensorflow as tf

    if not tf.__version__.startswith("2.16."):
        pytest.skip(f"the op library is pinned to TF 2.16, found {tf.__version__}")
    models = sorted(glob.glob(os.path.join(EXPORTS, "bifsmnv2_*_d*.tflite")))
    flavors = {re.match(r"bifsmnv2_(\w+)_d\d+", os.path.basename(m)).group(1) for m in models}
    assert {"bdfsmn", "binary", "lce"} <= flavors, flavors
    _make("op-real", "op-abi")
    results = {}
    for variant in ("real", "abi"):
        npz = tmp_path / f"{variant}.npz"
        proc = subprocess.run(
            [sys.executable, "-c", _RUN_SCRIPT,
             os.path.join(KDIR, "build", variant, "libbdfsmn_op.so"), str(npz), *models],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[variant] = dict(np.load(npz))
    assert str(results["real"]["headers"]) == "real"
    assert str(results["abi"]["headers"]) == "abi"
    for m in models:
        a, b = results["real"][m], results["abi"][m]
        assert a.shape == b.shape and np.all(np.isfinite(a)), m
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=m)
