"""Speech Commands data, features, training, evaluation, export and benchmarks.

Run tools from the repository root, e.g. ``python -m pipeline.synth --out DIR``.
"""
import models  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
