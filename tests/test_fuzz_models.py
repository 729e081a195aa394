"""The fuzz harness (issue 14): its variant generator, its runner's classification, and the runs.

* generator: deterministic for a seed, every variant differs from the original, every
  targeted edit makes what its recipe says;
* runner: a fake worker that dies by SIGSEGV / hangs / exits / prints a sanitizer report /
  answers is counted as exactly that, and the worker is restarted after it dies;
* runs over the committed exports (``pretrained/real8/exports``, the d2 file of each flavor:
  the smallest): a fixed-seed run in ``make test``, >= 300 variants per flavor plus the CLI
  sample and the ASan/UBSan op library run in ``make test-slow``. Each asserts 0 signals,
  0 hangs, 0 tracebacks.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flatbuffers import flexbuffers

from lce_kernels import ops
from pipeline import bdfsmn, fuzz_models as fm, fuzz_variants as fv

EXPORTS = fm.DEFAULT_EXPORTS
BDFSMN_D2 = os.path.join(EXPORTS, "bifsmnv2_bdfsmn_d2.tflite")
LCE_D2 = os.path.join(EXPORTS, "bifsmnv2_lce_d2.tflite")
INT8_D2 = os.path.join(EXPORTS, "dfsmn_int8_d2.tflite")


@pytest.fixture(scope="module")
def sources():
    return {p: fv.Source(p) for p in (BDFSMN_D2, LCE_D2, INT8_D2)}


def _first(src, kind, k=0):
    """Index of the k-th variant of a kind (kinds are cycled by index)."""
    return src.kinds.index(kind) + k * len(src.kinds)


# -- generator ---------------------------------------------------------------------------------
def test_variants_are_deterministic_for_a_seed(sources):
    src = sources[BDFSMN_D2]
    again = fv.Source(BDFSMN_D2)
    n = 2 * len(src.kinds)
    a, b = fv.variants(src, 7, n), fv.variants(again, 7, n)
    assert [v.data for v in a] == [v.data for v in b]
    assert [v.recipe() for v in a] == [v.recipe() for v in b]
    # one variant alone (as --only rebuilds it) equals the same index in a run
    assert src.variant(7, n - 1).data == a[-1].data
    other = fv.variants(src, 8, n)
    assert sum(x.data != y.data for x, y in zip(a, other)) >= n - 2


def test_every_kind_applies_and_differs_from_the_original(sources):
    for path, src in sources.items():
        expected = set(fv.KINDS) - ({"custom_options", "custom_options_length"}
                                    if path == INT8_D2 else set())
        assert set(src.kinds) == expected, path
        for v in fv.variants(src, 0, 3 * len(src.kinds)):
            assert v.data != src.data, v.describe()
            json.dumps(v.recipe())      # the recipe is JSON (for the report and --only)


def _model(v):
    return bdfsmn.read_model(v.data)


def test_targeted_edits_make_what_they_claim(sources):
    S = ops.schema()
    types = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_")}
    opts = {v: k for k, v in vars(S.BuiltinOptions).items() if not k.startswith("_")}
    checked = set()
    for src in sources.values():
        for k in range(4):
            for kind in fv.TARGETED:
                if kind not in src.kinds:
                    continue
                v = src.variant(3, _first(src, kind, k))
                assert v.kind == kind
                p, m = v.params, _model(v)
                sg = m.subgraphs[0] if m.subgraphs else None
                if kind == "tensor_type":
                    assert types.get(sg.tensors[p["tensor"]].type,
                                     sg.tensors[p["tensor"]].type) == p["to"] != p["from"]
                elif kind == "tensor_shape":
                    assert list(sg.tensors[p["tensor"]].shape if sg.tensors[p["tensor"]].shape
                                is not None else []) == p["to"] != p["from"]
                elif kind == "buffer_index":
                    assert sg.tensors[p["tensor"]].buffer == p["to"] >= len(m.buffers)
                elif kind == "op_input_index":
                    assert sg.operators[p["op"]].inputs[p["input"]] == p["to"]
                    assert p["to"] >= len(sg.tensors) or p["to"] < -1
                elif kind == "op_self_input":
                    op = sg.operators[p["op"]]
                    assert op.inputs[p["input"]] == op.outputs[0] == p["to"]
                elif kind == "opcode_index":
                    assert sg.operators[p["op"]].opcodeIndex == p["to"] >= len(m.operatorCodes)
                elif kind == "builtin_options":
                    op = sg.operators[p["op"]]
                    assert opts[op.builtinOptionsType] == p["to"] != p["from"]
                    if p["mode"] == "swap":
                        assert type(op.builtinOptions).__name__ == p["to"] + "T"
                    if p["mode"] == "drop":
                        assert op.builtinOptions is None
                elif kind == "custom_options":
                    new = bytes(np.asarray(sg.operators[p["op"]].customOptions).tobytes())
                    assert len(new) == p["to_len"]
                    if p["mode"] == "value":
                        assert flexbuffers.Loads(new)[p["key"]] == p["value_to"]
                    elif p["mode"] in ("truncate", "resize"):
                        assert p["to_len"] != p["from_len"]
                elif kind == "metadata_buffer":
                    if p["mode"] == "deprecated_index":
                        assert list(m.metadataBuffer) == [p["to"]]
                    else:
                        assert m.metadata[p["metadata"]].buffer == p["to"]
                    if p["mode"] == "index":
                        assert p["to"] >= len(m.buffers)
                elif kind == "quantization":
                    q = sg.tensors[p["tensor"]].quantization
                    assert len(q.scale if q.scale is not None else []) == p["scale_to"]
                    assert len(q.zeroPoint if q.zeroPoint is not None else []) == \
                        p["zero_point_to"]
                    if p["mode"] == "len_mismatch":
                        assert p["scale_to"] != p["zero_point_to"]
                    if p["mode"] == "qdim":
                        assert q.quantizedDimension == p["quantized_dimension"]
                elif kind == "subgraph_io":
                    outs = None if sg.outputs is None else [int(i) for i in sg.outputs]
                    assert [int(i) for i in sg.inputs] == p["inputs"]
                    assert (outs or None) == (p["outputs"] or None)
                elif kind == "structure":
                    mode = p["mode"]
                    if mode == "no_subgraphs":
                        assert not m.subgraphs
                    elif mode == "no_buffers":
                        assert not m.buffers
                    elif mode == "no_opcodes":
                        assert not m.operatorCodes
                    elif mode == "no_operators":
                        assert not sg.operators
                checked.add(kind)
    assert checked == set(fv.TARGETED)


def test_byte_edits_make_what_they_claim(sources):
    for src in sources.values():
        for k in range(3):
            for kind in fv.RAW:
                if kind not in src.kinds:
                    continue
                v = src.variant(5, _first(src, kind, k))
                p = v.params
                if kind in ("byte_flip", "struct_flip"):
                    for off, old, new in p["changes"]:
                        assert src.data[off] == old and old != new
                    assert v.data[p["changes"][-1][0]] == p["changes"][-1][2]
                    if kind == "struct_flip":
                        assert all(off in set(src.struct_offsets.tolist())
                                   for off, _, _ in p["changes"])
                elif kind == "bit_flip":
                    diff = np.frombuffer(v.data, np.uint8) ^ np.frombuffer(src.data, np.uint8)
                    assert set(np.flatnonzero(diff).tolist()) <= {o for o, _ in p["bits"]}
                elif kind in ("truncate", "truncate_small"):
                    assert v.data == src.data[:p["length"]]
                    if kind == "truncate_small":
                        assert p["length"] in (0, 1, 4, 8)
                elif kind == "zero_run":
                    assert not any(v.data[p["offset"]:p["offset"] + p["length"]])
                    assert len(v.data) == len(src.data)
                else:   # vector_length, custom_options_length: a uint32 length prefix
                    off = p["offset"]
                    assert int.from_bytes(v.data[off:off + 4], "little") == p["to"]
                    assert int.from_bytes(src.data[off:off + 4], "little") == p["from"]
                    assert off in src.length_fields[p["field"]]
                    if kind == "custom_options_length":
                        assert p["field"] == "custom_options"


def test_custom_options_length_field_is_the_ops_options(sources):
    """The located length prefix is really the ``ops.BDFSMN`` options' (66-byte FlexBuffers
    map)."""
    src = sources[BDFSMN_D2]
    for off in src.length_fields["custom_options"]:
        n = int.from_bytes(src.data[off:off + 4], "little")
        opts = ops.read_options(src.data[off + 4:off + 4 + n])
        assert set(opts) == set(ops.BDFSMN_OPTION_KEYS)


def test_discover_picks_up_every_flavor_and_new_ones(tmp_path):
    for name in ("dfsmn_float_d8", "dfsmn_float_d2", "bifsmnv2_binary_d8", "bifsmnv2_binary_d4"):
        (tmp_path / f"{name}.tflite").write_bytes(b"x")
    got = [os.path.basename(p) for p in fm.discover(str(tmp_path), "2")]
    # binary has no d2: its smallest depth stands in, so no flavor is left out
    assert got == ["bifsmnv2_binary_d4.tflite", "dfsmn_float_d2.tflite"]
    assert len(fm.discover(str(tmp_path), "all")) == 4
    assert [os.path.basename(p) for p in fm.discover(str(tmp_path), "8", ["dfsmn_float"])] == \
        ["dfsmn_float_d8.tflite"]
    with pytest.raises(fm.HarnessError, match="no files of flavor"):
        fm.discover(str(tmp_path), "2", ["nope"])
    with pytest.raises(fm.HarnessError, match="no .tflite"):
        fm.discover(str(tmp_path / "empty"), "2")
    flavors = {fv.flavor_of(p) for p in fm.discover(EXPORTS, "2")}
    assert flavors >= {"dfsmn_float", "dfsmn_int8", "bifsmnv2_lce", "bifsmnv2_bdfsmn"}


def test_sidecar_digest_is_rehashed_or_copied(tmp_path, sources):
    import hashlib
    src = fv.Source(BDFSMN_D2)
    src.sidecar = dict(src.sidecar, sha256=hashlib.sha256(src.data).hexdigest())
    v = src.variant(0, 0)
    path = fm.write_variant(src, v, str(tmp_path), "rehash")
    meta = json.load(open(os.path.splitext(path)[0] + ".json"))
    assert meta["sha256"] == hashlib.sha256(v.data).hexdigest()
    assert meta["labels"] == src.sidecar["labels"]
    path = fm.write_variant(src, v, str(tmp_path), "copy")
    assert json.load(open(os.path.splitext(path)[0] + ".json"))["sha256"] == \
        src.sidecar["sha256"]
    assert open(path, "rb").read() == v.data


# -- runner classification with a fake worker --------------------------------------------------
FAKE_WORKER = textwrap.dedent(r"""
    import json, os, signal, sys
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    out.write(json.dumps({"ready": True, "classifier": "fake"}) + "\n")
    for line in sys.stdin:
        path = json.loads(line)["path"]
        if "segv" in path:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "hang" in path:
            signal.pause()               # blocks until killed: no timing involved
        if "exit" in path:
            os._exit(3)
        if "asan" in path:
            sys.stderr.write("==1==ERROR: AddressSanitizer: heap-buffer-overflow on x\n")
            sys.stderr.flush()
            os.abort()
        if "late" in path:                # answers, then dies
            out.write(json.dumps({"status": "ok", "result": {}}) + "\n")
            os.kill(os.getpid(), signal.SIGSEGV)
        if "bug" in path:
            out.write(json.dumps({"status": "traceback", "exception": "TypeError",
                                  "message": "boom", "traceback": "Traceback\n  File \"x\", "
                                  "line 1, in f\nTypeError: boom"}) + "\n")
        elif "refuse" in path:
            out.write(json.dumps({"status": "refused", "message": "bad model"}) + "\n")
        else:
            out.write(json.dumps({"status": "ok", "result": {"output_shape": [2, 9],
                      "output": [0.0] * 18}}) + "\n")
""")


@pytest.fixture
def fake_worker(tmp_path):
    w = fm.Worker([sys.executable, "-c", FAKE_WORKER], str(tmp_path / "stderr"),
                  startup_timeout=60)
    yield w
    w.stop()


def test_runner_counts_each_way_a_worker_can_fail(fake_worker):
    got = {}
    for name in ("ok", "segv", "ok2", "refuse", "bug", "exit", "asan", "hang", "ok3"):
        res = fake_worker.request({"path": name}, timeout=5 if name == "hang" else 60)
        got[name] = fm.classify(res)
    assert {k: v["class"] for k, v in got.items()} == {
        "ok": "ok", "segv": "signal", "ok2": "ok", "refuse": "refused", "bug": "traceback",
        "exit": "exit", "asan": "sanitizer", "hang": "hang", "ok3": "ok"}
    assert got["segv"]["detail"] == "signal 11 (SIGSEGV)"
    assert got["exit"]["detail"].startswith("exit code 3")
    assert "AddressSanitizer" in got["asan"]["detail"]
    assert got["refuse"]["detail"] == "bad model"
    assert got["bug"]["stderr"] == ['File "x", line 1, in f']
    # restarted after each of segv, exit, asan (SIGABRT) and hang
    assert fake_worker.starts == 5


def test_a_death_after_answering_is_charged_to_that_variant(fake_worker):
    assert fm.classify(fake_worker.request({"path": "late"}, 60))["class"] == "ok"
    fake_worker.proc.wait()              # it is dead before the next request: no race
    res = fake_worker.request({"path": "ok"}, 60)
    assert fm.classify(res)["class"] == "ok"
    assert res["late"]["returncode"] == -11


def test_fuzz_file_moves_a_late_death_to_the_variant_that_caused_it(tmp_path):
    ok = {"outcome": "reply", "reply": {"status": "ok", "result": {
        "output_shape": [2, 9], "output": [0.0] * 18}}, "returncode": None, "stderr": "",
        "late": None}

    class Canned:                        # the worker's answers, without a process
        def __init__(self):
            self.n = 0

        def request(self, req, timeout):
            self.n += 1
            # request 1 is the original, 2 variant 0, 3 variant 1 (finds variant 0's death)
            return dict(ok, late={"returncode": -11, "stderr": "boom"} if self.n == 3 else None)

    fr = fm.fuzz_file(INT8_D2, Canned(), 0, 3, str(tmp_path), 60)
    assert [r["class"] for r in fr["records"]] == ["signal", "ok", "ok"]
    assert fr["records"][0]["detail"] == "signal 11 (SIGSEGV) (after it answered)"
    assert fr["counts"]["signal"] == 1 and fr["counts"]["ok"] == 2


def test_worker_that_cannot_start_is_a_harness_error(tmp_path):
    w = fm.Worker([sys.executable, "-c", "import sys; sys.stderr.write('no tf here'); "
                   "sys.exit(1)"], str(tmp_path / "stderr"), startup_timeout=60)
    with pytest.raises(fm.HarnessError, match="no tf here"):
        w.start()


def test_run_reports_a_crashing_variant_and_fails(tmp_path):
    """The whole runner on a fake worker that segfaults on variant 3 and hangs on variant 5:
    both counted, the run fails, the others are counted as they answered."""
    worker = FAKE_WORKER.replace('if "segv" in path:', 'if "__fuzz3." in path:').replace(
        'if "hang" in path:', 'if "__fuzz5." in path:')
    out = open(tmp_path / "report.txt", "w")
    summary = fm.run([INT8_D2], variants=8, seed=0, timeout=5, cli_per_flavor=0,
                     worker_cmd=[sys.executable, "-c", worker], progress=False, out=out)
    out.close()
    counts = summary["files"][os.path.basename(INT8_D2)]
    assert counts["signal"] == 1 and counts["hang"] == 1 and counts["ok"] == 6
    assert summary["failures"] == 2
    report = open(tmp_path / "report.txt").read()
    assert "#3" in report and "signal 11 (SIGSEGV)" in report and "--only 3" in report
    assert json.loads(report.strip().splitlines()[-1])["failures"] == 2


def test_cli_outcomes_are_classified():
    assert fm.classify_cli(0, "")["class"] == "ok"
    assert fm.classify_cli(2, "pipeline.evaluate: error: bad model; expected x\n") == {
        "class": "refused", "detail": "pipeline.evaluate: error: bad model; expected x"}
    assert fm.classify_cli(-11, "Fatal Python error")["class"] == "signal"
    tb = "Traceback (most recent call last):\n  File \"a.py\", line 3, in f\nKeyError: 1\n"
    c = fm.classify_cli(1, tb)
    assert c["class"] == "traceback" and "KeyError: 1" in c["detail"]
    assert fm.classify_cli(1, "something\n")["class"] == "exit"
    assert fm.classify_cli(None, "")["class"] == "hang"


BUGGY_LIB = r"""
#include <cstdlib>
extern "C" int heap_overflow(int i) {
  int* p = static_cast<int*>(std::malloc(4 * sizeof(int)));
  p[i] = 1;                       // i = 4: one past the end
  int r = p[0];
  std::free(p);
  return r;
}
extern "C" int signed_overflow(int a) { return a + 2147483647; }   // a = 1: UB
"""


@pytest.mark.parametrize("sanitizers,call,marker", [
    ("address", "heap_overflow(4)", "ERROR: AddressSanitizer"),   # (UBSan would see it first)
    ("address,undefined", "signed_overflow(1)", "runtime error:")])
def test_sanitizer_env_catches_bugs_in_a_loaded_library(tmp_path, sanitizers, call, marker):
    """Positive control of --sanitize: a library built with the op library's sanitizer flags,
    loaded by a Python process with ``sanitizer_env()``, reports a heap overflow (ASan) / a
    signed overflow (UBSan), and the report is classified as 'sanitizer'."""
    src, lib = tmp_path / "buggy.cc", tmp_path / "libbuggy.so"
    src.write_text(BUGGY_LIB)
    build = subprocess.run(["g++", "-O1", "-g", "-fPIC", "-shared", f"-fsanitize={sanitizers}",
                            "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", str(src),
                            "-o", str(lib)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    code = f"import ctypes; print(ctypes.CDLL({str(lib)!r}).{call})"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=fm.sanitizer_env())
    assert marker in p.stderr, p.stderr[-2000:]
    assert p.returncode != 0
    assert fm.classify_cli(p.returncode, p.stderr)["class"] == "sanitizer"
    assert fm.classify({"outcome": "signal", "returncode": p.returncode, "reply": None,
                        "stderr": p.stderr})["class"] == "sanitizer"


# -- runs over the committed exports -----------------------------------------------------------
def _assert_clean(summary):
    bad = {f: {k: c[k] for k in fm.FAILURES if c[k]} for f, c in summary["files"].items()}
    bad = {f: c for f, c in bad.items() if c}
    records = [r for fr in summary["_files"] for r in fr["records"]]
    examples = [f"{g['count']} x {g['class']}: {g['first']['describe'][:160]} -> "
                f"{g['first'].get('detail', '')[:200]}" for g in fm.failure_groups(records)]
    examples += [f"cli {c['class']}: {c['describe'][:160]} -> {c.get('detail', '')[:200]}"
                 for c in summary["_cli"] if c["class"] in fm.FAILURES]
    assert summary["failures"] == 0, f"{bad}; cli {summary['cli']}\n" + "\n".join(examples[:15])


def test_fuzz_fixed_seed_every_flavor(capsys):
    """make test: 20 variants (every kind once) of each flavor's d2 export."""
    paths = fm.discover(EXPORTS, "2")
    summary = fm.run(paths, variants=20, seed=0, cli_per_flavor=0, progress=False)
    assert summary["variants"] == 20 * len(paths)
    _assert_clean(summary)


@pytest.mark.slow
def test_fuzz_300_variants_per_file_and_cli_sample():
    """make test-slow: 300 variants of EVERY committed export (each flavor at each depth: >= 900
    per flavor), and 5 variants per flavor through `python -m pipeline.evaluate`."""
    paths = fm.discover(EXPORTS, "all")
    summary = fm.run(paths, variants=300, seed=1, cli_per_flavor=5, progress=False)
    flavors = {fv.flavor_of(p) for p in paths}
    assert set(summary["flavors"]) == flavors
    assert all(sum(c[k] for k in fm.CLASSES) == 300 for c in summary["files"].values())
    assert sum(summary["cli"].values()) == 5 * len(flavors)
    _assert_clean(summary)


@pytest.mark.slow
def test_fuzz_bdfsmn_under_asan_ubsan():
    """make test-slow: 300 variants of each export with ``ops.BDFSMN`` ops (bdfsmn d8 / d4 / d2)
    through the ASan/UBSan build of the op library: no sanitizer report, no signal, no
    traceback."""
    build = subprocess.run(["make", "-s", "-C", os.path.join(fm.ROOT, "lce_kernels"),
                            "op-asan"], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert os.path.exists(fm.ASAN_OP_LIB)
    paths = [p for p in fm.discover(EXPORTS, "all") if fm.has_own_ops(p)]
    assert paths, f"no export holds {ops.BDFSMN} ops"
    summary = fm.run(paths, variants=300, seed=2, sanitize=True, progress=False)
    assert summary["op_libs"] == [fm.ASAN_OP_LIB]   # only the sanitized library ran
    assert summary["variants"] == 300 * len(paths)
    assert summary["total"]["ok"] > 0                # the op really ran on some variants
    _assert_clean(summary)


def test_main_exit_codes(tmp_path):
    """The tool: harness errors exit 2 with one line, failures exit 1 (fake worker via run)."""
    p = subprocess.run([sys.executable, "-m", "pipeline.fuzz_models", "--exports_dir",
                        str(tmp_path)], capture_output=True, text=True, cwd=fm.ROOT)
    assert p.returncode == 2 and "no .tflite files" in p.stderr
    assert "Traceback" not in p.stderr
