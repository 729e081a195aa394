"""What a .tflite must be for the tools to run it: the bytes its sidecar recorded, the tensors
the feature pipeline feeds and the evaluation reads, and finite logits.

* ``check_digest(path, data, meta)``: pipeline.export records the SHA-256 of the model bytes in
  the sidecar (``sha256``). A file whose bytes hash differently was changed after its export (a
  damaged copy, byte-flipped weights, another model under the same name): ONE warning line, and
  the tool goes on (the structure is verified separately, ``pipeline.model_verify``; a changed
  model that still runs gives results the user is told not to trust).
* ``check_io(path, inputs, outputs, input_kind, n_labels)``: exactly one input and one output;
  the input ``[1, 32, 32]`` log-mel features or ``[1, 16000]`` PCM (the sidecar's ``input``),
  the output ``[1, n_labels]`` with ``n_labels`` = the sidecar's class count; each float32, or
  int8 with quantization parameters the runner can use (one finite scale > 0, a zero point in
  int8 range). Anything else raises ``CheckpointError`` naming the model's tensor and what was
  expected, before the model runs: a float model whose input type was edited to int8 (scale 0)
  used to "evaluate" to 0.111 with exit 0.
* ``check_features(path, description)``: the feature configuration the model's description
  names (``pipeline.tflite_metadata``) is the one this pipeline computes
  (``pipeline.features.DEFAULT``): every setting for a features-input model, the sample rate and
  clip length for a PCM-input one (its front end is inside it). Otherwise CheckpointError
  naming the settings that differ: the tools would feed it inputs it was not trained on.
* ``check_logits(name, y)``: NaN / inf logits are an error (a damaged model), never an accuracy.

The sidecar's ``sha256`` is the digest of the whole file as written, description included
(pipeline.export computes it after the description is written).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Optional, Sequence, Tuple

import numpy as np
from absl import logging

from pipeline.checkpoints import CheckpointError
from pipeline.features import DEFAULT as DEFAULT_FEATURES

SHA256_KEY = "sha256"
#: input shapes per sidecar ``input`` kind (batch 1, as exports are converted)
INPUT_SHAPES = {"features": (1,) + tuple(DEFAULT_FEATURES.shape),
                "audio": (1, DEFAULT_FEATURES.clip_samples)}
IO_DTYPES = ("float32", "int8")


@dataclasses.dataclass(frozen=True)
class TensorSig:
    """One model input or output as the interpreter reports it."""

    name: str
    dtype: np.dtype
    shape: Tuple[int, ...]
    scales: Tuple[float, ...] = ()
    zero_points: Tuple[int, ...] = ()

    def describe(self) -> str:
        q = (f", scale {list(self.scales)} zero point {list(self.zero_points)}"
             if np.dtype(self.dtype) != np.float32 else "")
        return f"{np.dtype(self.dtype).name} {list(self.shape)}{q}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(path: str, data: bytes, meta: dict) -> bool:
    """Warn (one line) if the sidecar's digest does not match ``data``; False then. A sidecar
    without a digest (older exports, model.json) is not checked."""
    recorded = meta.get(SHA256_KEY) if isinstance(meta, dict) else None
    if not recorded:
        return True
    actual = sha256(data)
    if str(recorded).lower() == actual:
        return True
    logging.warning("%s: its SHA-256 %s... differs from the %s... its sidecar recorded at export: "
                    "the file changed since (damaged or replaced?); its results are not those "
                    "of the exported model", path, actual[:16], str(recorded)[:16])
    return False


def _quantization_problem(sig: TensorSig) -> Optional[str]:
    if np.dtype(sig.dtype) == np.float32:
        return None
    if len(sig.scales) != 1 or len(sig.zero_points) != 1:
        return "per-tensor quantization (one scale, one zero point)"
    scale, zero = sig.scales[0], sig.zero_points[0]
    if not (math.isfinite(scale) and scale > 0):
        return "a finite quantization scale > 0"
    info = np.iinfo(sig.dtype)
    if not info.min <= zero <= info.max:
        return f"a zero point in {info.min}..{info.max}"
    return None


def _check_tensor(path, role, sig: TensorSig, shape, what):
    expected = f"float32 {list(shape)}, or int8 with a scale > 0 ({what})"
    problem = None
    if np.dtype(sig.dtype).name not in IO_DTYPES:
        problem = f"type {np.dtype(sig.dtype).name}"
    elif tuple(sig.shape) != tuple(shape):
        problem = f"shape {list(sig.shape)}"
    else:
        need = _quantization_problem(sig)
        if need:
            expected = f"int8 with {need} ({what})"
            problem = "its quantization"
    if problem:
        raise CheckpointError(
            f"{path}: the model's {role} {sig.name!r} is {sig.describe()} ({problem} does not "
            f"fit); expected {expected}. Was the file edited, or exported for another task?")


def check_io(path: str, inputs: Sequence[TensorSig], outputs: Sequence[TensorSig],
             input_kind: str, n_labels: int) -> None:
    """Raise CheckpointError unless the model takes what the pipeline feeds and gives
    ``n_labels`` logits (module docstring)."""
    if input_kind not in INPUT_SHAPES:
        raise CheckpointError(f"{path}: its sidecar says input {input_kind!r}; expected one of "
                              f"{sorted(INPUT_SHAPES)}")
    if len(inputs) != 1 or len(outputs) != 1:
        raise CheckpointError(
            f"{path}: the model has {len(inputs)} input(s) and {len(outputs)} output(s); "
            "expected one input and one output (logits)")
    kind = "log-mel features" if input_kind == "features" else "16 kHz PCM"
    _check_tensor(path, "input", inputs[0], INPUT_SHAPES[input_kind],
                  f"{kind}, as its sidecar says")
    _check_tensor(path, "output", outputs[0], (1, n_labels),
                  f"one logit per class of its sidecar's {n_labels} labels")


def check_features(path: str, description: dict) -> None:
    """Raise CheckpointError unless the description's feature configuration is what
    ``pipeline.features`` computes (module docstring). Descriptions without ``features``
    (sidecars of older exports) are not checked."""
    feats = description.get("features") if isinstance(description, dict) else None
    if not isinstance(feats, dict):
        return
    ours = dataclasses.asdict(DEFAULT_FEATURES)
    keys = (("sample_rate", "clip_samples") if description.get("input") == "audio" else
            tuple(ours))
    differ = [f"{k} {feats.get(k)} (this pipeline: {ours[k]})" for k in keys
              if feats.get(k) != ours[k]]
    if differ:
        raise CheckpointError(
            f"{path}: the model was made for other features: {', '.join(differ)}; expected a "
            "model for the log-mel features of pipeline/features.py (FeatureConfig defaults)")


def check_logits(name: str, y: np.ndarray) -> np.ndarray:
    """``y`` unchanged if every value is finite; else CheckpointError."""
    y = np.asarray(y)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        rows = y.reshape(len(y), -1) if y.ndim else y.reshape(1, -1)
        bad = int(np.count_nonzero(~np.all(np.isfinite(rows), axis=1)))
        raise CheckpointError(
            f"{name}: the model gave non-finite logits (NaN/inf) for {bad} of {len(rows)} "
            "input(s); expected finite logits. Is the model file damaged (its weights changed "
            "since export or training)?")
    return y
