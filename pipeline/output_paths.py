"""Output paths checked before the work starts: a tool that cannot write its results says so at
once, naming the path, instead of failing after an hour of training or evaluation.

    output_paths.check_dir(FLAGS.out_dir, "--out_dir")     # a folder, or creatable as one
    output_paths.check_file(FLAGS.plot, "--plot")          # a file in such a folder

Nothing is created: the check walks up to the nearest path that exists and requires it to be a
folder this process may write into (``os.access``, which also reports a read-only file system;
root passes permission bits, as it would when writing). Failures raise ``OutputError`` (a
``cli.UserError``: one line, exit 2). A later write can still fail (disk full, a path made
meanwhile): ``cli.run`` reports that OSError in one line too.
"""
from __future__ import annotations

import os
from typing import Optional

from pipeline.cli import UserError


class OutputError(UserError):
    """An output path (--out_dir, --out, --plot, --json_out...) cannot be created or written."""


def _nearest_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _check_creatable(folder: str, flag: str, shown: str) -> None:
    """``folder`` exists as a writable folder or can be created (its nearest existing
    ancestor is a writable folder)."""
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise OutputError(f"{flag} {shown}: {existing} is a file, not a folder; expected a path "
                          "whose parents are folders")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {shown}: cannot write in {existing} (permission denied or "
                          "read-only file system); expected a folder this user can write to")


def check_dir(path: Optional[str], flag: str) -> None:
    """``path`` is a folder, or one can be created there; no-op for an empty ``path``."""
    if not path:
        return
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{flag} {path} is a file, not a folder; expected a folder or a new "
                          "path to create one at")
    _check_creatable(path, flag, path)


def check_file(path: Optional[str], flag: str) -> None:
    """``path`` can be written as a file: not a folder, not read-only, its folder creatable;
    no-op for an empty ``path``."""
    if not path:
        return
    if os.path.isdir(path):
        raise OutputError(f"{flag} {path} is a folder; expected a file name")
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {path} cannot be overwritten (permission denied or "
                          "read-only file system); expected a writable file")
    _check_creatable(os.path.dirname(os.path.abspath(path)), flag, path)
