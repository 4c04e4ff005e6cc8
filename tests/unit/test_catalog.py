"""The catalog's pure rules: layout, status transitions, manifests, duplicates, cursors."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from continuity.catalog.manifest import Manifest
from continuity.catalog.model import (
    SETTLED,
    TRANSITIONS,
    BackupPath,
    BackupRejected,
    BackupStatus,
    BlobFacts,
    CatalogEntry,
    Duplicate,
    InvalidTransition,
    RejectionCode,
    backup_tags,
    check_transition,
    classify_manifest,
    decode_cursor,
    dump_mismatch,
    encode_cursor,
    entry_from_manifest,
    manifest_mismatch,
    parse_backup_blob,
    parse_manifest,
    transition_refusal,
)
from continuity.kernel.errors import InvalidRequest

S = BackupStatus
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "manifest.schema.json").read_text())


def schema_check(raw: Any) -> str | None:
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(raw))
    return errors[0].message if errors else None


def make_manifest(tenant: str = "acme-finance", backup_id: str = "20250301T020000Z-a1b2c3",
                  dump: bytes = b"PGDMP" + b"\x00" * 2000, **overrides: Any) -> dict[str, Any]:
    """A valid manifest (as JSON) describing ``dump`` (builder, like Barman's build_test_backup_info)."""
    created = datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    raw: dict[str, Any] = {
        "format": "continuity.backup-manifest/1",
        "tenant": tenant,
        "backup_id": backup_id,
        "kind": "full",
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "completed_at": (created + timedelta(seconds=42)).isoformat().replace("+00:00", "Z"),
        "source": {"server": "weu-primary", "region": "westeurope", "database": "odoo_acme", "pg_version": "16.4"},
        "files": [{"name": "db.dump", "role": "database", "sha256": hashlib.sha256(dump).hexdigest(),
                   "size": len(dump)}],
        "row_counts": {"account_move": 10, "account_move_line": 40},
        "ledger": {"fingerprint": "ab" * 32, "posted_moves": 10, "posted_lines": 40, "debit_total": "100.00",
                   "credit_total": "100.00"},
        "attachments": {"container": "attachments", "prefix": f"{tenant}/", "count": 0, "bytes": 0},
    }
    raw.update(overrides)
    return raw


def known(tenant: str) -> bool:
    return tenant in {"acme-finance", "globex"}


BLOB = "acme-finance/2025/03/01/20250301T020000Z-a1b2c3/db.dump"


# ---- layout --------------------------------------------------------------------------------

def test_layout_parses_tenant_date_id_and_file() -> None:
    path = parse_backup_blob(BLOB, known)
    assert path == BackupPath("acme-finance", date(2025, 3, 1), "20250301T020000Z-a1b2c3", "db.dump")
    assert path.prefix == "acme-finance/2025/03/01/20250301T020000Z-a1b2c3/"
    assert path.sibling("manifest.json") == path.prefix + "manifest.json"


@pytest.mark.parametrize(("name", "why"), [
    ("acme-finance/2025/03/01/../20250301T020000Z-a1b2c3/db.dump", "'..'"),
    ("acme-finance/2025/03/01//20250301T020000Z-a1b2c3/db.dump", "empty"),
    ("/acme-finance/2025/03/01/20250301T020000Z-a1b2c3/db.dump", "empty"),
    ("acme-finance/2025/03/01/20250301T020000Z-a1b2c3/db dump", "characters outside"),
    ("acme-finance/2025/03/01/20250301T020000Z-a1b2c3/db%2Edump", "characters outside"),
    ("acme-finance/2025/03/01/20250301T020000Z-a1b2c3/dB\u00e9.dump", "characters outside"),
    ("acme-finance\\2025/03/01/20250301T020000Z-a1b2c3/db.dump", "characters outside"),
    ("acme-finance/2025/03/01/20250301T020000Z-a1b2c3/db.dump\x00", "characters outside"),
    ("acme-finance/2025/03/01/20250301T020000Z-a1b2c3/notes.txt", "unknown file 'notes.txt'"),
    ("acme-finance/2025/03/01/20250301T020000Z-a1b2c3/x/db.dump", "7 path segments"),
    ("acme-finance/2025/03/20250301T020000Z-a1b2c3/db.dump", "5 path segments"),
    ("acme-finance/2025/03/02/20250301T020000Z-a1b2c3/db.dump", "does not match backup id"),
    ("acme-finance/2025/02/30/20250230T020000Z-a1b2c3/db.dump", "not a calendar date"),
    ("acme-finance/2025/3/01/20250301T020000Z-a1b2c3/db.dump", "not yyyy/mm/dd"),
    ("acme-finance/2025/03/01/20250301-a1b2c3/db.dump", "is not YYYYMMDDTHHMMSSZ"),
    ("acme-finance/2025/03/01/20250301T250000Z-a1b2c3/db.dump", "valid UTC timestamp"),
    ("Acme/2025/03/01/20250301T020000Z-a1b2c3/db.dump", "not a tenant id"),
    ("", "length 0"),
    ("a/" * 600, "length"),
])
def test_layout_rejects_names_our_writer_would_not_produce(name: str, why: str) -> None:
    with pytest.raises(BackupRejected, match=why) as info:
        parse_backup_blob(name, known)
    assert info.value.rejection_code is RejectionCode.LAYOUT


def test_layout_rejects_unknown_tenant() -> None:
    with pytest.raises(BackupRejected, match="'initech' is not in the tenant registry") as info:
        parse_backup_blob("initech/2025/03/01/20250301T020000Z-a1b2c3/db.dump", known)
    assert info.value.rejection_code is RejectionCode.UNKNOWN_TENANT


# ---- transitions ---------------------------------------------------------------------------

def test_status_members_are_uppercase_and_values_lowercase() -> None:
    assert all(s.name.isupper() and s.value == s.name.lower() for s in BackupStatus)
    assert set(TRANSITIONS) == set(BackupStatus)


@pytest.mark.parametrize(("old", "new"), [
    (S.PENDING, S.AVAILABLE), (S.PENDING, S.REJECTED), (S.AVAILABLE, S.VALIDATED),
    (S.AVAILABLE, S.FAILED_VALIDATION), (S.VALIDATED, S.VALIDATED), (S.FAILED_VALIDATION, S.VALIDATED),
    (S.VALIDATED, S.MISSING), (S.MISSING, S.AVAILABLE), (S.REJECTED, S.AVAILABLE), (S.VALIDATED, S.DELETED),
    (None, S.PENDING), (None, S.AVAILABLE), (None, S.REJECTED),
])
def test_allowed_transitions(old: BackupStatus | None, new: BackupStatus) -> None:
    assert transition_refusal(old, new) is None


@pytest.mark.parametrize(("old", "new", "reason"), [
    (S.DELETED, S.AVAILABLE, "a backup in status deleted cannot become available (allowed: nothing (terminal))"),
    (S.AVAILABLE, S.PENDING, "a backup in status available cannot become pending"),
    (S.VALIDATED, S.AVAILABLE, "a backup in status validated cannot become available"),
    (S.PENDING, S.VALIDATED, "a backup in status pending cannot become validated"),
    (S.MISSING, S.VALIDATED, "a backup in status missing cannot become validated"),
    (S.REJECTED, S.VALIDATED, "a backup in status rejected cannot become validated"),
    (None, S.VALIDATED, "a new catalog entry cannot start as validated"),
])
def test_refused_transitions_say_why(old: BackupStatus | None, new: BackupStatus, reason: str) -> None:
    refusal = transition_refusal(old, new)
    assert refusal is not None and refusal.startswith(reason)
    with pytest.raises(InvalidTransition, match=re.escape(reason)):
        check_transition(old, new)


def test_deleted_is_terminal() -> None:
    assert TRANSITIONS[S.DELETED] == frozenset()


# ---- manifests -----------------------------------------------------------------------------

def test_valid_manifest_parses() -> None:
    manifest, raw = parse_manifest(json.dumps(make_manifest()).encode(), schema_check)
    assert manifest.tenant == "acme-finance"
    assert raw["backup_id"] == "20250301T020000Z-a1b2c3"


def test_manifest_that_is_not_json_is_rejected() -> None:
    with pytest.raises(BackupRejected, match="not UTF-8 JSON") as info:
        parse_manifest(b"{oops", schema_check)
    assert info.value.rejection_code is RejectionCode.MANIFEST_INVALID


def test_manifest_failing_the_schema_is_rejected_naming_it() -> None:
    raw = make_manifest()
    del raw["ledger"]
    with pytest.raises(BackupRejected, match="fails the schema: 'ledger' is a required property"):
        parse_manifest(json.dumps(raw).encode(), schema_check)


def test_manifest_failing_the_model_is_rejected_naming_the_field() -> None:
    raw = make_manifest(created_at="yesterday")
    with pytest.raises(BackupRejected, match="field created_at"):
        parse_manifest(json.dumps(raw).encode(), lambda _raw: None)


@pytest.mark.parametrize(("overrides", "why"), [
    ({"tenant": "globex"}, "names tenant 'globex' but lies under tenant 'acme-finance'"),
    ({"backup_id": "20250301T020000Z-ffffff"}, "names backup '20250301T020000Z-ffffff'"),
    ({"created_at": "2025-03-02T02:00:00Z"}, "is not on the date path 2025/03/01"),
])
def test_manifest_that_describes_another_backup_is_a_mismatch(overrides: dict[str, Any], why: str) -> None:
    manifest = Manifest.model_validate(make_manifest(**overrides))
    problem = manifest_mismatch(parse_backup_blob(BLOB, known), manifest)
    assert problem is not None and why in problem


def test_manifest_listing_extra_files_is_a_mismatch() -> None:
    raw = make_manifest()
    raw["files"].append({**raw["files"][0], "name": "extra.bin"})
    problem = manifest_mismatch(parse_backup_blob(BLOB, known), Manifest.model_validate(raw))
    assert problem is not None and "expected exactly ['db.dump']" in problem


def test_dump_size_and_checksum_are_compared_with_the_manifest() -> None:
    dump = b"x" * 100
    manifest = Manifest.model_validate(make_manifest(dump=dump))
    assert dump_mismatch(manifest, 100, hashlib.sha256(dump).hexdigest()) is None
    size = dump_mismatch(manifest, 99, hashlib.sha256(dump).hexdigest())
    assert size is not None and size[0] is RejectionCode.SIZE_MISMATCH
    checksum = dump_mismatch(manifest, 100, "0" * 64)
    assert checksum is not None and checksum[0] is RejectionCode.CHECKSUM_MISMATCH


# ---- duplicates ----------------------------------------------------------------------------

def entry(status: BackupStatus, manifest_sha: str | None = "a" * 64) -> CatalogEntry:
    return CatalogEntry(tenant="acme-finance", backup_id="20250301T020000Z-a1b2c3", status=status,
                        created_at=datetime(2025, 3, 1, 2, tzinfo=UTC), container="backups",
                        prefix="acme-finance/2025/03/01/20250301T020000Z-a1b2c3/", manifest_sha256=manifest_sha)


def test_same_manifest_under_a_settled_id_is_a_matching_duplicate() -> None:
    for status in SETTLED:
        assert classify_manifest(entry(status), "a" * 64) is Duplicate.MATCHING


def test_different_manifest_under_a_settled_id_is_a_conflict() -> None:
    for status in SETTLED | {S.MISSING}:
        assert classify_manifest(entry(status), "b" * 64) is Duplicate.CONFLICTING


def test_pending_or_rejected_entries_are_evaluated_again() -> None:
    assert classify_manifest(entry(S.PENDING, None), "b" * 64) is Duplicate.NEW
    assert classify_manifest(entry(S.REJECTED), "b" * 64) is Duplicate.NEW
    assert classify_manifest(None, "b" * 64) is Duplicate.NEW


# ---- entries, tags, cursors ----------------------------------------------------------------

def test_entry_from_manifest_carries_source_checksum_and_blob_facts() -> None:
    raw = make_manifest()
    manifest = Manifest.model_validate(raw)
    path = parse_backup_blob(BLOB, known)
    facts = BlobFacts(name=BLOB, size=manifest.files[0].size, tier="Hot")
    built = entry_from_manifest(path, "backups", manifest, raw, "c" * 64, facts, S.AVAILABLE, "ok")
    assert (built.source_server, built.source_region, built.pg_version) == ("weu-primary", "westeurope", "16.4")
    assert built.dump_sha256 == manifest.files[0].sha256
    assert built.dump_blob == BLOB
    assert built.storage_tier == "Hot"
    assert built.to_json()["created_at"] == "2025-03-01T02:00:00Z"


def test_tags_carry_tenant_kind_and_status() -> None:
    assert backup_tags("acme-finance", "20250301T020000Z-a1b2c3", "full", S.AVAILABLE) == {
        "tenant": "acme-finance", "backup_id": "20250301T020000Z-a1b2c3", "kind": "full", "status": "available"}


def test_cursor_round_trips_and_is_opaque() -> None:
    e = entry(S.AVAILABLE)
    cursor = encode_cursor(e)
    assert "acme" not in cursor
    assert decode_cursor(cursor) == (e.created_at, e.backup_id, e.tenant)


@pytest.mark.parametrize("cursor", ["garbage!", "e30", "WyJ4IiwgInkiXQ"])
def test_cursor_not_issued_by_the_api_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="cursor is not one this API issued"):
        decode_cursor(cursor)
