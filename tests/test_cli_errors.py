"""The one error path of the tools (pipeline/cli.py, pipeline/output_paths.py).

Fast in-process checks of what counts as a user error, then the cases of issue 14 run as the
user runs them (``python -m tool ...`` in a subprocess): exit status 2, ONE line
``<tool>: error: ...`` naming the facts, no traceback; ``--debug`` / BKWS_DEBUG=1 bring the
traceback back. Each subprocess imports TensorFlow (~3-10 s); the models are the committed
ones in pretrained/real8, the data a few clips of the real pack copied to tmp_path.
"""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
from absl import app, flags

from lce_kernels import ops
from pipeline import cli, output_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "pretrained", "real8")
EXPORTS = os.path.join(PRETRAINED, "exports")
REAL8 = os.path.join(ROOT, "..", "shared", "data", "speech_commands_real8")
WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")
REAL8_FLAGS = ["--wanted_words", ",".join(WORDS), "--unknown_percentage", "0"]


# -- in process: what counts as a user error ----------------------------------------------------
def _raised_in(filename, exc):
    """``exc`` raised from code whose file is ``filename`` (a library's, or ours)."""
    try:
        exec(compile("raise exc", filename, "exec"), {"exc": exc})
    except BaseException as e:  # noqa: BLE001
        return e
    raise AssertionError("not raised")


@pytest.mark.parametrize("exc, facts", [
    (app.UsageError("--model is required"), ["--model is required", "expected"]),
    (flags.UnrecognizedFlagError("bogus"), ["bogus", "expected valid flags"]),
    (FileNotFoundError(errno.ENOENT, "No such file", "/x/m.tflite"),
     ["/x/m.tflite", "no such file", "expected an existing path"]),
    (PermissionError(errno.EACCES, "Permission denied", "/x/out"),
     ["/x/out", "permission denied", "expected"]),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/x/a.wav"), ["/x/a.wav", "a folder"]),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/f/sub"),
     ["/x/f/sub", "not a folder"]),
    (OSError(errno.EROFS, "Read-only file system", "/ro/out"), ["/ro/out", "read-only"]),
    (OSError(errno.ENOSPC, "No space left on device"), ["no space left", "free disk space"]),
    (json.JSONDecodeError("Expecting value", "{x", 1), ["JSON", "damaged", "line 1"]),
])
def test_user_errors_are_one_line(exc, facts):
    msg = cli.user_error_message(exc)
    assert msg is not None and "\n" not in msg
    for fact in facts:
        assert fact.lower() in msg.lower(), (fact, msg)


def test_project_and_tool_errors():
    from pipeline.checkpoints import CheckpointError
    from pipeline.speech_commands import DataError

    class ToolError(RuntimeError):
        pass

    assert cli.user_error_message(CheckpointError("bad\ncheckpoint")) == "bad checkpoint"
    assert cli.user_error_message(DataError("no clips")) == "no clips"
    assert cli.user_error_message(output_paths.OutputError("x")) == "x"
    assert cli.user_error_message(ToolError("t")) is None          # unknown to cli ...
    assert cli.user_error_message(ToolError("t"), (ToolError,)) == "t"  # ... unless the tool says


@pytest.mark.parametrize("exc", [TypeError("x"), AttributeError("x"), AssertionError("x"),
                                 KeyError("x"), ValueError("x"), RuntimeError("x"),
                                 IndexError("x"), OSError("no errno")])
def test_bugs_keep_their_traceback(exc):
    """The same types from our own code are bugs: not a user error."""
    assert cli.user_error_message(_raised_in(__file__, exc)) is None


@pytest.mark.parametrize("where, exc, fact", [
    ("/v/tensorflow/lite/python/interpreter.py", RuntimeError(f"{ops.BDFSMN}: channels 0"),
     f"TFLite interpreter refused the model: {ops.BDFSMN}: channels 0"),
    ("/v/larq_compute_engine/tflite/python/interpreter_base.py", ValueError("bad shape"),
     "LCE interpreter refused the model: bad shape"),
    ("/v/h5py/_hl/files.py", OSError("Unable to open file (truncated file)"), "truncated"),
])
def test_errors_raised_inside_model_runtimes(where, exc, fact):
    msg = cli.user_error_message(_raised_in(where, exc))
    assert msg is not None and fact in msg and "expected" in msg


def test_interrupt_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        cli.handle(KeyboardInterrupt(), "pipeline.x")
    assert e.value.code == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err.strip() == "pipeline.x: interrupted"
    with pytest.raises(SystemExit) as e:
        cli.handle(FileNotFoundError(errno.ENOENT, "No such file", "/m"), "pipeline.x")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pipeline.x: error: /m: no such file") and err.count("\n") == 1
    assert cli.handle(TypeError("bug"), "pipeline.x") is None   # the caller re-raises


def test_debug_requested(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert not cli.debug_requested(["--model", "x"])
    assert cli.debug_requested(["--debug"]) and cli.debug_requested(["--debug=true"])
    assert not cli.debug_requested(["--debug", "--nodebug"])
    assert not cli.debug_requested(["--", "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert cli.debug_requested([])
    monkeypatch.setenv(cli.DEBUG_ENV, "0")
    assert not cli.debug_requested([])


def test_output_paths(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(output_paths.OutputError, match="is a file, not a folder"):
        output_paths.check_dir(str(a_file / "sub" / "deeper"), "--out_dir")
    with pytest.raises(output_paths.OutputError, match="--out_dir .*file is a file"):
        output_paths.check_dir(str(a_file), "--out_dir")
    with pytest.raises(output_paths.OutputError, match="--plot .* is a folder"):
        output_paths.check_file(str(tmp_path), "--plot")
    with pytest.raises(output_paths.OutputError, match="--json_out .*is a file, not a folder"):
        output_paths.check_file(str(a_file / "x.json"), "--json_out")
    output_paths.check_dir(str(tmp_path / "new" / "run"), "--out_dir")   # fine, and ...
    output_paths.check_file(str(tmp_path / "new2" / "p.png"), "--plot")
    output_paths.check_dir(None, "--cache_dir")
    assert sorted(os.listdir(tmp_path)) == ["file"]                   # ... nothing created


# -- subprocesses: the cases of issue 14 --------------------------------------------------------
def run_tool(*args, env=None):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})))
    return proc


def assert_user_error(proc, tool, *facts):
    """Exit 2, one `<tool>: error:` line holding every fact, no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith(f"{tool}: error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for fact in facts:
        assert fact in lines[0], (fact, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One test clip per word of the real pack (8 clips), with its list files."""
    if not os.path.isdir(REAL8):
        pytest.skip(f"{REAL8} not present")
    root = tmp_path_factory.mktemp("real8_tiny")
    with open(os.path.join(REAL8, "testing_list.txt")) as f:
        listed = [l.strip() for l in f if l.strip()]
    clips = [next(c for c in listed if c.startswith(w + "/")) for w in WORDS]
    for c in clips:
        os.makedirs(root / os.path.dirname(c), exist_ok=True)
        shutil.copy(os.path.join(REAL8, c), root / c)
    (root / "testing_list.txt").write_text("\n".join(clips) + "\n")
    (root / "validation_list.txt").write_text("")
    return str(root)


def _export(name):
    path = os.path.join(EXPORTS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def bad_channels(tmp_path_factory):
    """A bdfsmn export whose ``ops.BDFSMN`` options say channels=0 (written with the same
    flatbuffer surgery the export uses), with its sidecar."""
    from pipeline import bdfsmn
    src = _export("bifsmnv2_bdfsmn_d2.tflite")
    with open(src, "rb") as f:
        model = bdfsmn.read_model(f.read())
    edited = 0
    for op in model.subgraphs[0].operators:
        if ops.custom_code(model.operatorCodes[op.opcodeIndex]) == ops.BDFSMN:
            opts = ops.read_options(bytes(bytearray(op.customOptions)))
            op.customOptions = list(ops.bdfsmn_options(**dict(opts, channels=0)))
            edited += 1
    assert edited
    out = tmp_path_factory.mktemp("bad_channels") / "bad_channels.tflite"
    out.write_bytes(bdfsmn.write_model(model))
    shutil.copy(os.path.splitext(src)[0] + ".json", out.with_suffix(".json"))
    return str(out)


def test_op_error_at_run_time(bad_channels, data_dir):
    proc = run_tool("pipeline.evaluate", "--model", bad_channels, "--data_dir", data_dir,
                    *REAL8_FLAGS, "--plot", os.path.join(os.path.dirname(bad_channels), "p.png"))
    assert_user_error(proc, "pipeline.evaluate", bad_channels, ops.BDFSMN,
                      "channels/hidden out of range", "expected")


def test_debug_shows_the_traceback(bad_channels, data_dir):
    args = ("pipeline.evaluate", "--model", bad_channels, "--data_dir", data_dir, *REAL8_FLAGS,
            "--plot", os.path.join(os.path.dirname(bad_channels), "p.png"))
    proc = run_tool(*args, "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert f"{ops.BDFSMN}: channels/hidden out of range" in proc.stderr
    assert "pipeline.evaluate: error:" not in proc.stderr


def test_truncated_weights(tmp_path, data_dir):
    src = os.path.join(PRETRAINED, "teacher")
    if not os.path.isdir(src):
        pytest.skip(f"{src} not present")
    run = tmp_path / "teacher"
    run.mkdir()
    shutil.copy(os.path.join(src, "model.json"), run / "model.json")
    weights = os.path.join(src, "model.weights.h5")
    with open(weights, "rb") as f:
        (run / "model.weights.h5").write_bytes(f.read(os.path.getsize(weights) // 2))
    proc = run_tool("pipeline.evaluate", "--model", str(run), "--data_dir", data_dir,
                    *REAL8_FLAGS, "--plot", str(tmp_path / "p.png"))
    assert_user_error(proc, "pipeline.evaluate", "cannot read weights",
                      str(run / "model.weights.h5"), "truncated", "expected a complete")


def test_unwritable_out_dir(tmp_path, data_dir):
    """A path under a regular file: refused before any work, nothing written."""
    (tmp_path / "file").write_text("precious")
    out = str(tmp_path / "file" / "sub")
    proc = run_tool("pipeline.train", "--out_dir", out, "--data_dir", data_dir, *REAL8_FLAGS,
                    "--epochs", "1")
    assert_user_error(proc, "pipeline.train", "--out_dir", out, "is a file, not a folder")
    assert (tmp_path / "file").read_text() == "precious"


def test_foreign_tflite_with_sidecar(tmp_path, data_dir):
    """A valid TFLite model of another input shape, with a copied sidecar next to it."""
    import tensorflow as tf
    keras = tf.keras.Sequential([tf.keras.layers.Input((10,)), tf.keras.layers.Dense(9)])
    path = tmp_path / "foreign.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras).convert())
    shutil.copy(os.path.splitext(_export("dfsmn_float_d2.tflite"))[0] + ".json",
                tmp_path / "foreign.json")
    proc = run_tool("pipeline.evaluate", "--model", str(path), "--data_dir", data_dir,
                    *REAL8_FLAGS, "--plot", str(tmp_path / "p.png"))
    assert_user_error(proc, "pipeline.evaluate", str(path), "expected")


def test_random_bytes_tflite(tmp_path, data_dir):
    """Not a model at all (random bytes with a sidecar): refused, no traceback, no signal."""
    import numpy as np
    path = tmp_path / "random.tflite"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    shutil.copy(os.path.splitext(_export("dfsmn_float_d2.tflite"))[0] + ".json",
                tmp_path / "random.json")
    proc = run_tool("pipeline.evaluate", "--model", str(path), "--data_dir", data_dir,
                    *REAL8_FLAGS, "--plot", str(tmp_path / "p.png"))
    assert_user_error(proc, "pipeline.evaluate", str(path))


def test_folder_named_wav_is_a_counted_skip(tmp_path, data_dir):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    (data / "yes" / "x.wav").mkdir()
    proc = run_tool("pipeline.inspect_data", "--data_dir", str(data), *REAL8_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = json.loads(proc.stdout.strip().splitlines()[-1])["skipped"]
    assert skipped == {"not a WAV file": 1}


def test_missing_data_dir_and_flag_errors(tmp_path):
    missing = str(tmp_path / "nowhere")
    proc = run_tool("pipeline.inspect_data", "--data_dir", missing, *REAL8_FLAGS)
    assert_user_error(proc, "pipeline.inspect_data", missing, "does not exist", "expected")
    proc = run_tool("pipeline.download", "--no_such_flag")
    assert_user_error(proc, "pipeline.download", "no_such_flag", "expected valid flags")
    proc = run_tool("pipeline.download", "--no_such_flag", env={cli.DEBUG_ENV: "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_census_and_summary_clis(tmp_path):
    """models.lce_census (now absl, --model; the positional form still works) and
    models.summary (argparse before; --arch, or --model for a run directory) on the same error
    path."""
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    proc = run_tool("models.lce_census", "--model", str(junk))
    assert_user_error(proc, "models.lce_census", str(junk), "not a valid TFLite model")
    proc = run_tool("models.lce_census", _export("bifsmnv2_bdfsmn_d2.tflite"))
    assert proc.returncode == 0 and f"{ops.BDFSMN}: 2" in proc.stdout, proc.stderr[-2000:]
    assert "deprecated" in proc.stderr
    proc = run_tool("models.summary", "--arch", "dfsmn", "--depth", "3")
    assert_user_error(proc, "models.summary", "--depth 3", "expected one of [8, 4, 2, 1]")
    proc = run_tool("models.summary", "--model", str(tmp_path / "no_run"))
    assert_user_error(proc, "models.summary", "no_run", "model.json")
