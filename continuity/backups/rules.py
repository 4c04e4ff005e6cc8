"""Backups: ids, blob names, tags and the manifest, decided without I/O.

The taking of a backup (pg_dump, upload) is :mod:`continuity.adapters.tools.backup_taker`; this module
holds what it decides: a backup is a ``db.dump`` and a ``manifest.json`` under
``{tenant}/{yyyy}/{mm}/{dd}/{backup_id}/`` in the backups container, the manifest written last.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from continuity.catalog.manifest import (
    BACKUP_ID_RE,
    DUMP_FILE,
    MANIFEST_FILE,
    Attachments,
    Ledger,
    Manifest,
    ManifestFile,
    OdooInfo,
    PointInTime,
    Source,
    TableSchema,
    TenantIdentity,
    backup_prefix,
)
from continuity.kernel.errors import ContinuityError, InvalidRequest
from continuity.kernel.tenants import TENANT_ID_RE

DEFAULT_DEADLINE_SECONDS = 3600
# Blob index tags, as the catalog writes them (continuity.catalog.model.backup_tags): the backup's kind and
# status. A new backup is "pending" until the catalog verifies its checksum and marks it "available".
KIND_FULL = "full"
STATUS_PENDING = "pending"


class BackupFailed(ContinuityError):
    """pg_dump failed, ran past its deadline, or the upload did not complete; no manifest was written."""

    code = "backup_failed"
    http_status = 502


def tenant_id_refusal(tenant_id: str) -> str | None:
    """Why ``tenant_id`` cannot name a tenant, or None when it has the registry's form."""
    # fullmatch: `$` alone would accept a trailing newline ("acme\n").
    if not TENANT_ID_RE.fullmatch(tenant_id):
        shown = repr(tenant_id[:60])
        return f"tenant id {shown} is not valid: expected ^[a-z][a-z0-9-]{{1,39}}$ (e.g. acme-finance)"
    return None


def check_tenant_id(tenant_id: str) -> str:
    """The id, if well-formed; refused before any I/O otherwise.

    :raises InvalidRequest: naming the accepted form.
    """
    reason = tenant_id_refusal(tenant_id)
    if reason:
        raise InvalidRequest(reason)
    return tenant_id


def new_backup_id(now: datetime, token: str) -> str:
    """``YYYYMMDDTHHMMSSZ-xxxxxx`` from a UTC time and six hex characters.

    :raises ValueError: when the time is naive or the token is not six lowercase hex characters.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    backup_id = f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{token}"
    if not BACKUP_ID_RE.match(backup_id):
        raise ValueError(f"token must be six lowercase hex characters, got {token!r}")
    return backup_id


@dataclass(frozen=True)
class BackupPaths:
    """Blob names of one backup inside the backups container."""

    prefix: str

    @classmethod
    def of(cls, tenant: str, backup_id: str, created_at: datetime) -> BackupPaths:
        return cls(prefix=backup_prefix(tenant, backup_id, created_at.astimezone(UTC)))

    @property
    def dump(self) -> str:
        return f"{self.prefix}{DUMP_FILE}"

    @property
    def manifest(self) -> str:
        return f"{self.prefix}{MANIFEST_FILE}"


def blob_tags(tenant: str, backup_id: str, kind: str = KIND_FULL, status: str = STATUS_PENDING) -> dict[str, str]:
    """Blob index tags of a backup's files (the same on db.dump and manifest.json)."""
    return {"tenant": tenant, "backup_id": backup_id, "kind": kind, "status": status}


def build_manifest(*, tenant: str, backup_id: str, created_at: datetime, completed_at: datetime, source: Source,
                   dump_sha256: str, dump_size: int, row_counts: dict[str, int], ledger: Ledger,
                   attachments: Attachments, identity: TenantIdentity | None = None,
                   tables: dict[str, TableSchema] | None = None, odoo: OdooInfo | None = None,
                   warnings: tuple[str, ...] = (), point_in_time: PointInTime | None = None) -> Manifest:
    """The manifest of a completed dump (validated by the model)."""
    return Manifest(
        tenant=tenant, backup_id=backup_id, created_at=created_at, completed_at=completed_at, source=source,
        files=(ManifestFile(name=DUMP_FILE, role="database", sha256=dump_sha256, size=dump_size),),
        row_counts=row_counts, ledger=ledger, attachments=attachments, identity=identity, tables=tables,
        odoo=odoo, warnings=warnings, point_in_time=point_in_time,
        kind="point-in-time" if point_in_time is not None else "full",
    )


@dataclass(frozen=True)
class StoredBackup:
    """What a backup stored: printed by the CLI, returned by the activity."""

    tenant: str
    backup_id: str
    container: str
    dump: str
    manifest: str
    size: int
    sha256: str
    seconds: float
    posted_moves: int

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "backup_id": self.backup_id, "container": self.container, "dump": self.dump,
                "manifest": self.manifest, "size": self.size, "sha256": self.sha256,
                "seconds": round(self.seconds, 2), "posted_moves": self.posted_moves}
