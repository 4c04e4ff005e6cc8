"""Folders a run owns on this machine: a step's temporary files, and how a leftover is told from a stranger's.

A step that lands files (a downloaded dump) gets ``{tmp}/continuity-runs/{run}--{step}/``, created under a
temporary name, marked (``.continuity-run.json``: run id, step, creation time) and only then renamed into
place, so a folder under that name either carries its marker or is not ours. Opening it again after a
crash (an at-least-once redelivery of the same step) empties what the earlier attempt left; a folder of
that name without this run's marker is refused and left as it is. :func:`sweep_run_folders` removes what
a crashed run never came back for (marked folders older than the sweep age); unmarked ones are never
touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from continuity.kernel.errors import ContinuityError

logger = logging.getLogger(__name__)

MARKER_FILE = ".continuity-run.json"
ROOT_NAME = "continuity-runs"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class LeftoverNotOurs(ContinuityError):
    """A folder or database stands where a step would put its own, and it is not this run's: left untouched."""

    code = "leftover_not_ours"
    http_status = 409


@dataclass(frozen=True)
class RunMarker:
    run_id: str
    step: str
    created_at: datetime

    def names(self, run_id: str, step: str) -> bool:
        return self.run_id == run_id and self.step == step


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / ROOT_NAME


def folder_name(run_id: str, step: str) -> str:
    """A file-system-safe name for (run, step); the hash keeps two run ids that sanitise alike apart."""
    digest = hashlib.sha256(f"{run_id}\0{step}".encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', run_id)[:80]}--{_UNSAFE.sub('_', step)[:30]}--{digest}"


def read_marker(folder: Path) -> RunMarker | None:
    """The marker of ``folder``; None when it has none or it does not parse (then the folder is not ours)."""
    try:
        raw = json.loads((folder / MARKER_FILE).read_text())
        return RunMarker(str(raw["run_id"]), str(raw["step"]), datetime.fromisoformat(raw["created_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(folder: Path, run_id: str, step: str, now: datetime | None = None) -> None:
    at = (now or datetime.now(UTC)).astimezone(UTC)
    (folder / MARKER_FILE).write_text(json.dumps({"run_id": run_id, "step": step, "created_at": at.isoformat(),
                                                  "pid": os.getpid()}))


def claim(folder: Path, run_id: str, step: str) -> None:
    """Check that an existing ``folder`` is (run, step)'s own.

    :raises LeftoverNotOurs: it has no marker, or another run's or step's.
    """
    found = read_marker(folder)
    if found is None or not found.names(run_id, step):
        whose = "no marker" if found is None else f"the marker of run {found.run_id!r}, step {found.step!r}"
        raise LeftoverNotOurs(f"{folder} exists with {whose}, not run {run_id!r} step {step!r}: left untouched; "
                              "remove it yourself if it is a leftover, then retry")


def create_marked(folder: Path, run_id: str, step: str, now: datetime | None = None) -> Path:
    """Create ``folder`` with its marker already inside (made under a temporary name, then renamed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir(mode=0o700)
    try:
        write_marker(staging, run_id, step, now)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


@dataclass(frozen=True)
class RunFolder:
    """A step's private, empty folder; :meth:`remove` when the step ends (a no-op when gone)."""

    path: Path
    run_id: str
    step: str

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def open_run_folder(run_id: str, step: str, root: Path | None = None) -> RunFolder:
    """The step's folder, empty and marked. What an earlier attempt of the same run and step left in it is
    deleted; a folder of that name that is not theirs is refused.

    :raises LeftoverNotOurs: the folder exists and is not (run, step)'s.
    """
    path = (root or default_root()) / folder_name(run_id, step)
    if path.exists():
        claim(path, run_id, step)
        logger.warning("removing an earlier attempt's files", extra={"run_id": run_id, "step": step,
                                                                     "folder": str(path)})
        shutil.rmtree(path)
    create_marked(path, run_id, step)
    return RunFolder(path, run_id, step)


def sweep_run_folders(older_than_minutes: int, root: Path | None = None, now: datetime | None = None) -> list[str]:
    """Remove marked run folders older than ``older_than_minutes`` (a crashed run's files) and half-made ones
    (``.name.xxxx.tmp``) as old; returns the names removed. Folders without a marker are never touched."""
    base = root or default_root()
    cutoff = (now or datetime.now(UTC)) - timedelta(minutes=older_than_minutes)
    removed: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in base.iterdir():
            if not entry.is_dir() or entry.is_symlink():
                continue
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                try:
                    stale = datetime.fromtimestamp(entry.stat().st_mtime, UTC) < cutoff
                except OSError:
                    continue
            else:
                marker = read_marker(entry)
                stale = marker is not None and marker.created_at < cutoff
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    if removed:
        logger.warning("swept %d stale run folder(s)", len(removed), extra={"folders": removed})
    return removed
