"""pipeline.synth: a tiny espeak-ng corpus in the exact Speech Commands layout."""
import os
import re
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest

from pipeline import synth
from pipeline.splits import which_set

MISSING = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
needs_tools = pytest.mark.skipif(
    bool(MISSING), reason=f"{' and '.join(MISSING)} not installed: run `make setup`")

WORDS = ["yes", "no", "backward"]
KW = dict(words=WORDS, speakers=4, seed=7, noise_seconds=2.0, jobs=2, progress=False)


def _read(path):
    with wave.open(path, "rb") as w:
        fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype())
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return fmt, w.getnframes(), x


def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth") / "corpus")
    return out, synth.build_corpus(out, **KW)


def test_plan_is_pure_and_prefix_stable():
    # Speaker i depends only on (seed, i); ids are 8 hex digits; the intended split holds.
    voices = list(synth.VOICES)
    a, b = synth.make_speakers(3, 1, voices), synth.make_speakers(12, 1, voices)
    assert a == b[:3]
    assert all(re.fullmatch(r"[0-9a-f]{8}", s["id"]) for s in b)
    assert [which_set(s["id"] + "_nohash_0.wav") for s in b[:3]] == ["training", "validation", "testing"]
    assert synth.make_speakers(3, 2, voices) != a
    # The babble never says a keyword.
    for s in synth.babble_sentences(synth.DEFAULT_WORDS):
        assert not set(re.findall(r"[a-z']+", s.lower())) & set(synth.DEFAULT_WORDS), s


@needs_tools
def test_layout_format_and_lists(corpus):
    out, summary = corpus
    assert not summary["skipped"]
    assert sorted(os.listdir(out)) == sorted(WORDS + [
        "_background_noise_", "README.md", "synth_manifest.json",
        "testing_list.txt", "validation_list.txt"])
    clips = sorted(f"{w}/{n}" for w in WORDS for n in os.listdir(os.path.join(out, w)))
    assert clips == sorted(summary["files"]) and len(clips) == summary["clips"]
    speakers = {s["id"] for s in summary["speakers"]}
    assert len(speakers) == 4
    for w in WORDS:  # every speaker says every word once or twice
        names = os.listdir(os.path.join(out, w))
        assert {synth_id(n) for n in names} == speakers
        assert all(re.fullmatch(r"[0-9a-f]{8}_nohash_[01]\.wav", n) for n in names)
    for rel in clips:
        fmt, frames, x = _read(os.path.join(out, rel))
        assert fmt == (16000, 1, 2, "NONE") and frames == 16000, rel
        peak = np.abs(x.astype(np.int32)).max()
        assert 32767 * 10 ** (-21 / 20) < peak <= 32767, rel  # -20..-1 dBFS speech
        assert np.count_nonzero(x) > 15000, rel  # noise floor: never digital silence
        # Speech is much louder than the quietest tenth of the second (the gap around the word).
        env = np.sqrt(np.mean(x.astype(float).reshape(100, 160) ** 2, axis=1))
        assert env.max() > 20 * env.min(), rel

    noise = sorted(os.listdir(os.path.join(out, "_background_noise_")))
    assert noise == sorted(list(synth.NOISE_FILES) + ["README.md"])
    for n in synth.NOISE_FILES:
        fmt, frames, x = _read(os.path.join(out, "_background_noise_", n))
        assert fmt == (16000, 1, 2, "NONE") and frames == 32000, n
        assert x.std() > 300, n

    listed = {}
    for split in ("validation", "testing"):
        with open(os.path.join(out, f"{split}_list.txt")) as f:
            lines = f.read().splitlines()
        assert lines == sorted(lines) and lines, split
        for line in lines:
            assert os.path.isfile(os.path.join(out, line)), line
            listed[line] = split
    for rel in clips:
        assert listed.get(rel, "training") == which_set(rel, 10, 10), rel
    assert summary["per_split"] == {
        k: sum(1 for r in clips if which_set(r) == k) for k in ("training", "validation", "testing")}
    with open(os.path.join(out, "README.md")) as f:
        readme = f.read()
    assert "--seed 7" in readme and all(s in readme for s in speakers)


def synth_id(name):
    return name.split("_nohash_")[0]


@needs_tools
def test_deterministic_and_noop_rerun(corpus, tmp_path):
    out, summary = corpus
    other = str(tmp_path / "again")
    again = synth.build_corpus(other, **dict(KW, jobs=1))  # other job count, same bytes
    a, b = _files(out), _files(other)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a if k.endswith(".wav"))
    assert again["per_word"] == summary["per_word"]

    stamp = os.path.getmtime(os.path.join(other, "yes", sorted(os.listdir(os.path.join(other, "yes")))[0]))
    rerun = synth.build_corpus(other, **KW)
    assert rerun["skipped"] and rerun["seconds"] < 5
    assert _files(other) == b
    assert os.path.getmtime(os.path.join(other, "yes", sorted(os.listdir(os.path.join(other, "yes")))[0])) == stamp

    # A deleted clip is noticed and remade, identical.
    victim = summary["files"][0]
    os.remove(os.path.join(other, victim))
    resumed = synth.build_corpus(other, **KW)
    assert not resumed["skipped"] and _files(other)[victim] == a[victim]

    # Different flags on a previous synth corpus: replaced, old word folders gone.
    changed = synth.build_corpus(other, **dict(KW, words=["go"], speakers=3))
    assert sorted(os.listdir(other)) == sorted(["go", "_background_noise_", "README.md",
                                                "synth_manifest.json", "testing_list.txt",
                                                "validation_list.txt"])
    assert changed["clips"] == len(os.listdir(os.path.join(other, "go")))


@needs_tools
def test_refuses_foreign_directory(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(synth.SynthError, match="--overwrite"):
        synth.build_corpus(str(foreign), **dict(KW, words=["up"], speakers=1))
    assert os.listdir(foreign) == ["precious.txt"]
    with pytest.raises(synth.SynthError, match="not a directory"):
        synth.build_corpus(str(foreign / "precious.txt"), **dict(KW, words=["up"], speakers=1))
    done = synth.build_corpus(str(foreign), **dict(KW, words=["up"], speakers=1), overwrite=True)
    assert done["clips"] >= 1 and not (foreign / "precious.txt").exists()


@needs_tools
def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "pipeline.synth", "--out_dir", str(out), "--words", "on,off",
           "--speakers", "2", "--noise_seconds", "1", "--jobs", "1"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "clips" in run.stdout and (out / "on").is_dir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x").write_text("x")
    cmd[cmd.index(str(out))] = str(tmp_path / "foreign")
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "--overwrite" in run.stderr


def test_missing_tools_message(monkeypatch):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(synth.SynthError, match="make setup"):
        synth.check_tools()
