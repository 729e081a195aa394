"""The fuzz harness's worker: loads and runs model files one after another, the way the tools do.

    python -m pipeline.fuzz_worker [--op_lib PATH]      (started by pipeline.fuzz_models)

Why a worker: importing TensorFlow costs ~4 s per process, too much for thousands of
variants; the worker imports once and runs each variant through the tools' own code path
(``pipeline.predictors.load_predictor`` + ``predict`` on fixed inputs of the model's declared
kind), then classifies the outcome the way the tools' error path does (``pipeline.cli``:
``is_user_error(exc)`` / ``message(exc)``). A variant that kills the process (signal) or
never answers (hang) is seen by the parent, which restarts the worker.

Protocol (one JSON object per line): requests on stdin ``{"path": ...}``; replies on the
process's ORIGINAL stdout, which is moved to another descriptor at start-up, while fd 1 is
pointed at stderr so that nothing a library prints can corrupt the protocol. The first reply
is ``{"ready": true, ...}``. Replies: ``{"status": "ok", "result": {...}}``,
``{"status": "refused", "message": ...}`` (a user error: the tools print that message and
exit 2) or ``{"status": "traceback", "exception": ..., "traceback": ...}`` (anything else).

``--op_lib PATH`` runs the project's ops from that library (the ASan/UBSan build for
``fuzz_models --sanitize``): it is loaded first, so its registerer is the one the
interpreter resolves, and passed as ``custom_op_registerers``.
"""
from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import os
import resource
import sys
import traceback

import numpy as np

BATCH = 2
# the input every tool feeds a model of that kind: log-mel features [B, 32, 32] (dB), audio
# [B, 16000] (samples in [-1, 1])
INPUT_SHAPES = {"features": (32, 32), "audio": (16000,)}


def fixed_inputs(kind: str) -> np.ndarray:
    """Deterministic inputs of the model's declared kind: one silent and one noisy clip."""
    if kind not in INPUT_SHAPES:
        raise ValueError(f"unknown input kind {kind!r}")
    rng = np.random.default_rng(0)
    shape = INPUT_SHAPES[kind]
    if kind == "features":
        quiet = np.full(shape, -80.0, np.float32)
        noisy = rng.normal(-40.0, 15.0, shape).astype(np.float32)
    else:
        quiet = np.zeros(shape, np.float32)
        noisy = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    return np.stack([quiet, noisy])[:BATCH]


def _classifier():
    """(is_user_error, message, name): the tools' own classification,
    ``pipeline.cli.user_error_message(exc)`` (None: a bug); a stand-in if cli is missing: the
    errors the tools caught before it count as user errors."""
    try:
        from pipeline import cli
    except ImportError:
        cli = None
    if cli is not None and hasattr(cli, "user_error_message"):
        return ((lambda e: cli.user_error_message(e) is not None), cli.user_error_message,
                "pipeline.cli.user_error_message")
    if cli is not None and hasattr(cli, "is_user_error"):
        return cli.is_user_error, cli.message, "pipeline.cli.is_user_error"
    from pipeline import checkpoints
    from lce_kernels.ops import OpLibraryError
    from pipeline.speech_commands import DataError
    user = (checkpoints.CheckpointError, DataError, OpLibraryError)
    return (lambda e: isinstance(e, user)), str, "fallback (no pipeline.cli)"


class Runner:
    """Runs one model file and returns its outcome as a JSON-able dict."""

    def __init__(self, op_lib=None):
        import models  # noqa: F401  (Keras 2 before TensorFlow)
        from pipeline import predictors
        self.predictors = predictors
        self.registerers = None
        if op_lib:
            from lce_kernels import ops
            self.registerers = ops.registerers(path=op_lib)
        self.is_user_error, self.message, self.classifier = _classifier()

    def run(self, path: str) -> dict:
        try:
            pred = self.predictors.load_predictor(
                path, custom_op_registerers=self.registerers)
            y = np.asarray(pred.predict(fixed_inputs(pred.input_kind)))
            return {"status": "ok", "result": {
                "runtime": pred.runtime, "input_kind": pred.input_kind,
                "output_shape": list(y.shape), "finite": bool(np.all(np.isfinite(y))),
                "top1": [int(i) for i in np.argmax(y.reshape(len(y), -1), -1)]
                if y.ndim and y.size else [],
                "output": [round(float(v), 4) for v in y.reshape(-1)[:32]]}}
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: B902  (classified, never swallowed)
            try:
                if self.is_user_error(e):
                    return {"status": "refused", "exception": type(e).__name__,
                            "message": str(self.message(e))}
            except Exception as inner:  # the classifier itself failed: report both
                e = inner
            return {"status": "traceback", "exception": type(e).__name__,
                    "message": str(e)[:500],
                    "traceback": "".join(traceback.format_exception(e))[-3000:]}


def limit_memory(gib: float):
    """Cap the address space so that a variant asking for huge tensors fails an allocation
    instead of pushing the machine into swap / the OOM killer (not under ASan, whose shadow
    memory needs terabytes of address space)."""
    if gib and gib > 0:
        n = int(gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (n, n))


def _protocol_stream():
    """Move the original stdout to a private descriptor for replies; fd 1 -> stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(os.dup(2), "w", buffering=1)
    return os.fdopen(fd, "w", buffering=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--op_lib", default=None, help="The project's op library to run with.")
    ap.add_argument("--memory_gib", type=float, default=0.0,
                    help="RLIMIT_AS in GiB (0: none).")
    args = ap.parse_args(argv)
    out = _protocol_stream()
    faulthandler.enable()          # a crash prints the Python stack to stderr first
    limit_memory(args.memory_gib)
    runner = Runner(args.op_lib)
    loaded = []
    if args.op_lib:
        from lce_kernels import ops
        loaded = ops.loaded_libraries()
    out.write(json.dumps({"ready": True, "pid": os.getpid(), "classifier": runner.classifier,
                          "op_libs": loaded}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        print(f"== fuzz variant {req.get('id', req['path'])}", file=sys.stderr, flush=True)
        reply = runner.run(req["path"])
        # interpreters caught in reference cycles die now, not during the next variant
        # (young generations only: a full collection over TensorFlow's heap costs ~150 ms)
        gc.collect(1)
        reply["id"] = req.get("id")
        if args.op_lib:        # which op libraries are loaded now (the parent checks: only ours)
            from lce_kernels import ops
            reply["op_libs"] = ops.loaded_libraries()
        sys.stderr.flush()
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
