"""The manifest contract and the backup's pure decisions: ids, paths, tags, refusals."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest

from continuity.backups.rules import BackupPaths, blob_tags, build_manifest, check_tenant_id, new_backup_id
from continuity.catalog.manifest import Attachments, Ledger, Manifest, Source
from continuity.kernel.errors import InvalidRequest
from continuity.validation.odoo.schema import fold_ledger

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "manifest.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
CREATED = datetime(2026, 11, 24, 13, 5, 9, tzinfo=UTC)


def make_manifest(**overrides: object) -> Manifest:
    args: dict[str, object] = dict(
        tenant="acme-finance", backup_id="20261124T130509Z-0a1b2c", created_at=CREATED,
        completed_at=CREATED + timedelta(seconds=4),
        source=Source(server="weu-primary", region="westeurope", database="odoo_acme_finance", pg_version="15.8",
                      system_identifier="7441234567890123456"),
        dump_sha256="a" * 64, dump_size=645254, row_counts={"account_move": 2012, "res_partner": 201},
        ledger=Ledger(fingerprint="b" * 64, posted_moves=1984, posted_lines=8300, debit_total="123.45",
                      credit_total="123.45"),
        attachments=Attachments(container="attachments", prefix="acme-finance/", count=20, bytes=16500),
    )
    args.update(overrides)
    return build_manifest(**args)  # type: ignore[arg-type]


def test_model_schema_and_published_schema_agree() -> None:
    published = {k: v for k, v in SCHEMA.items() if k not in ("$schema", "$id", "description")}
    assert Manifest.model_json_schema() == published


def test_built_manifest_validates_against_the_published_schema() -> None:
    raw = json.loads(make_manifest().model_dump_json())
    jsonschema.Draft202012Validator(SCHEMA).validate(raw)
    assert raw["files"] == [{"name": "db.dump", "role": "database", "sha256": "a" * 64, "size": 645254}]


def test_manifest_with_a_malformed_sha256_is_refused_by_the_model() -> None:
    with pytest.raises(ValueError, match="sha256"):
        make_manifest(dump_sha256="not-a-hash")


def test_backup_id_has_the_manifest_pattern_in_utc() -> None:
    cet = timezone(timedelta(hours=1))
    assert new_backup_id(datetime(2026, 11, 24, 14, 5, 9, tzinfo=cet), "0a1b2c") == "20261124T130509Z-0a1b2c"


@pytest.mark.parametrize("token", ["", "0A1B2C", "0a1b2", "0a1b2c3", "zzzzzz"])
def test_backup_id_with_a_bad_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="six lowercase hex"):
        new_backup_id(CREATED, token)


def test_backup_id_from_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        new_backup_id(datetime(2026, 11, 24), "0a1b2c")  # noqa: DTZ001


def test_backup_paths_follow_the_blob_layout() -> None:
    paths = BackupPaths.of("acme-finance", "20261124T130509Z-0a1b2c", CREATED)
    assert paths.dump == "acme-finance/2026/11/24/20261124T130509Z-0a1b2c/db.dump"
    assert paths.manifest == "acme-finance/2026/11/24/20261124T130509Z-0a1b2c/manifest.json"


def test_blob_tags_name_tenant_backup_kind_and_pending_status() -> None:
    assert blob_tags("globex", "20261124T130509Z-0a1b2c") == {
        "tenant": "globex", "backup_id": "20261124T130509Z-0a1b2c", "kind": "full", "status": "pending"}


@pytest.mark.parametrize("tenant_id", ["../etc/passwd", "acme/../globex", "ACME", "a", "acme finance",
                                       "acme;drop database x", "-acme", "a" * 41, "acme\n"])
def test_hostile_tenant_id_is_refused_naming_the_form(tenant_id: str) -> None:
    with pytest.raises(InvalidRequest, match=r"is not valid: expected \^\[a-z\]"):
        check_tenant_id(tenant_id)


def test_well_formed_tenant_id_passes() -> None:
    assert check_tenant_id("acme-finance") == "acme-finance"


def test_empty_ledger_folds_to_the_sha256_of_nothing() -> None:
    assert fold_ledger(()) == hashlib.sha256(b"").hexdigest()


def test_ledger_fingerprint_changes_with_any_move_digest_and_with_order() -> None:
    rows = [(1, "INV/2026/00001", "2026-01-02", "out_invoice", 1, "aa"), (2, "MISC/2026/00001", "2026-01-02",
                                                                          "entry", 3, "bb")]
    base = fold_ledger(rows)
    assert fold_ledger([rows[0], (*rows[1][:5], "bc")]) != base
    assert fold_ledger(list(reversed(rows))) != base
    assert fold_ledger(rows) == base
