"""Thinnable depth: one set of DFSMN weights run at depth N, N/2, N/4, N/8.

With N layers (N = 8 in BiFSMNv2), depth index d in 0..3 runs the layers

    L(d) = { j : (j + 1) mod 2^d == 0 }        (8 layers: [0..7], [1,3,5,7], [3,7], [7])

i.e. depth N / 2^d, and layer j then uses its own final BN_d / PReLU_d. The distillation loss
matches student layer j at depth index d exactly for j in L(d) (its condition
(j + 1) % 2^d == 0 is the membership test).
"""

__all__ = [
    "MAX_DEPTH_INDEX",
    "depth_index",
    "depth_of_index",
    "layer_set",
    "valid_depths",
    "THIN_LOSS_WEIGHTS",
]

#: bn0..bn3 / act0..act3
MAX_DEPTH_INDEX = 3

#: The reference's loss weights for depth indices 0, 1, 2 (thin_n = 3).
THIN_LOSS_WEIGHTS = (1.0, 0.5, 0.25)


def valid_depths(num_layers: int = 8):
    """Depths (numbers of layers) a backbone of `num_layers` can run, deepest first."""
    return [num_layers // 2**d for d in range(MAX_DEPTH_INDEX + 1)
            if num_layers % 2**d == 0 and num_layers // 2**d >= 1]


def depth_index(depth: int, num_layers: int = 8) -> int:
    """8 -> 0, 4 -> 1, 2 -> 2, 1 -> 3 (for 8 layers)."""
    for d in range(MAX_DEPTH_INDEX + 1):
        if num_layers % 2**d == 0 and num_layers // 2**d == depth:
            return d
    raise ValueError(f"depth {depth} not available with {num_layers} layers: "
                     f"use one of {valid_depths(num_layers)}")


def depth_of_index(index: int, num_layers: int = 8) -> int:
    return valid_depths(num_layers)[index]


def layer_set(index: int, num_layers: int = 8):
    """Indices of the layers run at depth index `index`."""
    return [j for j in range(num_layers) if (j + 1) % 2**index == 0]
