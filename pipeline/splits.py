"""The Speech Commands rule that assigns a clip to training, validation or testing.

The data set's README (and TensorFlow's speech_commands example) split by speaker so that
one speaker never lands in two sets:

    h = int(sha1(salt + speaker_part).hexdigest(), 16) % (MAX_NUM_WAVS_PER_CLASS + 1)
    p = h * 100 / MAX_NUM_WAVS_PER_CLASS
    testing if p < validation% + testing%  and  p >= validation%,  validation if p < validation%

where ``speaker_part`` is the file name with ``_nohash_...`` removed. The official archives ship
the resulting lists (validation_list.txt, testing_list.txt); this function regenerates them for
corpora that have none (the synthetic corpus, or a directory without list files).
"""
import hashlib
import os
import re

MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M, as in TensorFlow's speech_commands input_data.py


def speaker_id(filename: str) -> str:
    """The part of a clip's name that identifies its speaker (``abc123`` in ``abc123_nohash_0.wav``)."""
    base = os.path.basename(filename)
    return re.sub(r"_nohash_.*$", "", base)


def which_set(filename: str, validation_percentage: float = 10.0,
              testing_percentage: float = 10.0, salt: str = "") -> str:
    """Return 'training', 'validation' or 'testing' for a clip by the data set's hashing rule."""
    digest = hashlib.sha1((salt + speaker_id(filename)).encode("utf-8")).hexdigest()
    percentage = (int(digest, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"
