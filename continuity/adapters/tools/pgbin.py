"""Find PostgreSQL binaries the same way locally and in Azure: ``PG_BIN``, the system's, or pgserver's."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
from pathlib import Path

from continuity.kernel.errors import ToolMissing

logger = logging.getLogger(__name__)

SERVER_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")


def _has(bin_dir: Path, tools: tuple[str, ...]) -> bool:
    return all((bin_dir / tool).exists() for tool in tools)


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parent.name.split(".")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        return (0,)


def _system_bin_dirs() -> list[Path]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    return [Path(p) for p in found]


def _pgserver_bin_dir() -> Path | None:
    try:
        import pgserver
    except ImportError:
        return None
    candidate = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return candidate if candidate.exists() else None


def locate(install: bool = False, tools: tuple[str, ...] = SERVER_TOOLS + CLIENT_TOOLS) -> Path:
    """The directory holding the PostgreSQL binaries.

    Order: ``$PG_BIN``; ``/usr/lib/postgresql/*/bin`` (newest first); when ``install`` and running
    as root, Debian's ``postgresql`` + ``postgresql-contrib``; the ``pgserver`` wheel's bundle.

    :raises ToolMissing: when none is found, saying how to provide one.
    """
    explicit = os.environ.get("PG_BIN", "")
    if explicit:
        if _has(Path(explicit), tools):
            return Path(explicit)
        raise ToolMissing(f"PG_BIN={explicit!r} lacks one of {', '.join(tools)}; point it at a PostgreSQL bin dir")
    for candidate in _system_bin_dirs():
        if _has(candidate, tools):
            return candidate
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        logger.info("installing Debian's postgresql and postgresql-contrib")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql", "postgresql-contrib"],
            check=True, env=env, timeout=1200,
        )
        for candidate in _system_bin_dirs():
            if _has(candidate, tools):
                return candidate
    bundled = _pgserver_bin_dir()
    if bundled is not None and _has(bundled, tools):
        return bundled
    raise ToolMissing(
        "no PostgreSQL binaries found: set PG_BIN, install Debian's postgresql package, "
        "or pip install pgserver"
    )


def tool(name: str) -> str:
    """Absolute path of one PostgreSQL program (pg_dump, pg_restore, ...)."""
    return str(locate(tools=(name,)) / name)


def has_amcheck(bin_dir: Path) -> bool:
    """Whether this installation ships the amcheck extension (contrib)."""
    try:
        out = subprocess.run([str(bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return Path(out, "extension", "amcheck.control").exists()
