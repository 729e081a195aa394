"""What a WAV file's header says, checked field by field before anything decodes or resamples it.

``read_info(path)`` walks the RIFF chunks with ``struct`` (header bytes only: the samples are not
read) and returns a ``WavInfo``, or raises ``WavError(reason, detail)`` where ``reason`` is one of
the skip reasons of ``pipeline.audio.SkipReport`` and ``detail`` says what was found and what was
expected.

Why not the stdlib ``wave`` module: the corpus is decoded by TensorFlow's WAV decoder
(``tf.audio.decode_wav``, tensorflow/core/lib/wav/wav_io.cc) inside tf.data, where one error stops
the epoch. ``wave`` accepts files that decoder refuses (a ``LIST`` chunk before ``fmt ``, a
format chunk of 20 bytes, a byte rate that disagrees with the block size, 12-bit samples stored
in 2 bytes, stray bytes after the last chunk) and knows nothing of sample rates nobody can
resample (0 Hz). So this parser follows the decoder's own grammar, rule for rule, and adds what
the resampler needs:

* ``RIFF`` size ``WAVE``; before ``fmt `` only the chunks the decoder skips (``JUNK``, ``bext``,
  ``iXML``, ``qlty``, ``mext``, ``levl``, ``link``, ``axml``);
* a format chunk of 16 or 18 bytes (the 2 extra bytes skipped);
* format 1 (PCM) with 16 bits per sample -- or, for tools that read float WAVs with NumPy
  (``allow_float``), format 3 with 32 or 64 bits;
* 1..MAX_CHANNELS channels, block align = channels x bytes per sample, byte rate = block align x
  rate (uint32 arithmetic, as the decoder computes it);
* a sample rate in RATE_RANGE (what tensorflow-io's resampler is asked to convert; 0 Hz made it
  fail with "unable to initialize resampler", 7 Hz asks it for a 2,000x longer clip);
* after the format chunk, chunks until the end of the file: each needs its full 8-byte header
  (a stray byte at the end is an error for the decoder), sizes up to 2^31 - 1, exactly one
  ``data`` chunk whose whole frames must be in the file. The decoder moves on by the bytes of
  whole frames it read, not by the chunk's declared size, so a data size that is not a
  multiple of the block size (or smaller than what follows) makes it parse samples as chunk
  headers; this walker does the same and so refuses what it would refuse.

Stricter than the decoder, so that a header that lies about the data size is caught even where
the decoder would return a few samples of a longer clip: every chunk after the format chunk must
have a printable FourCC id and fit in the file. Anything else the walker cannot vouch for is
refused too (a file over MAX_FILE_BYTES, more than MAX_CHUNKS chunks): a refused clip is a
counted skip, an accepted one must decode.
"""
from __future__ import annotations

import dataclasses
import os
import stat
import struct

PCM, IEEE_FLOAT = 1, 3
#: bits per sample readable per format tag (TensorFlow's decoder: 16-bit PCM only)
BITS = {PCM: (16,), IEEE_FLOAT: (32, 64)}
#: sample rates the resampler is given (Hz, inclusive)
RATE_RANGE = (1000, 384000)
MAX_CHANNELS = 32
MAX_CHUNKS = 10000
MAX_FILE_BYTES = 1 << 30
#: chunks TensorFlow's decoder steps over between "WAVE" and "fmt " (anything else: an error)
PRE_FORMAT_CHUNKS = (b"JUNK", b"bext", b"iXML", b"qlty", b"mext", b"levl", b"link", b"axml")
_INT32_MAX = 2**31 - 1


class WavError(ValueError):
    """A file that is not a decodable WAV; ``reason`` is a SkipReport reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class WavInfo:
    """The fields of a checked header; ``data_offset`` / ``frames`` locate the samples."""

    format_tag: int
    channels: int
    rate: int
    bits: int
    frames: int
    data_offset: int

    @property
    def block_align(self) -> int:
        return self.channels * self.bits // 8


class _Reader:
    """Bounded reads at absolute offsets of an open file of known size."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def read(self, offset: int, n: int, what: str) -> bytes:
        if offset + n > self.size:
            raise WavError("truncated", f"the file ends at byte {self.size}, inside {what} "
                           f"(bytes {offset}..{offset + n}); expected a complete file")
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:
            raise WavError("truncated", f"could read only {len(data)} of {n} bytes of {what}; "
                           "expected a complete file")
        return data


def _check_format(tag, channels, rate, byte_rate, block, bits, fmt_size, allow_float):
    tags = (PCM, IEEE_FLOAT) if allow_float else (PCM,)
    wanted = "16-bit PCM" + (" or 32/64-bit float" if allow_float else "")
    if tag not in tags:
        raise WavError("unsupported encoding", f"format tag {tag}; expected {wanted}")
    if bits not in BITS[tag]:
        raise WavError("unsupported encoding", f"{bits} bits per sample (format {tag}); "
                       f"expected {wanted}")
    if fmt_size not in (16, 18):
        raise WavError("bad header", f"format chunk of {fmt_size} bytes; expected 16 or 18")
    if not 1 <= channels <= MAX_CHANNELS:
        raise WavError("bad header", f"{channels} channels; expected 1..{MAX_CHANNELS}")
    if block != channels * bits // 8:
        raise WavError("bad header", f"block align {block}; expected {channels * bits // 8} "
                       f"for {channels} channel(s) of {bits} bits")
    if byte_rate != (block * rate) & 0xFFFFFFFF:
        raise WavError("bad header", f"byte rate {byte_rate}; expected {block * rate} "
                       f"(block align {block} x {rate} Hz)")
    lo, hi = RATE_RANGE
    if not lo <= rate <= hi:
        raise WavError("bad header", f"sample rate {rate} Hz; expected {lo}..{hi} Hz")


def parse(f, size: int, allow_float: bool = False) -> WavInfo:
    """Walk the chunks of the open binary file ``f`` of ``size`` bytes (see the module doc)."""
    if size == 0:
        raise WavError("empty file", "0 bytes; expected a RIFF/WAVE file")
    if size > MAX_FILE_BYTES:
        raise WavError("too large", f"{size} bytes; expected at most {MAX_FILE_BYTES}")
    r = _Reader(f, size)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("not a WAV file", "no RIFF/WAVE header; expected a WAV file")
    offset = 12
    cid, csize = struct.unpack("<4sI", r.read(offset, 8, "the first chunk header"))
    chunks = 0
    while cid != b"fmt ":
        if cid not in PRE_FORMAT_CHUNKS:
            raise WavError("bad header", f"chunk {cid!r} before the format chunk; expected "
                           "'fmt ' first (or one of " +
                           ", ".join(c.decode() for c in PRE_FORMAT_CHUNKS) + ")")
        offset += 8 + csize
        chunks += 1
        if chunks > MAX_CHUNKS:
            raise WavError("bad header", f"more than {MAX_CHUNKS} chunks")
        cid, csize = struct.unpack("<4sI", r.read(offset, 8, "a chunk header"))
    tag, channels, rate, byte_rate, block, bits = struct.unpack(
        "<HHIIHH", r.read(offset + 8, 16, "the format chunk"))
    _check_format(tag, channels, rate, byte_rate, block, bits, csize, allow_float)
    offset += 8 + csize

    data = None
    while offset < size:
        chunks += 1
        if chunks > MAX_CHUNKS:
            raise WavError("bad header", f"more than {MAX_CHUNKS} chunks")
        if offset + 8 > size:
            raise WavError("bad header", f"{size - offset} stray byte(s) at the end (offset "
                           f"{offset}); expected whole chunks (a data size that disagrees "
                           "with the samples?)")
        cid, csize = struct.unpack("<4sI", r.read(offset, 8, "a chunk header"))
        if not all(0x20 <= c <= 0x7E for c in cid):
            raise WavError("bad header", f"chunk id {cid!r} at offset {offset} is not a FourCC; "
                           "expected whole chunks (a data size that disagrees with the samples?)")
        offset += 8
        if csize > _INT32_MAX:
            raise WavError("bad header", f"chunk {cid!r} of {csize} bytes; expected at most "
                           f"{_INT32_MAX}")
        if cid == b"data":
            if data is not None:
                raise WavError("bad header", "a second data chunk; expected one")
            frames = csize // block
            if offset + frames * block > size:
                raise WavError("truncated", f"the data chunk promises {csize} bytes, the file "
                               f"holds {size - offset} after its header; expected them all")
            data = (offset, frames)
            offset += frames * block
        else:
            if offset + csize > size:
                raise WavError("truncated", f"chunk {cid!r} promises {csize} bytes, the file "
                               f"holds {size - offset} after its header; expected them all")
            offset += csize
    if data is None:
        raise WavError("bad header", "no data chunk; expected one holding the samples")
    return WavInfo(tag, channels, rate, bits, data[1], data[0])


def read_info(path: str, allow_float: bool = False) -> WavInfo:
    """``parse`` a file by path; a folder, a device or an unreadable file is 'not a WAV file'."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise WavError("not a WAV file", "not a regular file; expected a WAV file")
            return parse(f, st.st_size, allow_float)
    except IsADirectoryError:
        raise WavError("not a WAV file", "a folder; expected a WAV file") from None
    except OSError as e:
        raise WavError("not a WAV file", f"cannot be read ({e.strerror}); expected a "
                       "readable WAV file") from None
