"""One interface over every kind of trained model: Keras checkpoints and .tflite files.

``load_predictor(path, depth)`` returns a ``Predictor`` with ``labels``, ``input_kind``
('features' [B, 32, 32] or 'audio' [B, 16000]) and ``predict(batch) -> logits``. Evaluation,
export verification, benchmarks and the streaming loop all go through it, so a .tflite is
judged exactly like the checkpoint it came from.

A .tflite with the project's ``lce_kernels.ops.BDFSMN`` custom ops (``pipeline.export
--flavor bdfsmn`` or ``binary``) runs on TensorFlow's ``InterpreterWithCustomOps`` with the
registerer of every project op (``lce_kernels.ops.registerers()``) from
``lce_kernels/build/libbdfsmn_op.so`` (built with ``make -C lce_kernels op`` if missing;
``lce_kernels.ops.OpLibraryError`` if it cannot be built).

A .tflite describes itself: its class names, input kind, feature configuration, architecture,
depth and flavor are in its own metadata (``pipeline.tflite_metadata``), so a file copied
alone anywhere runs. The sidecar ``<file>.json`` (the export's report) is not needed; when it
is there its SHA-256 is compared with the file (``model_contract.check_digest``), and if it
lists other class names (or another input kind) than the file, the file wins and ONE warning
line says so. A file exported before descriptions existed still runs from its sidecar (or the
``model.json`` of its folder); a file with neither is refused (``CheckpointError``: exit 2).
"""
from __future__ import annotations

import json
import os
from typing import List, Optional

import numpy as np

from pipeline import checkpoints


class Predictor:
    """``description``: a .tflite's description (``pipeline.tflite_metadata``, or what its
    sidecar says for older files); None for a Keras checkpoint."""

    def __init__(self, name: str, labels: List[str], input_kind: str, fn, runtime: str,
                 description: Optional[dict] = None):
        self.name, self.labels, self.input_kind, self._fn, self.runtime = (
            name, labels, input_kind, fn, runtime)
        self.description = description

    def predict(self, batch) -> np.ndarray:
        """Logits [B, n_labels]; NaN / inf logits raise CheckpointError (a damaged model)."""
        from pipeline.model_contract import check_logits
        return check_logits(self.name, self._fn(np.asarray(batch, np.float32)))


def read_sidecar(path) -> Optional[dict]:
    """The report next to a .tflite (``<file>.json``, written by pipeline.export) or the
    ``model.json`` of its folder, whichever lists ``labels`` first; None if neither does.
    A damaged one raises CheckpointError."""
    for candidate in (os.path.splitext(path)[0] + ".json",
                      os.path.join(os.path.dirname(path), checkpoints.MODEL_JSON)):
        if os.path.exists(candidate):
            with open(candidate) as f:
                try:
                    meta = json.load(f)
                except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                    raise checkpoints.CheckpointError(
                        f"{candidate} is damaged ({e}); expected the JSON sidecar written by "
                        "pipeline.export") from e
            if isinstance(meta, dict) and "labels" in meta:
                return dict(meta, sidecar=candidate)
    return None


def _disagreement(path, description, sidecar):
    """One warning line when the sidecar says other classes / input than the file."""
    from absl import logging
    diffs = []
    if sidecar.get("labels") != description["labels"]:
        diffs.append(f"classes {sidecar.get('labels')} against the file's "
                     f"{description['labels']}")
    if "input" in sidecar and sidecar["input"] != description["input"]:
        diffs.append(f"input {sidecar['input']!r} against the file's "
                     f"{description['input']!r}")
    if diffs:
        logging.warning("%s: its sidecar %s lists %s; using the file's own description (the "
                        "file wins; the sidecar is a report: re-export to refresh it)", path,
                        sidecar["sidecar"], "; ".join(diffs))


def tflite_description(path, model_bytes=None) -> dict:
    """What a .tflite is: its own description (module docstring), or for a file exported
    before descriptions existed, its sidecar's ``labels``, ``input``, ``flavor``,
    ``depth``... (``source`` says which: "metadata" or "sidecar"). ``model_bytes``: the file's
    contents if already read (verified here). CheckpointError if neither says what the model
    is; ModelError for a damaged file or description."""
    return _describe(path, model_bytes)[0]


def _describe(path, model_bytes=None):
    """(``tflite_description``, the sidecar or None)."""
    from pipeline import tflite_metadata
    if model_bytes is None:
        from pipeline.model_verify import verify_file
        model_bytes = verify_file(path)
    description = tflite_metadata.read(model_bytes, path)
    try:
        sidecar = read_sidecar(path)
    except checkpoints.CheckpointError as e:
        if description is None:
            raise
        from absl import logging
        logging.warning("%s (the file describes itself: going on without it)", e)
        sidecar = None
    if description is not None:
        if sidecar is not None:
            _disagreement(path, description, sidecar)
        return dict(description, source="metadata"), sidecar
    if sidecar is None:
        stem = os.path.splitext(path)[0]
        raise checkpoints.CheckpointError(
            f"{path} does not say what it is: no {tflite_metadata.KEY} metadata in the file "
            "(exported before models described themselves, or not by pipeline.export) and no "
            f"sidecar {stem}.json or model.json next to it; expected a .tflite written by "
            "pipeline.export (or the old file's sidecar next to it)")
    labels = sidecar["labels"]
    if not (isinstance(labels, list) and labels and all(isinstance(l, str) for l in labels)):
        raise checkpoints.CheckpointError(
            f"the sidecar of {path} lists labels {str(labels)[:100]}; expected a list of "
            "class names (the JSON written by pipeline.export)")
    return dict(sidecar, input=sidecar.get("input", "features"), source="sidecar"), sidecar


def tflite_sidecar(path) -> dict:
    """The name ``tflite_description`` had before models described themselves (kept for one
    release)."""
    return tflite_description(path)


def default_runtime(model_bytes, custom_op_registerers=None) -> str:
    """'lce' (LCE interpreter) for a model with Lce* ops, else 'tf' (TensorFlow's interpreter,
    XNNPACK; also handles int8 inputs / outputs); 'tf' whenever custom op registerers are
    given or the model holds one of the project's own ops (``ops.OWN_OPS``: the LCE
    interpreter cannot register extra ops; the project's registerer runs LCE's ops too)."""
    if custom_op_registerers:
        return "tf"
    from models.lce_census import has_lce_ops, has_own_ops
    return "lce" if has_lce_ops(model_bytes) and not has_own_ops(model_bytes) else "tf"


class TFLiteRunner:
    """Runs a .tflite on the LCE interpreter (builtin + LCE ops) or TensorFlow's (XNNPACK).

    ``runtime='auto'``: the LCE interpreter for models with Lce* ops, TensorFlow's otherwise
    (see ``default_runtime``)."""

    def __init__(self, path, num_threads=1, runtime="auto", custom_op_registerers=None,
                 model_bytes=None):
        """``model_bytes``: the file's contents when the caller has read them already."""
        self.path = path
        if model_bytes is None:
            with open(path, "rb") as f:
                model_bytes = f.read()
        self.model_bytes = model_bytes
        from pipeline.model_verify import verify_model  # before anything parses the bytes
        verify_model(self.model_bytes, path)
        try:
            self._load(num_threads, runtime, custom_op_registerers)
        except (RuntimeError, ValueError) as e:  # the runtime refused the model (op Prepare...)
            if _ours(e):
                raise
            raise _refused(path, e) from e

    def _load(self, num_threads, runtime, custom_op_registerers):
        if not custom_op_registerers and runtime != "lce":
            from models.lce_census import has_own_ops
            if has_own_ops(self.model_bytes):
                from lce_kernels import ops
                custom_op_registerers = ops.registerers()
        if runtime == "auto":
            runtime = default_runtime(self.model_bytes, custom_op_registerers)
        self.runtime = runtime
        if runtime == "lce":
            from larq_compute_engine.tflite.python.interpreter import Interpreter
            self._lce = Interpreter(self.model_bytes, num_threads=num_threads)
            self.input_details = None
        else:
            import tensorflow as tf
            from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
            if custom_op_registerers:
                self._tf = InterpreterWithCustomOps(
                    model_content=self.model_bytes, num_threads=num_threads,
                    custom_op_registerers=custom_op_registerers)
            else:
                self._tf = tf.lite.Interpreter(model_content=self.model_bytes,
                                               num_threads=num_threads)
            self._tf.allocate_tensors()
            if custom_op_registerers:
                self.runtime = "tf+custom_ops"
            inputs, outputs = self._tf.get_input_details(), self._tf.get_output_details()
            if len(inputs) != 1 or len(outputs) != 1:
                raise checkpoints.CheckpointError(
                    f"{self.path} has {len(inputs)} input(s) and {len(outputs)} output(s); "
                    "expected one input (features or PCM) and one output (logits), as "
                    "pipeline.export writes")
            self.input_details, self.output_details = inputs[0], outputs[0]

    def __call__(self, batch):
        try:
            return self._run(batch)
        except (RuntimeError, ValueError) as e:  # e.g. an input shape the model does not take
            if _ours(e):
                raise
            raise _refused(self.path, e) from e

    def _run(self, batch):
        if self.runtime == "lce":
            out = self._lce.predict(batch)
            return out[0] if isinstance(out, list) else out
        return np.concatenate([self._one(x[None]) for x in batch])

    def _one(self, x):
        inp, out = self.input_details, self.output_details
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min,
                        np.iinfo(inp["dtype"]).max).astype(inp["dtype"])
        self._tf.set_tensor(inp["index"], x)
        self._tf.invoke()
        y = self._tf.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def io_signature(self):
        """(inputs, outputs) as ``model_contract.TensorSig`` lists, from the interpreter."""
        from pipeline.model_contract import TensorSig

        def flat(v):
            if v is None:
                return ()
            return tuple(np.asarray(v).reshape(-1).tolist())

        if self.runtime == "lce":
            it = self._lce

            def lce(role, types, shapes, scales, zeros):
                return [TensorSig(f"{role} {i}", np.dtype(t), tuple(int(d) for d in shape),
                                  flat(scale), flat(zero))
                        for i, (t, shape, scale, zero) in enumerate(zip(types, shapes, scales,
                                                                         zeros))]

            return (lce("input", it.input_types, it.input_shapes, it.input_scales,
                        it.input_zero_points),
                    lce("output", it.output_types, it.output_shapes, it.output_scales,
                        it.output_zero_points))

        def sigs(details):
            out = []
            for d in details:
                q = d.get("quantization_parameters") or {}
                scales, zeros = flat(q.get("scales")), flat(q.get("zero_points"))
                if not scales and d["quantization"][0]:
                    scales, zeros = (d["quantization"][0],), (d["quantization"][1],)
                out.append(TensorSig(d.get("name", ""), np.dtype(d["dtype"]),
                                     tuple(int(v) for v in d["shape"]), scales, zeros))
            return out

        return sigs(self._tf.get_input_details()), sigs(self._tf.get_output_details())


def _ours(exc) -> bool:
    """Our own error classes (pipeline.*, models.*: op library, verifier, checkpoints) already
    say what is wrong: they pass unchanged."""
    return type(exc).__module__.split(".")[0] in ("pipeline", "models")


def _refused(path, exc) -> checkpoints.CheckpointError:
    """A runtime's error about the model at ``path`` (the TFLite / LCE interpreter), as one
    message naming the file."""
    msg = " ".join(str(exc).split())[:400]
    return checkpoints.CheckpointError(
        f"{path} cannot run: {type(exc).__name__}: {msg}; expected a .tflite written by "
        "pipeline.export (and its sidecar) for features [B, 32, 32] or audio [B, 16000]")


def load_predictor(path, depth=None, num_threads=1, custom_op_registerers=None) -> Predictor:
    if not os.path.exists(path):
        raise checkpoints.CheckpointError(f"model {path} does not exist")
    if path.endswith(".tflite"):
        from pipeline import model_contract
        from pipeline.model_verify import verify_file
        model_bytes = verify_file(path)
        meta, sidecar = _describe(path, model_bytes)
        labels, input_kind = meta["labels"], meta["input"]
        model_contract.check_digest(path, model_bytes, sidecar)
        model_contract.check_features(path, meta)
        if meta.get("streaming"):  # one hop per invoke, state in and out (issue 16)
            from pipeline import streaming_runner
            return streaming_runner.tflite_predictor(path, meta, model_bytes, num_threads)
        runner = TFLiteRunner(path, num_threads, custom_op_registerers=custom_op_registerers,
                              model_bytes=model_bytes)
        model_contract.check_io(path, *runner.io_signature(), input_kind, len(labels))
        return Predictor(os.path.basename(path), labels, input_kind, runner, runner.runtime,
                         meta)
    import tensorflow as tf
    model, spec = checkpoints.load_model(path, depth=depth)
    fn = tf.function(lambda x: model(x, training=False))
    return Predictor(model.name, spec["labels"], "features", lambda x: fn(x).numpy(), "keras")
