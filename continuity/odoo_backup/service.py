"""Bring an Odoo backup from elsewhere in: ``continuity import odoo-backup TENANT FILE``.

In steps, nothing loaded before every refusal rule has run:

1. the file: an Odoo database-manager zip (``dump.sql`` + ``filestore/`` + ``manifest.json``) or a plain
   ``dump.sql``; the zip's names and sizes are judged (:func:`rules.zip_plan`), the dump must be UTF-8 text;
2. a first pass over ``dump.sql``: every line classified (:class:`rules.LineReader`: psql meta-commands refused,
   foreign owners, privileges, settings this server lacks and pg_dump 17.6+'s ``\\restrict`` dropped), and the
   definitions judged like a restore's (:func:`continuity.validation.toc.script_refusal`: no program COPY, no
   untrusted language, no event trigger, ...);
3. the tenant's database is created (it must not exist: an import never overwrites a live database) and the
   kept lines loaded in one transaction; the filestore files, each checked against its sha1 name, go to the
   tenant's attachment prefix;
4. evidence of the import, then a cataloged backup of the result and its validation, like any other backup.

Any failure after step 3 began drops the database and deletes the files this import uploaded: nothing
half-loaded remains.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from continuity.kernel.errors import ContinuityError
from continuity.kernel.tenants import Registry
from continuity.odoo_backup.rules import (
    FILESTORE_KEY_RE,
    ImportRefused,
    LineAction,
    LineReader,
    Member,
    ZipPlan,
    odoo_manifest_facts,
    zip_plan,
)
from continuity.validation import toc

logger = logging.getLogger(__name__)

# The definitions of a dump (everything but COPY data) are held in memory to be judged before loading.
MAX_DEFINITIONS_BYTES = 64 * 1024 * 1024


class OdooImportRefused(ContinuityError):
    code = "import_refused"
    http_status = 422


class OdooImportFailed(ContinuityError):
    code = "import_failed"
    http_status = 422


@dataclass
class Source:
    """Where ``dump.sql`` and the filestore files are read from (a zip, or a plain SQL file)."""

    path: Path
    plan: ZipPlan | None
    manifest: dict[str, Any] = field(default_factory=dict)

    def open_dump(self) -> AbstractContextManager[IO[bytes]]:
        if self.plan is None:
            return self.path.open("rb")
        return _zip_member(self.path, self.plan.dump)

    def filestore(self) -> Iterator[tuple[str, bytes]]:
        if self.plan is None:
            return
        with zipfile.ZipFile(self.path) as archive:
            for name, key in self.plan.filestore:
                yield key, archive.read(name)


@contextmanager
def _zip_member(path: Path, name: str) -> Iterator[IO[bytes]]:
    with zipfile.ZipFile(path) as archive, archive.open(name) as member:
        yield member


def open_source(path: Path) -> Source:
    """The backup file, judged as an archive. :raises OdooImportRefused: why it cannot be an Odoo backup."""
    if not path.is_file():
        raise OdooImportRefused(f"{path} is not a file")
    with path.open("rb") as stream:
        head = stream.read(8)
    if head.startswith(b"PGDMP"):
        raise OdooImportRefused("a custom-format pg_dump archive: import takes Odoo's zip or a plain dump.sql; "
                                "restore it with `pg_restore --no-owner` and back it up, or bring the zip")
    if not zipfile.is_zipfile(path):
        return Source(path, None)
    try:
        with zipfile.ZipFile(path) as archive:
            plan = _plan(archive)
            manifest: dict[str, Any] = {}
            if plan.manifest:
                try:
                    raw = json.loads(archive.read(plan.manifest))
                except ValueError as exc:
                    raise OdooImportRefused(f"manifest.json is not JSON ({exc})") from exc
                if not isinstance(raw, dict):
                    raise OdooImportRefused("manifest.json is not a JSON object")
                manifest = odoo_manifest_facts(raw)
    except zipfile.BadZipFile as exc:
        raise OdooImportRefused(f"{path.name} is a damaged zip ({exc})") from exc
    return Source(path, plan, manifest)


def _plan(archive: zipfile.ZipFile) -> ZipPlan:
    try:
        return zip_plan([Member(i.filename, i.file_size, i.compress_size) for i in archive.infolist()])
    except ImportRefused as exc:
        raise OdooImportRefused(str(exc)) from exc


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, str]]:
    """``dump.sql`` as numbered text lines; not UTF-8 (e.g. UTF-16 from a Windows export) is a refusal."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="strict", newline="\n")
    number = 0
    try:
        for number, line in enumerate(text, start=1):  # noqa: B007 - the number is reported on an error
            if "\x00" in line:
                raise OdooImportRefused("dump.sql is not UTF-8 text (UTF-16 or binary?)")
            yield number, line
    except UnicodeDecodeError as exc:
        raise OdooImportRefused(f"dump.sql is not UTF-8 text (near line {number + 1}: {exc.reason})") from exc


@dataclass(frozen=True)
class Judged:
    dropped: dict[str, int]
    tables: int
    lines: int


def judge_dump(source: Source, known_settings: frozenset[str]) -> Judged:
    """The first pass: every refusal rule, before anything is loaded. :raises OdooImportRefused: why not."""
    reader = LineReader(known_settings)
    definitions: list[str] = []
    size = lines = 0
    with source.open_dump() as stream:
        for number, line in _lines(stream):
            lines = number
            copying = reader.in_copy
            action, why = reader.classify(line.rstrip("\n"))
            if action is LineAction.REFUSE:
                raise OdooImportRefused(f"line {number}: {why}; nothing was loaded")
            if action is LineAction.KEEP and not copying:
                definitions.append(line)
                size += len(line)
                if size > MAX_DEFINITIONS_BYTES:
                    raise OdooImportRefused(f"the dump's definitions exceed {MAX_DEFINITIONS_BYTES // 1024**2} MiB "
                                            "outside COPY data: not an Odoo dump")
    if reader.in_copy:
        raise OdooImportRefused("dump.sql ends inside COPY data: the file is truncated; nothing was loaded")
    if reader.tables == 0:
        raise OdooImportRefused("dump.sql creates no table (a header-only or empty dump); nothing was loaded")
    refusal = toc.script_refusal("".join(definitions))
    if refusal:
        raise OdooImportRefused(refusal.replace("the dump was not restored", "nothing was loaded"))
    return Judged(dict(reader.dropped), reader.tables, lines)


def kept_lines(source: Source, known_settings: frozenset[str]) -> Iterator[str]:
    """The second pass: the lines to load, as judged."""
    reader = LineReader(known_settings)
    with source.open_dump() as stream:
        for _, line in _lines(stream):
            action, _why = reader.classify(line.rstrip("\n"))
            if action is LineAction.KEEP:
                yield line if line.endswith("\n") else line + "\n"


@dataclass(frozen=True)
class ImportResult:
    tenant: str
    database: str
    source_sha256: str
    odoo_manifest: dict[str, Any]
    dropped: dict[str, int]
    tables: int
    filestore_files: int
    seconds: float
    backup_id: str | None = None
    validation: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "database": self.database, "source_sha256": self.source_sha256,
                "odoo_manifest": self.odoo_manifest, "dropped_lines": self.dropped, "tables": self.tables,
                "filestore_files": self.filestore_files, "seconds": round(self.seconds, 2),
                "backup_id": self.backup_id, "validation": self.validation}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_odoo_backup(tenant_id: str, path: Path, *, registry: Registry | None = None, blobs: Any = None,
                       validate: bool = True, deadline_s: float = 3600,
                       progress: Callable[[str], None] = lambda _m: None) -> ImportResult:
    """Load an Odoo backup into the tenant's (new) database, then back it up and validate it.

    :raises OdooImportRefused: the file may not be loaded (nothing was). :raises OdooImportFailed: loading
        failed (everything it did was undone).
    """
    import time

    from continuity.adapters.postgres.connection import connect, ensure_database, server_dsn
    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.tools.sql_loader import load_sql
    from continuity.kernel import settings

    started = time.monotonic()
    registry = registry or settings.configured_registry()
    tenant = registry.get_tenant(tenant_id)
    blobs = blobs or BlobStore()
    admin = server_dsn(registry.server_of(tenant))
    target = server_dsn(registry.server_of(tenant), tenant.database)
    source = open_source(path)
    with connect(admin) as conn:
        known = frozenset(str(r[0]).lower() for r in conn.execute("select name from pg_settings").fetchall())
        exists = conn.execute("select 1 from pg_database where datname = %s", (tenant.database,)).fetchone()
    if exists:
        raise OdooImportRefused(f"the tenant's database {tenant.database!r} exists: an import never overwrites a "
                                "database; recover the tenant or remove it first")
    progress(f"judging {path.name} …")
    judged = judge_dump(source, known)
    container = settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
    uploaded: list[str] = []
    ensure_database(admin, tenant.database)
    try:
        progress(f"loading {judged.lines} lines into {tenant.database} …")
        outcome = load_sql(kept_lines(source, known), target, deadline_s)
        if not outcome.ok:
            raise OdooImportFailed(f"loading dump.sql failed: {outcome.error}; nothing was kept")
        blobs.ensure_containers([container])
        for key, data in source.filestore():
            if hashlib.sha1(data, usedforsecurity=False).hexdigest() != key.split("/")[1]:
                raise OdooImportFailed(f"filestore file {key} does not match its sha1 name: the file was altered; "
                                       "nothing was kept")
            name = tenant.attachments + key
            blobs.upload(container, name, data, overwrite=True)
            uploaded.append(name)
    except BaseException:
        _undo(admin, tenant.database, blobs, container, uploaded)
        raise
    source_sha = _sha256(path)
    facts = {"tenant": tenant.id, "database": tenant.database, "source": path.name,
             "source_sha256": source_sha, "odoo_manifest": source.manifest, "dropped_lines": judged.dropped,
             "tables": judged.tables, "filestore_files": len(uploaded)}
    _record(tenant.id, facts)
    result = ImportResult(tenant.id, tenant.database, source_sha, source.manifest, judged.dropped,
                          judged.tables, len(uploaded), time.monotonic() - started)
    if not validate:
        return result
    return _back_up_and_validate(registry, tenant.id, blobs, result, progress)


def _undo(admin: str, database: str, blobs: Any, container: str, uploaded: list[str]) -> None:
    from continuity.adapters.postgres.connection import connect

    with connect(admin) as conn:
        conn.execute(f'drop database if exists "{database}" with (force)')  # a registry-validated name
    for name in uploaded:
        try:
            blobs.container(container).delete_blob(name)
        except Exception:  # noqa: BLE001 - best effort; the sweep of unreferenced files reports what is left
            logger.warning("could not delete %s after a failed import", name)


def _record(tenant: str, facts: dict[str, Any]) -> None:
    from continuity.approvals import service as approval_service

    approval_service.record(actor="import", action="import.odoo_backup", subject=f"tenant/{tenant}", data=facts,
                            idempotency_key=f"import.odoo_backup:{tenant}:{facts['source_sha256']}")


def _back_up_and_validate(registry: Registry, tenant_id: str, blobs: Any, result: ImportResult,
                          progress: Callable[[str], None]) -> ImportResult:
    from dataclasses import replace

    from continuity.adapters.tools.backup_taker import take_backup
    from continuity.catalog.service import open_catalog
    from continuity.validation.service import record_report
    from continuity.validation.service import validate as run_validation
    from continuity.validation.wiring import local_ports, open_recording, plan_attempt

    progress("backing up the imported database …")
    stored = take_backup(registry, tenant_id, store=blobs)
    open_catalog(blobs=blobs, registry=registry, actor="import").ingest_blob(stored.manifest, actor="import")
    progress("validating the backup in the sandbox …")
    run_id = plan_attempt(tenant_id, stored.backup_id, force=True).run_id
    report = run_validation(local_ports(registry, blobs=blobs), tenant_id, stored.backup_id, run_id=run_id)
    catalog, evidence, publish = open_recording(blobs)
    record_report(report, catalog=catalog, evidence=evidence, publish=publish)
    return replace(result, backup_id=stored.backup_id,
                   validation={"run_id": report.run_id, "outcome": str(report.outcome),
                               "verdict": str(report.verdict.status), "reason": report.verdict.reason,
                               "failed_checks": report.failed_checks})


# ---- export ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    tenant: str
    backup_id: str
    path: str
    odoo_manifest: dict[str, Any]
    filestore_files: int
    missing_files: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "backup_id": self.backup_id, "path": self.path,
                "odoo_manifest": self.odoo_manifest, "filestore_files": self.filestore_files,
                "missing_files": self.missing_files, "bytes": self.bytes}


def odoo_dump_manifest(db_name: str, base_version: str | None, server_version_num: int,
                       modules: dict[str, str | None]) -> dict[str, Any]:
    """``manifest.json`` as Odoo's ``dump_db_manifest`` (``odoo/service/db.py``) writes it, so Odoo's database
    manager restores the zip: ``version``/``major_version`` are the series (``17.0``), ``version_info`` its tuple."""
    parts = (base_version or "0.0").replace("saas~", "").split(".")
    major, minor = (int(parts[0]) if parts[0].isdigit() else 0), (int(parts[1]) if parts[1:] and parts[1].isdigit()
                                                                 else 0)
    series = f"{major}.{minor}"
    pg_major, pg_minor = divmod(server_version_num // 100, 100)
    return {"odoo_dump": "1", "db_name": db_name, "version": series, "version_info": [major, minor, 0, "final", 0],
            "major_version": series, "pg_version": f"{pg_major}.{pg_minor}",
            "modules": {name: version for name, version in sorted(modules.items())}}


def export_odoo_backup(tenant_id: str, path: Path, backup_id: str | None = None, *, registry: Registry | None = None,
                       blobs: Any = None, progress: Callable[[str], None] = lambda _m: None) -> ExportResult:
    """Write the tenant's backup as the zip Odoo's database manager restores: ``dump.sql`` (plain, no owners),
    ``manifest.json`` and ``filestore/``.

    The backup is restored into the sandbox first, through the validation's own pipeline (anchored checksum,
    identity, the archive policy, the unprivileged restore role), so only a backup that restores is exported;
    the scratch database is always dropped.

    :raises OdooImportFailed: the backup does not restore, or pg_dump fails (no file is left).
    """
    import secrets
    from datetime import UTC, datetime

    import psycopg

    from continuity.adapters.storage.blob_store import BlobStore
    from continuity.adapters.tools.sql_loader import dump_plain
    from continuity.kernel import settings
    from continuity.validation import service as validation
    from continuity.validation.naming import scratch_database_name
    from continuity.validation.wiring import local_ports

    registry = registry or settings.configured_registry()
    tenant = registry.get_tenant(tenant_id)
    blobs = blobs or BlobStore()
    ports = local_ports(registry, blobs=blobs)
    ref = validation.pick_backup(ports.source, tenant.id, backup_id)
    scratch = scratch_database_name(tenant.id, datetime.now(UTC), secrets.token_hex(3))
    container = settings.get("CONTINUITY_ATTACHMENT_CONTAINER")
    progress(f"restoring {ref.backup_id} into the sandbox …")
    try:
        step = validation.restore_into_sandbox(ports, ref, scratch)
        if not step.restored:
            why = next((c.detail for c in step.checks if str(c.status) == "fail"), "the restore did not complete")
            raise OdooImportFailed(f"backup {ref.backup_id} does not restore ({why}); nothing exported")
        dsn = ports.sandbox.restore_dsn(scratch)
        with psycopg.connect(dsn, autocommit=True) as conn:
            version_row = conn.execute("select latest_version from ir_module_module where name = 'base'").fetchone()
            modules = {str(n): (str(v) if v else None) for n, v in conn.execute(
                "select name, latest_version from ir_module_module where state = 'installed'").fetchall()}
            files = [str(r[0]) for r in conn.execute(
                "select distinct store_fname from ir_attachment where type = 'binary' and store_fname is not null "
                "and store_fname <> '' order by 1").fetchall()]
            server_version = int(conn.info.server_version)
        manifest = odoo_dump_manifest(tenant.database, str(version_row[0]) if version_row and version_row[0]
                                      else None, server_version, modules)
        progress(f"writing {path.name} …")
        missing = written = 0
        try:
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
                with archive.open("dump.sql", "w", force_zip64=True) as out:
                    dumped = dump_plain(dsn, out)
                if not dumped.ok:
                    raise OdooImportFailed(f"pg_dump of the restored backup failed: {dumped.error}")
                archive.writestr("manifest.json", json.dumps(manifest, indent=4))
                for name in files:
                    if not FILESTORE_KEY_RE.match(name):
                        missing += 1
                        continue
                    try:
                        archive.writestr(f"filestore/{name}", blobs.download(container, tenant.attachments + name))
                        written += 1
                    except ContinuityError:
                        missing += 1  # the attachment check of a validation names these
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    finally:
        ports.sandbox.drop_scratch_database(scratch)
    return ExportResult(tenant.id, ref.backup_id, str(path), manifest, written, missing, path.stat().st_size)
