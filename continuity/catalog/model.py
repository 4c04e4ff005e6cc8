"""The backup catalog: what each tenant has, in which state, and how a blob becomes an entry.

Pure decisions (no I/O, no clock): the strict blob layout, the status machine with its transition
table, manifest validation, duplicate classification (Barman's matching duplicate vs conflict) and the
ingest plan the use case in :mod:`continuity.catalog.ingest` carries out.

Layout in the backups container: ``{tenant}/{yyyy}/{mm}/{dd}/{backup_id}/{db.dump|manifest.json}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from continuity.catalog.manifest import BACKUP_ID_RE, DUMP_FILE, MANIFEST_FILE, Manifest
from continuity.kernel.errors import ContinuityError, InvalidRequest
from continuity.kernel.tenants import TENANT_ID_RE

KNOWN_FILES = (DUMP_FILE, MANIFEST_FILE)
MAX_BLOB_NAME = 1024
# Only what our own writer produces: no spaces, no percent-escapes, no backslashes, no unicode.
BLOB_NAME_CHARS = re.compile(r"^[A-Za-z0-9._/-]+$")
MAX_PAGE = 1000
DEFAULT_PAGE = 50


class BackupStatus(StrEnum):
    PENDING = "pending"                      # parts seen; manifest or dump missing
    AVAILABLE = "available"                  # dump size and sha256 verified against the manifest
    VALIDATED = "validated"                  # restored in the sandbox and the checks passed
    FAILED_VALIDATION = "failed_validation"  # restored in the sandbox and a check failed
    UNVERIFIED = "unverified"                # a validation was attempted and could not conclude (error)
    REJECTED = "rejected"                    # bad manifest, checksum or size mismatch
    MISSING = "missing"                      # was cataloged; its blobs are gone from storage
    DELETED = "deleted"                      # removed by retention


S = BackupStatus
# Allowed transitions. Same-state moves are listed where they mean something (a revalidation, a
# part arriving while still pending). DELETED is terminal: retention removed the blobs on purpose.
TRANSITIONS: dict[BackupStatus, frozenset[BackupStatus]] = {
    S.PENDING: frozenset({S.PENDING, S.AVAILABLE, S.REJECTED, S.MISSING, S.DELETED}),
    S.AVAILABLE: frozenset({S.VALIDATED, S.FAILED_VALIDATION, S.UNVERIFIED, S.MISSING, S.DELETED}),
    # An attempt that errored says nothing about the backup, only that it is no longer merely "available".
    S.UNVERIFIED: frozenset({S.VALIDATED, S.FAILED_VALIDATION, S.UNVERIFIED, S.MISSING, S.DELETED}),
    S.VALIDATED: frozenset({S.VALIDATED, S.FAILED_VALIDATION, S.MISSING, S.DELETED}),
    S.FAILED_VALIDATION: frozenset({S.VALIDATED, S.FAILED_VALIDATION, S.MISSING, S.DELETED}),
    # A corrected dump or manifest re-uploaded under a rejected id is evaluated again.
    S.REJECTED: frozenset({S.REJECTED, S.PENDING, S.AVAILABLE, S.MISSING, S.DELETED}),
    # Blobs restored (e.g. undeleted from soft delete) are verified again before use.
    S.MISSING: frozenset({S.AVAILABLE, S.REJECTED, S.DELETED}),
    S.DELETED: frozenset(),
}
# Statuses whose entry a manifest has settled: the same manifest again is a no-op, a different one a conflict.
SETTLED = frozenset({S.AVAILABLE, S.VALIDATED, S.FAILED_VALIDATION, S.UNVERIFIED, S.DELETED})
# Statuses whose blobs are expected in storage (reconcile marks them MISSING when gone).
EXPECTED_IN_STORAGE = frozenset({S.PENDING, S.AVAILABLE, S.VALIDATED, S.FAILED_VALIDATION, S.UNVERIFIED,
                                 S.REJECTED})
# Statuses a restore may use.
RESTORABLE = frozenset({S.AVAILABLE, S.VALIDATED, S.FAILED_VALIDATION, S.UNVERIFIED})
# What a validation may run on: cataloged with a verified dump (a failed one may be validated again).
VALIDATABLE = RESTORABLE


class InvalidTransition(ContinuityError):
    code = "invalid_transition"
    http_status = 409


def transition_refusal(old: BackupStatus | None, new: BackupStatus) -> str | None:
    """Why ``old`` may not become ``new``, or None if allowed. A new entry (``old`` None) may start
    as PENDING, AVAILABLE or REJECTED only."""
    if old is None:
        if new in (S.PENDING, S.AVAILABLE, S.REJECTED):
            return None
        return f"a new catalog entry cannot start as {new}"
    if new in TRANSITIONS[old]:
        return None
    allowed = ", ".join(sorted(TRANSITIONS[old])) or "nothing (terminal)"
    return f"a backup in status {old} cannot become {new} (allowed: {allowed})"


def check_transition(old: BackupStatus | None, new: BackupStatus) -> None:
    """:raises InvalidTransition: naming both states and the allowed ones."""
    refusal = transition_refusal(old, new)
    if refusal:
        raise InvalidTransition(refusal)


# ---- layout --------------------------------------------------------------------------------


class RejectionCode(StrEnum):
    LAYOUT = "layout"                        # name outside {tenant}/{yyyy}/{mm}/{dd}/{backup_id}/{file}
    UNKNOWN_TENANT = "unknown_tenant"        # tenant not in the registry
    MANIFEST_INVALID = "manifest_invalid"    # not JSON, or fails the schema / model
    MANIFEST_MISMATCH = "manifest_mismatch"  # manifest names another tenant, id, date or file set
    SIZE_MISMATCH = "size_mismatch"          # db.dump size differs from the manifest
    CHECKSUM_MISMATCH = "checksum_mismatch"  # db.dump sha256 differs from the manifest
    CONFLICT = "conflict"                    # a different manifest under a cataloged id


class BackupRejected(ContinuityError):
    """A blob the catalog refuses; ``rejection`` says which rule and why."""

    code = "backup_rejected"
    http_status = 422

    def __init__(self, code: RejectionCode, reason: str) -> None:
        super().__init__(reason)
        self.rejection_code = code
        self.reason = reason


@dataclass(frozen=True)
class BackupPath:
    """A blob name that follows the layout."""

    tenant: str
    day: date
    backup_id: str
    file: str

    @property
    def prefix(self) -> str:
        return f"{self.tenant}/{self.day:%Y/%m/%d}/{self.backup_id}/"

    @property
    def name(self) -> str:
        return self.prefix + self.file

    def sibling(self, file: str) -> str:
        return self.prefix + file


def backup_id_instant(backup_id: str) -> datetime:
    """The UTC instant a backup id starts with (``YYYYMMDDTHHMMSSZ-xxxxxx``)."""
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def parse_backup_blob(name: str, tenant_known: Callable[[str], bool]) -> BackupPath:
    """Parse a blob name of the backups container strictly.

    :raises BackupRejected: LAYOUT for anything our writer would not produce (``..``, empty or odd
        segments, odd characters, unknown file names, a date path that does not match the backup
        id); UNKNOWN_TENANT for a well-formed name whose tenant is not in the registry.
    """
    shown = name[:200] if BLOB_NAME_CHARS.match(name[:200]) else repr(name[:200])

    def reject(why: str) -> BackupRejected:
        return BackupRejected(RejectionCode.LAYOUT, f"blob {shown}: {why}; expected "
                              "{tenant}/{yyyy}/{mm}/{dd}/{backup_id}/{db.dump|manifest.json}")

    if not name or len(name) > MAX_BLOB_NAME:
        raise reject(f"name length {len(name)} is outside 1..{MAX_BLOB_NAME}")
    if not BLOB_NAME_CHARS.match(name):
        raise reject("name has characters outside [A-Za-z0-9._/-]")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise reject("empty, '.' or '..' path segment")
    if len(parts) != 6:
        raise reject(f"{len(parts)} path segments instead of 6")
    tenant, yyyy, mm, dd, backup_id, file = parts
    if not TENANT_ID_RE.match(tenant):
        raise reject(f"tenant segment {tenant!r} is not a tenant id")
    if not (re.fullmatch(r"[0-9]{4}", yyyy) and re.fullmatch(r"[0-9]{2}", mm) and re.fullmatch(r"[0-9]{2}", dd)):
        raise reject("date segments are not yyyy/mm/dd")
    try:
        day = date(int(yyyy), int(mm), int(dd))
    except ValueError:
        raise reject(f"{yyyy}/{mm}/{dd} is not a calendar date") from None
    if not BACKUP_ID_RE.match(backup_id):
        raise reject(f"backup id {backup_id!r} is not YYYYMMDDTHHMMSSZ-xxxxxx")
    try:
        id_day = backup_id_instant(backup_id).date()
    except ValueError:
        raise reject(f"backup id {backup_id!r} does not start with a valid UTC timestamp") from None
    if id_day != day:
        raise reject(f"date path {yyyy}/{mm}/{dd} does not match backup id {backup_id}")
    if file not in KNOWN_FILES:
        raise reject(f"unknown file {file!r}")
    if not tenant_known(tenant):
        raise BackupRejected(RejectionCode.UNKNOWN_TENANT,
                             f"blob {shown}: tenant {tenant!r} is not in the tenant registry")
    return BackupPath(tenant=tenant, day=day, backup_id=backup_id, file=file)


# ---- manifest ------------------------------------------------------------------------------


def parse_manifest(data: bytes, schema_check: Callable[[Any], str | None]) -> tuple[Manifest, dict[str, Any]]:
    """Validate a manifest against the published JSON Schema (``schema_check`` returns the first
    error or None) and the :class:`Manifest` model.

    :returns: the model and the raw JSON object.
    :raises BackupRejected: MANIFEST_INVALID naming the field.
    """
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BackupRejected(RejectionCode.MANIFEST_INVALID, f"manifest.json is not UTF-8 JSON ({exc})") from exc
    problem = schema_check(raw)
    if problem:
        raise BackupRejected(RejectionCode.MANIFEST_INVALID, f"manifest.json fails the schema: {problem}")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BackupRejected(RejectionCode.MANIFEST_INVALID,
                             f"manifest.json: field {where}: {first['msg']}") from exc
    return manifest, raw


def manifest_mismatch(path: BackupPath, manifest: Manifest) -> str | None:
    """Why the manifest does not describe the backup at ``path``, or None."""
    if manifest.tenant != path.tenant:
        return f"manifest names tenant {manifest.tenant!r} but lies under tenant {path.tenant!r}"
    if manifest.backup_id != path.backup_id:
        return f"manifest names backup {manifest.backup_id!r} but lies under {path.backup_id!r}"
    if manifest.created_at.astimezone(UTC).date() != path.day:
        return f"manifest created_at {manifest.created_at.isoformat()} is not on the date path {path.day:%Y/%m/%d}"
    names = [f.name for f in manifest.files]
    if names != [DUMP_FILE]:
        return f"manifest lists files {names}; expected exactly [{DUMP_FILE!r}]"
    return None


class Duplicate(StrEnum):
    NEW = "new"                # nothing settled under this id yet
    MATCHING = "matching"      # the same manifest again: a no-op
    CONFLICTING = "conflicting"  # a different manifest under a settled id: quarantine, keep the entry


def classify_manifest(existing: CatalogEntry | None, manifest_sha256: str) -> Duplicate:
    if existing is None or existing.manifest_sha256 is None or existing.status not in SETTLED | {S.MISSING}:
        return Duplicate.NEW
    if existing.manifest_sha256 == manifest_sha256:
        return Duplicate.MATCHING
    return Duplicate.CONFLICTING


# ---- catalog entries -------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobFacts:
    """What storage says about one blob, without reading its content."""

    name: str
    size: int
    etag: str = ""
    tier: str | None = None
    immutable_until: datetime | None = None
    legal_hold: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    # User metadata, where the listing asked for it: a manifest blob's carries a copy of the manifest
    # (continuity.catalog.manifest.manifest_copy_metadata).
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CatalogEntry:
    tenant: str
    backup_id: str
    status: BackupStatus
    created_at: datetime
    container: str
    prefix: str
    kind: str = "full"
    completed_at: datetime | None = None
    dump_size: int | None = None
    dump_sha256: str | None = None
    manifest: Mapping[str, Any] | None = None
    manifest_sha256: str | None = None
    source_server: str | None = None
    source_region: str | None = None
    source_database: str | None = None
    pg_version: str | None = None
    storage_tier: str | None = None
    immutable_until: datetime | None = None
    legal_hold: bool = False
    status_reason: str = ""
    last_validation: Mapping[str, Any] | None = None
    first_seen_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def dump_blob(self) -> str:
        return self.prefix + DUMP_FILE

    @property
    def manifest_blob(self) -> str:
        return self.prefix + MANIFEST_FILE

    def to_json(self) -> dict[str, Any]:
        def ts(value: datetime | None) -> str | None:
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None

        return {
            "tenant": self.tenant, "backup_id": self.backup_id, "kind": self.kind, "status": str(self.status),
            "status_reason": self.status_reason, "created_at": ts(self.created_at),
            "completed_at": ts(self.completed_at), "container": self.container,
            "dump_blob": self.dump_blob, "manifest_blob": self.manifest_blob, "dump_size": self.dump_size,
            "dump_sha256": self.dump_sha256, "manifest_sha256": self.manifest_sha256,
            "source": {"server": self.source_server, "region": self.source_region,
                       "database": self.source_database, "pg_version": self.pg_version},
            "storage_tier": self.storage_tier, "immutable_until": ts(self.immutable_until),
            "legal_hold": self.legal_hold, "last_validation": self.last_validation,
            "first_seen_at": ts(self.first_seen_at), "updated_at": ts(self.updated_at),
        }

    def storage_view(self) -> dict[str, Any]:
        """The fields storage alone can reproduce (what a rebuild guarantees): everything but the
        bookkeeping timestamps, the free-text status reason and the validation history, which live in
        the control database and the evidence chain."""
        view = self.to_json()
        for key in ("first_seen_at", "updated_at", "last_validation", "status_reason"):
            view.pop(key)
        return view


def pending_entry(path: BackupPath, container: str, dump: BlobFacts | None, manifest_seen: bool,
                  existing: CatalogEntry | None) -> CatalogEntry:
    """The entry for a backup with one part in storage."""
    missing = MANIFEST_FILE if not manifest_seen else DUMP_FILE
    base = existing or CatalogEntry(tenant=path.tenant, backup_id=path.backup_id, status=S.PENDING,
                                    created_at=backup_id_instant(path.backup_id), container=container,
                                    prefix=path.prefix)
    return replace(base, status=S.PENDING, status_reason=f"waiting for {missing}",
                   dump_size=dump.size if dump else base.dump_size,
                   storage_tier=dump.tier if dump else base.storage_tier)


def entry_from_manifest(path: BackupPath, container: str, manifest: Manifest, raw: Mapping[str, Any],
                        manifest_sha256: str, dump: BlobFacts, status: BackupStatus, reason: str,
                        existing: CatalogEntry | None = None) -> CatalogEntry:
    """The entry a verified (or rejected) manifest describes. ``dump_sha256`` is the manifest's
    value: it is only AVAILABLE when the streamed hash equalled it."""
    dump_file = manifest.file(DUMP_FILE)
    return CatalogEntry(
        tenant=path.tenant, backup_id=path.backup_id, status=status, status_reason=reason,
        created_at=manifest.created_at.astimezone(UTC), completed_at=manifest.completed_at.astimezone(UTC),
        container=container, prefix=path.prefix, kind=manifest.kind, dump_size=dump.size,
        dump_sha256=dump_file.sha256, manifest=dict(raw), manifest_sha256=manifest_sha256,
        source_server=manifest.source.server, source_region=manifest.source.region,
        source_database=manifest.source.database, pg_version=manifest.source.pg_version,
        storage_tier=dump.tier, immutable_until=dump.immutable_until, legal_hold=dump.legal_hold,
        last_validation=existing.last_validation if existing else None,
        first_seen_at=existing.first_seen_at if existing else None,
    )


def dump_mismatch(manifest: Manifest, size: int, sha256: str) -> tuple[RejectionCode, str] | None:
    """Why the stored dump is not the one the manifest describes, or None."""
    expected = manifest.file(DUMP_FILE)
    if size != expected.size:
        return RejectionCode.SIZE_MISMATCH, f"db.dump is {size} bytes; the manifest says {expected.size}"
    if sha256 != expected.sha256:
        return (RejectionCode.CHECKSUM_MISMATCH,
                f"db.dump sha256 {sha256[:12]}… differs from the manifest's {expected.sha256[:12]}…")
    return None


def backup_tags(tenant: str, backup_id: str, kind: str, status: BackupStatus) -> dict[str, str]:
    """Blob index tags, so that storage alone answers "what does tenant X have, in which state"."""
    return {"tenant": tenant, "backup_id": backup_id, "kind": kind, "status": str(status)}


# ---- queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    """``list_backups`` filters; newest first, keyset-paginated by (created_at, backup_id)."""

    tenant: str | None = None
    status: BackupStatus | None = None
    kind: str | None = None
    since: datetime | None = None
    before: datetime | None = None
    limit: int = DEFAULT_PAGE
    after: Cursor | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}, got {self.limit}")
        for name in ("since", "before"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidRequest(f"{name} must carry a timezone (e.g. 2025-01-01T00:00:00Z)")


Cursor = tuple[datetime, str, str]  # (created_at, backup_id, tenant) of the last item returned


def encode_cursor(entry: CatalogEntry) -> str:
    """An opaque cursor pointing after ``entry`` in newest-first order."""
    payload = json.dumps([entry.created_at.astimezone(UTC).isoformat(), entry.backup_id, entry.tenant],
                         separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    """:raises InvalidRequest: for a cursor this API did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, backup_id, tenant = json.loads(raw)
        at = datetime.fromisoformat(created)
        if (at.tzinfo is None or not isinstance(backup_id, str) or not BACKUP_ID_RE.match(backup_id)
                or not isinstance(tenant, str) or not TENANT_ID_RE.match(tenant)):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not one this API issued; start again without a cursor") from exc
    return at, backup_id, tenant
