"""The firmware's tensor files (firmware_sim/firmware/firmware.cc): a batch of tensors of one
dtype and shape, little-endian.

    "BKWSTEN1" (8 bytes), u32 TfLiteType code, u32 rank, u32 dims[rank], raw data

``dims[0]`` is the number of items (clips), the rest one item's shape. The firmware copies each
item into the model's input tensor (same type, same element count) and writes the output
tensor of each item into a file of the same format.
"""
from __future__ import annotations

import struct

import numpy as np

MAGIC = b"BKWSTEN1"
#: TfLiteType codes (tensorflow/lite/core/c/c_api_types.h) of the dtypes the firmware takes
TYPES = {np.dtype(np.float32): 1, np.dtype(np.int32): 2, np.dtype(np.uint8): 3,
         np.dtype(np.bool_): 6, np.dtype(np.int16): 7, np.dtype(np.int8): 9}
DTYPES = {v: k for k, v in TYPES.items()}


class TensorFileError(ValueError):
    """A file that is not a tensor file, or one of another dtype / size than its header."""


def write(path: str, array) -> None:
    """Write ``array`` ([items, ...], a dtype of TYPES) to ``path``."""
    a = np.ascontiguousarray(array)
    if a.dtype not in TYPES:
        raise TensorFileError(f"dtype {a.dtype} is not one the firmware takes "
                              f"({', '.join(str(d) for d in TYPES)})")
    if a.ndim < 1 or a.ndim > 8:
        raise TensorFileError(f"rank {a.ndim}: expected 1 to 8 ([items, ...])")
    header = MAGIC + struct.pack("<II", TYPES[a.dtype], a.ndim) + \
        struct.pack(f"<{a.ndim}I", *a.shape)
    with open(path, "wb") as f:
        f.write(header)
        f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


def read(path: str) -> np.ndarray:
    """The array of a tensor file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 16 or data[:8] != MAGIC:
        raise TensorFileError(f"{path} is not a tensor file (magic {MAGIC!r})")
    code, rank = struct.unpack_from("<II", data, 8)
    if code not in DTYPES or not 1 <= rank <= 8 or len(data) < 16 + 4 * rank:
        raise TensorFileError(f"{path}: bad header (type {code}, rank {rank})")
    shape = struct.unpack_from(f"<{rank}I", data, 16)
    dtype = DTYPES[code]
    body = data[16 + 4 * rank:]
    if len(body) != int(np.prod(shape)) * dtype.itemsize:
        raise TensorFileError(f"{path}: {len(body)} data bytes, shape {shape} of {dtype} needs "
                              f"{int(np.prod(shape)) * dtype.itemsize}")
    return np.frombuffer(body, dtype.newbyteorder("<")).astype(dtype).reshape(shape)
