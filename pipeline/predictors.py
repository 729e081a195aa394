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
        return np.asarray(self._fn(np.asarray(batch, np.float32)))


def tflite_sidecar(path):
    """Metadata of an exported .tflite: labels, input kind, flavor, depth."""
    for candidate in (os.path.splitext(path)[0] + ".json",
                      os.path.join(os.path.dirname(path), checkpoints.MODEL_JSON)):
        if os.path.exists(candidate):
            with open(candidate) as f:
                meta = json.load(f)
            if "labels" in meta:
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

    def __init__(self, path, num_threads=1, runtime="auto", custom_op_registerers=None):
        with open(path, "rb") as f:
            self.model_bytes = f.read()
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
            self.input_details = self._tf.get_input_details()[0]
            self.output_details = self._tf.get_output_details()[0]

    def __call__(self, batch):
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


def load_predictor(path, depth=None, num_threads=1, custom_op_registerers=None) -> Predictor:
    if not os.path.exists(path):
        raise checkpoints.CheckpointError(f"model {path} does not exist")
    if path.endswith(".tflite"):
        meta = tflite_sidecar(path)
        runner = TFLiteRunner(path, num_threads, custom_op_registerers=custom_op_registerers)
        return Predictor(os.path.basename(path), meta["labels"], meta.get("input", "features"),
                         runner, runner.runtime)
    import tensorflow as tf
    model, spec = checkpoints.load_model(path, depth=depth)
    fn = tf.function(lambda x: model(x, training=False))
    return Predictor(model.name, spec["labels"], "features", lambda x: fn(x).numpy(), "keras")
