"""Barman's cloud clients: WAL archiving, base backups and restores to and from Azure Blob.

We do not write our own archiver: ``barman-cloud-wal-archive`` (the cluster's ``archive_command``),
``barman-cloud-backup``, ``barman-cloud-backup-list``, ``barman-cloud-restore`` and
``barman-cloud-wal-restore`` (the rewound copy's ``restore_command``) are the tools CloudNativePG uses against
Azure Blob and Azurite. This adapter runs them, reads their JSON, and lists the archive's WAL segments.

The archive lives in one container (``CONTINUITY_WAL_CONTAINER``), one folder per server, in Barman's own
layout (``{server}/base/{backup_id}/...``, ``{server}/wals/{timeline+log}/{segment}.gz``): anyone with Barman
can restore it without this project.

Credentials: with a connection string (Azurite, or a key in Azure) it travels in the child's environment
only, never its arguments or our logs; without one, Barman authenticates with the managed identity
(``--azure-credential managed-identity``).

Which Python runs the tools: the cluster's ``archive_command`` runs as the PostgreSQL system user, who may not
reach the project's virtualenv (a private checkout, a pyenv under /root). :func:`tool_dir` then builds one
shared virtualenv from the same pinned requirements with the system Python, in a directory that user can
read, once per machine and pin set.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from continuity.adapters.local import processes
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError, StoreUnavailable, ToolMissing
from continuity.kernel.settings import PROJECT_ROOT
from continuity.pitr.rules import SEGMENT_RE, ArchivedSegment, BaseBackup

logger = logging.getLogger(__name__)

PROVIDER = ("--cloud-provider", "azure-blob-storage")
REQUIREMENTS = PROJECT_ROOT / "requirements-barman.txt"
TOOLS = ("barman-cloud-wal-archive", "barman-cloud-backup", "barman-cloud-backup-list", "barman-cloud-restore",
         "barman-cloud-wal-restore", "barman-cloud-check-wal-archive")

WAL_COMMAND_TIMEOUT_SECONDS = 60

Runner = Callable[[Sequence[str], dict[str, str], float], subprocess.CompletedProcess[str]]


class ArchiveError(ContinuityError):
    """A Barman cloud command failed; the message carries its last error line."""

    code = "archive_failed"


def _pins() -> str:
    return REQUIREMENTS.read_text() if REQUIREMENTS.exists() else ""


def _own_bin() -> Path:
    return Path(sys.executable).parent


def shared_tool_dir() -> Path:
    """The machine-wide virtualenv for the pinned Barman, readable by the PostgreSQL system user."""
    digest = hashlib.sha256(_pins().encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"continuity-barman-{digest}"  # noqa: S108 - must be reachable by the pg user


def tool_dir(reachable: Callable[[Path], bool] | None = None) -> Path:
    """Where ``barman-cloud-*`` live for commands run as the cluster user (``reachable`` probes a bin dir as
    that user). The project's own virtualenv when that user can run it, else the shared one, built once."""
    configured = settings.get("CONTINUITY_BARMAN_BIN")
    if configured:
        return Path(configured)
    own = _own_bin()
    if (own / TOOLS[0]).exists() and (reachable is None or reachable(own)):
        return own
    shared = shared_tool_dir()
    if (shared / "bin" / TOOLS[0]).exists() and (shared / ".complete").exists():
        return shared / "bin"
    return _build_shared(shared)


def _system_python() -> str:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(candidate).exists():
            return candidate
    raise ToolMissing("no system python3 to build the archiver's virtualenv with (apt-get install python3-venv)")


def _build_shared(target: Path) -> Path:
    lock_path = Path(str(target) + ".lock")
    with open(lock_path, "w") as lock:  # noqa: PTH123 - an fcntl lock needs the file object
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target / "bin"
        # venv scripts name their interpreter by absolute path: build in place; readers wait for .complete.
        shutil.rmtree(target, ignore_errors=True)
        logger.info("building the archiver's virtualenv", extra={"path": str(target)})
        for args in ([_system_python(), "-m", "venv", str(target)],
                     [str(target / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                      "-r", str(REQUIREMENTS)]):
            result = processes.run(args, text=True, timeout=900, stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise ToolMissing(f"could not build the archiver's virtualenv ({Path(args[0]).name}): "
                                  f"{(result.stderr or result.stdout).strip()[-600:]}")
        os.chmod(target, 0o755)  # noqa: S103 - the PostgreSQL system user runs these tools
        (target / ".complete").write_text(_pins())
        return target / "bin"


def archive_url(connection_string: str, container: str) -> str:
    """The URL Barman takes: Azurite's path-style ``http://host:port/account/container`` or Azure's
    ``https://account.blob.core.windows.net/container``."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    endpoint = parts.get("BlobEndpoint")
    if endpoint:
        return endpoint.rstrip("/") + "/" + container
    account = parts.get("AccountName")
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    if not account:
        raise ArchiveError("the storage connection string names no account or blob endpoint")
    return f"https://{account}.blob.{suffix}/{container}"


def _last_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (result.stderr or result.stdout or "").strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "FATAL" in ln]
    return (errors or lines or [f"exit status {result.returncode}"])[-1][-400:]


class BarmanCloud:
    """The WAL archive of the servers we run, in one Blob container."""

    def __init__(self, connection_string: str | None = None, container: str | None = None,
                 bin_dir: Path | None = None) -> None:
        self.connection_string = connection_string if connection_string is not None else \
            settings.storage_connection_string()
        self.container = container or settings.get("CONTINUITY_WAL_CONTAINER")
        self.url = archive_url(self.connection_string, self.container)
        # A connection string with a key (Azurite, a key in Azure) travels in the environment; one that
        # only names the account means the managed identity.
        self.has_key = any(k in self.connection_string for k in ("AccountKey=", "SharedAccessSignature="))
        self._bin = bin_dir

    @property
    def bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = tool_dir()
        return self._bin

    def tool(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise ToolMissing(f"{name} is not installed in {self.bin_dir} (pip install 'barman[azure]')")
        return str(path)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AZURE_STORAGE"))}
        env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"})
        if self.has_key:
            env["AZURE_STORAGE_CONNECTION_STRING"] = self.connection_string
        return env

    def credential_args(self) -> list[str]:
        return [] if self.has_key else ["--azure-credential", "managed-identity"]

    def _run(self, args: Sequence[str], timeout: float = 120, runner: Runner | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**self.env(), **(env or {})}
        if runner is not None:
            return runner(list(args), full_env, timeout)
        return processes.run(list(args), text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)

    # ---- reading the archive -----------------------------------------------------------------
    def base_backups(self, server: str) -> list[BaseBackup]:
        """Every base backup of ``server`` in the archive (``barman-cloud-backup-list --format json``)."""
        result = self._run([self.tool("barman-cloud-backup-list"), *PROVIDER, *self.credential_args(),
                            "--format", "json", self.url, server])
        if result.returncode != 0:
            raise StoreUnavailable(f"listing the base backups of {server} failed: {_last_error(result)}")
        try:
            raw = json.loads(result.stdout or "{}").get("backups_list", [])
        except json.JSONDecodeError as exc:
            raise ArchiveError(f"barman-cloud-backup-list printed no JSON: {exc}") from exc
        return [parse_backup(item) for item in raw if isinstance(item, dict)]

    def segments(self, server: str, blobs: Any) -> list[ArchivedSegment]:
        """The WAL segments of ``server`` in the archive, with the time storage received each."""
        prefix = f"{server}/wals/"
        out: list[ArchivedSegment] = []
        for name, size, stored_at in blobs.list_with_times(self.container, prefix):
            base = name.rsplit("/", 1)[-1].split(".", 1)[0]
            if SEGMENT_RE.match(base) and not name.endswith((".partial", ".backup")) and ".backup" not in name:
                out.append(ArchivedSegment(base, stored_at, size))
        return out

    # ---- writing the archive -----------------------------------------------------------------
    def take_base_backup(self, server: str, host: str, port: int, user: str, runner: Runner,
                         passfile: str, timeout: float = 3600) -> str:
        """``barman-cloud-backup`` of a whole cluster (run as the cluster's OS user: it reads the data
        directory). Returns the new backup id."""
        before = {b.backup_id for b in self.base_backups(server)}
        result = self._run([self.tool("barman-cloud-backup"), *PROVIDER, *self.credential_args(), "--gzip",
                            "--immediate-checkpoint", "-h", host, "-p", str(port), "-U", user, "-d", "postgres",
                            self.url, server],
                           timeout=timeout, runner=runner, env={"PGPASSFILE": passfile})
        if result.returncode != 0:
            raise ArchiveError(f"base backup of {server} failed: {_last_error(result)}")
        after = [b for b in self.base_backups(server) if b.backup_id not in before]
        if not after:
            raise ArchiveError(f"barman-cloud-backup of {server} finished but no new backup is listed")
        return max(after, key=lambda b: b.end_time).backup_id

    def delete_backup(self, server: str, backup_id: str, timeout: float = 600) -> None:
        """``barman-cloud-backup-delete -b``: the base backup, and the WAL no remaining backup needs."""
        result = self._run([self.tool("barman-cloud-backup-delete"), *PROVIDER, *self.credential_args(),
                            "-b", backup_id, self.url, server], timeout=timeout)
        if result.returncode != 0:
            raise ArchiveError(f"deleting base backup {backup_id} of {server} failed: {_last_error(result)}")

    def restore(self, server: str, backup_id: str, directory: Path, runner: Runner, timeout: float = 3600) -> None:
        """``barman-cloud-restore`` of one base backup into ``directory`` (as the cluster's OS user)."""
        result = self._run([self.tool("barman-cloud-restore"), *PROVIDER, *self.credential_args(), self.url,
                            server, backup_id, str(directory)], timeout=timeout, runner=runner)
        if result.returncode != 0:
            raise ArchiveError(f"restoring base backup {backup_id} of {server} failed: {_last_error(result)}")

    def wal_command(self, script: Path, server: str, archive: bool) -> str:
        """The body of a wrapper the cluster runs as ``archive_command`` / ``restore_command``: it reads the
        connection string from a private file next to it, so it never appears in settings or process lists."""
        secret = script.with_name("storage-connection")
        tool = self.tool("barman-cloud-wal-archive" if archive else "barman-cloud-wal-restore")
        extra = "--gzip " if archive else ""
        credential = " ".join(self.credential_args())
        args = '"$1"' if archive else '"$1" "$2"'
        load = (f'AZURE_STORAGE_CONNECTION_STRING="$(cat {_sh(str(secret))})"; '
                "export AZURE_STORAGE_CONNECTION_STRING\n") if self.has_key else ""
        # A bounded run: the Azure client retries an unreachable store for minutes, and PostgreSQL waits for its
        # archiver at shutdown; a timed-out attempt fails and the archiver retries the segment later.
        return (f"#!/bin/sh\n# Written by continuity (adapters/tools/barman_cloud.py); regenerated on `local up`.\n"
                f"{load}exec timeout {WAL_COMMAND_TIMEOUT_SECONDS} {_sh(tool)} --cloud-provider azure-blob-storage "
                f"{credential} {extra}{_sh(self.url)} {_sh(server)} {args}\n")


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _time(raw: dict[str, Any], key: str) -> datetime | None:
    iso = raw.get(f"{key}_iso")
    if iso:
        return datetime.fromisoformat(str(iso)).astimezone(UTC)
    value = raw.get(key)
    if value in (None, "", "None"):
        return None
    return datetime.strptime(str(value), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)


# A backup barman-cloud-backup never finished (killed, host lost) is listed with no end (and, very early, no
# begin): it keeps its status (not DONE, so nothing restores from it or counts it) and its begin as its end.
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def parse_backup(raw: dict[str, Any]) -> BaseBackup:
    begin = _time(raw, "begin_time") or _NEVER
    return BaseBackup(backup_id=str(raw.get("backup_id", "")), status=str(raw.get("status", "")),
                      begin_time=begin, end_time=_time(raw, "end_time") or begin,
                      begin_wal=str(raw.get("begin_wal") or ""), end_wal=str(raw.get("end_wal") or ""),
                      timeline=int(raw.get("timeline") or 1), size=int(raw.get("cluster_size") or 0),
                      system_identifier=str(raw.get("systemid") or ""))


def is_local_endpoint(url: str) -> bool:
    return urlparse(url).hostname in {"127.0.0.1", "localhost"}
