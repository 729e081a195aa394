"""One interface over every kind of trained model: Keras checkpoints and .tflite files.

``load_predictor(path, depth)`` returns a ``Predictor`` with ``labels``, ``input_kind``
('features' [B, 32, 32] or 'audio' [B, 16000]) and ``predict(batch) -> logits``. Evaluation,
export verification, benchmarks and the streaming loop all go through it, so a .tflite is
judged exactly like the checkpoint it came from.

A .tflite with ``LceBDfsmn`` custom ops (``pipeline.export --flavor bdfsmn``) runs on
TensorFlow's ``InterpreterWithCustomOps`` with ``LceBDfsmnRegisterer`` from
``lce_kernels/build/libbdfsmn_op.so`` (built with ``make -C lce_kernels op`` if missing;
``pipeline.bdfsmn.OpLibraryError`` if it cannot be built).

A .tflite finds its class list in ``<file>.json`` (written by pipeline.export) or in the
``model.json`` of its folder.
"""
from __future__ import annotations

import json
import os
from typing import List

import numpy as np

from pipeline import checkpoints


class Predictor:
    def __init__(self, name: str, labels: List[str], input_kind: str, fn, runtime: str):
        self.name, self.labels, self.input_kind, self._fn, self.runtime = (
            name, labels, input_kind, fn, runtime)

    def predict(self, batch) -> np.ndarray:
        """Logits [B, n_labels]; NaN / inf logits raise CheckpointError (a damaged model)."""
        from pipeline.model_contract import check_logits
        return check_logits(self.name, self._fn(np.asarray(batch, np.float32)))


def tflite_sidecar(path):
    """Metadata of an exported .tflite: labels, input kind, flavor, depth."""
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
                return meta
    raise checkpoints.CheckpointError(
        f"no class list for {path}: expected {os.path.splitext(path)[0]}.json (written by "
        "pipeline.export) or model.json in the same folder")


def default_runtime(model_bytes, custom_op_registerers=None) -> str:
    """'lce' (LCE interpreter) for a model with Lce* ops, else 'tf' (TensorFlow's interpreter,
    XNNPACK; also handles int8 inputs / outputs); 'tf' whenever custom op registerers are
    given (the LCE interpreter cannot register extra ops)."""
    if custom_op_registerers:
        return "tf"
    from models.lce_census import has_lce_ops
    return "lce" if has_lce_ops(model_bytes) else "tf"


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
            from models.lce_census import has_bdfsmn_ops
            if has_bdfsmn_ops(self.model_bytes):
                from pipeline import bdfsmn
                custom_op_registerers = bdfsmn.registerers()
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
        meta = tflite_sidecar(path)
        labels, input_kind = meta["labels"], meta.get("input", "features")
        if not (isinstance(labels, list) and labels and all(isinstance(l, str) for l in labels)):
            raise checkpoints.CheckpointError(
                f"the sidecar of {path} lists labels {str(labels)[:100]}; expected a list of "
                "class names (the JSON written by pipeline.export)")
        with open(path, "rb") as f:
            model_bytes = f.read()
        model_contract.check_digest(path, model_bytes, meta)
        runner = TFLiteRunner(path, num_threads, custom_op_registerers=custom_op_registerers,
                              model_bytes=model_bytes)
        model_contract.check_io(path, *runner.io_signature(), input_kind, len(labels))
        return Predictor(os.path.basename(path), labels, input_kind, runner, runner.runtime)
    import tensorflow as tf
    model, spec = checkpoints.load_model(path, depth=depth)
    fn = tf.function(lambda x: model(x, training=False))
    return Predictor(model.name, spec["labels"], "features", lambda x: fn(x).numpy(), "keras")
