"""The one error path of every command-line tool: a user's mistake ends in ONE line, no traceback.

Every ``python -m`` tool of the project starts with ``cli.run(main, define=define_flags)``
instead of absl's ``app.run(main)``. What it adds:

* ``--debug`` (or the environment variable ``BKWS_DEBUG=1``): errors are re-raised with their
  full traceback, for developers.
* ``--json_out PATH`` for every tool: checked before the work starts; the dict the tool's
  ``main`` returns (its result) is written there as JSON (``write_json_out``). The rest of the
  vocabulary (``--model``, ``--arch``, ``--out_dir``...) is in ``pipeline/cli_vocabulary.py``.
* Without it, an error the USER caused (their files, flags, data, models, permissions) prints

      <tool>: error: <what was wrong>; expected <what>

  on stderr and exits with status 2. Ctrl-C prints ``<tool>: interrupted`` and exits 130.
* Anything else (TypeError, AttributeError, AssertionError, ... from our own code) is a bug and
  keeps its traceback (exit 1): hiding it would hide what needs fixing.

What counts as user-caused (``user_error_message`` decides; ``None`` means "a bug"):

* ``UserError`` (this module) and the project's own error classes, found by name in the modules
  that are already imported (a class whose module was never imported cannot have been raised,
  so nothing heavy is imported here): ``checkpoints.CheckpointError``,
  ``speech_commands.DataError``, ``ops.OpLibraryError``, ``model_verify.ModelError`` and
  ``VerifierLibraryError`` (a library the user's setup cannot build); each tool adds its own
  (``errors=(ExportError,)``).
* absl: ``app.UsageError`` and every ``flags.Error`` (unknown flag, bad value, failed
  validator, missing required flag), also when they happen while the flags are parsed.
* ``OSError`` with an errno (missing file, permission denied, a folder where a file belongs,
  a file where a folder belongs, read-only file system, disk full, ...): the message names the
  path and what was expected. ``json.JSONDecodeError`` (a damaged model sidecar / flags file).
  TensorFlow's file errors (``NotFoundError``, ``PermissionDeniedError``, ``DataLossError``:
  a missing or damaged checkpoint or data file read by TensorFlow).
* Errors raised from inside a model runtime or reader: the TFLite interpreter
  (``tensorflow/lite/python/interpreter.py``, e.g. ``RuntimeError: <op>: channels/hidden
  out of range`` from an op's Prepare, ``ValueError: Cannot set tensor: Dimension mismatch``
  from a foreign model), LCE's interpreter, TFLite Micro, and h5py (a truncated
  ``.weights.h5``). These libraries raise them about the model or file they were handed, so
  the innermost frame of the traceback decides; the same exception types raised by our code
  stay bugs. (pipeline.predictors and pipeline.checkpoints also wrap them where they load a
  file, so that the message names it.)
"""
from __future__ import annotations

import errno
import json
import os
import select
import sys
from typing import Callable, Iterable, Optional, Tuple, Type

from absl import app, flags

DEBUG_ENV = "BKWS_DEBUG"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `tool | head`

#: (module, class name) of the project's user-error classes; looked up only in modules that
#: are already imported (see the module docstring)
PROJECT_ERRORS = (
    ("pipeline.checkpoints", "CheckpointError"),
    ("pipeline.speech_commands", "DataError"),
    ("lce_kernels.ops", "OpLibraryError"),
    ("pipeline.model_verify", "ModelError"),
    ("pipeline.model_verify", "VerifierLibraryError"),
)

#: path fragments of the libraries whose RuntimeError / ValueError / OSError / KeyError are
#: about the model or file the user gave them, and what to call them in the message
LIBRARY_ORIGINS = (
    ("tensorflow/lite/python/interpreter", "the TFLite interpreter refused the model",
     "a .tflite written by pipeline.export for this task"),
    ("larq_compute_engine/tflite/python/interpreter", "the LCE interpreter refused the model",
     "a .tflite written by pipeline.export for this task"),
    ("tflite_micro/", "TFLite Micro refused the model",
     "an int8 .tflite written by pipeline.export"),
    ("h5py/", "HDF5 (h5py) failed on a weights file",
     "a complete .weights.h5 written by pipeline.train, in a readable and writable folder"),
)

#: TensorFlow's file errors (reading a checkpoint, a WAV, a list file): the user's files
TF_FILE_ERRORS = ("NotFoundError", "PermissionDeniedError", "DataLossError")
TF_ERRORS_MODULE = "tensorflow.python.framework.errors_impl"
LIBRARY_ERROR_TYPES = (RuntimeError, ValueError, OSError, KeyError)

#: errno -> (what went wrong, what was expected)
_OS_ERRORS = {
    errno.ENOENT: ("no such file or folder", "an existing path"),
    errno.EACCES: ("permission denied", "a path this user may read (inputs) or write (outputs)"),
    errno.EPERM: ("operation not permitted", "a path this user may read or write"),
    errno.EISDIR: ("is a folder", "a file"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "a path through folders"),
    errno.EROFS: ("read-only file system", "a writable location"),
    errno.ENOSPC: ("no space left on the device", "free disk space for the outputs"),
    errno.EDQUOT: ("disk quota exceeded", "free disk space for the outputs"),
    errno.EEXIST: ("already exists", "a new path"),
    errno.ENAMETOOLONG: ("file name too long", "a shorter path"),
    errno.ENOTEMPTY: ("folder not empty", "an empty folder"),
    errno.ELOOP: ("too many symbolic links", "a path without a symlink loop"),
    errno.EPIPE: ("broken pipe (the reader went away)", "a reader for the output"),
}


class UserError(Exception):
    """Base of errors caused by the user's input (files, flags, data, models, permissions):
    ``run`` prints their message as one line and exits 2. The message should say what was
    wrong and what was expected."""


def debug_requested(argv: Optional[Iterable[str]] = None) -> bool:
    """True if ``BKWS_DEBUG`` is set (and not 0/false/no/off/empty) or --debug is given: the
    parsed flag, or in ``argv`` (the raw arguments; flag parsing errors honour --debug too)."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    if env and env not in ("0", "false", "no", "off"):
        return True
    if argv is None and "debug" in flags.FLAGS and flags.FLAGS.is_parsed():
        return bool(flags.FLAGS.debug)
    on = False
    for arg in argv if argv is not None else sys.argv[1:]:
        if arg == "--":
            break
        name, _, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name == "debug":
            on = value.lower() not in ("0", "false", "no") if value else True
        elif arg.startswith("-") and name == "nodebug":
            on = False
    return on


def tool_name() -> str:
    """``pipeline.evaluate`` for ``python -m pipeline.evaluate``, else the script's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "tool"


def _project_error_classes() -> Tuple[Type[BaseException], ...]:
    found = [UserError]
    for module, name in PROJECT_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _one_line(text: str) -> str:
    """Collapse a (possibly multi-line) message into one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _with_expected(what: str, expected: str) -> str:
    what = what.rstrip(" .;")
    return what if "expected" in what.lower() else f"{what}; expected {expected}"


def _library_origin(exc: BaseException):
    """The LIBRARY_ORIGINS entry of the innermost traceback frame, or None."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    if last is None:
        return None
    last = last.replace(os.sep, "/")
    for fragment, what, expected in LIBRARY_ORIGINS:
        if fragment in last:
            return what, expected
    return None


def describe_os_error(exc: OSError) -> Optional[str]:
    """'<path>: <problem>; expected <what>' for an OSError with an errno, else None."""
    if exc.errno is None:
        return None
    problem, expected = _OS_ERRORS.get(exc.errno, (exc.strerror or os.strerror(exc.errno),
                                                   "a usable path"))
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in paths)
    return f"{where + ': ' if where else ''}{problem}; expected {expected}"


def user_error_message(exc: BaseException,
                       extra: Tuple[Type[BaseException], ...] = ()) -> Optional[str]:
    """The one-line message for a user-caused ``exc``, or None if ``exc`` is a bug."""
    if isinstance(exc, app.UsageError):
        return _with_expected(_one_line(exc), "the flags in --helpshort")
    if isinstance(exc, flags.Error):
        return _with_expected(_one_line(exc), "valid flags (see --helpshort)")
    if isinstance(exc, _project_error_classes() + tuple(extra)):
        return _one_line(exc) or type(exc).__name__
    origin = _library_origin(exc) if isinstance(exc, LIBRARY_ERROR_TYPES) else None
    if origin is not None:
        what, expected = origin
        return _with_expected(f"{what}: {_one_line(exc)}", expected)
    if isinstance(exc, OSError):
        described = describe_os_error(exc)
        return _one_line(described) if described else None
    tf_errors = sys.modules.get(TF_ERRORS_MODULE)
    if tf_errors is not None and type(exc).__name__ in TF_FILE_ERRORS and \
            isinstance(exc, getattr(tf_errors, type(exc).__name__)):
        return _with_expected(_one_line(getattr(exc, "message", exc)),
                              "complete, readable files (checkpoint, data)")
    if isinstance(exc, json.JSONDecodeError):
        where = f" at line {exc.lineno} column {exc.colno}" if exc.doc is not None else ""
        return (f"a JSON file is damaged ({exc.msg}{where}); expected the JSON file the "
                "project wrote (model sidecar, model.json, flags.json)")
    return None


def _fail(tool: str, message: str, code: int = EXIT_USER_ERROR):
    sys.stdout.flush()
    sys.stderr.write(f"{tool}: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def _stdout_closed() -> bool:
    """True if the reader of stdout went away (``tool | head``: poll reports an error on the
    pipe); then stdout is pointed at /dev/null, so that Python's exit does not add an
    'Exception ignored' message."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):
        return False
    if not any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
        return False
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    except OSError:
        pass
    return True


def handle(exc: BaseException, tool: str, extra: Tuple[Type[BaseException], ...] = ()):
    """Exit as the module docstring says if ``exc`` is user-caused; return if it is a bug (the
    caller re-raises it)."""
    if isinstance(exc, KeyboardInterrupt):
        sys.stdout.flush()
        sys.stderr.write(f"\n{tool}: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    if isinstance(exc, BrokenPipeError) and _stdout_closed():
        sys.exit(EXIT_BROKEN_PIPE)
    message = user_error_message(exc, extra)
    if message is not None:
        _fail(tool, message)


def define_debug_flag():
    """``--debug`` (idempotent: tools that import each other share one flag)."""
    if "debug" not in flags.FLAGS:
        flags.DEFINE_bool("debug", False, f"Show the full traceback of an error (also: "
                          f"{DEBUG_ENV}=1); without it a user error is one line, exit 2.")


def define_common_flags():
    """The flags every tool has (pipeline/cli_vocabulary.py): ``--debug`` and ``--json_out``
    (idempotent)."""
    define_debug_flag()
    if "json_out" not in flags.FLAGS:
        flags.DEFINE_string("json_out", None, "Also write the tool's result as JSON to this "
                            "path (checked before the work starts).")


#: helper modules whose flags belong to the tool that uses them (shown by its --help)
SHARED_FLAG_MODULES = ("pipeline.data_flags", "pipeline.cli")


def adopt_shared_key_flags(module_name: str):
    """Make the flags defined by ``SHARED_FLAG_MODULES`` (data set flags, --debug,
    --json_out) key flags of ``module_name``, so that the tool's ``--help`` lists them."""
    fv = flags.FLAGS
    for shared in SHARED_FLAG_MODULES:
        for flag in fv.get_key_flags_for_module(shared):
            fv.register_key_flag_for_module(module_name, flag)


class _JsonOut:
    written = False


def _json_default(obj):
    """JSON for what tools' results hold besides plain types: NumPy scalars / arrays, sets,
    paths, dataclasses; anything else as its str()."""
    import dataclasses
    if hasattr(obj, "tolist"):          # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def write_json_out(result) -> Optional[str]:
    """Write ``result`` to ``--json_out`` (if given) atomically (a temporary file in the same
    folder, then rename); returns the path. ``run`` calls it with the dict a tool's ``main``
    returns; a tool that must exit with a status of its own calls it before exiting."""
    path = flags.FLAGS.json_out if "json_out" in flags.FLAGS else None
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _JsonOut.written = True
    return path


def run(main: Callable, *, define: Optional[Callable[[], None]] = None,
        errors: Iterable[Type[BaseException]] = (), argv=None):
    """absl's ``app.run(main)`` with the one error path (module docstring).

    ``define``: the tool's flag definitions, called first. ``errors``: the tool's own
    user-error classes (besides UserError and the project's). ``argv``: as app.run's.
    Every tool gets ``--debug`` and ``--json_out``: the path is checked before ``main`` runs,
    and the dict ``main`` returns (the tool's result) is written there (``write_json_out``)."""
    tool = tool_name()
    extra = tuple(errors)
    if define is not None:
        define()
    define_common_flags()
    adopt_shared_key_flags(sys.argv[0] if sys.argv and sys.argv[0] else "__main__")

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            if debug_requested(args[1:]):
                raise
            _fail(tool, user_error_message(e))

    def wrapped(args):
        try:
            from pipeline import output_paths
            output_paths.check_file(flags.FLAGS.json_out, "--json_out")
            _JsonOut.written = False
            result = main(args)
            if isinstance(result, dict):
                write_json_out(result)
                result = None
            elif flags.FLAGS.json_out and not _JsonOut.written and not result:
                raise RuntimeError(f"{tool} has no JSON result for --json_out (its main "
                                   "returned nothing)")
            return result
        except SystemExit:
            raise
        except BaseException as e:  # noqa: BLE001  (sorted out in `handle`)
            if debug_requested():
                raise
            handle(e, tool, extra)
            raise

    try:
        app.run(wrapped, argv=argv, flags_parser=parse)
    except KeyboardInterrupt as e:  # Ctrl-C during flag parsing / absl start-up
        if debug_requested():
            raise
        handle(e, tool, extra)
