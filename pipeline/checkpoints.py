"""Run directories: what a trained model is, and how to load it for evaluation or export.

A run directory (written by pipeline.train, committed under pretrained/) holds

    model.json            {"model": registry name, "model_kwargs": {...}, "labels": [...],
                           "features": {...}, "training_depths": [...]}
    best.weights.h5       weights with the best validation accuracy (deepest depth)
    model.weights.h5      (published models in pretrained/) the chosen weights only
    last.weights.h5       weights after the last finished epoch
    ckpt/                 model + optimizer + epoch, for --resume
    flags.json, metrics.json, history.json, tb/ (TensorBoard)

Weights load into a model of any thinnable depth: the single-depth export model and the
all-depth training model own the same variables under the same names.
"""
from __future__ import annotations

import dataclasses
import json
import os

import models
from pipeline.features import DEFAULT as DEFAULT_FEATURES

MODEL_JSON = "model.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not match the model it is loaded into."""


def write_model_json(run_dir, model_name, model_kwargs, labels, training_depths):
    os.makedirs(run_dir, exist_ok=True)
    spec = {"model": model_name, "model_kwargs": model_kwargs, "labels": list(labels),
            "features": dataclasses.asdict(DEFAULT_FEATURES),
            "training_depths": list(training_depths)}
    with open(os.path.join(run_dir, MODEL_JSON), "w") as f:
        json.dump(spec, f, indent=2)
    return spec


def read_model_json(path):
    """``path``: a run directory or a ``*.weights.h5`` inside one."""
    run_dir = path if os.path.isdir(path) else os.path.dirname(path)
    spec_path = os.path.join(run_dir, MODEL_JSON)
    if not os.path.exists(spec_path):
        raise CheckpointError(f"{path} is not a run directory of pipeline.train: {spec_path} is "
                              "missing (it names the model, its size flags and its labels)")
    with open(spec_path) as f:
        return json.load(f)


def weights_path(path, which="best"):
    if os.path.isfile(path):
        return path
    # model.weights.h5: the one set of weights a published model (pretrained/) ships (the
    # ".weights.h5" suffix selects the format tf_keras saved them in)
    for name in (f"{which}.weights.h5", "model.weights.h5", "best.weights.h5",
                 "last.weights.h5"):
        if os.path.exists(os.path.join(path, name)):
            return os.path.join(path, name)
    raise CheckpointError(f"no weights in {path}: expected model.weights.h5, best.weights.h5 or "
                          "last.weights.h5")


def build_from_spec(spec, depth=None, training_depths=None, **overrides):
    kwargs = dict(spec["model_kwargs"], **overrides)
    kwargs["num_classes"] = len(spec["labels"])
    if training_depths is not None:
        kwargs["training_depths"] = tuple(training_depths)
    else:
        kwargs["depth"] = depth or kwargs.get("num_layers", 8)
    return models.get_model(spec["model"], **kwargs)


def load_weights(model, path):
    """Load ``path`` into ``model``, turning Keras' shape errors into a clear message."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not match the model {model.name} built from the flags / "
            f"model.json ({str(e).splitlines()[0][:300]}). Check --model and the size flags "
            "(--channels, --hidden, --num_layers, --left/--right) and the class list.") from e
    return model


def load_model(path, depth=None, which="best", training_depths=None):
    """Build the model described by ``path``'s model.json at ``depth`` and load its weights."""
    spec = read_model_json(path)
    model = build_from_spec(spec, depth=depth, training_depths=training_depths)
    load_weights(model, weights_path(path, which))
    return model, spec
