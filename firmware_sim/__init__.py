"""Device side made testable here: ARMv8 emulation, instruction counts, streaming KWS."""
import models  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
