"""The backup manifest: what a backup holds, written last so that a backup without one is not a backup.

``schemas/manifest.schema.json`` is the published contract (JSON Schema); :class:`Manifest` is the
same contract in code. A test keeps the two in agreement.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from continuity.kernel.tenants import TENANT_ID_PATTERN

MANIFEST_FORMAT = "continuity.backup-manifest/1"
BACKUP_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$"
BACKUP_ID_RE = re.compile(BACKUP_ID_PATTERN)
SHA256_PATTERN = r"^[0-9a-f]{64}$"
DUMP_FILE = "db.dump"
MANIFEST_FILE = "manifest.json"

# Tables whose row counts are recorded at backup time and checked after a restore.
RECOVERY_TABLES = (
    "res_company", "res_partner", "account_account", "account_journal", "account_move",
    "account_move_line", "ir_attachment", "ir_module_module",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestFile(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_.-]{1,64}$")]
    role: Literal["database"]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    size: Annotated[int, Field(ge=0)]


class Source(_Strict):
    server: str = Field(min_length=1, max_length=100)
    region: str = Field(pattern=r"^[a-z][a-z0-9]{1,39}$")
    database: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pg_version: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*")
    system_identifier: str | None = None


class Ledger(_Strict):
    """A fingerprint of the posted ledger taken in the dump's snapshot."""

    fingerprint: Annotated[str, Field(pattern=SHA256_PATTERN)]
    posted_moves: int = Field(ge=0)
    posted_lines: int = Field(ge=0)
    debit_total: str = Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$")
    credit_total: str = Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$")


class Attachments(_Strict):
    container: str
    prefix: str
    count: int = Field(ge=0)
    bytes: int = Field(ge=0)


class TableSchema(_Strict):
    """One recovery table's shape at backup time: a hash of its columns, and each index's and constraint's
    definition hashed under its name (so a validation names what is missing or altered)."""

    columns: Annotated[str, Field(pattern=SHA256_PATTERN)]
    indexes: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]]
    constraints: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]]


class TenantIdentity(_Strict):
    """What makes the database this tenant's and no other's, read in the dump's snapshot.

    ``database_uuid`` is Odoo's own per-database uuid, kept by dumps and restores and never shared by two
    databases; ``companies_sha256`` hashes the companies' ids and names (which a rename changes).
    """

    companies_sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    companies: int = Field(ge=0)
    # Odoo's ``database.uuid`` system parameter, when the database has one.
    database_uuid: str | None = Field(None, max_length=64)


class OdooInfo(_Strict):
    """The Odoo a backup holds: ``base``'s installed version (e.g. ``17.0.1.3``), its major, installed modules."""

    version: str | None = Field(None, max_length=40)
    major: int | None = Field(None, ge=1, le=99)
    modules: tuple[Annotated[str, Field(max_length=128)], ...] = Field((), max_length=5000)


class PointInTime(_Strict):
    """What a point-in-time extract is: one tenant's database taken out of its server rewound to ``target``
    (continuity.pitr) — not a dump of the live database. Its data is as of ``target``, not ``created_at``."""

    target: datetime
    reached: datetime | None = None
    server: Annotated[str, Field(max_length=80)]
    base_backup: Annotated[str, Field(max_length=80)]
    wal_first: Annotated[str, Field(pattern=r"^[0-9A-F]{24}$")]
    wal_last: Annotated[str, Field(pattern=r"^[0-9A-F]{24}$")]


KIND_POINT_IN_TIME = "point-in-time"


class Manifest(_Strict):
    format: Literal["continuity.backup-manifest/1"] = "continuity.backup-manifest/1"
    tenant: Annotated[str, Field(pattern=TENANT_ID_PATTERN)]
    backup_id: Annotated[str, Field(pattern=BACKUP_ID_PATTERN)]
    kind: Literal["full", "point-in-time"] = "full"
    created_at: datetime
    completed_at: datetime
    source: Source
    files: tuple[ManifestFile, ...] = Field(min_length=1)
    row_counts: dict[str, int]
    ledger: Ledger
    attachments: Attachments
    # Recorded by backups taken since the identity and schema proofs exist; older manifests lack them.
    identity: TenantIdentity | None = None
    tables: dict[str, TableSchema] | None = None
    odoo: OdooInfo | None = None
    # What the backup job found worth saying aloud: an empty or non-Odoo database, a fact it could not read.
    warnings: tuple[Annotated[str, Field(max_length=500)], ...] = Field((), max_length=50)
    # Only on kind "point-in-time": the server's rewind this extract was taken from.
    point_in_time: PointInTime | None = None

    def file(self, name: str) -> ManifestFile:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise KeyError(name)


def backup_prefix(tenant: str, backup_id: str, created_at: datetime) -> str:
    """``{tenant}/{yyyy}/{mm}/{dd}/{backup_id}/`` inside the backups container."""
    return f"{tenant}/{created_at:%Y}/{created_at:%m}/{created_at:%d}/{backup_id}/"


# ``BackupRef.stored_manifest_sha256`` of a cataloged backup whose manifest is gone from storage.
MANIFEST_MISSING = "missing"


@dataclass(frozen=True)
class Anchor:
    """What the catalog recorded when it first saw a backup: the truth a later validation holds storage to.

    Storage is mutable (until its immutability policy locks it, and an overwrite before that is possible);
    the catalog entry written at first ingest, and its ``catalog.ingested`` evidence record, are not.
    """

    manifest_sha256: str
    dump_sha256: str
    dump_size: int
    cataloged_at: datetime | None
    evidence_seq: int | None

    def describe(self) -> str:
        when = self.cataloged_at.astimezone(UTC).isoformat().replace("+00:00", "Z") if self.cataloged_at else "?"
        seq = f", evidence seq {self.evidence_seq}" if self.evidence_seq is not None else ""
        return f"cataloged at {when}{seq}"


@dataclass(frozen=True)
class BackupRef:
    """A backup as the validation sees it: where it lies and what its manifest promises.

    ``manifest`` is the cataloged manifest when ``anchor`` is set (the validation then never trusts the
    manifest storage holds now; ``stored_manifest_sha256`` is what storage holds, to compare).
    """

    tenant: str
    backup_id: str
    container: str
    prefix: str
    manifest: Manifest
    anchor: Anchor | None = None
    stored_manifest_sha256: str | None = None
    # Why the catalog refused this backup at ingest (e.g. its dump never matched the manifest), if it did.
    catalog_refusal: str | None = None
    # The tenant's identity as its last validated backup recorded it: (backup id, identity).
    established: tuple[str, TenantIdentity] | None = None

    @property
    def dump_blob(self) -> str:
        return self.prefix + DUMP_FILE

    @property
    def created_at(self) -> datetime:
        return self.manifest.created_at.astimezone(UTC)


# ---- the manifest's copy in its own blob's metadata ------------------------------------------------
#
# A catalog rebuild lists the backups container; reading every manifest on top of that costs one GET per
# backup. So the backup job also writes the manifest's bytes (zlib, then base64: metadata values are HTTP
# header text) into the manifest blob's metadata, which a listing with include=metadata returns. Metadata
# travels in the same Put Blob as the content: the copy and the content are written together, atomically.
# Trust (README, "Catalog"): on version-level WORM storage "Set Blob Metadata" is among the operations an
# immutable blob version refuses (learn.microsoft.com/azure/storage/blobs/immutable-storage-overview, "Blob
# operations not allowed"), so the copy stays what was written with the content. Elsewhere metadata can be
# rewritten alone; the catalog then records the copy's sha256, and every restore holds the manifest blob to
# it (``file_checksum``): a forged copy makes the backup fail, never restore.

MANIFEST_COPY_KEY = "continuity_manifest_v1_"  # metadata names ..._0, ..._1: C# identifiers, as Azure requires
MANIFEST_COPY_CHUNK = 2048       # characters per metadata value: keeps each header line short for proxies
MANIFEST_COPY_LIMIT = 6 * 1024   # names + values: Azure allows 8 KiB of metadata per blob; room is left
MANIFEST_COPY_MAX_BYTES = 1024 * 1024  # a copy never decompresses to more (a zlib bomb in metadata)


class ManifestCopyUnusable(ValueError):
    """The manifest copy in a blob's metadata cannot be decoded; the reason is the message."""


def manifest_copy_metadata(data: bytes) -> dict[str, str]:
    """The metadata carrying a copy of the manifest ``data``, or ``{}`` when it would not stay well inside
    Azure's 8 KiB metadata limit (the blob is then written without it, and a rebuild reads the blob)."""
    if len(data) > MANIFEST_COPY_MAX_BYTES:
        return {}
    packed = base64.b64encode(zlib.compress(data, 9)).decode("ascii")
    metadata = {f"{MANIFEST_COPY_KEY}{n}": packed[i:i + MANIFEST_COPY_CHUNK]
                for n, i in enumerate(range(0, len(packed), MANIFEST_COPY_CHUNK))}
    if sum(len(k) + len(v) for k, v in metadata.items()) > MANIFEST_COPY_LIMIT:
        return {}
    return metadata


def manifest_from_copy(metadata: Mapping[str, str]) -> bytes | None:
    """The manifest bytes a blob's metadata carries, or None when it carries no copy.

    :raises ManifestCopyUnusable: a copy is there but incomplete, not base64, not zlib or too large.
    """
    chunks: dict[int, str] = {}
    for name, value in metadata.items():
        key = name.lower()  # metadata names are case-insensitive
        if key.startswith(MANIFEST_COPY_KEY):
            index = key.removeprefix(MANIFEST_COPY_KEY)
            if not index.isdigit():
                raise ManifestCopyUnusable(f"metadata {name!r} is not a part of a manifest copy")
            chunks[int(index)] = value
    if not chunks:
        return None
    if sorted(chunks) != list(range(len(chunks))):
        raise ManifestCopyUnusable(f"manifest copy has parts {sorted(chunks)}, not 0..{len(chunks) - 1}")
    try:
        packed = base64.b64decode("".join(chunks[n] for n in range(len(chunks))), validate=True)
        inflate = zlib.decompressobj()
        data = inflate.decompress(packed, MANIFEST_COPY_MAX_BYTES)
    except (binascii.Error, ValueError, zlib.error) as exc:
        raise ManifestCopyUnusable(f"manifest copy does not decode ({exc})") from exc
    if not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
        raise ManifestCopyUnusable("manifest copy is truncated, padded or larger than "
                                   f"{MANIFEST_COPY_MAX_BYTES} bytes")
    return data
