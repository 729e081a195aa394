"""Audio that never kills a run (issue 14): a clip the reader cannot decode or resample is a
counted skip whatever its header claims, and ``firmware_sim.stream --wav`` reads through the same
checks (a clear DataError, or a float WAV converted when its samples are sane).

Bad files are written byte by byte with struct, so each test shows the exact header of the case.
"""
import logging
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from pipeline import audio as audio_lib
from pipeline import speech_commands as sc
from pipeline.input_pipeline import DataConfig, InputPipeline
from tests.conftest import make_corpus, tone


# -- WAV bytes ----------------------------------------------------------------------------------
def chunk(cid: bytes, payload: bytes, size=None) -> bytes:
    return struct.pack("<4sI", cid, len(payload) if size is None else size) + payload


def fmt(rate=16000, channels=1, bits=16, tag=1, block=None, byte_rate=None, size=16) -> bytes:
    block = channels * ((bits + 7) // 8) if block is None else block
    byte_rate = (rate * block) & 0xFFFFFFFF if byte_rate is None else byte_rate
    payload = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block, bits)
    return chunk(b"fmt ", payload + b"\0" * (size - 16), size=size)


def pcm(samples) -> bytes:
    return (np.clip(np.asarray(samples), -1, 1) * 32767).astype("<i2").tobytes()


def riff(*chunks: bytes, tail: bytes = b"") -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body + tail


def float_wav(samples, rate=16000, bits=32) -> bytes:
    dtype = "<f4" if bits == 32 else "<f8"
    data = np.asarray(samples, dtype).tobytes()
    return riff(fmt(rate=rate, bits=bits, tag=3, size=18),
                chunk(b"fact", struct.pack("<I", len(samples))), chunk(b"data", data))


SECOND = pcm(tone(300.0, np.random.default_rng(0)))

# the cases of the issue: file name -> (bytes, the reason it is counted under)
BAD_CLIPS = {
    "rate0000_nohash_0.wav": (riff(fmt(rate=0), chunk(b"data", SECOND)), "bad header"),
    "rate0007_nohash_0.wav": (riff(fmt(rate=7), chunk(b"data", SECOND)), "bad header"),
    "rate4gig_nohash_0.wav": (riff(fmt(rate=4_000_000_000), chunk(b"data", SECOND)),
                              "bad header"),
    "chan0000_nohash_0.wav": (riff(fmt(channels=0, block=0), chunk(b"data", SECOND)),
                              "bad header"),
    "bits0012_nohash_0.wav": (riff(fmt(bits=12, block=2), chunk(b"data", SECOND)),
                              "unsupported encoding"),
    "bitshuge_nohash_0.wav": (riff(fmt(bits=65535, block=2), chunk(b"data", SECOND)),
                              "unsupported encoding"),
    "byterate_nohash_0.wav": (riff(fmt(byte_rate=12345), chunk(b"data", SECOND)), "bad header"),
    "blockaln_nohash_0.wav": (riff(fmt(block=4, byte_rate=64000), chunk(b"data", SECOND)),
                              "bad header"),
    "fmtsize2_nohash_0.wav": (riff(fmt(size=20), chunk(b"data", SECOND)), "bad header"),
    # the data chunk claims more bytes than the file holds / fewer than follow it
    "datalong_nohash_0.wav": (riff(fmt(), chunk(b"data", SECOND, size=10 * len(SECOND))),
                              "truncated"),
    "datashrt_nohash_0.wav": (riff(fmt(), chunk(b"data", SECOND, size=1000)), "bad header"),
    "listfrst_nohash_0.wav": (riff(chunk(b"LIST", b"INFO"), fmt(), chunk(b"data", SECOND)),
                              "bad header"),
    "twodata0_nohash_0.wav": (riff(fmt(), chunk(b"data", SECOND), chunk(b"data", SECOND)),
                              "bad header"),
    "nodatach_nohash_0.wav": (riff(fmt()), "bad header"),
    "floatnan_nohash_0.wav": (float_wav(np.full(16000, np.nan)), "unsupported encoding"),
    "floatinf_nohash_0.wav": (float_wav(np.full(16000, np.inf)), "unsupported encoding"),
    "headonly_nohash_0.wav": (riff(fmt())[:30], "truncated"),
}


@pytest.fixture
def corpus_with_bad_clips(tmp_path):
    root = make_corpus(tmp_path / "bad", words=("yes", "no"), speakers=6, reps=1, lists=False)
    for name, (data, _) in BAD_CLIPS.items():
        with open(os.path.join(root, "yes", name), "wb") as f:
            f.write(data)
    os.makedirs(os.path.join(root, "yes", "a_folder_nohash_0.wav"))
    return root


def test_bad_headers_are_counted_skips_and_every_split_decodes(corpus_with_bad_clips, caplog):
    with caplog.at_level(logging.WARNING):
        idx = sc.build_index(corpus_with_bad_clips, ["yes", "no"], silence_percentage=0,
                             unknown_percentage=0, validation_percentage=20,
                             testing_percentage=20)
    counts = idx.skipped.counts
    expected = {}
    for _, reason in BAD_CLIPS.values():
        expected[reason] = expected.get(reason, 0) + 1
    expected["not a WAV file"] = 1  # the folder named *.wav
    assert dict(counts) == expected
    kept = {os.path.relpath(p, corpus_with_bad_clips) for s in idx.splits.values()
            for p in s.paths}
    assert not {os.path.basename(k) for k in kept} & (set(BAD_CLIPS) | {"a_folder_nohash_0.wav"})
    assert len(kept) == 12  # the 6 + 6 good clips, labels as their folders
    for s in idx.splits.values():
        for p, y in zip(s.paths, s.labels):
            assert idx.labels[y] == os.path.basename(os.path.dirname(p))
    n_bad = len(BAD_CLIPS) + 1
    lines = [r.getMessage() for r in caplog.records
             if f"skipped {n_bad} file(s)" in r.getMessage()]
    assert len(lines) == 1 and "11 bad header (e.g. yes/blockaln_nohash_0.wav: block align 4; " \
        "expected 2" in lines[0]
    # what stopped train / evaluate before: decoding every clip of every split
    pipe = InputPipeline(idx, DataConfig(data_dir=corpus_with_bad_clips))
    for split, s in idx.splits.items():
        if len(s):
            audio = np.concatenate([b["audio"].numpy() for b in pipe.decoded(split).batch(64)])
            assert audio.shape == (len(s), 16000) and np.isfinite(audio).all()


def test_the_issue_case_0_hz_is_not_listed_as_resampled(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(BAD_CLIPS["rate0000_nohash_0.wav"][0])
    report = audio_lib.SkipReport()
    assert not audio_lib.check_wav(str(path), report)
    assert report.counts == {"bad header": 1}
    with pytest.raises(sc.DataError, match=r"0 Hz.*expected.*1000"):
        audio_lib.load_wav(str(path))


def _mutations(rng: np.random.Generator, n: int):
    """Seeded WAVs around a valid 1 s, 8 kHz file: damaged header fields, random header bytes,
    cuts, stray tails, data sizes that lie, and also valid variations (other rates and channel
    counts, extra chunks before and after the samples) so that both outcomes are exercised."""
    samples = SECOND[:16000]
    base = riff(fmt(rate=8000), chunk(b"data", samples))
    fields = [(4, "<I"), (16, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (28, "<I"), (32, "<H"),
              (34, "<H"), (40, "<I")]
    edges = [0, 1, 2, 7, 8, 15, 16, 17, 18, 24, 255, 999, 1000, 8000, 22050, 32000, 44100,
             48000, 384000, 384001, 65535, 2**31 - 1, 2**31, 2**32 - 1]
    rates = [1000, 8000, 11025, 22050, 44100, 96000, 384000, 999, 384001, 0]
    for i in range(n):
        kind = i % 8
        b = bytearray(base)
        if kind == 0:    # one header field set to an edge value
            off, f = fields[rng.integers(len(fields))]
            v = edges[rng.integers(len(edges))] & (0xFFFF if f == "<H" else 0xFFFFFFFF)
            struct.pack_into(f, b, off, v)
        elif kind == 1:  # random header bytes
            for _ in range(rng.integers(1, 4)):
                b[rng.integers(0, 44)] = rng.integers(0, 256)
        elif kind == 2:  # cut anywhere
            b = b[:rng.integers(0, len(b))]
        elif kind == 3:  # stray bytes at the end
            b += bytes(rng.integers(0, 256, rng.integers(1, 20), dtype=np.uint8))
        elif kind == 4:  # another rate / channel count, the header consistent
            ch = int(rng.choice([1, 2, 3]))
            b = bytearray(riff(fmt(rate=rates[rng.integers(len(rates))], channels=ch,
                                   size=int(rng.choice([16, 18]))),
                               chunk(b"data", samples[:len(samples) // (2 * ch) * 2 * ch])))
        elif kind == 5:  # a chunk after the samples (ASCII or random id, any size)
            cid = bytes(rng.choice(list(b"abcdLISTid3 \x01\xff"), 4))
            payload = bytes(rng.integers(0, 256, rng.integers(0, 12), dtype=np.uint8))
            b += chunk(cid, payload, size=int(rng.choice([len(payload), len(payload) + 3])))
        elif kind == 6:  # a chunk before the format chunk
            cid = [b"JUNK", b"bext", b"LIST", b"fact"][rng.integers(4)]
            b = bytearray(riff(chunk(cid, b"\0" * int(rng.integers(0, 6))), fmt(rate=8000),
                               chunk(b"data", samples)))
        else:            # the data size lies
            struct.pack_into("<I", b, 40, int(rng.choice([0, 1, 2, 999, 1000, 15998, 15999,
                                                          16001, 16002, 2**31])))
        yield bytes(b)


def test_whatever_the_check_accepts_tensorflow_decodes(tmp_path):
    """The check mirrors TensorFlow's WAV decoder (the one tf.data runs): every seeded header
    mutation it accepts decodes and resamples to a finite 1 s clip; no mutation crashes it."""
    accepted = rejected = 0
    decode = tf.function(lambda p: audio_lib.decode_clip(p), reduce_retracing=True)
    for i, data in enumerate(_mutations(np.random.default_rng(14), 240)):
        path = str(tmp_path / f"m{i:03d}.wav")
        with open(path, "wb") as f:
            f.write(data)
        report = audio_lib.SkipReport()
        if audio_lib.check_wav(path, report):
            accepted += 1
            x = decode(tf.constant(path)).numpy()
            assert x.shape == (16000,) and np.isfinite(x).all(), i
            assert np.array_equal(audio_lib.load_wav(path), x) or \
                np.abs(audio_lib.load_wav(path) - x).max() < 1e-6, i
        else:
            rejected += 1
            assert report.n_skipped == 1, (i, report.counts)
            with pytest.raises(sc.DataError, match="expected"):
                audio_lib.load_wav(path)
    assert accepted >= 30 and rejected >= 30, (accepted, rejected)


# -- the streaming tool's --wav -------------------------------------------------------------------
class Flat:
    """Stub predictor (audio input): always silence."""
    labels, input_kind, runtime, name = ["_silence_", "yes"], "audio", "stub", "flat"

    def predict(self, batch):
        return np.tile([[1.0, 0.0]], (len(batch), 1))


def _stream(wav_path, tmp_path):
    from firmware_sim import stream
    st = stream.StreamSettings(plot=str(tmp_path / "s.png"), progress=False)
    return stream.run(None, st, wav=str(wav_path), predictor=Flat())


@pytest.mark.parametrize("name,data,message", [
    ("empty.wav", b"", "empty file"),
    ("text.wav", b"this is not audio\n" * 10, "not a WAV file"),
    ("nan.wav", float_wav(np.r_[np.zeros(8000), np.nan, np.zeros(8000)]), "not finite"),
    ("zero_hz.wav", BAD_CLIPS["rate0000_nohash_0.wav"][0], "0 Hz"),
    ("twelve_bit.wav", BAD_CLIPS["bits0012_nohash_0.wav"][0], "16-bit PCM"),
])
def test_stream_wav_bad_files_give_a_data_error(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(sc.DataError, match=message):
        _stream(path, tmp_path)


def test_stream_wav_reads_a_float_wav_like_its_pcm_twin(tmp_path):
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000)
    (tmp_path / "f32.wav").write_bytes(float_wav(x))
    (tmp_path / "f64.wav").write_bytes(float_wav(x, bits=64))
    (tmp_path / "i16.wav").write_bytes(riff(fmt(), chunk(b"data", pcm(x))))
    a32 = audio_lib.load_wav(str(tmp_path / "f32.wav"), None)
    a64 = audio_lib.load_wav(str(tmp_path / "f64.wav"), None)
    a16 = audio_lib.load_wav(str(tmp_path / "i16.wav"), None)
    assert a32.shape == a64.shape == a16.shape == (48000,)
    np.testing.assert_allclose(a32, x, atol=1e-7)
    np.testing.assert_allclose(a16, x, atol=1.0 / 16384)
    res = _stream(tmp_path / "f32.wav", tmp_path)
    assert res["summary"]["audio_seconds"] == 3.0


def test_pcm_reader_matches_tensorflow_decoder(tmp_path):
    """The NumPy reader (tools, noise recordings) and TensorFlow's (tf.data) give the same
    samples, for mono, stereo (mixed down) and 22.05 kHz (resampled) files."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, 22050)
    stereo = np.stack([x, -0.5 * x], 1).reshape(-1)
    files = {"mono": riff(fmt(), chunk(b"data", pcm(x))),
             "stereo": riff(fmt(channels=2), chunk(b"data", pcm(stereo))),
             "22k": riff(fmt(rate=22050), chunk(b"data", pcm(x)))}
    for name, data in files.items():
        path = tmp_path / f"{name}.wav"
        path.write_bytes(data)
        assert audio_lib.check_wav(str(path), audio_lib.SkipReport())
        for n in (16000, None):
            ref = audio_lib.decode_clip(str(path), n).numpy()
            got = audio_lib.load_wav(str(path), n)
            assert got.shape == ref.shape, name
            np.testing.assert_allclose(got, ref, atol=1e-6, err_msg=name)
