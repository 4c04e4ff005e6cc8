"""Plain SQL in and out: an Odoo ``dump.sql`` loaded with ``psql`` (all or nothing), or written by ``pg_dump``.

``psql -X --single-transaction -v ON_ERROR_STOP=1``: the first error stops it and rolls everything back,
so a failed load leaves the target as it was. The lines arrive already judged by
:mod:`continuity.odoo_backup.rules` (meta-commands refused, foreign owners and unknown settings dropped).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from continuity.adapters.local.processes import kill_group, spawn
from continuity.adapters.postgres.connection import libpq_env
from continuity.adapters.tools import pgbin


@dataclass(frozen=True)
class LoadOutcome:
    ok: bool
    error: str
    seconds: float


def load_sql(lines: Iterable[str], dsn: str, deadline_s: float = 3600) -> LoadOutcome:
    """Stream ``lines`` (each ending in a newline) into ``psql`` against ``dsn`` in one transaction."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        proc = spawn([pgbin.tool("psql"), "-X", "-q", "--no-psqlrc", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                      "-d", dsn, "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                     env=libpq_env())
        assert proc.stdin is not None
        try:
            for line in lines:
                if time.monotonic() - started > deadline_s:
                    kill_group(proc)
                    return LoadOutcome(False, f"loading did not finish within {deadline_s:.0f}s",
                                       time.monotonic() - started)
                proc.stdin.write(line.encode("utf-8"))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # psql stopped at an error (ON_ERROR_STOP): its message says which
        except BaseException:
            kill_group(proc)
            raise
        try:
            returncode = proc.wait(timeout=max(1.0, deadline_s - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            return LoadOutcome(False, f"loading did not finish within {deadline_s:.0f}s", time.monotonic() - started)
        stderr.seek(0)
        message = stderr.read().decode("utf-8", errors="replace").strip().splitlines()
    if returncode != 0:
        shown = next((m for m in message if "ERROR" in m), message[-1] if message else f"exit code {returncode}")
        return LoadOutcome(False, shown[:400], time.monotonic() - started)
    return LoadOutcome(True, "", time.monotonic() - started)


def dump_plain(dsn: str, out: IO[bytes], deadline_s: float = 3600) -> LoadOutcome:
    """``pg_dump --format=plain --no-owner --no-privileges`` of ``dsn`` streamed into ``out`` (what Odoo's own
    database manager writes as ``dump.sql``)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        proc = spawn([pgbin.tool("pg_dump"), "--format=plain", "--no-owner", "--no-privileges", f"--dbname={dsn}"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=libpq_env())
        assert proc.stdout is not None
        try:
            for chunk in iter(lambda: proc.stdout.read(1024 * 1024), b""):  # type: ignore[union-attr]
                out.write(chunk)
                if time.monotonic() - started > deadline_s:
                    kill_group(proc)
                    return LoadOutcome(False, f"pg_dump did not finish within {deadline_s:.0f}s",
                                       time.monotonic() - started)
        except BaseException:
            kill_group(proc)
            raise
        returncode = proc.wait()
        stderr.seek(0)
        message = stderr.read().decode("utf-8", errors="replace").strip().splitlines()
    if returncode != 0:
        return LoadOutcome(False, (message[-1] if message else f"exit code {returncode}")[:400],
                           time.monotonic() - started)
    return LoadOutcome(True, "", time.monotonic() - started)
