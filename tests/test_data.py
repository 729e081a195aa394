"""The Speech Commands reader: layouts, tasks, protocols, splits and bad input."""
import logging
import math
import os
import shutil
import tarfile

import numpy as np
import pytest

from pipeline import audio as audio_lib
from pipeline import download
from pipeline import speech_commands as sc
from pipeline.splits import which_set
from tests.conftest import make_corpus, tone, write_wav

WORDS4 = ["yes", "no", "up", "down"]


def labels_for(words, sil=10, unk=10):
    return sc.class_labels(None, words, sil, unk)[0]


def test_archive_layout_follows_list_files(tiny_corpus):
    idx = sc.build_index(tiny_corpus, labels_for(WORDS4))
    assert idx.layout == "archive"
    assert idx.labels == ["_silence_", "_unknown_"] + WORDS4
    val = set(open(os.path.join(tiny_corpus, "validation_list.txt")).read().split())
    test = set(open(os.path.join(tiny_corpus, "testing_list.txt")).read().split())
    for split, names in (("validation", val), ("testing", test)):
        files = {os.path.relpath(p, tiny_corpus) for p in idx.splits[split].paths if p}
        assert files and files <= names
    train = {os.path.relpath(p, tiny_corpus) for p in idx.splits["training"].paths if p}
    assert not train & (val | test)


def test_tf_protocol_silence_and_unknown_percentages(tiny_corpus):
    idx = sc.build_index(tiny_corpus, labels_for(WORDS4, 10, 25), silence_percentage=10,
                         unknown_percentage=25)
    for name, counts in idx.counts().items():
        n_kw = sum(counts[w] for w in WORDS4)
        assert counts["_silence_"] == math.ceil(n_kw * 0.10), name
        assert counts["_unknown_"] == min(math.ceil(n_kw * 0.25),
                                          len([p for p in idx.splits[name].paths
                                               if "/cat/" in p or "/dog/" in p]))
        # silence from noise: source 1, with a loudness spread over the whole range
        s = idx.splits[name]
        sil = s.labels == idx.labels.index("_silence_")
        assert np.all(s.source[sil] == 1)
    rms = idx.splits["training"].rms_db[idx.splits["training"].source == 1]
    assert rms.min() >= sc.SILENCE_RMS_DB_RANGE[0] and rms.max() <= sc.SILENCE_RMS_DB_RANGE[1]


def test_reference_protocol_zero_silence_and_all_unknown(tiny_corpus):
    idx = sc.build_index(tiny_corpus, labels_for(WORDS4), protocol="reference")
    for name, counts in idx.counts().items():
        s = idx.splits[name]
        n_other = sum(1 for p in s.paths if "/cat/" in p or "/dog/" in p)
        assert counts["_unknown_"] == n_other  # every other word, unbalanced
        n_words = sum(counts[w] for w in WORDS4) + n_other
        assert counts["_silence_"] == math.ceil(n_words * 0.10)
        assert np.all(s.source[s.labels == 0] == 2)  # all-zero clips


def test_tasks_and_custom_words():
    labels, words, sil, unk = sc.class_labels("v1-12")
    assert len(labels) == 12 and labels[:2] == ["_silence_", "_unknown_"]
    labels, _, sil, unk = sc.class_labels("v2-35")
    assert len(labels) == 35 and sil == unk == 0
    labels, _, _, _ = sc.class_labels("v2-12")
    assert len(labels) == 12
    labels, _, _, _ = sc.class_labels(None, "yes,no", 10, 0)
    assert labels == ["_silence_", "yes", "no"]
    with pytest.raises(sc.DataError, match="unknown task"):
        sc.class_labels("v3-99")
    with pytest.raises(sc.DataError, match="twice"):
        sc.class_labels(None, "yes,yes")


def test_no_list_files_uses_hashing_rule(tmp_path):
    root = make_corpus(tmp_path / "c", words=("yes", "no"), speakers=20, reps=1, lists=False)
    idx = sc.build_index(root, labels_for(["yes", "no"], 0, 0), validation_percentage=20,
                         testing_percentage=20)
    for split, s in idx.splits.items():
        for p in s.paths:
            assert which_set(os.path.relpath(p, root), 20, 20) == split


def test_official_test_set_layout(tiny_test_set):
    idx = sc.build_index(tiny_test_set, labels_for(["yes", "no", "up"]))
    assert idx.layout == "test_set"
    assert len(idx.splits["training"]) == 0 and len(idx.splits["validation"]) == 0
    c = idx.counts()["testing"]
    # given _silence_ clips are used as they are; 'down' is not wanted -> unknown
    assert c["_silence_"] == 3 and c["_unknown_"] == 3 + 4 and c["yes"] == 4
    # a model without an unknown class: those clips are skipped and counted
    idx = sc.build_index(tiny_test_set, labels_for(["yes", "no", "up"], 10, 0))
    assert idx.ignored["testing"] == 7 and "_unknown_" not in idx.labels


def test_real8_pack(real8):
    words = "yes,no,up,down,left,right,stop,go".split(",")
    idx = sc.build_index(real8, labels_for(words, 10, 0))
    c = idx.counts()
    assert sum(c["validation"][w] for w in words) == 768
    assert sum(c["testing"][w] for w in words) == 627
    # 6,348 word clips (the pack's README counts 6,354 with the 6 noise recordings)
    assert sum(c["training"][w] for w in words) == 6348 - 768 - 627
    assert not idx.skipped.counts and len(idx.noise_files) == 6


# -- bad input --------------------------------------------------------------------------------
@pytest.fixture
def messy_corpus(tmp_path):
    root = make_corpus(tmp_path / "messy", words=("yes", "no"), speakers=6, reps=1, lists=False)
    rng = np.random.default_rng(3)
    write_wav(os.path.join(root, "yes", "stereo01_nohash_0.wav"), tone(300, rng), channels=2)
    write_wav(os.path.join(root, "yes", "rate2205_nohash_0.wav"), tone(300, rng, rate=22050),
              rate=22050)
    write_wav(os.path.join(root, "no", "eightbit_nohash_0.wav"), tone(500, rng), width=1)
    open(os.path.join(root, "no", "empty000_nohash_0.wav"), "wb").close()
    with open(os.path.join(root, "no", "textfile_nohash_0.wav"), "w") as f:
        f.write("not audio at all")
    good = open(os.path.join(root, "yes", os.listdir(os.path.join(root, "yes"))[0]), "rb").read()
    with open(os.path.join(root, "yes", "truncate_nohash_0.wav"), "wb") as f:
        f.write(good[:5000])
    return root


def test_bad_files_are_skipped_or_converted_and_counted(messy_corpus, caplog):
    with caplog.at_level(logging.WARNING):
        idx = sc.build_index(messy_corpus, labels_for(["yes", "no"], 0, 0),
                             validation_percentage=0, testing_percentage=0)
    counts = idx.skipped.counts
    assert counts["empty file"] == 1 and counts["not a WAV file"] == 1
    assert counts["truncated"] == 1 and counts["unsupported encoding"] == 1
    assert counts["stereo, mixed down"] == 1 and counts["resampled to 16 kHz"] == 1
    paths = set(os.path.basename(p) for p in idx.splits["training"].paths)
    assert "stereo01_nohash_0.wav" in paths and "rate2205_nohash_0.wav" in paths
    assert not {"empty000_nohash_0.wav", "textfile_nohash_0.wav", "truncate_nohash_0.wav",
                "eightbit_nohash_0.wav"} & paths
    # labels unchanged: every kept 'yes' path has the 'yes' label
    s = idx.splits["training"]
    for p, y in zip(s.paths, s.labels):
        assert idx.labels[y] == os.path.basename(os.path.dirname(p))
    lines = [r.getMessage() for r in caplog.records if "skipped 4 file(s)" in r.getMessage()]
    assert len(lines) == 1 and "e.g." in lines[0]


def test_converted_files_decode_to_one_second_mono(messy_corpus):
    for name, freq in (("stereo01_nohash_0.wav", 300), ("rate2205_nohash_0.wav", 300)):
        x = audio_lib.load_wav(os.path.join(messy_corpus, "yes", name))
        assert x.shape == (16000,) and np.abs(x).max() > 0.1
        spectrum = np.abs(np.fft.rfft(x))
        assert abs(np.argmax(spectrum) * 16000 / 16000 - freq) < 15  # 1 Hz bins


def test_clear_errors(tmp_path, tiny_corpus):
    with pytest.raises(sc.DataError, match="does not exist"):
        sc.build_index(str(tmp_path / "nope"), ["yes"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(sc.DataError, match="no word folders"):
        sc.build_index(str(tmp_path / "empty"), ["yes"])
    with pytest.raises(sc.DataError, match=r"\['zebra'\] have no folder"):
        sc.build_index(tiny_corpus, labels_for(["yes", "zebra"]))
    only = make_corpus(tmp_path / "only", words=("yes", "no"), speakers=3, reps=1)
    with pytest.raises(sc.DataError, match="--unknown_percentage=0"):
        sc.build_index(only, labels_for(["yes", "no"], 10, 10))
    broken = tmp_path / "broken"
    shutil.copytree(only, broken)
    with open(broken / "testing_list.txt", "a") as f:
        f.write("yes/deadbeef_nohash_9.wav\n")
    with pytest.raises(sc.DataError, match="names 1 clip"):
        sc.build_index(str(broken), labels_for(["yes", "no"], 10, 0))


# -- getting the data -----------------------------------------------------------------------------
def test_download_offline_gives_clear_error(tmp_path):
    with pytest.raises(download.DownloadError, match="no internet access"):
        download.download("v0.02", str(tmp_path), base_url="http://127.0.0.1:9/")
    assert not any(p.suffix == ".part" for p in tmp_path.iterdir())


def test_download_unpacks_archive_from_mirror(tmp_path, monkeypatch):
    src = make_corpus(tmp_path / "src", words=("yes", "no"), speakers=3, reps=1)
    digests = {}
    for name in download.ARCHIVES["v0.01"]:
        with tarfile.open(tmp_path / name, "w:gz") as tar:
            tar.add(src, arcname=".")
        digests[name] = download.sha256_of(str(tmp_path / name))
    # the fakes stand in for the official archives: their digests replace the official ones
    # (tests/test_download.py covers mismatches)
    monkeypatch.setattr(download, "OFFICIAL_SHA256", digests)
    monkeypatch.setattr(download, "OFFICIAL_SIZE", {})
    out = tmp_path / "out"
    made = download.download("v0.01", str(out), base_url=(tmp_path.as_uri() + "/"))
    assert len(made) == 2
    idx = sc.build_index(made[0], labels_for(["yes", "no"], 10, 0))
    assert sum(len(s) for s in idx.splits.values()) > 0
    with pytest.raises(download.DownloadError, match="not a readable"):
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(b"garbage")
        download.unpack(str(bad), str(tmp_path / "x"))
