"""Speech Commands data, features, training, evaluation, export and benchmarks.

Run tools from the repository root, e.g. ``python -m pipeline.synth --out_dir DIR``.
"""
import models  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

#: the project version, written into every exported model's description
#: (pipeline/tflite_metadata.py); bump it with each release
__version__ = "0.15.0"
