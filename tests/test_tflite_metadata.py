"""Self-describing models (issue 15, point 3): every exported .tflite carries its description
(metadata ``bkws.description``: class names, input kind, features, architecture, depth,
flavor, version), written and read by ``pipeline.tflite_metadata``, checked by the C++
verifier and ``pipeline.model_verify``, and read by ``pipeline.predictors`` (the sidecar JSON
is a report, no longer needed to run a model).

Cases: a tiny float model described as ``pipeline.export`` describes its exports, copied
ALONE into an empty folder, evaluates with its class names; the
description round-trips and leaves every other part of the model unchanged; the committed
exports describe themselves and their tensors / ops / buffers equal those of the commit before
they were stamped; malformed descriptions are refused with one clear line, by the C++ verifier
or the Python validation (ASan build included); the file wins over a sidecar that disagrees.
"""
import dataclasses
import glob
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from test_train import tiny_cfg

import pipeline
from pipeline import evaluate, export, model_contract, model_verify, predictors
from pipeline import tflite_metadata as M
from pipeline.checkpoints import CheckpointError
from pipeline.features import DEFAULT
from pipeline.input_pipeline import index_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTS = os.path.join(ROOT, "pretrained", "real8", "exports")
FLOAT = os.path.join(EXPORTS, "dfsmn_float_d2.tflite")
KDIR = os.path.join(ROOT, "lce_kernels")
ASAN_CLI = os.path.join(KDIR, "build", "asan", "tflite_verify")
#: the last commit whose pretrained/real8/exports/*.tflite had no description
PRE_STAMP_COMMIT = "5ceef8695f16f7eecaf9936623cc9f84efcead9f"
#: the last commit with the stamped files of those models (pretrained/real8 was republished,
#: new weights, after it)
STAMPED_COMMIT = "cda0098437981670a19b9313dae904a42c875302"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _plain(o):
    """The schema's object tree as plain values (arrays as bytes) for comparison."""
    if isinstance(o, np.ndarray):
        return ("array", o.dtype.str, o.shape, o.tobytes())
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if hasattr(o, "__dict__"):
        return {k: _plain(v) for k, v in vars(o).items()}
    return o


def content(flatbuffer: bytes) -> dict:
    """Everything in the model except its description entry and that entry's buffer:
    operator codes, subgraphs (tensors, quantization, operators, options), every other
    buffer's bytes, other metadata, signatures."""
    m = M.read_model(flatbuffer)
    ours = [e for e in (m.metadata or []) if M._name(e.name) == M.KEY]
    drop = {e.buffer for e in ours}
    c = _plain(m)
    c["metadata"] = [_plain(e) for e in (m.metadata or []) if e not in ours] or None
    c["buffers"] = [b for i, b in enumerate(c["buffers"]) if i not in drop]
    return c


def features(n=3):
    return np.random.default_rng(0).normal(-40, 15, (n, 32, 32)).astype(np.float32)


def alone(tmp_path, data: bytes, name="model") -> str:
    """``data`` as the only file of a new empty folder."""
    folder = tmp_path / f"alone_{name}"
    folder.mkdir()
    path = str(folder / f"{name}.tflite")
    with open(path, "wb") as f:
        f.write(data)
    return path


def with_raw_description(data: bytes, raw, entries=1) -> bytes:
    """``data`` with ``entries`` description entries holding ``raw`` bytes as they are
    (no validation: what a damaged or foreign file may hold)."""
    S = M._schema()
    m = M.read_model(M.remove(data))
    for _ in range(entries):
        b = S.BufferT()
        b.data = np.frombuffer(raw, np.uint8).copy() if raw else None
        m.buffers.append(b)
        e = S.MetadataT()
        e.name, e.buffer = M.KEY, len(m.buffers) - 1
        m.metadata = (m.metadata or []) + [e]
    return M.write_model(m)


def description(labels, **changes):
    d = M.describe(labels, "features", "dfsmn", 2, "float")
    d.update(changes)
    return d


REAL8_LABELS = ["_silence_", "yes", "no", "up", "down", "left", "right", "stop", "go"]


# -- a tiny model, described as pipeline.export describes it -------------------------------------
@pytest.fixture(scope="module")
def float_export(tiny_corpus, tmp_path_factory):
    """A tiny 2-layer float teacher for the tiny corpus, converted and described as
    ``pipeline.export.export_one`` does (its path, description and class list). The whole
    export tool (verification, reports) writes descriptions too: tests/test_export.py checks
    them for lce / float / int8, tests/test_export_bdfsmn.py for bdfsmn."""
    import models
    labels = index_from_config(tiny_cfg(tiny_corpus)).labels
    kwargs = dict(channels=16, hidden=16, num_layers=2, left=2, right=2, dilation=1)
    model = models.get_model("dfsmn", depth=2, num_classes=len(labels), **kwargs)
    spec = {"model": "dfsmn", "model_kwargs": kwargs, "labels": labels,
            "features": dataclasses.asdict(DEFAULT)}
    desc = export.export_description(spec, "float", 2, False)
    path = str(tmp_path_factory.mktemp("meta_exports") / "dfsmn_float_d2.tflite")
    with open(path, "wb") as f:
        f.write(M.write(export.convert(model, "float"), desc))
    return path, desc, labels


def test_export_writes_the_description(float_export):
    path, written, labels = float_export
    desc = M.read(open(path, "rb").read(), path)
    assert desc == written and desc["labels"] == labels and desc["input"] == "features"
    assert (desc["arch"], desc["depth"], desc["flavor"]) == ("dfsmn", 2, "float")
    assert desc["version"] == pipeline.__version__ and desc["sample_rate"] == 16000
    assert M.feature_config(desc) == DEFAULT and desc["features"]["kind"] == "log_mel"
    assert desc["model_kwargs"]["num_layers"] == 2


def test_copied_alone_evaluates_with_its_class_names(float_export, tiny_corpus, tmp_path):
    path, _, labels = float_export
    copy = alone(tmp_path, open(path, "rb").read(), "teacher_float")
    assert os.listdir(os.path.dirname(copy)) == ["teacher_float.tflite"]  # nothing else
    pred = predictors.load_predictor(copy)
    assert pred.labels == labels and pred.description["source"] == "metadata"
    (res,) = evaluate.run(copy, tiny_cfg(tiny_corpus), "testing", plot=False).values()
    assert list(res["per_class"]) == labels and res["n"] > 0


@pytest.mark.slow  # two fresh processes (TensorFlow import): ~30 s on a loaded machine
def test_copied_alone_cli(float_export, tiny_corpus, tmp_path):
    """The issue's "done when": python -m pipeline.evaluate on the lone copy; and a file with
    neither description nor sidecar: exit 2, one line, no traceback."""
    path, _, labels = float_export
    data = open(path, "rb").read()
    copy = alone(tmp_path, data, "teacher_float")
    args = ["--data_dir", tiny_corpus, "--wanted_words", "yes,no,up,down", "--split",
            "testing", "--plot", str(tmp_path / "cm.png")]
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluate", "--model", copy] + args,
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(result["per_class"]) == labels
    bare = alone(tmp_path, M.remove(data), "bare")
    proc = subprocess.run([sys.executable, "-m", "pipeline.evaluate", "--model", bare] + args,
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "does not say what it is" in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "error:" in ln]) == 1


# -- write / read ---------------------------------------------------------------------------------
def test_round_trip_keeps_the_model():
    data = open(FLOAT, "rb").read()
    bare = M.remove(data)
    assert M.read(bare) is None
    desc = description(REAL8_LABELS, model_kwargs={"channels": 128})
    written = M.write(bare, desc)
    assert M.read(written) == desc
    assert content(written) == content(bare) == content(data)
    # written again with another description: replaced, still one entry, model unchanged
    other = M.write(written, description(REAL8_LABELS[::-1], depth=4))
    assert M.read(other)["labels"] == REAL8_LABELS[::-1] and M.read(other)["depth"] == 4
    assert [M._name(e.name) for e in M.read_model(other).metadata].count(M.KEY) == 1
    assert content(other) == content(data)
    # and it computes the same
    x = features()
    y0 = predictors.TFLiteRunner(FLOAT, model_bytes=data)(x)
    y1 = predictors.TFLiteRunner(FLOAT, model_bytes=other)(x)
    np.testing.assert_array_equal(y0, y1)


def test_write_refuses_a_description_that_does_not_fit():
    bare = M.remove(open(FLOAT, "rb").read())
    with pytest.raises(M.DescriptionError, match="lists 3 classes but the model's output has 9"):
        M.write(bare, description(["a", "b", "c"]))
    for bad, message in ((dict(input="spectrogram"), "has input 'spectrogram'"),
                         (dict(depth=0), "has depth 0"),
                         (dict(labels=["yes", "yes"] + REAL8_LABELS[2:]), "lists a class twice"),
                         (dict(sample_rate=8000), "sample_rate 8000 but features.sample_rate"),
                         (dict(format="bkws.description/2"), "cannot read")):
        with pytest.raises(M.DescriptionError, match=message):
            M.validate(dict(description(REAL8_LABELS), **bad))
    feats = dict(description(REAL8_LABELS)["features"])
    del feats["hop"]
    with pytest.raises(M.DescriptionError, match=r"lacks feature setting\(s\) \['hop'\]"):
        M.validate(description(REAL8_LABELS, features=feats))


# -- the committed exports ------------------------------------------------------------------------
#: the exports that existed before descriptions (stamped with ``--stamp``); later exports are
#: written described by pipeline.export
STAMPED = [f"{m}_{f}_d{d}" for m, f in (("dfsmn", "float"), ("dfsmn", "int8"),
                                       ("bifsmnv2", "lce"), ("bifsmnv2", "bdfsmn"))
           for d in (8, 4, 2)]


def committed():
    paths = sorted(glob.glob(os.path.join(EXPORTS, "*.tflite")))
    assert {os.path.basename(p)[:-len(".tflite")] for p in paths} >= set(STAMPED)
    return paths


def test_committed_exports_describe_themselves():
    for path in committed():
        with open(os.path.splitext(path)[0] + ".json") as f:
            report = json.load(f)
        desc = M.read(open(path, "rb").read(), path)
        assert desc is not None, path
        assert desc["labels"] == report["labels"] == REAL8_LABELS
        assert (desc["flavor"], desc["depth"], desc["input"], desc["arch"]) == (
            report["flavor"], report["depth"], report["input"], report["model"])
        assert report["description"] == desc


def test_committed_exports_unchanged_but_for_the_description():
    """Stamping kept the operator codes, tensors, operators, options and constant bytes of the
    files of the commit before it (only the metadata grew): the stamped files as committed up
    to STAMPED_COMMIT (the models were replaced after it) against PRE_STAMP_COMMIT's."""
    for commit in (PRE_STAMP_COMMIT, STAMPED_COMMIT):
        probe = subprocess.run(["git", "cat-file", "-e", commit], cwd=ROOT, capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"commit {commit[:10]} not in this clone (shallow?)")
    for name in STAMPED:
        path = os.path.join(EXPORTS, f"{name}.tflite")
        rel = os.path.relpath(path, ROOT)
        old = subprocess.run(["git", "show", f"{PRE_STAMP_COMMIT}:{rel}"], cwd=ROOT,
                             capture_output=True, check=True).stdout
        assert M.read(old) is None
        new = subprocess.run(["git", "show", f"{STAMPED_COMMIT}:{rel}"], cwd=ROOT,
                             capture_output=True, check=True).stdout
        assert content(new) == content(old), rel
        assert len(old) < len(new) < len(old) + 4096, rel


# -- malformed descriptions -----------------------------------------------------------------------
def good_json(**changes) -> bytes:
    return M.encode(description(REAL8_LABELS, **changes))


MALFORMED = [
    # refused by the C++ verifier (lce_kernels/tflite/model_verify.cc)
    ("bad_json", b'{"labels": ["a", ', 1, "not valid JSON"),
    ("not_utf8_json", b'{"labels": ["\xff\xfe"]}', 1, "not valid JSON"),
    ("trailing_comma", b'{"labels": ["a"],}', 1, "not valid JSON"),
    ("array", b'[1, 2]', 1, "not a JSON object"),
    ("no_labels", b'{"input": "features"}', 1, "no list of class names"),
    ("labels_numbers", b'{"labels": [1, 2, 3, 4, 5, 6, 7, 8, 9]}', 1, r"labels\[0\] is not a "),
    ("class_count", M.encode(dict(description(REAL8_LABELS), labels=["a", "b", "c"])), 1,
     "3 labels but the model's output has 9 logits"),
    ("empty", b"", 1, "holds no data"),
    ("nul", b'{"labels": []}\x00', 1, "NUL byte"),
    ("two_entries", good_json(), 2, "a second 'bkws.description' entry"),
    ("huge", b" " * (M.MAX_BYTES + 1), 1, "more than 65536"),
    ("nan", good_json().replace(b'"f_min":0.0', b'"f_min":NaN'), 1, "not valid JSON"),
    # accepted by the C++ verifier, refused by the Python validation (tflite_metadata.validate)
    ("no_input", M.encode({k: v for k, v in description(REAL8_LABELS).items()
                           if k != "input"}), 1, "has input None"),
    ("feature_type", good_json().replace(b'"n_mels":32', b'"n_mels":"32"'), 1,
     "features.n_mels"),
]


@pytest.mark.parametrize("name,raw,entries,message", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_description_refused(tmp_path, name, raw, entries, message):
    data = with_raw_description(open(FLOAT, "rb").read(), raw, entries)
    path = alone(tmp_path, data, name)
    with pytest.raises(model_verify.ModelError, match=message) as err:
        predictors.load_predictor(path)
    msg = str(err.value)
    assert path in msg and "\n" not in msg and len(msg) < 600
    with pytest.raises(model_verify.ModelError, match=message):
        model_verify.verify_model(data, path)


def test_asan_verifier_refuses_malformed_descriptions(tmp_path):
    """The same cases through the ASan/UBSan build of the verifier CLI: refused, no report."""
    proc = subprocess.run(["make", "-C", KDIR, "build/asan/tflite_verify"], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"cannot build the ASan verifier: {proc.stderr[-300:]}")
    base = open(FLOAT, "rb").read()
    paths = []
    for name, raw, entries, _ in MALFORMED:
        p = tmp_path / f"{name}.tflite"
        p.write_bytes(with_raw_description(base, raw, entries))
        paths.append(str(p))
    good = tmp_path / "good.tflite"
    good.write_bytes(M.write(M.remove(base), description(REAL8_LABELS)))
    proc = subprocess.run([ASAN_CLI, str(good)] + paths, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"OK {good}"
    python_only = {"no_input", "feature_type"}  # the Python validation's part
    for (name, _, _, message), p, line in zip(MALFORMED, paths, out[1:]):
        if name in python_only:
            assert line == f"OK {p}", line
        else:
            assert line.startswith(f"REFUSED {p}:"), line
    assert len(out) == 1 + len(paths)


# -- the loader: file first, sidecar as a report --------------------------------------------------
def test_file_wins_over_a_sidecar_that_disagrees(tmp_path, caplog):
    data = open(FLOAT, "rb").read()
    path = alone(tmp_path, data, "m")
    side = json.load(open(os.path.splitext(FLOAT)[0] + ".json"))
    side["labels"] = REAL8_LABELS[::-1]
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(side, f)
    with caplog.at_level(logging.WARNING):
        pred = predictors.load_predictor(path)
    assert pred.labels == REAL8_LABELS
    lines = [r.getMessage() for r in caplog.records if "file wins" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and path in lines[0]
    assert not [r for r in caplog.records if "SHA-256" in r.getMessage()]  # same file bytes


def test_old_file_runs_from_its_sidecar_and_stamp_describes_it(tmp_path):
    """An export from before descriptions (no metadata) still runs from its sidecar; --stamp
    writes the description from it and updates the sidecar's digest."""
    bare = M.remove(open(FLOAT, "rb").read())
    path = alone(tmp_path, bare, "old")
    side = json.load(open(os.path.splitext(FLOAT)[0] + ".json"))
    side.pop("description")
    side["sha256"] = model_contract.sha256(bare)
    side_path = os.path.splitext(path)[0] + ".json"
    with open(side_path, "w") as f:
        json.dump(side, f)
    pred = predictors.load_predictor(path)
    assert pred.labels == REAL8_LABELS and pred.description["source"] == "sidecar"
    desc = M.stamp(path)
    data = open(path, "rb").read()
    assert M.read(data) == desc and desc["labels"] == REAL8_LABELS and desc["depth"] == 2
    stamped = json.load(open(side_path))
    assert stamped["sha256"] == model_contract.sha256(data)
    assert stamped["file_bytes"] == len(data) and stamped["description"] == desc
    assert content(data) == content(bare)
    assert predictors.load_predictor(path).description["source"] == "metadata"


def test_neither_description_nor_sidecar_is_a_clear_error(tmp_path):
    path = alone(tmp_path, M.remove(open(FLOAT, "rb").read()), "bare")
    with pytest.raises(CheckpointError, match="does not say what it is"):
        predictors.load_predictor(path)


def test_model_for_other_features_is_refused(tmp_path):
    feats = dict(dataclasses.asdict(DEFAULT), n_mels=40)
    desc = M.describe(REAL8_LABELS, "features", "dfsmn", 2, "float", features=feats)
    path = alone(tmp_path, M.write(open(FLOAT, "rb").read(), desc), "mels40")
    with pytest.raises(CheckpointError, match=r"other features: n_mels 40 \(this pipeline: 32\)"):
        predictors.load_predictor(path)


def test_damaged_sidecar_of_a_described_file_only_warns(tmp_path, caplog):
    path = alone(tmp_path, open(FLOAT, "rb").read(), "m")
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        f.write("{not json")
    with caplog.at_level(logging.WARNING):
        assert predictors.load_predictor(path).labels == REAL8_LABELS
    assert any("is damaged" in r.getMessage() for r in caplog.records)
