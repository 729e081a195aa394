"""Get the real Speech Commands data: the official archives, or TFDS as another source.

    python -m pipeline.download --version v0.02 --out data/       # train archive + test set
    python -m pipeline.download --source tfds --out data/tfds_v2  # TFDS, written as a folder

Both end as folders in the Speech Commands layout, read by the same reader
(pipeline/speech_commands.py). Without network access the command stops with a message saying
what it tried and how to proceed (copy the archives by hand and pass --archive).
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request

from absl import app, flags, logging

from pipeline import cli, output_paths

BASE_URL = "https://storage.googleapis.com/download.tensorflow.org/data/"
ARCHIVES = {
    "v0.01": ("speech_commands_v0.01.tar.gz", "speech_commands_test_set_v0.01.tar.gz"),
    "v0.02": ("speech_commands_v0.02.tar.gz", "speech_commands_test_set_v0.02.tar.gz"),
}


class DownloadError(RuntimeError):
    pass


def _fetch(url: str, dest: str):
    from tqdm import tqdm
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(dest + ".part", "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url)) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        if os.path.exists(dest + ".part"):
            os.remove(dest + ".part")
        raise DownloadError(
            f"could not download {url} ({getattr(e, 'reason', e)}). This machine may have no "
            "internet access: download the archive elsewhere, copy it here and run "
            "`python -m pipeline.download --archive FILE.tar.gz --out DIR`, or point "
            "--data_dir at an unpacked Speech Commands folder.") from e
    os.replace(dest + ".part", dest)


def unpack(archive: str, out_dir: str) -> str:
    """Unpack a .tar.gz into ``out_dir`` (refusing paths that escape it); return ``out_dir``."""
    if not os.path.exists(archive):
        raise DownloadError(f"archive {archive} does not exist")
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
        if not os.path.exists(archive):
            _fetch(base_url + name, archive)
        made.append(unpack(archive, target))
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
    flags.DEFINE_string("out", "data", "Folder to put the unpacked data sets in.")
    flags.DEFINE_string("archive", None, "Unpack this local .tar.gz instead of downloading.")
    flags.DEFINE_string("base_url", BASE_URL, "Mirror of the archives.")
    flags.DEFINE_bool("test_set", True, "Also get the official test set.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    output_paths.check_dir(FLAGS.out, "--out")
    if FLAGS.archive:
        target = unpack(FLAGS.archive, FLAGS.out)
        print(f"unpacked {FLAGS.archive} into {target}")
    elif FLAGS.source == "tfds":
        print(f"wrote {from_tfds(FLAGS.out)}")
    else:
        for d in download(FLAGS.version, FLAGS.out, FLAGS.base_url, FLAGS.test_set):
            print(f"ready: {d}")


if __name__ == "__main__":
    cli.run(main, define=define_flags, errors=(DownloadError,))
