"""LCE conversion smoke test of the binary student at every thinnable depth.

The op census uses `models.lce_census` (reusable by the export tool). Expected per depth
D (number of DFSMN layers): 2 ``ops.BCONV2D`` per binary conv (the two bit planes of the
dual-scale activation share one filter), binary convs = conv2 + linear + 2 per layer
-> 2 * (2 + 2 D) ``ops.BCONV2D``; float weight ops: the first conv (CONV_2D), D memory-block
depthwise convs (DEPTHWISE_CONV_2D: LCE has no binary depthwise kernel) and the classifier
(FULLY_CONNECTED); no other CONV_2D (no binary conv fell back to float).

Outputs are compared with Keras on the LCE interpreter at 1e-4 relative to the logit scale
(measured ~1e-6) on every sample whose binarizer inputs all keep a margin from their
thresholds (`ties.assert_close_except_ties`): the two sum in different orders, and where a
binarizer input lies within that rounding of its threshold one bit may flip (measured: 5 of 192
random samples at depth 2, which ones depending on the CPU's kernels). The untrained model's
BN statistics, thresholds, PReLU slopes and biases are randomised first and its kernels come
from a seeded initialiser (the zero-initialised classifier gets random values so that the
logits depend on the input): with thresholds 0 and identity BN a binary conv output hits
exact ties (0) and sign() of a float rounding error decides them.
"""
import models  # noqa: F401  (must precede tensorflow)

import numpy as np
import pytest
import tensorflow as tf

import numpy_ref as R
import ties
from lce_kernels import ops
from models.lce_census import float_weight_ops, format_census, op_census

lce = pytest.importorskip("larq_compute_engine")


@pytest.mark.parametrize("depth", [pytest.param(8, marks=pytest.mark.slow), 4, 2, 1])
def test_student_converts_to_lce(depth):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    tf.keras.utils.set_random_seed(depth)  # kernels: not from the suite's global generator
    model = models.get_model("bifsmnv2", depth=depth)
    R.randomize_weights(model, seed=depth)
    flatbuffer = lce.convert_keras_model(model)
    census = op_census(flatbuffer)
    print(f"depth {depth}: {len(flatbuffer):,} B, {sum(census.values())} ops: "
          f"{format_census(census)}")

    assert census[ops.BCONV2D] == 2 * (2 + 2 * depth)
    assert census["CONV_2D"] == 1  # only the full-precision first conv
    assert census["DEPTHWISE_CONV_2D"] == depth  # memory blocks stay float
    assert census["FULLY_CONNECTED"] == 1  # classifier
    float_ops = float_weight_ops(flatbuffer)
    shapes = sorted((op, shape) for op, _, shape in float_ops)
    assert shapes == sorted([("CONV_2D", (16, 5, 5, 1)), ("FULLY_CONNECTED", (12, 1024))]
                            + [("DEPTHWISE_CONV_2D", (1, 5, 1, 128))] * depth)
    assert not any(name.startswith("Flex") for name in census)

    x = np.random.default_rng(0).normal(size=(48, 32, 32)).astype(np.float32)
    got = Interpreter(flatbuffer, num_threads=1).predict(x)
    ref, margin = ties.keras_with_margins(model, x)
    R.assert_nontrivial(ref)
    ties.assert_close_except_ties(got, ref, margin, tol=1e-4, label=f"depth {depth}: Keras vs LCE")
