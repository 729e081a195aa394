"""Model registry: build teacher / student by name, and initialise a student from a teacher.

    dfsmn          full-precision DFSMN teacher
    bifsmnv2       binary BiFSMNv2 student, Learning Propagation Binarizer (LPB)
    bifsmnv2_ste   binary student with plain STE (alpha fixed at 1): the LPB ablation
    dfsmn_stream, bifsmnv2_stream   the always-on streaming variants (models/streaming.py:
                   causal front end and memory blocks, --left=4 --right=0, a ring of the
                   last 8 frames; `StreamingDFSMN` runs them one hop at a time)

All take the keyword arguments of `models.dfsmn.build_dfsmn` (depth, training_depths,
num_classes, input_shape, channels, hidden, num_layers, left, right, dilation, dropout, ...).
"""
import functools

import numpy as np
import tensorflow as tf

from models.dfsmn import build_dfsmn
from models.streaming import build_dfsmn_stream

__all__ = ["get_model", "list_models", "register_model", "init_student_from_teacher"]

_REGISTRY = {}


def register_model(name, builder=None):
    """Register `builder(**kwargs) -> tf.keras.Model` under `name` (usable as a decorator)."""
    if builder is None:
        return functools.partial(register_model, name)
    _REGISTRY[name] = builder
    return builder


register_model("dfsmn", functools.partial(build_dfsmn, binary=False))
register_model("bifsmnv2", functools.partial(build_dfsmn, binary=True, mode="lpb"))
register_model("bifsmnv2_ste", functools.partial(build_dfsmn, binary=True, mode="ste"))
register_model("dfsmn_stream", functools.partial(build_dfsmn_stream, binary=False))
register_model("bifsmnv2_stream", functools.partial(build_dfsmn_stream, binary=True, mode="lpb"))


def kwargs_problem(name: str, kwargs: dict):
    """What is wrong with ``kwargs`` (size flags) for the model ``name``, or None."""
    from models import streaming
    if streaming.is_streaming_arch(name):
        return streaming.kwargs_problem(kwargs)
    return None


def list_models():
    return sorted(_REGISTRY)


def get_model(name: str, **kwargs) -> tf.keras.Model:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {list_models()}")
    kwargs.setdefault("name", name)
    return _REGISTRY[name](**kwargs)


def _key(var):
    """Variable name without the top-level model name and the ':0' suffix."""
    return var.name.split(":")[0]


def init_student_from_teacher(student: tf.keras.Model, teacher: tf.keras.Model, verbose=True):
    """Copy every teacher weight whose name and shape match a student weight.

    Names are the layer-path names (`dfsmn/layer3/pw1/conv/kernel`, `conv2/bn0/gamma`, ...),
    identical in teacher and student by construction: float kernels become the latent
    weights of the student's binary kernels; BN (incl. moving statistics), PReLU, bias and
    classifier weights copy over. Student-only weights (thresholds, LPB alphas, pw1 PReLU
    slopes) stay at their initial values.

    Returns a dict: `copied` (names), `student_only` (names left at init), `teacher_only`
    (teacher names with no student counterpart), `shape_mismatch`.
    """
    t_vars = {_key(v): v for v in teacher.weights}
    copied, student_only, mismatch = [], [], []
    for v in student.weights:
        k = _key(v)
        if k in t_vars:
            tv = t_vars[k]
            if tuple(tv.shape) == tuple(v.shape):
                v.assign(tv.read_value() if hasattr(tv, "read_value") else tv)
                copied.append(k)
            else:
                mismatch.append(k)
        else:
            student_only.append(k)
    s_keys = {_key(v) for v in student.weights}
    teacher_only = [k for k in t_vars if k not in s_keys]
    report = {"copied": copied, "student_only": student_only,
              "teacher_only": teacher_only, "shape_mismatch": mismatch}
    if verbose:
        n_copied = int(sum(np.prod(t_vars[k].shape)
                           for k in copied))
        print(f"init_student_from_teacher: copied {len(copied)} variables "
              f"({n_copied:,} values); left at init {len(student_only)} "
              f"(thresholds / LPB alphas / student-only PReLU); teacher-only "
              f"{len(teacher_only)}; shape mismatch {len(mismatch)}")
    return report
