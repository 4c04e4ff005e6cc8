"""The pure rules behind the tamper-proof checks (issue 14): identity, fingerprint, schema proof, sampling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from continuity.catalog.manifest import Anchor, TableSchema, TenantIdentity
from continuity.validation import checks as rc
from continuity.validation.checks import CheckId, CheckResult, CheckStatus, VerdictStatus
from continuity.validation.toc import archive_header

CREATED = datetime(2026, 11, 30, 8, 26, 9, tzinfo=UTC)
LISTING = [
    ";",
    "; Archive created at 2026-11-30 08:26:10 UTC",
    ";     dbname: odoo_acme",
    ";     TOC Entries: 123",
    ";     Compression: gzip",
    ";     Format: CUSTOM",
    ";     Dumped from database version: 15.8 (Debian 15.8-0+deb12u1)",
    ";     Dumped by pg_dump version: 15.8 (Debian 15.8-0+deb12u1)",
    ";",
    "; Selected TOC Entries:",
    ";",
    "215; 1259 16390 TABLE public res_company postgres",
    ";     dbname: odoo_forged_after_the_header",
]


def facts(**changes: object) -> rc.IdentityFacts:
    header = archive_header(LISTING)
    base = dict(tenant_database="odoo_acme", manifest_database="odoo_acme", manifest_created_at=CREATED,
                manifest_pg_version="15.8", backup_id="20261130T082609Z-0a1b2c", folder_date="2026/11/30",
                run_at=CREATED + timedelta(minutes=30), archive_dbname=header.dbname,
                archive_created_at=header.created_at, archive_zone=header.created_zone,
                archive_server_version=header.server_version)
    base.update(changes)
    return rc.IdentityFacts(**base)  # type: ignore[arg-type]


def test_archive_header_is_read_from_the_header_only() -> None:
    header = archive_header(LISTING)
    assert header.dbname == "odoo_acme"  # the line after the entries began is not the header
    assert header.created_at == datetime(2026, 11, 30, 8, 26, 10) and header.created_zone == "UTC"
    assert header.server_version is not None and header.server_version.startswith("15.8")


def test_a_consistent_backup_passes_identity() -> None:
    assert rc.check_identity(facts()).status is CheckStatus.PASS


def test_identity_names_each_lie() -> None:
    cases = {
        "dumped from database 'odoo_globex'": facts(archive_dbname="odoo_globex"),
        "from the archive's own creation time": facts(manifest_created_at=CREATED - timedelta(days=1),
                                                     backup_id="20261129T082609Z-0a1b2c", folder_date="2026/11/29"),
        "is in the future": facts(run_at=CREATED - timedelta(hours=3)),
        "but created_at says": facts(backup_id="20261130T082612Z-0a1b2c"),
        "lies in folder 2026/11/29": facts(folder_date="2026/11/29"),
        "the manifest says 14.9": facts(manifest_pg_version="14.9"),
        "names no database": facts(archive_dbname=None),
        "in zone 'CET'": facts(archive_zone="CET"),
    }
    for reason, case in cases.items():
        result = rc.check_identity(case)
        assert result.status is CheckStatus.FAIL and reason in result.detail, (reason, result.detail)


IDENTITY = TenantIdentity(companies_sha256="a" * 64, companies=1, database_uuid="uuid-acme")


def test_fingerprint_fails_another_database_and_only_warns_a_rename() -> None:
    assert rc.check_tenant_fingerprint(IDENTITY, IDENTITY, ("b1", IDENTITY)).status is CheckStatus.PASS
    swapped = TenantIdentity(companies_sha256="a" * 64, companies=1, database_uuid="uuid-globex")
    assert rc.check_tenant_fingerprint(swapped, swapped, ("b1", IDENTITY)).status is CheckStatus.FAIL
    assert rc.check_tenant_fingerprint(IDENTITY, swapped).status is CheckStatus.FAIL  # not what was recorded
    renamed = TenantIdentity(companies_sha256="c" * 64, companies=1, database_uuid="uuid-acme")
    assert rc.check_tenant_fingerprint(renamed, renamed, ("b1", IDENTITY)).status is CheckStatus.WARN
    assert rc.check_tenant_fingerprint(None, IDENTITY).status is CheckStatus.UNAVAILABLE
    assert rc.check_tenant_fingerprint(IDENTITY, None).status is CheckStatus.FAIL


def test_schema_proof_names_what_is_missing_or_altered() -> None:
    recorded = {"account_move": TableSchema(columns="a" * 64, indexes={"account_move_pkey": "1" * 16,
                                                                      "account_move_unique_name": "2" * 16},
                                            constraints={"account_move_journal_id_fkey": "3" * 16}),
                "res_company": TableSchema(columns="b" * 64, indexes={}, constraints={})}
    restored = {"account_move": {"columns": "x" * 64, "indexes": {"account_move_pkey": "1" * 16,
                                                                   "account_move_unique_name": "9" * 16},
                                 "constraints": {}}}
    problems = rc.schema_proof_problems(recorded, restored)
    assert problems == ["columns of account_move altered", "account_move: indexes altered (account_move_unique_name)",
                        "account_move: constraints missing (account_move_journal_id_fkey)", "table res_company missing"]
    failed = rc.check_schema_present({}, {}, problems)
    assert failed.status is CheckStatus.FAIL and "recorded at backup time" in failed.detail
    assert rc.check_schema_present({}, {}, []).status is CheckStatus.PASS


def test_amcheck_over_no_index_is_unavailable_never_a_pass() -> None:
    result = rc.check_indexes(True, "", 0, {})
    assert result.status is CheckStatus.UNAVAILABLE and result.detail.startswith("unavailable: nothing to check")


def test_a_manifest_overwritten_after_cataloging_fails_the_checksum_even_when_it_matches_the_dump() -> None:
    anchor = Anchor(manifest_sha256="a" * 64, dump_sha256="d" * 64, dump_size=100,
                    cataloged_at=CREATED, evidence_seq=42)
    result = rc.check_file_checksum("db.dump", "e" * 64, 90, "e" * 64, 90, anchor=anchor,
                                    stored_manifest_sha256="f" * 64)
    assert result.status is CheckStatus.FAIL and "overwritten after cataloging" in result.detail
    assert "evidence seq 42" in result.detail
    unanchored = rc.check_file_checksum("db.dump", "e" * 64, 90, "e" * 64, 90)
    assert unanchored.status is CheckStatus.WARN  # agreement with a mutable manifest proves little


def test_a_sampled_run_says_so_and_is_within_objectives_only_when_the_tier_allows() -> None:
    objectives = rc.evaluate_objectives(rto_minutes=60, rpo_minutes=60, measured_s=10, restored_bytes=1,
                                        production_size_bytes=None, backup_created_at=CREATED, run_at=CREATED)
    sampled = [CheckResult(CheckId.ATTACHMENTS, CheckStatus.PASS, "ok", data={"sample_rate": 0.1})]
    strict = rc.decide_verdict(sampled, objectives)
    assert strict.status is VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES and "sampled" in strict.reason
    allowed = rc.decide_verdict(sampled, objectives, sampling_allowed=True)
    assert allowed.status is VerdictStatus.RECOVERABLE and "(sampled:" in allowed.reason
