"""Device side made testable here: ARMv8 emulation, instruction counts, streaming KWS.

``firmware_sim.cost`` needs no TensorFlow, so this package does not import it; modules that use
TensorFlow import ``pipeline`` (or ``models``) first, which selects Keras 2.
"""
