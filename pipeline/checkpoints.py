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

Every JSON and weights file of a run is written atomically (``atomic_write_json``,
``atomic_save_weights``: a temporary file in the same folder, then ``os.replace``), so a kill or
a full disk leaves the previous file, never half a file. What a run may write where is decided
in ``pipeline.run_dirs``.
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


def model_spec(model_name, model_kwargs, labels, training_depths):
    """The content of model.json (in memory: train checks a run directory before writing)."""
    return {"model": model_name, "model_kwargs": dict(model_kwargs), "labels": list(labels),
            "features": dataclasses.asdict(DEFAULT_FEATURES),
            "training_depths": list(training_depths)}


def write_model_json(run_dir, model_name, model_kwargs, labels, training_depths):
    os.makedirs(run_dir, exist_ok=True)
    spec = model_spec(model_name, model_kwargs, labels, training_depths)
    atomic_write_json(os.path.join(run_dir, MODEL_JSON), spec, indent=2)
    return spec


# -- atomic writes: a kill, a full disk or a bad value never leaves half a file -------------------
def _temp_name(path, suffix=""):
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")


def _replace(tmp, path):
    """fsync ``tmp`` and rename it over ``path`` (atomic within one file system)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj, **dump_kwargs):
    """``json.dump`` to a temporary file in the same folder, then ``os.replace``: readers see
    the old file or the new one, never a partial one; on any error the old file is kept and the
    temporary file removed."""
    tmp = _temp_name(path)
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, **dump_kwargs)
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    """``text`` to ``path`` as ``atomic_write_json`` writes JSON (e.g. a run's run.flags)."""
    tmp = _temp_name(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save_weights(model, path):
    """``model.save_weights`` to a temporary file in the same folder, then ``os.replace``, as
    ``atomic_write_json``. The temporary name ends like ``path`` (``.weights.h5`` selects Keras'
    weights-only format, a plain ``.h5`` the legacy HDF5 one)."""
    name = os.path.basename(path)
    tmp = _temp_name(path, ".weights.h5" if name.endswith(".weights.h5") else
                     os.path.splitext(name)[1])
    try:
        model.save_weights(tmp)
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_model_json(path):
    """``path``: a run directory or a ``*.weights.h5`` inside one."""
    run_dir = path if os.path.isdir(path) else os.path.dirname(path)
    spec_path = os.path.join(run_dir, MODEL_JSON)
    if not os.path.exists(spec_path):
        raise CheckpointError(f"{path} is not a run directory of pipeline.train: {spec_path} is "
                              "missing (it names the model, its size flags and its labels)")
    with open(spec_path) as f:
        try:
            return json.load(f)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise CheckpointError(f"{spec_path} is damaged ({e}); expected the model.json "
                                  "written by pipeline.train") from e


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


def _unreadable(path, e):
    return CheckpointError(f"cannot read weights {path}: {str(e).splitlines()[0][:300]}; "
                           "expected a complete .weights.h5 written by pipeline.train")


def check_weights_file(path):
    """Open ``path`` as HDF5 before a model is built for it: a truncated or foreign file fails
    in milliseconds instead of after the build."""
    import h5py
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with h5py.File(path, "r"):
            pass
    except (OSError, RuntimeError) as e:
        raise _unreadable(path, e) from e


def load_weights(model, path):
    """Load ``path`` into ``model``, turning Keras' shape errors into a clear message."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        model.load_weights(path)
    except (OSError, RuntimeError) as e:  # h5py on a truncated / damaged / unreadable file
        raise _unreadable(path, e) from e
    except (ValueError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not match the model {model.name} built from the flags / "
            f"model.json ({str(e).splitlines()[0][:300]}). Check --model and the size flags "
            "(--channels, --hidden, --num_layers, --left/--right) and the class list.") from e
    return model


def load_model(path, depth=None, which="best", training_depths=None, spec=None, **overrides):
    """Build the model described by ``path``'s model.json at ``depth`` and load its weights.
    ``spec``: the model.json already read (read here when None); ``overrides``: size flags
    that replace model.json's (weights that do not fit them raise CheckpointError)."""
    spec = read_model_json(path) if spec is None else spec
    weights = weights_path(path, which)
    check_weights_file(weights)
    try:
        model = build_from_spec(spec, depth=depth, training_depths=training_depths,
                                **overrides)
    except (TypeError, ValueError, KeyError) as e:  # model.json naming what cannot be built
        raise CheckpointError(f"cannot build {spec.get('model')!r} from {path}: {e}; expected "
                              "the model.json pipeline.train writes") from e
    load_weights(model, weights)
    return model, spec
