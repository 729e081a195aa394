"""pipeline.download verifies archives (issue 15, point 4): SHA-256 against the official digest
before an archive is unpacked, a mismatch is an error and the archive is not used, and an
archive without a published digest is recorded on first use and checked against that later.

Downloads come from a local mirror through a file:// --base_url (urllib fetches it like
https), holding small fake archives under the official names; the official digests are
monkeypatched to the fakes' (or to wrong ones).
"""
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from pipeline import download as dl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, TEST = dl.ARCHIVES["v0.02"]


def fake_archive(path, word="yes", payload=b"RIFF fake clip"):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"{word}/0000_nohash_0.wav")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A file:// mirror with fake v0.02 archives; official digests = the fakes'."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    digests = {TRAIN: fake_archive(folder / TRAIN, "yes"),
               TEST: fake_archive(folder / TEST, "no")}
    monkeypatch.setattr(dl, "OFFICIAL_SHA256", dict(digests))
    monkeypatch.setattr(dl, "OFFICIAL_SIZE", {})
    return folder.as_uri() + "/", digests


def test_verified_download_is_unpacked(mirror, tmp_path):
    base_url, _ = mirror
    out = tmp_path / "data"
    made = dl.download("v0.02", str(out), base_url)
    assert [os.path.basename(m) for m in made] == [TRAIN[:-7], TEST[:-7]]
    assert (out / TRAIN[:-7] / "yes" / "0000_nohash_0.wav").exists()
    assert (out / TEST[:-7] / "no" / "0000_nohash_0.wav").exists()
    assert not (out / dl.RECORD).exists()  # official digests: nothing to record
    assert not [p for p in os.listdir(out) if p.endswith(".part")]


def test_mismatching_download_is_refused_and_removed(mirror, tmp_path, monkeypatch):
    base_url, digests = mirror
    monkeypatch.setitem(dl.OFFICIAL_SHA256, TRAIN, "0" * 64)
    out = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match=rf"SHA-256 {digests[TRAIN]} differs from the "
                                               rf"official digest of {TRAIN}.*was not used"):
        dl.download("v0.02", str(out), base_url)
    assert os.listdir(out) == []  # neither the archive (nor its .part) nor an unpacked folder


def test_archive_already_there_is_checked_before_unpacking(mirror, tmp_path):
    base_url, digests = mirror
    out = tmp_path / "data"
    out.mkdir()
    fake_archive(out / TRAIN, "other")  # an archive copied here by hand, not the official one
    with pytest.raises(dl.DownloadError, match="differs from the official digest"):
        dl.download("v0.02", str(out), base_url, test_set=False)
    assert sorted(os.listdir(out)) == [TRAIN]  # kept for the user to look at, not unpacked


def test_size_is_checked_first(mirror, tmp_path, monkeypatch):
    base_url, _ = mirror
    monkeypatch.setattr(dl, "OFFICIAL_SIZE", {TRAIN: 2_428_923_189})
    with pytest.raises(dl.DownloadError, match=r"has \d+ bytes, the official .* 2,428,923,189"):
        dl.download("v0.02", str(tmp_path / "data"), base_url, test_set=False)


def test_without_official_digest_first_use_is_recorded_then_checked(mirror, tmp_path,
                                                                    monkeypatch, caplog):
    base_url, digests = mirror
    monkeypatch.setattr(dl, "OFFICIAL_SHA256", {})  # as the v0.01 test set
    out = tmp_path / "data"
    dl.download("v0.02", str(out), base_url, test_set=False)
    record = (out / dl.RECORD).read_text()
    assert record == f"{digests[TRAIN]}  {TRAIN}\n"  # sha256sum's format
    assert "not verified (trust on first use)" in caplog.text
    check = subprocess.run(["sha256sum", "-c", dl.RECORD], cwd=out, capture_output=True,
                           text=True)
    assert check.returncode == 0 and f"{TRAIN}: OK" in check.stdout
    # later: the unpacked folder is gone, the kept archive was altered -> refused
    shutil.rmtree(out / TRAIN[:-7])
    fake_archive(out / TRAIN, "tampered")
    with pytest.raises(dl.DownloadError, match=r"differs from the recorded \(.*SHA256SUMS\) "
                                               "digest"):
        dl.download("v0.02", str(out), base_url, test_set=False)
    assert not (out / TRAIN[:-7]).exists()


def test_cli_refuses_a_foreign_archive_under_an_official_name(tmp_path):
    """--archive: a file named like the official v0.02 archive, checked against the real
    official digest: exit 2, one line, nothing unpacked."""
    archive = tmp_path / TRAIN
    fake_archive(archive)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline.download", "--archive", str(archive),
                           "--out_dir", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "the official" in proc.stderr and "was not used" in proc.stderr
    assert not out.exists() or os.listdir(out) == []
