"""Get the real Speech Commands data: the official archives, or TFDS as another source.

Reads: the archives from --base_url (or a local --archive), or TFDS.
Writes: Speech Commands folders into --out_dir (the archives are kept next to them); what was
  written (--json_out).

    python -m pipeline.download --version v0.02 --out_dir data/       # train archive + test set
    python -m pipeline.download --source tfds --out_dir data/tfds_v2  # TFDS, written as a folder

Both end as folders in the Speech Commands layout, read by the same reader
(pipeline/speech_commands.py). Without network access the command stops with a message saying
what it tried and how to proceed (copy the archives by hand and pass --archive).

Every archive is checked before it is unpacked: its SHA-256 against the official digest
(``OFFICIAL_SHA256``: v0.01, v0.02 and the v0.02 test set, from TFDS's and torchaudio's
registries of the same files), a mismatch stops with an error and the archive is not used (a
download is deleted). The v0.01 test set has no published digest: its SHA-256 is recorded on
first use in ``SHA256SUMS`` next to the archive, and later runs are checked against it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request

from absl import app, flags, logging

from pipeline import cli, cli_vocabulary, output_paths

BASE_URL = "https://storage.googleapis.com/download.tensorflow.org/data/"
ARCHIVES = {
    "v0.01": ("speech_commands_v0.01.tar.gz", "speech_commands_test_set_v0.01.tar.gz"),
    "v0.02": ("speech_commands_v0.02.tar.gz", "speech_commands_test_set_v0.02.tar.gz"),
}


#: SHA-256 of the official archives (the files at BASE_URL), from public registries of the same
#: files: TensorFlow Datasets (tensorflow_datasets/url_checksums/speech_commands.txt: v0.02 and
#: its test set, with their sizes) and torchaudio (torchaudio/datasets/speechcommands.py, whose
#: table has v0.01 and the same v0.02 digest). No published digest was found for
#: speech_commands_test_set_v0.01.tar.gz: its digest is recorded on first download instead
#: (``RECORD``, trust on first use) and later runs are checked against that.
OFFICIAL_SHA256 = {
    "speech_commands_v0.01.tar.gz":
        "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    "speech_commands_v0.02.tar.gz":
        "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    "speech_commands_test_set_v0.02.tar.gz":
        "cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfa9acd51df",
}
OFFICIAL_SIZE = {"speech_commands_v0.02.tar.gz": 2_428_923_189,
                 "speech_commands_test_set_v0.02.tar.gz": 112_563_277}
#: digests recorded on first use, in the archive's folder, in sha256sum's format
#: ("<hex>  <file name>" lines: ``sha256sum -c SHA256SUMS`` checks them too)
RECORD = "SHA256SUMS"


class DownloadError(RuntimeError):
    pass


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _recorded(folder: str) -> dict:
    path = os.path.join(folder, RECORD)
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            digest, _, name = line.strip().partition("  ")
            if len(digest) == 64 and name:
                out[name.lstrip("*")] = digest.lower()
    return out


def verify_archive(path: str, name: str = None, digest: str = None) -> str:
    """Check an archive's SHA-256 before it is used; return the digest.

    ``name`` (default: the file's own name) picks the expected digest: the official one
    (``OFFICIAL_SHA256``), else one recorded earlier in ``RECORD`` next to the archive. A
    mismatch raises DownloadError (the caller does not unpack it). Without either, the digest
    is recorded there (first use) and a warning says the archive could not be verified.
    ``digest``: already computed (while downloading)."""
    name = name or os.path.basename(path)
    folder = os.path.dirname(os.path.abspath(path))
    size = os.path.getsize(path)
    if name in OFFICIAL_SIZE and size != OFFICIAL_SIZE[name]:
        raise DownloadError(
            f"{path} has {size:,} bytes, the official {name} has {OFFICIAL_SIZE[name]:,} "
            "(truncated or another file); it was not used: delete it and download again")
    digest = digest or sha256_of(path)
    official = OFFICIAL_SHA256.get(name)
    expected, source = (official, "official") if official else \
        (_recorded(folder).get(name), f"recorded ({os.path.join(folder, RECORD)})")
    if expected is None:
        try:
            with open(os.path.join(folder, RECORD), "a") as f:
                f.write(f"{digest}  {name}\n")
            where = f"recorded in {os.path.join(folder, RECORD)}; later runs are checked " \
                    "against it"
        except OSError as e:
            where = f"could not record it ({e})"
        logging.warning("no published SHA-256 for %s: not verified (trust on first use); its "
                        "SHA-256 %s is %s", name, digest, where)
    elif digest != expected:
        raise DownloadError(
            f"{path}: SHA-256 {digest} differs from the {source} digest of {name}, {expected}: "
            "the archive is damaged or not the official file and was not used; expected the "
            "official archive (delete this one and download again)")
    else:
        logging.info("%s: SHA-256 matches the %s digest", name, source)
    return digest


def _fetch(url: str, dest: str):
    """Download ``url`` to ``dest`` through ``dest.part``, hashing on the way; the file gets its
    final name only once its digest is verified (``verify_archive``): a damaged or foreign
    download is deleted, never left where a later run would take it."""
    from tqdm import tqdm
    hasher = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(dest + ".part", "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url)) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        if os.path.exists(dest + ".part"):
            os.remove(dest + ".part")
        raise DownloadError(
            f"could not download {url} ({getattr(e, 'reason', e)}). This machine may have no "
            "internet access: download the archive elsewhere, copy it here and run "
            "`python -m pipeline.download --archive FILE.tar.gz --out_dir DIR`, or point "
            "--data_dir at an unpacked Speech Commands folder.") from e
    try:
        verify_archive(dest + ".part", os.path.basename(dest), hasher.hexdigest())
    except DownloadError:
        os.remove(dest + ".part")
        raise
    os.replace(dest + ".part", dest)


def unpack(archive: str, out_dir: str, verify: bool = True) -> str:
    """Unpack a .tar.gz into ``out_dir`` (refusing paths that escape it); return ``out_dir``.
    ``verify``: check its SHA-256 first (``verify_archive``; an archive under another name
    than the official ones is recorded, not verified)."""
    if not os.path.exists(archive):
        raise DownloadError(f"archive {archive} does not exist")
    if verify:
        verify_archive(archive)
    os.makedirs(out_dir, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(out_dir, filter="data")
    except (tarfile.TarError, EOFError) as e:
        raise DownloadError(f"{archive} is not a readable .tar.gz archive ({e})") from e
    return out_dir


def download(version: str, out_dir: str, base_url: str = BASE_URL, test_set: bool = True):
    """Download and unpack one version (and its official test set) under ``out_dir``."""
    if version not in ARCHIVES:
        raise DownloadError(f"unknown version {version!r}: expected one of {sorted(ARCHIVES)}")
    made = []
    names = ARCHIVES[version] if test_set else ARCHIVES[version][:1]
    for name in names:
        target = os.path.join(out_dir, name.replace(".tar.gz", ""))
        if os.path.isdir(target) and os.listdir(target):
            logging.info("%s exists, skipping", target)
            made.append(target)
            continue
        os.makedirs(out_dir, exist_ok=True)
        archive = os.path.join(out_dir, name)
        if os.path.exists(archive):  # from an earlier run, or copied here: checked first
            verify_archive(archive)
        else:
            _fetch(base_url + name, archive)  # verified before it gets its name
        made.append(unpack(archive, target, verify=False))
    return made


def from_tfds(out_dir: str, name: str = "speech_commands"):
    """Write the TFDS ``speech_commands`` splits as a Speech Commands folder (with list files)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DownloadError(
            "the TFDS source needs tensorflow-datasets, which is not in requirements.txt (its "
            "current releases want protobuf >= 5, TensorFlow 2.16 wants 4.x): install a release "
            "compatible with your TensorFlow in the venv to use it") from e
    import numpy as np
    import wave
    builder = tfds.builder(name)
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001  (TFDS raises many types for a failed download)
        raise DownloadError(f"TFDS could not prepare {name}: {e}") from e
    labels = builder.info.features["label"].names
    lists = {"validation": [], "test": []}
    for split in ("train", "validation", "test"):
        for i, ex in enumerate(tfds.as_numpy(builder.as_dataset(split=split))):
            word = labels[int(ex["label"])]
            rel = f"{word}/tfds{split[:2]}{i:07d}_nohash_0.wav"
            os.makedirs(os.path.join(out_dir, word), exist_ok=True)
            with wave.open(os.path.join(out_dir, rel), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
                w.writeframes(np.asarray(ex["audio"], np.int16).tobytes())
            if split in lists:
                lists[split].append(rel)
    for split, fname in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        with open(os.path.join(out_dir, fname), "w") as f:
            f.write("\n".join(lists[split]) + "\n")
    return out_dir


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_enum("version", "v0.02", sorted(ARCHIVES), "Data set version.")
    flags.DEFINE_enum("source", "archive", ["archive", "tfds"], "Where to get the data.")
    flags.DEFINE_string("out_dir", "data", "Folder to put the unpacked data sets in.")
    flags.DEFINE_string("archive", None, "Unpack this local .tar.gz instead of downloading.")
    flags.DEFINE_string("base_url", BASE_URL, "Mirror of the archives.")
    flags.DEFINE_bool("test_set", True, "Also get the official test set.")
    cli_vocabulary.define_aliases("pipeline.download")  # --out (old name of --out_dir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    output_paths.check_dir(FLAGS.out_dir, "--out_dir")
    if FLAGS.archive:
        written = [unpack(FLAGS.archive, FLAGS.out_dir)]
        print(f"unpacked {FLAGS.archive} into {written[0]}")
    elif FLAGS.source == "tfds":
        written = [from_tfds(FLAGS.out_dir)]
        print(f"wrote {written[0]}")
    else:
        written = download(FLAGS.version, FLAGS.out_dir, FLAGS.base_url, FLAGS.test_set)
        for d in written:
            print(f"ready: {d}")
    return {"out_dir": FLAGS.out_dir, "folders": written,  # --json_out
            "source": "archive" if FLAGS.archive else FLAGS.source,
            "archive": FLAGS.archive, "version": None if FLAGS.archive else FLAGS.version}


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(DownloadError,))
