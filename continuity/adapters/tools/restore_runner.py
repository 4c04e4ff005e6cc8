"""Getting a dump from blob storage into the sandbox: stream-and-hash to a temp file, list, restore.

The dump is streamed chunk by chunk to a temporary file while its sha256 is computed, so a large
dump never sits in memory and is read from storage once. ``pg_restore --jobs`` needs a seekable file,
which is why it is a file and not a pipe. Every subprocess runs under a deadline and, when it
overruns, is killed with its whole process group (``--jobs`` forks workers).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuity.adapters.local.processes import spawn
from continuity.adapters.postgres.connection import libpq_env
from continuity.adapters.tools import pgbin
from continuity.catalog.manifest import BACKUP_ID_RE, MANIFEST_FILE, BackupRef, Manifest
from continuity.kernel.errors import BackupCorrupted, BackupNotFound
from continuity.validation.toc import finished_item

logger = logging.getLogger(__name__)

# Options for a throwaway restore: nothing in the sandbox needs the production roles, grants,
# comments or publications; skipping them removes whole classes of irrelevant errors. The sandbox
# cluster itself runs with fsync/full_page_writes off and wal_level=minimal (local_stack.py).
RESTORE_OPTIONS = (
    "--no-owner", "--no-privileges", "--no-tablespaces", "--no-security-labels", "--no-publications",
    "--no-subscriptions", "--exit-on-error",
)
# The same selection written as a script, to read what the restore would run (no --exit-on-error:
# there is no server; no --jobs: a script is written serially).
SCRIPT_OPTIONS = tuple(o for o in RESTORE_OPTIONS if o != "--exit-on-error")
# Per-session settings for the restore's connections: commit without waiting for WAL flush, build
# indexes with plenty of memory, and let one index build use the other core.
RESTORE_PGOPTIONS = ("-c synchronous_commit=off -c maintenance_work_mem=512MB -c work_mem=64MB "
                     "-c max_parallel_maintenance_workers=1 -c statement_timeout=0")
CHUNK_LOG_EVERY = 256 * 1024 * 1024


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str
    size: int
    seconds: float

    def discard(self) -> None:
        """Delete the downloaded file (a no-op when already gone): tenant data must not outlive the run."""
        self.path.unlink(missing_ok=True)


def download_with_hash(chunks: Iterable[bytes], directory: Path | None = None) -> Download:
    """Write ``chunks`` to a new temp file while hashing them; the caller deletes the file."""
    started = time.monotonic()
    digest = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(prefix="continuity-restore-", suffix=".dump", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Download(Path(name), digest.hexdigest(), size, time.monotonic() - started)


@dataclass(frozen=True)
class ProcessOutcome:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    errors: list[str] = field(default_factory=list)


def _run(args: list[str], deadline_s: float, env: dict[str, str],
         on_stderr_line: Callable[[str], None] | None = None) -> ProcessOutcome:
    """Run a subprocess in its own process group; kill the group when the deadline passes.

    Output is decoded with replacement: a dump is untrusted input, and a name or definition with
    invalid UTF-8 in it must become a reported problem, never a ``UnicodeDecodeError``.

    :param on_stderr_line: called with each line of standard error as it is written (``pg_restore
        --verbose`` progress); the outcome's ``stderr`` then keeps only what is not progress.
    """
    if on_stderr_line is not None:
        return _run_watching(args, deadline_s, env, on_stderr_line)
    started = time.monotonic()
    proc = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                 errors="replace", env=env, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=deadline_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    return ProcessOutcome(proc.returncode, out or "", err or "", timed_out, time.monotonic() - started,
                          _errors(err or ""))


def _errors(stderr: str) -> list[str]:
    return [line.removeprefix("pg_restore: error: ").strip() for line in stderr.splitlines()
            if line.startswith("pg_restore: error:")]


# What ``pg_restore --verbose`` says about its progress (pg_backup_archiver.c): not kept in the outcome.
_PROGRESS = ("pg_restore: processing ", "pg_restore: launching ", "pg_restore: finished ", "pg_restore: creating ",
             "pg_restore: connecting ", "pg_restore: executing ", "pg_restore: entering ", "pg_restore: setting ",
             "pg_restore: disabling ", "pg_restore: enabling ", "pg_restore: dropping ", "pg_restore: implied ")


def _run_watching(args: list[str], deadline_s: float, env: dict[str, str],
                  on_line: Callable[[str], None]) -> ProcessOutcome:
    """:func:`_run`, reading standard error line by line as it comes (a thread; stdout is not kept)."""
    started = time.monotonic()
    proc = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                 errors="replace", env=env, stdin=subprocess.DEVNULL)
    kept: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            if not line.startswith(_PROGRESS):
                kept.append(line)
            try:
                on_line(line)
            except Exception:  # a listener's failure must never stop the restore or lose its errors
                logger.exception("restore progress listener failed")

    reader = threading.Thread(target=read, name="pg_restore-stderr", daemon=True)
    reader.start()
    try:
        proc.wait(timeout=deadline_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        timed_out = True
    reader.join()
    err = "\n".join(kept)
    return ProcessOutcome(proc.returncode, "", err, timed_out, time.monotonic() - started, _errors(err))


# The entries whose SQL is not read before the restore: pg_restore writes their COPY statement (and any
# definition) followed by the rows, so reading them means decompressing all data twice. A forged COPY
# statement or definition there is not seen by the text rules; it is stopped by the restore role, which
# cannot run programs or touch server files (continuity.adapters.postgres.sandbox).
_DATA_KINDS = ("TABLE DATA", "MATERIALIZED VIEW DATA", "BLOBS", "BLOB", "LARGE OBJECT")


@dataclass(frozen=True)
class ArchiveListing:
    """What ``pg_restore`` says an archive holds, read before anything is restored.

    ``lines`` is the ``--list`` output; ``definitions`` the SQL pg_restore would run for every
    entry except table data (``--file=-`` of a list without them), with the restore's own options.
    """

    ok: bool
    toc_entries: int
    error: str
    seconds: float
    lines: tuple[str, ...] = ()
    definitions: str = ""


def _is_data_entry(line: str) -> bool:
    # ``ID; OID OID DESC ...``: the kind follows the third space-separated field.
    parts = line.split(" ", 3)
    return len(parts) == 4 and any(parts[3] == k or parts[3].startswith(k + " ") for k in _DATA_KINDS)


def list_archive(dump: Path, deadline_s: float = 120) -> ArchiveListing:
    """``pg_restore --list``, then the SQL of every non-data entry: is the archive readable, and what would it run.

    The archive header and entries come back as text (decoded with replacement); deciding whether
    they may be restored is :mod:`continuity.validation.toc`'s job.
    """
    outcome = _run([pgbin.tool("pg_restore"), "--list", str(dump)], deadline_s, libpq_env())
    if outcome.timed_out:
        return ArchiveListing(False, 0, f"pg_restore --list did not finish within {deadline_s:.0f}s", outcome.seconds)
    lines = tuple(outcome.stdout.splitlines())
    entries = sum(1 for line in lines if line and not line.startswith(";"))
    if outcome.returncode != 0:
        error = (outcome.stderr.strip().splitlines() or [""])[-1]
        return ArchiveListing(False, entries, error, outcome.seconds, lines)
    fd, list_name = tempfile.mkstemp(prefix="continuity-toc-", suffix=".list")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for line in lines:
                if line and not line.startswith(";") and not _is_data_entry(line):
                    out.write(line + "\n")
        script = _run([pgbin.tool("pg_restore"), *SCRIPT_OPTIONS, f"--use-list={list_name}", "--file=-", str(dump)],
                      deadline_s, libpq_env())
    finally:
        Path(list_name).unlink(missing_ok=True)
    seconds = outcome.seconds + script.seconds
    if script.timed_out or script.returncode != 0:
        why = (f"did not finish within {deadline_s:.0f}s" if script.timed_out
               else (script.stderr.strip().splitlines() or [f"exit code {script.returncode}"])[-1])
        return ArchiveListing(False, entries, f"pg_restore cannot write the archive's definitions: {why}", seconds,
                              lines)
    return ArchiveListing(True, entries, "", seconds, lines, script.stdout)


def on_finished_items(on_finished: Callable[[int, str], None] | None) -> Callable[[str], None] | None:
    """A stderr listener calling ``on_finished`` with the dump id and ``KIND TAG`` of every entry
    ``pg_restore --verbose`` reports finished (parallel restore), or None without a listener."""
    if on_finished is None:
        return None
    callback = on_finished

    def listen(line: str) -> None:
        found = finished_item(line)
        if found is not None:
            callback(*found)
    return listen


def restore_args(options: Sequence[str], dump: Path, target_dsn: str, jobs: int, verbose: bool) -> list[str]:
    return [pgbin.tool("pg_restore"), *options, *(["--verbose"] if verbose else []), f"--jobs={max(1, jobs)}",
            f"--dbname={target_dsn}", str(dump)]


def restore(dump: Path, target_dsn: str, jobs: int = 2, deadline_s: float = 3600,
            on_finished: Callable[[int, str], None] | None = None) -> ProcessOutcome:
    """``pg_restore --jobs`` of ``dump`` into the (empty) database of ``target_dsn`` under a deadline.

    :param on_finished: told the dump id and ``KIND TAG`` of each entry as pg_restore finishes it (``--verbose``),
        so that checks read a table as soon as its rows are in (:class:`continuity.validation.toc.LoadProgress`).
    """
    env = libpq_env()
    env["PGOPTIONS"] = RESTORE_PGOPTIONS
    args = restore_args(RESTORE_OPTIONS, dump, target_dsn, jobs, on_finished is not None)
    outcome = _run(args, deadline_s, env, on_finished_items(on_finished))
    logger.info("pg_restore finished", extra={"returncode": outcome.returncode, "seconds": round(outcome.seconds, 2),
                                              "errors": len(outcome.errors), "timed_out": outcome.timed_out})
    return outcome


class StorageBackupSource:
    """Backups as storage holds them: ``{tenant}/{yyyy}/{mm}/{dd}/{backup_id}/manifest.json`` + ``db.dump``.

    Storage is the truth (the catalog is rebuilt from it), so the validation reads manifests directly.
    """

    def __init__(self, blobs: Any, container: str | None = None) -> None:
        from continuity.kernel import settings

        self.blobs = blobs
        self.container = container or settings.get("CONTINUITY_BACKUP_CONTAINER")

    def _manifests(self, tenant_id: str) -> dict[str, str]:
        """backup id -> manifest blob name, for one tenant."""
        found: dict[str, str] = {}
        for name in self.blobs.list_names(self.container, prefix=f"{tenant_id}/"):
            parts = name.split("/")
            if len(parts) == 6 and parts[5] == MANIFEST_FILE and BACKUP_ID_RE.match(parts[4]):
                found[parts[4]] = name
        return found

    def _ref(self, tenant_id: str, backup_id: str, manifest_blob: str) -> Any:
        from pydantic import ValidationError

        raw = self.blobs.download(self.container, manifest_blob)
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BackupCorrupted(f"manifest {manifest_blob} is invalid: field {where}: {first['msg']}; "
                                  "the backup cannot be validated") from exc
        return BackupRef(tenant=tenant_id, backup_id=backup_id, container=self.container,
                         prefix=manifest_blob.removesuffix(MANIFEST_FILE), manifest=manifest)

    def newest_backup_id(self, tenant_id: str) -> str:
        """:raises BackupNotFound: the tenant has no backup with a manifest."""
        manifests = self._manifests(tenant_id)
        if not manifests:
            raise BackupNotFound(f"tenant {tenant_id} has no backup with a manifest in container "
                                 f"{self.container!r}; run `continuity backup {tenant_id}` first")
        return max(manifests)  # backup ids start with their UTC timestamp

    def manifest_blob(self, tenant_id: str, backup_id: str) -> str:
        """The manifest's blob name. :raises BackupNotFound: no such backup (or no manifest for it)."""
        if not BACKUP_ID_RE.match(backup_id):
            raise BackupNotFound(f"{backup_id!r} is not a backup id (YYYYMMDDTHHMMSSZ-xxxxxx)")
        manifests = self._manifests(tenant_id)
        if backup_id not in manifests:
            raise BackupNotFound(f"tenant {tenant_id} has no backup {backup_id} with a manifest; "
                                 f"`continuity catalog list` shows what it has")
        return manifests[backup_id]

    def read_manifest(self, name: str) -> bytes:
        data: bytes = self.blobs.download(self.container, name)
        return data

    def latest_backup(self, tenant_id: str) -> Any:
        return self.get_backup(tenant_id, self.newest_backup_id(tenant_id))

    def get_backup(self, tenant_id: str, backup_id: str) -> Any:
        return self._ref(tenant_id, backup_id, self.manifest_blob(tenant_id, backup_id))

    def dump_chunks(self, ref: Any) -> Iterable[bytes]:
        return self.blobs.iter_chunks(ref.container, ref.dump_blob)
