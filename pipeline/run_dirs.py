"""Which run directory ``pipeline.train`` may write, decided before it writes anything.

    plan = run_dirs.check(out_dir, spec, settings, resume=False, overwrite=False)  # reads only
    ...  index the data, build the model, load the teacher, restore the checkpoint (reads only)
    run_dirs.start(plan)                          # the first write
    run_dirs.write_flags(plan, settings, at_epoch)
    run_dirs.write_run_flagfile(plan, lines, at_epoch, may_change)  # run.flags (command line)

Rules (``check`` raises ``checkpoints.CheckpointError`` with what was expected):

* A new or empty folder: a fresh run. A folder holding a run of train's own (a ``ckpt/``
  folder) whose checkpoint exists: refused unless ``--resume`` or ``--overwrite``; one without a
  checkpoint yet (killed in its first epoch) starts afresh. Any other non-empty folder (e.g. a
  published model: model.json + model.weights.h5, no ``ckpt/``) is refused unless
  ``--overwrite``. A file is refused.
* ``--resume`` needs a checkpoint and compares the stored architecture (model.json: model,
  size flags, labels, trained depths) and flags (flags.json: ``COMPARED``; the keys of runs
  made before the CLI vocabulary, ``model`` and ``teacher_checkpoint``, are read as ``arch``
  and ``teacher``: ``cli_vocabulary.upgrade_run_flags``) with the given ones;
  every difference is named in one message, stored vs given. ``MAY_CHANGE`` (epochs, lr,
  clip_norm: how long and how large the steps to come are) may differ: they are recorded in
  flags.json's ``resumed_with`` list (the original values stay) and per epoch in history.json.
  batch_size and steps_per_epoch may not: they change the steps of an epoch and the data order.
* ``--overwrite`` removes only what train itself writes (``TRAIN_OUTPUTS``), in ``start``.

``start`` creates ``out_dir/ckpt/``: the mark of a run of train's own from its first moment, so
that a run killed before its first checkpoint is recognised as one.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from typing import List, Optional, Tuple

from pipeline import checkpoints, cli_vocabulary
from pipeline.checkpoints import CheckpointError

FLAGS_JSON = "flags.json"
CKPT_DIR = "ckpt"
#: flags a --resume may change (recorded in flags.json's resumed_with and per epoch)
MAY_CHANGE = ("epochs", "lr", "clip_norm")
#: flags a --resume must repeat: data, augmentation, model, objective, optimizer, batches
COMPARED = (
    "data_dir", "task", "wanted_words", "protocol", "silence_percentage", "unknown_percentage",
    "validation_percentage", "testing_percentage", "split_salt", "seed",
    "background_frequency", "background_volume", "time_shift_ms", "speed_change", "gain_db",
    "spec_augment", "history_clips", "history_prob", "history_tail_ms",
    "arch", "channels", "hidden", "num_layers", "left", "right", "dilation", "dropout",
    "thin_n", "batch_size", "steps_per_epoch", "optimizer", "weight_decay", "lr_schedule",
    "quant_lr_multiplier", "label_smoothing", "teacher", "init_from", "init_from_teacher",
    "distill", "distill_alpha", "select_pass", "J", "logit_loss", "kd_temperature",
    "kd_weight", "ce_weight")
#: COMPARED flags added after runs were made: a stored run without one had this value
ADDED_DEFAULTS = {"logit_loss": "mse", "kd_temperature": 1.0, "kd_weight": None,
                  "ce_weight": 1.0}
#: what train writes into a run directory (what --overwrite may remove)
RUN_FLAGFILE = "run.flags"
TRAIN_OUTPUTS = (CKPT_DIR, "tb", "history.json", "metrics.json", "last.weights.h5",
                 "best.weights.h5", FLAGS_JSON, RUN_FLAGFILE, checkpoints.MODEL_JSON)
_PATH_FLAGS = ("data_dir", "teacher", "init_from")
_LABEL_FLAGS = ("task", "wanted_words", "silence_percentage", "unknown_percentage")


@dataclasses.dataclass
class Plan:
    """What ``check`` decided: 'fresh', 'overwrite' or 'resume', and the stored flags."""

    out_dir: str
    mode: str
    stored_flags: Optional[dict] = None


def _canonical(name, value):
    if name == "wanted_words":
        from pipeline.speech_commands import parse_words
        return parse_words(value)
    if name in _PATH_FLAGS and value:
        return os.path.realpath(str(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def latest_checkpoint(out_dir) -> Optional[str]:
    import tensorflow as tf
    return tf.train.latest_checkpoint(os.path.join(out_dir, CKPT_DIR))


def _read_json(path, what):
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{path} is damaged ({e}); expected the {what} written by "
                              "pipeline.train") from e


def differences(stored_spec, stored_flags, spec, settings) -> List[Tuple[str, object, object]]:
    """(flag, stored, given) for every setting a resumed run must keep and does not."""
    diffs = {}

    def add(name, stored, given):
        if name not in diffs and _canonical(name, stored) != _canonical(name, given):
            diffs[name] = (stored, given)

    add("arch", stored_spec.get("model"), spec["model"])  # model.json keeps its "model" key
    for k, v in spec["model_kwargs"].items():
        if k in stored_spec.get("model_kwargs", {}):
            add(k, stored_spec["model_kwargs"][k], v)
    if "training_depths" in stored_spec:
        add("thin_n", len(stored_spec["training_depths"]), len(spec["training_depths"]))
    for k in COMPARED:
        if stored_flags and k in settings and (k in stored_flags or k in ADDED_DEFAULTS):
            add(k, stored_flags.get(k, ADDED_DEFAULTS.get(k)), settings[k])
    if stored_spec.get("labels") != spec["labels"] and not set(_LABEL_FLAGS) & set(diffs):
        add("labels", stored_spec.get("labels"), spec["labels"])
    return [(k, *v) for k, v in diffs.items()]


def check(out_dir, spec, settings, resume=False, overwrite=False) -> Plan:
    """Decide what may be written in ``out_dir`` (module docstring); reads, never writes."""
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise CheckpointError(f"--out_dir {out_dir} is a file; expected a folder (new, empty, "
                              "or a run of pipeline.train)")
    entries = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    own = os.path.isdir(os.path.join(out_dir, CKPT_DIR))
    if resume:
        if not (own and latest_checkpoint(out_dir)):
            raise CheckpointError(
                f"--resume: no checkpoint in {os.path.join(out_dir, CKPT_DIR)}; expected a run "
                "of pipeline.train that finished at least one epoch (start it without --resume)")
        stored_spec = checkpoints.read_model_json(out_dir)
        flags_path = os.path.join(out_dir, FLAGS_JSON)
        stored_flags = _read_json(flags_path, FLAGS_JSON) if os.path.exists(flags_path) else None
        # a run made before the CLI vocabulary (issue 15) stored --model / --teacher_checkpoint
        stored_flags = cli_vocabulary.upgrade_run_flags(stored_flags)
        diffs = differences(stored_spec, stored_flags, spec, settings)
        if diffs:
            listed = "; ".join(f"--{k} {_show(a)} (stored) vs {_show(b)} (given)"
                               for k, a, b in diffs)
            raise CheckpointError(
                f"--resume: {out_dir} was trained with other settings: {listed}. Only "
                f"{', '.join('--' + k for k in MAY_CHANGE)} may change on --resume; expected "
                "the stored values (see its flags.json), or a new run (another --out_dir, or "
                "--overwrite)")
        return Plan(out_dir, "resume", stored_flags)
    if own and latest_checkpoint(out_dir):
        if not overwrite:
            raise CheckpointError(f"{out_dir} already holds a run (a checkpoint in {CKPT_DIR}/): "
                                  "pass --resume to continue it or --overwrite to start afresh")
        return Plan(out_dir, "overwrite")
    if entries and not own:
        if not overwrite:
            shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
            raise CheckpointError(
                f"--out_dir {out_dir} exists and is not a run of pipeline.train (no {CKPT_DIR}/; "
                f"it holds {shown}); expected a new or empty folder, or pass --overwrite to "
                "write this run's files into it anyway")
        return Plan(out_dir, "overwrite")
    return Plan(out_dir, "fresh")


def start(plan: Plan):
    """The run's first write: clear train's own outputs (--overwrite), make out_dir/ckpt/."""
    if plan.mode != "resume":
        for name in TRAIN_OUTPUTS:
            path = os.path.join(plan.out_dir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
    os.makedirs(os.path.join(plan.out_dir, CKPT_DIR), exist_ok=True)


def write_flags(plan: Plan, values: dict, at_epoch: int):
    """flags.json: the given values for a new run; on --resume the stored values plus one
    ``resumed_with`` record (the epoch it continued from and the MAY_CHANGE values given)."""
    path = os.path.join(plan.out_dir, FLAGS_JSON)
    if plan.mode == "resume":
        out = dict(plan.stored_flags if plan.stored_flags is not None else values)
        out["resumed_with"] = list(out.get("resumed_with", [])) + [
            {"at_epoch": at_epoch, **{k: values[k] for k in MAY_CHANGE if k in values}}]
    else:
        out = dict(values)
    checkpoints.atomic_write_json(path, out, indent=2, sort_keys=True)


_FLAGFILE_HEAD = """\
# The flags this pipeline.train run started with (an absl flagfile). Reproduce the run in a
# new folder (a flag after --flagfile wins):
#   python -m pipeline.train --flagfile={path} --out_dir=NEW_FOLDER
# or continue it after a kill:
#   python -m pipeline.train --flagfile={path} --resume
# Paths are absolute. Resumes that changed --epochs / --lr / --clip_norm are noted at the end
# (such a run is reproduced by the same commands: the first, then each resume).
"""


def write_run_flagfile(plan: Plan, lines, at_epoch: int, may_change: dict):
    """``run.flags``: the run's flags as an absl flagfile that ``--flagfile`` reads back and
    that reproduces the run (``lines``: [(flag name, "--name=value")] from
    ``pipeline.train.run_flag_lines``). A new run writes it; a resumed run keeps it (it says how
    the run started) and appends one comment line: the epoch it continued from and the
    ``MAY_CHANGE`` values given. A run made before run.flags existed gets one on resume, from
    the given flags with ``MAY_CHANGE`` taken from its flags.json (the values it started
    with)."""
    path = os.path.join(plan.out_dir, RUN_FLAGFILE)
    note = f"# resumed at epoch {at_epoch} with " + " ".join(
        f"--{k}={may_change[k]}" for k in MAY_CHANGE if k in may_change) + "\n"
    if plan.mode == "resume" and os.path.exists(path):
        with open(path) as f:
            text = f.read()
        if not text.endswith("\n"):
            text += "\n"
        text += note
    else:
        stored = plan.stored_flags or {}
        body = []
        for name, line in lines:
            if plan.mode == "resume" and name in MAY_CHANGE and stored.get(name) is not None:
                line = f"--{name}={stored[name]}"
            body.append(line)
        text = _FLAGFILE_HEAD.format(path=os.path.abspath(path)) + "\n".join(body) + "\n"
        if plan.mode == "resume":
            text += note
    checkpoints.atomic_write_text(path, text)
