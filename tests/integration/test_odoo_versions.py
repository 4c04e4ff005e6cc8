"""Every Odoo that is hosted (issue 17): a database of each major version 12-18 is backed up by the product's
backup job and validated by the real pipeline; each broken variant fails its own check; a database without
accounting gets ledger and numbering "not applicable"; a database that is not Odoo gets a clear verdict; an
Odoo 9 database backs up within its deadline and is refused as undescribed, never passed.

The databases come from :mod:`tests.odoo_fixtures`, built from the product's per-version description.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.connection import ensure_database
from continuity.adapters.postgres.sandbox import Sandbox, production_dsns_of
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.tools.backup_taker import take_backup
from continuity.catalog.manifest import Manifest
from continuity.kernel.tenants import Registry
from continuity.validation.checks import CheckId, CheckStatus, VerdictStatus
from continuity.validation.service import ValidationReport, validate
from continuity.validation.wiring import local_ports
from tests.integration.test_restore_validation import make_registry
from tests.odoo_fixtures import build

pytestmark = pytest.mark.stack

MAJORS = tuple(range(12, 19))
TENANTS = (*(f"ov-{m}-{v}" for m in MAJORS for v in ("good", "unbalanced", "gapped", "noattach")),
           "ov-17-noacct", "ov-plain", "ov-9-good", "ov-17-millesimal", "ov-17-continuing", "ov-13-continuing")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return make_registry(TENANTS, **{"ov-plain": {"assertions": []}})  # no companies to assert on


@pytest.fixture(scope="module")
def sandbox(registry: Registry, stack: LocalStack) -> Iterator[Sandbox]:
    box = Sandbox(stack.dsn("sandbox"), production_dsns_of(registry))
    yield box
    assert box.list_scratch_databases() == [], "a scratch database was left behind"


def backed_up(stack: LocalStack, blobs: BlobStore, registry: Registry, tenant: str, major: int | None,
              variant: str = "good", accounting: bool = True) -> tuple[Manifest, str]:
    """Create the tenant's database (Odoo ``major``, or a plain one), back it up with the product's job."""
    database = registry.get_tenant(tenant).database
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {database} with (force)")
    ensure_database(stack.dsn("primary"), database)
    with psycopg.connect(stack.dsn("primary", database), autocommit=True) as conn:
        if major is None:
            conn.execute("create table shipments (id serial primary key, reference varchar not null)")
            conn.execute("insert into shipments (reference) values ('SHP-1'), ('SHP-2')")
        else:
            build(conn, major, tenant, blobs, accounting=accounting,
                  variant="good" if variant == "noattach" else variant)
    stored = take_backup(registry, tenant, store=blobs, deadline_seconds=120)
    return Manifest.model_validate_json(blobs.download("backups", stored.manifest)), stored.backup_id


def validated(registry: Registry, blobs: BlobStore, tenant: str, backup_id: str) -> ValidationReport:
    return validate(local_ports(registry, blobs=blobs), tenant, backup_id)


def status(report: ValidationReport, check: str) -> tuple[CheckStatus, str]:
    found = next(c for c in report.checks if c.id == check)
    return found.status, found.detail


@pytest.mark.parametrize("major", MAJORS)
def test_a_good_database_of_each_major_version_is_recoverable_within_objectives(
        major: int, stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    manifest, backup_id = backed_up(stack, blob_store, registry, f"ov-{major}-good", major)
    assert manifest.odoo is not None and manifest.odoo.major == major and "account" in manifest.odoo.modules
    assert manifest.warnings == () and manifest.ledger.posted_moves == 8
    report = validated(registry, blob_store, f"ov-{major}-good", backup_id)
    assert report.verdict.status is VerdictStatus.RECOVERABLE, (report.verdict.reason, report.to_json())
    assert f"in Odoo {major} are present" in status(report, CheckId.SCHEMA_PRESENT)[1]
    assert status(report, CheckId.INVOICE_NUMBERING)[0] is CheckStatus.PASS


@pytest.mark.parametrize("major", MAJORS)
def test_an_unbalanced_move_fails_the_ledger_in_each_major_version(
        major: int, stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    _, backup_id = backed_up(stack, blob_store, registry, f"ov-{major}-unbalanced", major, "unbalanced")
    report = validated(registry, blob_store, f"ov-{major}-unbalanced", backup_id)
    assert report.failed_checks == [CheckId.LEDGER], report.to_json()
    assert "1 posted move(s) unbalanced (e.g. INV/2025/0002)" in status(report, CheckId.LEDGER)[1]


@pytest.mark.parametrize("major", MAJORS)
def test_a_gap_in_posted_numbers_fails_the_numbering_in_each_major_version(
        major: int, stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    _, backup_id = backed_up(stack, blob_store, registry, f"ov-{major}-gapped", major, "gapped")
    report = validated(registry, blob_store, f"ov-{major}-gapped", backup_id)
    assert report.failed_checks == [CheckId.INVOICE_NUMBERING], report.to_json()
    # From Odoo 14 the number is sequence_number; before, the name's trailing digits (ir_sequence numbering).
    assert "INV INV/2025/ 2025 after 3 (1 missing)" in status(report, CheckId.INVOICE_NUMBERING)[1]


@pytest.mark.parametrize("major", (13, 17))
def test_a_sequence_that_never_resets_is_one_run_across_years(
        major: int, stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    _, backup_id = backed_up(stack, blob_store, registry, f"ov-{major}-continuing", major, "continuing")
    report = validated(registry, blob_store, f"ov-{major}-continuing", backup_id)
    assert report.failed_checks == [], report.to_json()
    assert status(report, CheckId.INVOICE_NUMBERING)[1].startswith("1 posted sequence(s)")


def test_a_sub_cent_imbalance_in_a_three_decimal_currency_fails_the_ledger(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    _, backup_id = backed_up(stack, blob_store, registry, "ov-17-millesimal", 17, "millesimal")
    report = validated(registry, blob_store, "ov-17-millesimal", backup_id)
    assert report.failed_checks == [CheckId.LEDGER], report.to_json()
    assert "1 posted move(s) unbalanced (e.g. INV/2025/0002)" in status(report, CheckId.LEDGER)[1]


@pytest.mark.parametrize("major", MAJORS)
def test_a_missing_attachment_fails_the_attachment_check_in_each_major_version(
        major: int, stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    tenant = f"ov-{major}-noattach"
    _, backup_id = backed_up(stack, blob_store, registry, tenant, major, "noattach")
    for name in blob_store.list_names("attachments", prefix=f"{tenant}/"):
        blob_store.container("attachments").delete_blob(name)
    blob_store.upload("attachments", f"{tenant}/ff/orphan", b"a file no attachment references")
    report = validated(registry, blob_store, tenant, backup_id)
    assert report.failed_checks == [CheckId.ATTACHMENTS], report.to_json()
    attachments = next(c for c in report.checks if c.id == CheckId.ATTACHMENTS)
    assert (attachments.data["present"], attachments.data["missing"], attachments.data["unreferenced"]) == (0, 1, 1)
    assert "1 file(s) in the store are referenced by no attachment (e.g. ff/orphan)" in attachments.detail


def test_a_database_without_accounting_validates_with_ledger_and_numbering_not_applicable(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    manifest, backup_id = backed_up(stack, blob_store, registry, "ov-17-noacct", 17, accounting=False)
    assert any("accounting (module account) is not installed" in w for w in manifest.warnings)
    report = validated(registry, blob_store, "ov-17-noacct", backup_id)
    for check in (CheckId.LEDGER, CheckId.INVOICE_NUMBERING):
        assert status(report, check) == (CheckStatus.NOT_APPLICABLE,
                                         "not applicable: accounting (module account) is not installed")
    assert report.verdict.status is VerdictStatus.RECOVERABLE, report.verdict.reason


def test_a_database_that_is_not_odoo_gets_a_clear_verdict_and_its_generic_checks(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    manifest, backup_id = backed_up(stack, blob_store, registry, "ov-plain", None)
    assert manifest.odoo is None and any(w.startswith("not an Odoo database") for w in manifest.warnings)
    report = validated(registry, blob_store, "ov-plain", backup_id)
    assert report.failed_checks == [], report.to_json()
    schema = status(report, CheckId.SCHEMA_PRESENT)
    assert schema[0] is CheckStatus.UNAVAILABLE and schema[1].startswith("not an Odoo database")
    assert all(status(report, c)[0] is CheckStatus.PASS for c in (CheckId.FILE_CHECKSUM, CheckId.IDENTITY,
                                                                   CheckId.ARCHIVE_SAFE, CheckId.RESTORE_COMPLETED))
    assert report.verdict.status is VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES
    assert report.verdict.reason.startswith("restorable, but not within objectives: not an Odoo database")


def test_an_odoo_9_database_backs_up_within_its_deadline_and_is_not_passed_as_described(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, sandbox: Sandbox) -> None:
    manifest, backup_id = backed_up(stack, blob_store, registry, "ov-9-good", 9)
    assert manifest.odoo is not None and manifest.odoo.major == 9 and manifest.ledger.posted_moves == 8
    report = validated(registry, blob_store, "ov-9-good", backup_id)
    schema: Any = status(report, CheckId.SCHEMA_PRESENT)
    assert schema[0] is CheckStatus.UNAVAILABLE and "12" in schema[1] and "18" in schema[1], schema
    assert report.verdict.status is not VerdictStatus.RECOVERABLE
