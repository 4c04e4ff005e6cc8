"""The PITR checks over psycopg against a real PostgreSQL database (the local primary cluster stands in for
the restored Flexible Server: same SQL, password authentication, no manifest). Azure-only parts (TLS to a
private endpoint, ``azure.extensions``) cannot be exercised here; the DSN's ``sslmode=require`` is asserted."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres import pitr_checks
from continuity.adapters.postgres.check_runner import AttachmentStore
from continuity.adapters.storage.blob_store import BlobStore
from continuity.kernel.tenants import Assertion, Tenant
from tests.integration.test_restore_validation import seed_tenant

pytestmark = pytest.mark.stack

DATABASE = "odoo_pitr_checks"


def tenant(*assertions: Assertion) -> Tenant:
    return Tenant(id="pitr-checks", name="PITR checks", tier="gold", server="weu-primary", database=DATABASE,
                  primary_region="westeurope", secondary_region="northeurope", assertions=assertions)


@pytest.fixture(scope="module")
def seeded(stack: LocalStack, blob_store: BlobStore) -> Iterator[str]:
    seed_tenant(stack, blob_store, DATABASE, "pitr-checks")
    yield pitr_checks.restored_dsn("127.0.0.1", DATABASE, stack.settings.superuser, stack.superuser_password(),
                                   port=stack.port("primary"), sslmode="disable")
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {DATABASE} with (force)")


def store(blobs: BlobStore) -> AttachmentStore:
    return AttachmentStore(list_names=partial(blobs.list_names, "attachments"),
                           read=partial(blobs.download, "attachments"))


def test_dsn_requires_tls_by_default() -> None:
    dsn = pitr_checks.restored_dsn("pitr-acme-1.restore.postgres.database.azure.com", "odoo_acme", "continuity",
                                   "s3cret")
    assert "sslmode=require" in dsn and "host=pitr-acme-1.restore.postgres.database.azure.com" in dsn


def test_checks_on_a_good_restore_pass_and_row_counts_are_unavailable(seeded: str, stack: LocalStack,
                                                                      blob_store: BlobStore) -> None:
    # amcheck ships with contrib, which some PostgreSQL builds lack (pgserver's): the index check passes where
    # the server offers it and is reported unavailable, never passed, where it does not.
    with psycopg.connect(stack.dsn("primary", DATABASE), autocommit=True) as conn:
        has_amcheck = conn.execute("select count(*) from pg_available_extensions where name = 'amcheck'"
                                   ).fetchone() == (1,)
    checks, size = pitr_checks.run_pitr_checks(
        seeded, tenant(Assertion(name="has-companies", sql="select count(*) > 0 from res_company")),
        sample_rate=1.0, seed="run-1", attachment_store=store(blob_store))
    statuses = {c.id: str(c.status) for c in checks}
    assert statuses == {"schema_present": "pass", "row_counts": "unavailable", "ledger": "pass",
                        "invoice_numbering": "pass", "attachments": "pass",
                        "indexes": "pass" if has_amcheck else "unavailable", "assertion:has-companies": "pass"}
    indexes = next(c for c in checks if c.id == "indexes")
    assert ("amcheck bt_index_check passed" in indexes.detail) if has_amcheck else (
        "amcheck is not available" in indexes.detail)
    assert size > 0
    assert "no manifest" in next(c for c in checks if c.id == "row_counts").detail


def test_an_unbalanced_ledger_fails_the_ledger_check_without_a_manifest(seeded: str, stack: LocalStack,
                                                                        blob_store: BlobStore) -> None:
    with psycopg.connect(stack.dsn("primary", DATABASE), autocommit=True) as conn:
        conn.execute("update account_move_line set debit = debit + 1 where id = 1")
    try:
        checks, _ = pitr_checks.run_pitr_checks(seeded, tenant(), sample_rate=0.0, seed="run-2",
                                                attachment_store=None)
    finally:
        with psycopg.connect(stack.dsn("primary", DATABASE), autocommit=True) as conn:
            conn.execute("update account_move_line set debit = debit - 1 where id = 1")
    ledger = next(c for c in checks if c.id == "ledger")
    assert str(ledger.status) == "fail" and "1 posted move(s) unbalanced" in ledger.detail
    assert next(c for c in checks if c.id == "attachments").detail.startswith("attachments not verified")


def test_an_unreachable_restored_server_raises_for_an_error_run(stack: LocalStack) -> None:
    from tests.conftest import PORT_BASE

    dsn = pitr_checks.restored_dsn("127.0.0.1", DATABASE, "continuity", "x", port=PORT_BASE + 98, sslmode="disable")
    with pytest.raises(psycopg.OperationalError):
        pitr_checks.run_pitr_checks(dsn, tenant(), sample_rate=0.0, seed="run-3", attachment_store=None)
