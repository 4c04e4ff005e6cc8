"""The catalog in the control database, and the backups container as the catalog sees it.

:class:`PgCatalogStore` holds the queries and upserts (schema ``catalog``, see
:mod:`continuity.adapters.postgres.control_db`); :class:`BlobBackupStorage` lists (with tags and metadata,
:mod:`continuity.adapters.storage.blob_listing`), reads, hashes and tags backup blobs. :func:`open_catalog`
wires both, the evidence store, the tenant registry and the manifest schema into a
:class:`continuity.catalog.ingest.CatalogService`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
from azure.core.exceptions import AzureError, ResourceNotFoundError
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from continuity.adapters.postgres.connection import connect
from continuity.adapters.storage.blob_listing import list_container
from continuity.adapters.storage.blob_store import TIMEOUT_SECONDS, BlobStore, unavailable
from continuity.catalog.model import (
    BackupStatus,
    BlobFacts,
    CatalogEntry,
    ListQuery,
    check_transition,
    decode_cursor,
    encode_cursor,
)
from continuity.kernel import settings
from continuity.kernel.errors import BackupNotFound, ServerUnavailable
from continuity.kernel.settings import PROJECT_ROOT

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA_PATH = PROJECT_ROOT / "schemas" / "manifest.schema.json"

COLUMNS = ("tenant", "backup_id", "kind", "status", "status_reason", "container", "prefix", "created_at",
           "completed_at", "dump_size", "dump_sha256", "manifest", "manifest_sha256", "source_server",
           "source_region", "source_database", "pg_version", "storage_tier", "immutable_until", "legal_hold",
           "last_validation")
_INSERT = (f"insert into catalog.backups ({', '.join(COLUMNS)}) "
           f"values ({', '.join(['%s'] * len(COLUMNS))})")
_UPSERT = (_INSERT + " on conflict (tenant, backup_id) do update set "
           + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("tenant", "backup_id"))
           + ", updated_at = now() returning first_seen_at, updated_at")


def _params(entry: CatalogEntry) -> tuple[Any, ...]:
    return (entry.tenant, entry.backup_id, entry.kind, str(entry.status), entry.status_reason, entry.container,
            entry.prefix, entry.created_at, entry.completed_at, entry.dump_size, entry.dump_sha256,
            Jsonb(entry.manifest) if entry.manifest is not None else None, entry.manifest_sha256,
            entry.source_server, entry.source_region, entry.source_database, entry.pg_version, entry.storage_tier,
            entry.immutable_until, entry.legal_hold,
            Jsonb(entry.last_validation) if entry.last_validation is not None else None)


def _entry(row: dict[str, Any]) -> CatalogEntry:
    return CatalogEntry(
        tenant=row["tenant"], backup_id=row["backup_id"], kind=row["kind"], status=BackupStatus(row["status"]),
        status_reason=row["status_reason"], container=row["container"], prefix=row["prefix"],
        created_at=row["created_at"], completed_at=row["completed_at"], dump_size=row["dump_size"],
        dump_sha256=row["dump_sha256"], manifest=row["manifest"], manifest_sha256=row["manifest_sha256"],
        source_server=row["source_server"], source_region=row["source_region"],
        source_database=row["source_database"], pg_version=row["pg_version"], storage_tier=row["storage_tier"],
        immutable_until=row["immutable_until"], legal_hold=row["legal_hold"],
        last_validation=row["last_validation"], first_seen_at=row["first_seen_at"], updated_at=row["updated_at"],
    )


class PgCatalogSession:
    """One transaction on the catalog, holding the lock of one backup id (see :meth:`PgCatalogStore.locked`)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def get_entry(self, tenant: str, backup_id: str) -> CatalogEntry | None:
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from catalog.backups where tenant = %s and backup_id = %s",
                              (tenant, backup_id)).fetchone()
        return _entry(row) if row else None

    def upsert_entry(self, entry: CatalogEntry) -> None:
        self.conn.execute(_UPSERT, _params(entry))

    def record_rejection(self, *, container: str, blob: str, etag: str, tenant: str | None, backup_id: str | None,
                         code: str, reason: str, event_id: str | None) -> bool:
        """Record a rejection once per (blob, etag, code); returns whether it is new."""
        row = self.conn.execute(
            """insert into catalog.rejections (container, blob, etag, tenant, backup_id, code, reason, event_id)
               values (%s, %s, %s, %s, %s, %s, %s, %s)
               on conflict (container, blob, etag, code) do nothing returning id""",
            (container, blob, etag, tenant, backup_id, code, reason, event_id)).fetchone()
        return row is not None

    def event_processed(self, event_id: str) -> str | None:
        row = self.conn.execute("select outcome from catalog.processed_events where event_id = %s",
                                (event_id,)).fetchone()
        return str(row[0]) if row else None

    def mark_event_processed(self, event_id: str, outcome: str) -> None:
        self.conn.execute("insert into catalog.processed_events (event_id, outcome) values (%s, %s) "
                          "on conflict (event_id) do nothing", (event_id, outcome))


class PgCatalogStore:
    """Catalog queries and upserts on the control database.

    With ``keep_connection`` (for long-lived hosts such as the HTTP triggers' worker), read queries
    reuse one connection, serialised by a lock, instead of paying a connect (TLS/SCRAM) per call;
    a broken connection is dropped and the next query reconnects.
    """

    def __init__(self, dsn: str, keep_connection: bool = False) -> None:
        self.dsn = dsn
        self.keep_connection = keep_connection
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection]:
        if not self.keep_connection:
            with connect(self.dsn) as conn:
                yield conn
            return
        with self._lock:
            if self._conn is None or self._conn.closed:
                try:
                    self._conn = psycopg.connect(self.dsn, autocommit=True)
                except psycopg.OperationalError as exc:
                    raise ServerUnavailable(f"cannot connect to the control database: {str(exc).strip()[-200:]}; "
                                            "is it up (`continuity local status`)?") from exc
            try:
                yield self._conn
            except psycopg.OperationalError:
                self._conn.close()
                self._conn = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def locked(self, tenant: str, backup_id: str) -> Iterator[PgCatalogSession]:
        """A transaction holding an advisory lock on one backup id: concurrent ingests of its two
        blobs (and their duplicate deliveries) run one after the other, so none undoes another's work."""
        key = zlib.crc32(f"{tenant}/{backup_id}".encode())
        with connect(self.dsn) as conn, conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s, %s)", (0x6361_7461, key - (1 << 31)))
            yield PgCatalogSession(conn)

    @contextmanager
    def session(self) -> Iterator[PgCatalogSession]:
        with connect(self.dsn) as conn, conn.transaction():
            yield PgCatalogSession(conn)

    # ---- queries -----------------------------------------------------------------------------
    def get_backup(self, tenant: str, backup_id: str) -> CatalogEntry:
        """The entry of ``tenant``'s backup ``backup_id``.

        :raises BackupNotFound: also when the id belongs to another tenant.
        """
        with self._reader() as conn:
            entry = PgCatalogSession(conn).get_entry(tenant, backup_id)
        if entry is None:
            raise BackupNotFound(f"tenant {tenant} has no backup {backup_id[:40]!r} in the catalog; "
                                 f"list them with `continuity catalog list --tenant {tenant}`")
        return entry

    def list_backups(self, tenant: str | None = None, status: BackupStatus | None = None, kind: str | None = None,
                     since: datetime | None = None, before: datetime | None = None, limit: int = 50,
                     cursor: str | None = None) -> tuple[list[CatalogEntry], str | None]:
        """Backups newest first (``created_at`` desc, then ``backup_id`` desc); empty if none match.

        :param since: created at or after; :param before: created strictly before.
        :returns: a page and the cursor of the next page (None on the last page).
        :raises InvalidRequest: a bad limit, a naive datetime, or a cursor this API did not issue.
        """
        query = ListQuery(tenant=tenant, status=status, kind=kind, since=since, before=before, limit=limit,
                          after=decode_cursor(cursor) if cursor else None)
        where: list[str] = []
        params: list[Any] = []
        if query.tenant is not None:
            where.append("tenant = %s")
            params.append(query.tenant)
        if query.status is not None:
            where.append("status = %s")
            params.append(str(query.status))
        if query.kind is not None:
            where.append("kind = %s")
            params.append(query.kind)
        if query.since is not None:
            where.append("created_at >= %s")
            params.append(query.since)
        if query.before is not None:
            where.append("created_at < %s")
            params.append(query.before)
        if query.after is not None:
            at, backup_id, after_tenant = query.after
            if query.tenant is not None:
                where.append("(created_at, backup_id) < (%s, %s)")
                params += [at, backup_id]
            else:
                where.append("(created_at, backup_id, tenant) < (%s, %s, %s)")
                params += [at, backup_id, after_tenant]
        order = "created_at desc, backup_id desc" + ("" if query.tenant is not None else ", tenant desc")
        sql = (f"select * from catalog.backups {'where ' + ' and '.join(where) if where else ''} "
               f"order by {order} limit %s")
        params.append(query.limit + 1)
        with self._reader() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(sql, params).fetchall()
        items = [_entry(r) for r in rows[:query.limit]]
        next_cursor = encode_cursor(items[-1]) if len(rows) > query.limit else None
        return items, next_cursor

    def standings(self, tenants: Sequence[str]) -> dict[str, tuple[tuple[str, datetime] | None, dict[str, Any] | None]]:
        """Per tenant, in one query: its newest backup (id, created_at) and the newest backup's last validation
        summary, the same two facts :func:`continuity.validation.wiring.recoverability` reads one tenant at a
        time. A tenant without backups maps to ``(None, None)``; both lookups walk ``backups_tenant_created``."""
        sql = """
            select t.tenant, n.backup_id, n.created_at, v.last_validation
            from unnest(%s::text[]) as t(tenant)
            left join lateral (select b.backup_id, b.created_at from catalog.backups b where b.tenant = t.tenant
                               and b.kind = 'full'  -- a point-in-time extract's data is as of its target
                               order by b.created_at desc, b.backup_id desc limit 1) n on true
            left join lateral (select b.last_validation from catalog.backups b
                               where b.tenant = t.tenant and b.last_validation is not null
                               order by b.created_at desc, b.backup_id desc limit 1) v on true"""
        with self._reader() as conn:
            rows = conn.execute(sql, (list(tenants),)).fetchall()
        out: dict[str, tuple[tuple[str, datetime] | None, dict[str, Any] | None]] = {}
        for tenant, backup_id, created_at, last in rows:
            last = json.loads(last) if isinstance(last, str) else last
            out[str(tenant)] = ((str(backup_id), created_at) if backup_id is not None else None,
                                dict(last) if last else None)
        return out

    def iter_entries(self, statuses: Sequence[BackupStatus] | None = None) -> Iterator[CatalogEntry]:
        """Every entry (optionally of some statuses), streamed with a server-side cursor."""
        with connect(self.dsn, autocommit=False) as conn, conn.cursor(name="iter_entries", row_factory=dict_row) as cur:
            if statuses is None:
                cur.execute("select * from catalog.backups order by tenant, backup_id")
            else:
                cur.execute("select * from catalog.backups where status = any(%s) order by tenant, backup_id",
                            ([str(s) for s in statuses],))
            for row in cur:
                yield _entry(row)

    def count(self) -> int:
        with connect(self.dsn) as conn:
            return int(conn.execute("select count(*) from catalog.backups").fetchone()[0])  # type: ignore[index]

    def rejections(self, tenant: str | None = None) -> list[dict[str, Any]]:
        with connect(self.dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
            if tenant is None:
                return cur.execute("select * from catalog.rejections order by id").fetchall()
            return cur.execute("select * from catalog.rejections where tenant = %s order by id", (tenant,)).fetchall()

    # ---- writes ------------------------------------------------------------------------------
    def insert_missing(self, entries: Sequence[CatalogEntry]) -> int:
        """Insert entries whose id is not cataloged yet (a rebuild never overwrites); returns how many."""
        if not entries:
            return 0
        columns = ", ".join(COLUMNS)
        # COPY into a scratch table, then one INSERT ... SELECT: a thousand rows cost one statement instead of
        # a thousand (a rebuild inserts every backup of the container), and ON CONFLICT still never overwrites.
        with connect(self.dsn) as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("create temporary table rebuilt_backups (like catalog.backups including defaults) "
                        "on commit drop")
            with cur.copy(f"copy rebuilt_backups ({columns}) from stdin") as copy:
                for entry in entries:
                    copy.write_row(_params(entry))
            cur.execute(f"insert into catalog.backups ({columns}) select {columns} from rebuilt_backups "
                        "on conflict (tenant, backup_id) do nothing")
            return max(cur.rowcount, 0)

    def set_status(self, tenant: str, backup_id: str, status: BackupStatus, reason: str) -> CatalogEntry:
        """Move one entry to ``status`` if the transition table allows it.

        :raises BackupNotFound: no such entry. :raises InvalidTransition: naming both states.
        """
        with self.locked(tenant, backup_id) as session:
            entry = session.get_entry(tenant, backup_id)
            if entry is None:
                raise BackupNotFound(f"tenant {tenant} has no backup {backup_id[:40]!r} in the catalog")
            check_transition(entry.status, status)
            session.conn.execute("update catalog.backups set status = %s, status_reason = %s, updated_at = now() "
                                 "where tenant = %s and backup_id = %s", (str(status), reason, tenant, backup_id))
            updated = session.get_entry(tenant, backup_id)
        assert updated is not None
        return updated

    def entry(self, tenant: str, backup_id: str) -> CatalogEntry | None:
        with self.session() as session:
            return session.get_entry(tenant, backup_id)

    def ingest_evidence_seq(self, tenant: str, backup_id: str, manifest_sha256: str) -> int | None:
        """The evidence record that cataloged this backup with this manifest (None: not found, e.g. rebuilt)."""
        key = f"catalog.ingested:{tenant}/{backup_id}:{manifest_sha256}"
        with self._reader() as conn:
            row = conn.execute("select seq from catalog.evidence_records where idempotency_key = %s",
                               (key,)).fetchone()
        return int(row[0]) if row else None

    def record_validation(self, *, tenant: str, backup_id: str, run_id: str, started_at: datetime,
                          finished_at: datetime, passed: bool, checks: Any, durations: dict[str, float],
                          summary: dict[str, Any], error: bool = False) -> CatalogEntry:
        """Record one validation attempt (idempotent per run id) and move the entry accordingly.

        Passed: VALIDATED; failed: FAILED_VALIDATION. An attempt that errored judged nothing: an AVAILABLE
        backup becomes UNVERIFIED (attempted, not concluded), a judged one keeps its verdict; the attempt is
        still a row, so the catalog lists every attempt the evidence chain has.
        """
        outcome = "error" if error else "passed" if passed else "failed"
        with self.locked(tenant, backup_id) as session:
            entry = session.get_entry(tenant, backup_id)
            if entry is None:
                raise BackupNotFound(f"tenant {tenant} has no backup {backup_id[:40]!r} in the catalog")
            if error:
                status = entry.status if entry.status in (BackupStatus.VALIDATED, BackupStatus.FAILED_VALIDATION) \
                    else BackupStatus.UNVERIFIED
            else:
                status = BackupStatus.VALIDATED if passed else BackupStatus.FAILED_VALIDATION
            check_transition(entry.status, status)
            session.conn.execute(
                """insert into catalog.validations (tenant, backup_id, run_id, started_at, finished_at, outcome,
                                                   checks, durations)
                   values (%s, %s, %s, %s, %s, %s, %s, %s)
                   on conflict (run_id, tenant, backup_id) do update set finished_at = excluded.finished_at,
                       outcome = excluded.outcome, checks = excluded.checks, durations = excluded.durations""",
                (tenant, backup_id, run_id, started_at, finished_at, outcome, Jsonb(checks), Jsonb(durations)))
            if error:
                session.conn.execute(
                    "update catalog.backups set status = %s, status_reason = %s, updated_at = now() "
                    "where tenant = %s and backup_id = %s",
                    (str(status), entry.status_reason if status is entry.status
                     else f"validation run {run_id} could not conclude: {str(summary.get('reason', ''))[:300]}",
                     tenant, backup_id))
            else:
                session.conn.execute(
                    "update catalog.backups set status = %s, status_reason = %s, last_validation = %s, "
                    "updated_at = now() where tenant = %s and backup_id = %s",
                    (str(status), f"validation run {run_id}: {outcome}", Jsonb(summary), tenant, backup_id))
            updated = session.get_entry(tenant, backup_id)
        assert updated is not None
        return updated


class BlobBackupStorage:
    """The backups container: facts, reads, streamed hashes and tags of backup blobs."""

    def __init__(self, blobs: BlobStore, container: str | None = None) -> None:
        self.blobs = blobs
        self.container = container or settings.get("CONTINUITY_BACKUP_CONTAINER")

    def facts(self, name: str) -> BlobFacts | None:
        """Size, etag, tier, immutability and tags of a blob, or None if it does not exist."""
        client = self.blobs.container(self.container).get_blob_client(name)
        try:
            props = client.get_blob_properties(timeout=TIMEOUT_SECONDS)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise unavailable(exc) from exc
        policy = props.immutability_policy
        until = policy.get("expiry_time") if isinstance(policy, dict) else getattr(policy, "expiry_time", None)
        return BlobFacts(name=name, size=int(props.size), etag=str(props.etag or "").strip('"'),
                         tier=str(props.blob_tier) if props.blob_tier else None, immutable_until=until,
                         legal_hold=bool(props.has_legal_hold))

    def read(self, name: str) -> bytes:
        return self.blobs.download(self.container, name)

    def hash(self, name: str) -> tuple[int, str]:
        """(size, sha256) of a blob, streamed: a dump is never held in memory."""
        digest = hashlib.sha256()
        size = 0
        for chunk in self.blobs.iter_chunks(self.container, name):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def set_tags(self, name: str, tags: dict[str, str]) -> None:
        self.blobs.set_tags(self.container, name, tags)

    def list_all(self) -> Iterator[BlobFacts]:
        """Every blob of the container with its tags and metadata (a manifest's carries a copy of it), in one
        paged listing, in name order; nothing when the container does not exist."""
        try:
            for b in list_container(self.blobs, self.container):
                yield BlobFacts(name=b.name, size=b.size, etag=b.etag, tier=b.tier, legal_hold=b.legal_hold,
                                tags=b.tags, metadata=b.metadata)
        except BackupNotFound:
            return


@lru_cache(maxsize=4)
def _validator(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# Root keywords under which a manifest is valid exactly when it is an object with the required properties, no
# others, and each property's value valid against its own subschema: validity composes property by property.
_COMPOSABLE_ROOT = frozenset({"$schema", "$id", "$defs", "title", "description", "type", "properties", "required",
                              "additionalProperties"})


@lru_cache(maxsize=4)
def _property_validators(path: Path) -> tuple[dict[str, jsonschema.protocols.Validator], frozenset[str]] | None:
    """One validator per top-level property (its subschema, with the root's ``$defs`` for its references) and
    the required names; None when the root schema does not compose that way (then only the whole is checked)."""
    schema = json.loads(path.read_text())
    local_refs = all(ref.startswith("#/$defs/") for ref in re.findall(r'"\$ref":\s*"([^"]*)"', json.dumps(schema)))
    if (set(schema) - _COMPOSABLE_ROOT or schema.get("type") != "object"
            or schema.get("additionalProperties") is not False or not local_refs):
        return None
    cls = jsonschema.validators.validator_for(schema)
    validators: dict[str, jsonschema.protocols.Validator] = {}
    for name, sub in schema["properties"].items():
        wrapper = {"$schema": schema.get("$schema", cls.META_SCHEMA["$id"]), "$defs": schema.get("$defs", {}), **sub}
        validators[name] = cls(wrapper, format_checker=cls.FORMAT_CHECKER)
    return validators, frozenset(schema.get("required", ()))


@lru_cache(maxsize=16384)
def _property_valid(path: Path, name: str, value_json: str) -> bool:
    found = _property_validators(path)
    assert found is not None
    return bool(found[0][name].is_valid(json.loads(value_json)))


def _valid_by_property(raw: Any, path: Path) -> bool:
    """Whether ``raw`` is valid, judged property by property with each verdict kept per distinct value.

    The same as validating the whole (see ``_COMPOSABLE_ROOT``), much cheaper for a rebuild: a tenant's
    manifests repeat most values (source, attachments, tables, identity, odoo), and jsonschema costs about
    0.6 ms of Python per manifest otherwise (measured, bench/bench_catalog.py). Validity is a function of the
    JSON value alone, so a verdict cached under the value's canonical JSON holds for any equal value.
    """
    found = _property_validators(path)
    if found is None or not isinstance(raw, dict):
        return False
    validators, required = found
    if not (required <= raw.keys() <= validators.keys()):
        return False
    try:
        return all(_property_valid(path, name, json.dumps(value, sort_keys=True)) for name, value in raw.items())
    except (TypeError, ValueError):
        return False  # not plain JSON: the whole validator judges it


def manifest_schema_check(raw: Any, path: Path = MANIFEST_SCHEMA_PATH) -> str | None:
    """The first error of ``raw`` against the published manifest schema (by path), or None."""
    if _valid_by_property(raw, path):
        return None
    errors = sorted(_validator(path).iter_errors(raw), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = ".".join(str(p) for p in first.absolute_path) or "(root)"
    return f"field {where}: {first.message[:300]}"


# ---- validation runs as the catalog recorded them ------------------------------------------------


def validation_attempts(tenant: str, backup_id: str, control_dsn: str | None = None) -> list[tuple[str, str]]:
    """(run id, outcome) of every recorded validation attempt of one backup, oldest first."""
    from continuity.adapters.postgres.connection import connect
    from continuity.adapters.postgres.control_db import prepare

    with connect(prepare(control_dsn)) as conn:
        rows = conn.execute("select run_id, outcome from catalog.validations where tenant = %s and backup_id = %s "
                            "order by started_at, id", (tenant, backup_id)).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def validation_history(tenant: str | None = None, limit: int = 1000,
                       control_dsn: str | None = None) -> list[dict[str, Any]]:
    """Validation runs, oldest first, with each backup's recorded summary (objectives, verdict)."""
    import json as jsonlib

    from continuity.adapters.postgres.connection import connect
    from continuity.adapters.postgres.control_db import prepare

    sql_text = ("select v.tenant, v.backup_id, v.run_id, v.started_at, v.finished_at, v.outcome, b.created_at, "
                "b.status, b.last_validation from catalog.validations v join catalog.backups b "
                "using (tenant, backup_id) where (%s::text is null or v.tenant = %s) "
                "order by v.started_at limit %s")
    with connect(prepare(control_dsn)) as conn:
        rows = conn.execute(sql_text, (tenant, tenant, limit)).fetchall()
    history = []
    for r in rows:
        last = r[8] if isinstance(r[8], dict) or r[8] is None else jsonlib.loads(r[8])
        history.append({"tenant": r[0], "backup_id": r[1], "run_id": r[2], "started_at": r[3],
                        "finished_at": r[4], "outcome": r[5], "backup_created_at": r[6], "status": r[7],
                        "summary": last if last and last.get("run_id") == r[2] else None})
    return history
