"""Take a backup: ``pg_dump -Fc`` streamed to blob storage while hashed, then the manifest, last.

Consistency: one REPEATABLE READ transaction exports its snapshot; ``pg_dump --snapshot`` dumps
exactly that snapshot while the same transaction counts the recovery tables and fingerprints the
posted ledger, so the manifest describes the dump and nothing else.

Streaming: pg_dump's stdout goes through :class:`HashingReader` straight into a block-blob upload;
the dump is never held in memory or spooled to disk.

Failure: a failed or killed pg_dump, a deadline, or a broken upload leaves no manifest, and the
dump blob is deleted when storage still answers (a backup without a manifest is not a backup).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TypeVar

import psycopg
from azure.core.exceptions import AzureError, ResourceExistsError

from continuity.adapters.local.processes import spawn
from continuity.adapters.postgres import connection as postgres
from continuity.adapters.postgres.proofs import odoo_facts, table_schemas, tenant_identity
from continuity.adapters.storage.blob_store import BlobStore, unavailable
from continuity.adapters.tools import pgbin
from continuity.backups.rules import (
    DEFAULT_DEADLINE_SECONDS,
    KIND_FULL,
    BackupFailed,
    BackupPaths,
    StoredBackup,
    blob_tags,
    build_manifest,
    check_tenant_id,
    new_backup_id,
)
from continuity.catalog.manifest import (
    KIND_POINT_IN_TIME,
    RECOVERY_TABLES,
    Attachments,
    Ledger,
    OdooInfo,
    PointInTime,
    Source,
    TableSchema,
    TenantIdentity,
    manifest_copy_metadata,
)
from continuity.kernel import settings
from continuity.kernel.errors import BackupConflict, ContinuityError
from continuity.kernel.tenants import Registry
from continuity.validation.odoo.schema import (
    LEDGER_SHAPE_SQL,
    LEDGER_TABLES,
    LEDGER_TABLES_PRESENT_SQL,
    LEDGER_TOTALS_SQL,
    count_rows_sql,
    fold_ledger,
    ledger_moves_for,
    ledger_shape,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK = 4 * 1024 * 1024


class HashingReader:
    """A read-only, non-seekable stream that hashes (sha256) and counts what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size if size is not None and size >= 0 else -1)
        self._digest.update(data)
        self.size += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


@dataclass(frozen=True)
class SnapshotFacts:
    """What the snapshot transaction saw, recorded in the manifest."""

    row_counts: dict[str, int]
    ledger: Ledger
    attachment_count: int
    attachment_bytes: int
    identity: TenantIdentity | None = None
    tables: dict[str, TableSchema] | None = None
    odoo: OdooInfo | None = None
    warnings: tuple[str, ...] = ()


def _isolated(conn: psycopg.Connection, what: str, read: Callable[[], T], default: T, warnings: list[str]) -> T:
    """Run one fact query in a savepoint: a query this database cannot answer (an Odoo version or a module
    we did not foresee) is a warning in the manifest, never an aborted snapshot transaction, which pg_dump,
    reading the same exported snapshot, would then fail to import."""
    try:
        with conn.transaction():
            return read()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        warnings.append(f"{what} could not be read: {first}")
        return default


def _snapshot_facts(conn: psycopg.Connection) -> SnapshotFacts:
    """Row counts, ledger fingerprint, filestore size, Odoo version and proofs, read in the dump's snapshot."""
    warnings: list[str] = []
    tables = conn.execute("SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p') "
                          "AND relnamespace = 'public'::regnamespace").fetchone()
    if not tables or not tables[0]:
        warnings.append("the database holds no tables: this backup restores an empty database")
    present = {
        name for (name,) in conn.execute(
            "SELECT t.name FROM unnest(%s::text[]) AS t(name) WHERE to_regclass('public.' || t.name) IS NOT NULL",
            (list(RECOVERY_TABLES),)).fetchall()
    }
    odoo = _isolated(conn, "the Odoo version and modules", lambda: odoo_facts(conn), None, warnings)
    if odoo is None and tables and tables[0]:
        warnings.append("not an Odoo database (no ir_module_module): only generic checks can validate it")
    elif odoo is not None and "account" not in odoo.modules:
        warnings.append("accounting (module account) is not installed: the backup has no ledger to prove")
    counts: dict[str, int] = {}
    for table in RECOVERY_TABLES:
        if table in present:
            def count(table: str = table) -> int:
                row = conn.execute(count_rows_sql(table)).fetchone()
                return int(row[0]) if row else 0
            counts[table] = _isolated(conn, f"the row count of {table}", count, 0, warnings)
    # Not an Odoo accounting database: an empty ledger, honestly fingerprinted as empty.
    empty = Ledger(fingerprint=fold_ledger(()), posted_moves=0, posted_lines=0, debit_total="0", credit_total="0")
    ledger_present = conn.execute(LEDGER_TABLES_PRESENT_SQL, (list(LEDGER_TABLES),)).fetchone()
    ledger = empty
    if ledger_present and ledger_present[0] == len(LEDGER_TABLES):
        def read_ledger() -> Ledger:
            totals = conn.execute(LEDGER_TOTALS_SQL).fetchone()
            assert totals is not None
            shape = ledger_shape(conn.execute(LEDGER_SHAPE_SQL).fetchall())  # Odoo 13 `type`, 12 none, 18 jsonb
            with conn.cursor(name="ledger_moves") as cur:
                cur.itersize = 20_000
                cur.execute(ledger_moves_for(shape))
                fingerprint = fold_ledger(cur)
            return Ledger(fingerprint=fingerprint, posted_moves=int(totals[0]), posted_lines=int(totals[1]),
                          debit_total=str(totals[2]), credit_total=str(totals[3]))
        ledger = _isolated(conn, "the posted ledger", read_ledger, empty, warnings)
    attachment_count = attachment_bytes = 0
    if "ir_attachment" in present:
        def read_attachments() -> tuple[int, int]:
            row = conn.execute("SELECT count(*), COALESCE(sum(file_size), 0) FROM ir_attachment "
                               "WHERE type = 'binary' AND store_fname IS NOT NULL").fetchone()
            return (int(row[0]), int(row[1])) if row else (0, 0)
        attachment_count, attachment_bytes = _isolated(conn, "the filestore size", read_attachments, (0, 0),
                                                       warnings)
    identity = _isolated(conn, "the tenant fingerprint", lambda: tenant_identity(conn), None, warnings)
    tables_proof = _isolated(conn, "the schema proof", lambda: table_schemas(conn), None, warnings)
    return SnapshotFacts(counts, ledger, attachment_count, attachment_bytes, identity, tables_proof, odoo,
                         tuple(warnings))


def _server_facts(conn: psycopg.Connection) -> tuple[str, str | None]:
    """PostgreSQL version and, where this role may read it, the cluster's system identifier."""
    row = conn.execute("SELECT current_setting('server_version')").fetchone()
    version = str(row[0]).split()[0] if row else "0"
    try:
        ident = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        # Managed servers may not grant pg_control_system(); the manifest then omits it.
        return version, None
    return version, str(ident[0]) if ident else None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def take_backup(registry: Registry, tenant_id: str, *, store: BlobStore | None = None,
                deadline_seconds: float = DEFAULT_DEADLINE_SECONDS, now: datetime | None = None,
                source_dsn: str | None = None, point_in_time: PointInTime | None = None) -> StoredBackup:
    """Dump one tenant's database to the backups container and write its manifest last.

    ``source_dsn`` + ``point_in_time``: a point-in-time extract, the tenant's database read from its server
    rewound in the sandbox (continuity.pitr), recorded as kind ``point-in-time`` with the rewind it came from.

    :raises InvalidRequest: the tenant id is malformed (before any I/O).
    :raises UnknownTenant: the registry has no such tenant.
    :raises DatabaseMissing, ServerUnavailable: the database cannot be reached.
    :raises StoreUnavailable: blob storage cannot be reached.
    :raises BackupFailed: pg_dump failed or passed its deadline, or the upload is incomplete.
    """
    check_tenant_id(tenant_id)
    tenant = registry.get_tenant(tenant_id)
    server = registry.server_of(tenant)
    dsn = source_dsn or postgres.server_dsn(server, tenant.database)
    kind = KIND_POINT_IN_TIME if point_in_time is not None else KIND_FULL
    container = settings.get("CONTINUITY_BACKUP_CONTAINER")
    store = store or BlobStore()
    store.ensure_containers([container])  # storage down: fail before starting pg_dump

    started = time.monotonic()
    created_at = (now or datetime.now(UTC)).astimezone(UTC)
    backup_id = new_backup_id(created_at, secrets.token_hex(3))
    paths = BackupPaths.of(tenant.id, backup_id, created_at)
    log = {"tenant": tenant.id, "backup_id": backup_id}

    with postgres.connect(dsn) as conn:
        pg_version, system_identifier = _server_facts(conn)
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])

        written: list[str] = []  # blobs this backup created: the only ones its cleanup may delete
        with tempfile.TemporaryFile() as stderr, ThreadPoolExecutor(max_workers=1) as pool:
            proc = spawn(
                [pgbin.tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}", "--no-password",
                 f"--dbname={dsn}"],
                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=postgres.libpq_env(),
            )
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                _kill_group(proc)

            timer = threading.Timer(deadline_seconds, expire)
            timer.daemon = True
            timer.start()
            try:
                facts_future = pool.submit(_snapshot_facts, conn)
                assert proc.stdout is not None
                reader = HashingReader(proc.stdout)
                _create(store, container, paths.dump, reader, blob_tags(tenant.id, backup_id, kind), written)
                try:
                    returncode = proc.wait(timeout=max(1.0, deadline_seconds - (time.monotonic() - started)))
                except subprocess.TimeoutExpired:
                    expire()
                    returncode = proc.wait(timeout=10)
                timer.cancel()
                if expired.is_set():
                    raise BackupFailed(f"pg_dump of {tenant.database!r} passed its deadline of {deadline_seconds:g}s; "
                                       "no manifest written (raise --deadline or look at the server's load)")
                if returncode != 0 and facts_future.done() and facts_future.exception() is not None:
                    # The snapshot query failed first and aborted the transaction whose snapshot pg_dump imports:
                    # its error is the cause, pg_dump's "invalid snapshot" only the consequence.
                    raise BackupFailed(f"reading row counts and the ledger of {tenant.database!r} in the dump's "
                                       f"snapshot failed ({str(facts_future.exception()).strip()[:200]}); "
                                       "no manifest written") from facts_future.exception()
                if returncode != 0:
                    stderr.seek(0)
                    detail = stderr.read().decode(errors="replace").strip().splitlines()
                    reason = detail[-1] if detail else f"exit status {returncode}"
                    raise BackupFailed(f"pg_dump of {tenant.database!r} failed ({reason}); no manifest written")
                stored_size = _blob_size(store, container, paths.dump)
                if stored_size != reader.size:
                    raise BackupFailed(f"uploaded dump has {stored_size} bytes but pg_dump wrote {reader.size}; "
                                       "no manifest written (retry the backup)")
                try:
                    facts = facts_future.result()
                except psycopg.Error as exc:
                    raise BackupFailed(f"reading row counts and the ledger of {tenant.database!r} in the dump's "
                                       f"snapshot failed ({str(exc).strip()[:200]}); no manifest written") from exc
                conn.rollback()  # the snapshot transaction only read
                manifest = build_manifest(
                    tenant=tenant.id, backup_id=backup_id, created_at=created_at, completed_at=datetime.now(UTC),
                    source=Source(server=tenant.server, region=server.region, database=tenant.database,
                                  pg_version=pg_version, system_identifier=system_identifier),
                    dump_sha256=reader.sha256, dump_size=reader.size, row_counts=facts.row_counts,
                    ledger=facts.ledger,
                    attachments=Attachments(container=settings.get("CONTINUITY_ATTACHMENT_CONTAINER"),
                                            prefix=tenant.attachments, count=facts.attachment_count,
                                            bytes=facts.attachment_bytes),
                    identity=facts.identity, tables=facts.tables, odoo=facts.odoo, warnings=facts.warnings,
                    point_in_time=point_in_time,
                )
                write_manifest(store, container, paths.manifest, manifest.model_dump_json(indent=2).encode(),
                               blob_tags(tenant.id, backup_id, kind), written)
            except BaseException:
                timer.cancel()
                _kill_group(proc)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                _remove_partial(store, container, written, log)
                raise
    seconds = time.monotonic() - started
    logger.info("backup stored", extra={**log, "size": reader.size, "seconds": round(seconds, 2)})
    return StoredBackup(tenant=tenant.id, backup_id=backup_id, container=container, dump=paths.dump,
                        manifest=paths.manifest, size=reader.size, sha256=reader.sha256, seconds=seconds,
                        posted_moves=facts.ledger.posted_moves)


def _blob_size(store: BlobStore, container: str, name: str) -> int:
    try:
        return int(store.container(container).get_blob_client(name).get_blob_properties(timeout=30).size)
    except AzureError as exc:
        raise unavailable(exc) from exc


def write_manifest(store: BlobStore, container: str, name: str, data: bytes, tags: dict[str, str],
                   written: list[str] | None = None) -> None:
    """Upload a backup's manifest, which must not exist yet, with a copy of it in the blob's metadata.

    The copy (:func:`continuity.catalog.manifest.manifest_copy_metadata`; omitted when too large for
    metadata) goes in the same Put Blob as the content, so the two are written together: a catalog rebuild
    reads it from the container listing instead of one GET per backup.

    :param written: the failed-backup cleanup list: ``name`` is taken out again if someone else's blob is there.
    :raises BackupConflict: the blob exists already; it is not overwritten.
    """
    _create(store, container, name, data, tags, written if written is not None else [],
            metadata=manifest_copy_metadata(data))


def _create(store: BlobStore, container: str, name: str, data: bytes | HashingReader, tags: dict[str, str],
            written: list[str], metadata: dict[str, str] | None = None) -> None:
    """Upload a blob that must not exist yet, noting it in ``written`` unless someone else's is there."""
    written.append(name)
    try:
        store.upload(container, name, data, tags=tags, metadata=metadata or None,  # type: ignore[arg-type]
                     overwrite=False)
    except ResourceExistsError as exc:
        written.remove(name)
        raise BackupConflict(f"blob {container}/{name} already exists; not overwritten (retry the backup: "
                             "it gets a new id)") from exc


def _remove_partial(store: BlobStore, container: str, written: list[str], log: dict[str, str]) -> None:
    """Delete what a failed backup wrote; the manifest first, so a half-deleted backup is never whole."""
    for name in reversed(written):
        try:
            store.delete(container, name)
        except ContinuityError as exc:
            logger.warning("could not remove %s of a failed backup: %s", name, exc, extra=log)
