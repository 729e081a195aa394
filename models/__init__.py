"""BiFSMNv2 models: the full-precision DFSMN teacher and the thinnable binary student.

This package is the one place that selects Keras 2 (tf_keras): larq and the Larq Compute
Engine converter need it, and TensorFlow 2.16 picks Keras 3 unless TF_USE_LEGACY_KERAS is set
before TensorFlow is first imported. Every entry point (pipeline, firmware_sim, tests) imports
this package first, so no user ever has to export the variable.
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "TensorFlow was imported before `models` with TF_USE_LEGACY_KERAS unset: larq needs "
        "Keras 2. Import `models` (or `pipeline`) before tensorflow, or set TF_USE_LEGACY_KERAS=1."
    )

from models.quantizers import ALPHA_NAME, LPBSign, ScaledSignWeight, lpb_sign  # noqa: E402
from models.dual_scale import THRESHOLD_PREFIX, DualScaleActivation, QuantConvBN  # noqa: E402
from models.memory_block import MemoryBlock  # noqa: E402
from models.dfsmn import (  # noqa: E402
    DFSMNBackbone, DFSMNLayer, build_dfsmn, split_training_outputs)
from models.registry import (  # noqa: E402
    get_model, init_student_from_teacher, list_models, register_model)
from models.thinnable import THIN_LOSS_WEIGHTS, depth_index, layer_set, valid_depths  # noqa: E402


def quant_variables(model):
    """The binarization parameters the trainer gives 0.1x learning rate: every dual-scale
    threshold (`.../threshold_t0|1|2`) and every LPB scale (`.../lpb_alpha`)."""
    return [v for v in model.trainable_weights
            if ALPHA_NAME in v.name or THRESHOLD_PREFIX in v.name.rsplit("/", 1)[-1]]


def custom_objects():
    """Custom objects for `tf.keras.models.load_model` (all are also registered globally)."""
    return {c.__name__: c for c in (LPBSign, ScaledSignWeight, DualScaleActivation,
                                    QuantConvBN, MemoryBlock, DFSMNLayer, DFSMNBackbone)}
