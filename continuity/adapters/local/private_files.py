"""Owner-only files on local disk (keys, users, local secrets), written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, text: str, *, private_dir: bool = False) -> None:
    """Replace ``path`` with ``text`` atomically, mode 600; with ``private_dir`` its directory becomes 700.

    A reader never sees a half-written file, and a failed write leaves no temporary file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_dir:
        os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
