"""lce_kernels/BUILD: parses (Starlark's syntax here is a subset of Python's), defines unique
targets, names only files that exist, local deps resolve, every kernel source file is
owned by some target, and every external label is one that Larq Compute Engine v0.16.0's own
BUILD files use (the pinned tarball in ../shared/third_party). Bazel itself is not available
on this machine."""
import ast
import glob
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
KDIR = os.path.join(ROOT, "lce_kernels")
RULES = {"cc_library", "cc_binary", "cc_test"}


def _literal(node, consts):
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left, consts) + _literal(node.right, consts)
    return ast.literal_eval(node)


def _targets():
    with open(os.path.join(KDIR, "BUILD")) as f:
        tree = ast.parse(f.read(), filename="BUILD")
    consts, targets = {}, {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):          # e.g. BDFSMN_COPTS = [...]
            consts[stmt.targets[0].id] = _literal(stmt.value, consts)
            continue
        assert isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call), ast.dump(stmt)
        call = stmt.value
        kind = call.func.id
        assert not call.args, f"{kind}: positional arguments are not Starlark rule style"
        kw = {k.arg: _literal(k.value, consts) for k in call.keywords}
        if kind in RULES:
            assert kw["name"] not in targets, f"duplicate target {kw['name']}"
            targets[kw["name"]] = (kind, kw)
        else:
            assert kind == "package", f"unexpected top-level call {kind}"
    return targets


def test_build_parses_and_names_existing_files():
    targets = _targets()
    assert {"bdfsmn_core", "lce_core", "lce_ops", "bdfsmn_test", "lce_ops_test"} <= set(targets)
    named = set()
    for name, (kind, kw) in targets.items():
        for attr in ("srcs", "hdrs"):
            for path in kw.get(attr, []):
                assert os.path.isfile(os.path.join(KDIR, path)), f"{name}.{attr}: {path} missing"
                named.add(path)
        for dep in kw.get("deps", []):
            if dep.startswith(":"):
                assert dep[1:] in targets, f"{name}: unknown local dep {dep}"
            else:
                assert dep.startswith("@"), f"{name}: dep {dep} must be local or external"
        assert all(isinstance(c, str) for c in kw.get("copts", []))
    sources = {os.path.relpath(p, KDIR) for ext in ("cc", "h")
               for p in glob.glob(os.path.join(KDIR, "**", f"*.{ext}"), recursive=True)
               if "/build/" not in p}
    assert sources <= named, f"files not in any target: {sorted(sources - named)}"


def test_op_target_uses_real_tflite_headers():
    kind, kw = _targets()["lce_ops"]
    assert kind == "cc_library" and kw.get("alwayslink") == 1
    assert "LCE_BDFSMN_USE_TFLITE_HEADERS" in kw["local_defines"]
    assert any(d.startswith("@org_tensorflow//tensorflow/lite") for d in kw["deps"])


def test_external_labels_exist_in_lce_tree():
    """Every @-label of lce_kernels/BUILD appears in a BUILD file of LCE v0.16.0 (so the
    package builds inside LCE's workspace), and the registration header is shaped like LCE's
    (its lce_ops_register.h: a Register function per op, one inline function that registers
    them on a MutableOpResolver)."""
    import re
    import tarfile

    import pytest

    tarball = os.path.join(ROOT, "..", "shared", "third_party", "compute-engine-0.16.0.tar.gz")
    if not os.path.exists(tarball):
        pytest.skip(f"{tarball} not present")
    lce_labels = set()
    with tarfile.open(tarball) as tf:
        for m in tf.getmembers():
            if os.path.basename(m.name) in ("BUILD", "BUILD.bazel") and m.isfile():
                lce_labels |= set(re.findall(r'"(@[^"]+)"', tf.extractfile(m).read().decode()))
    ours = {d for _, kw in _targets().values() for d in kw.get("deps", []) if d.startswith("@")}
    assert ours and ours <= lce_labels, f"not in LCE v0.16.0's tree: {sorted(ours - lce_labels)}"
    with open(os.path.join(KDIR, "tflite", "lce_ops_register.h")) as f:
        header = f.read()
    assert "inline void RegisterLceOps(::tflite::MutableOpResolver* resolver" in header
    for op in ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBDfsmn"):
        assert f'resolver->AddCustom("{op}"' in header, op
