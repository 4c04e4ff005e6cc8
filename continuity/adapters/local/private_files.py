"""Owner-only files on local disk (keys, users, local secrets), written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _staged(path: Path, text: str, private_dir: bool) -> str:
    """``text`` in a new mode-600 temporary file beside ``path`` (its directory created, 700 if asked); its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_dir:
        os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_private(path: Path, text: str, *, private_dir: bool = False) -> None:
    """Replace ``path`` with ``text`` atomically, mode 600; with ``private_dir`` its directory becomes 700.

    A reader never sees a half-written file, and a failed write leaves no temporary file behind.
    """
    tmp = _staged(path, text, private_dir)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_private(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` (mode 600, directory 700) unless it exists; True when this call created it.

    Exclusive and atomic: the text is written to a temporary file that is then hard-linked into place, which
    fails if another process created ``path`` first. So two processes that race to create a key both end
    up reading the same one, and nobody ever reads a half-written file.
    """
    tmp = _staged(path, text, private_dir=True)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)
