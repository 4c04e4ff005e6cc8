"""The restore checks over psycopg against a point-in-time-restored Flexible Server.

The same SQL checks as :mod:`continuity.adapters.postgres.check_runner` (schema, ledger consistency, invoice
numbering, attachments, amcheck on the finance indexes, the tenant's own assertions), minus what needs a
logical backup's manifest: row counts are reported unavailable, and the ledger is checked for its own
consistency (balanced moves, zero trial balance per company, no dangling line) without manifest totals.
The connection always uses TLS (``sslmode=require``); the password comes from the secret store and is
never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg
from psycopg.conninfo import make_conninfo

from continuity.adapters.postgres import check_runner
from continuity.adapters.postgres.check_runner import AttachmentStore, timed
from continuity.kernel.tenants import Tenant
from continuity.validation import checks as rc
from continuity.validation import pitr
from continuity.validation.checks import CheckId, CheckResult, CheckStatus, LedgerFacts

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15
REPORT_ORDER = (CheckId.SCHEMA_PRESENT, CheckId.ROW_COUNTS, CheckId.LEDGER, CheckId.INVOICE_NUMBERING,
                CheckId.ATTACHMENTS, CheckId.INDEXES)


def restored_dsn(host: str, database: str, user: str, password: str, *, port: int = 5432,
                 sslmode: str = "require") -> str:
    """A libpq connection string to the restored server (TLS required unless a test says otherwise)."""
    return make_conninfo(host=host, port=port, dbname=database, user=user, password=password, sslmode=sslmode,
                         connect_timeout=CONNECT_TIMEOUT_S, application_name="continuity-pitr-validation")


def amcheck_on(conn: psycopg.Connection) -> tuple[bool, str]:
    """Whether amcheck can be created here; on Azure it must also be allow-listed in ``azure.extensions``."""
    if not conn.execute("select 1 from pg_available_extensions where name = 'amcheck'").fetchone():
        return False, "amcheck is not available on the restored server"
    row = conn.execute("select current_setting('azure.extensions', true)").fetchone()
    allowed = row[0] if row else None
    if allowed is not None and "amcheck" not in {x.strip().lower() for x in str(allowed).split(",")}:
        return False, ("amcheck is not allow-listed in azure.extensions (a restore inherits the source's "
                       "parameters): add it on the source server to verify indexes")
    return True, ""


def ledger_consistency(conn: psycopg.Connection) -> CheckResult:
    """The ledger check without manifest totals: a PITR has no manifest to compare against."""

    def run() -> CheckResult:
        from continuity.validation.odoo import schema as odoo_schema

        totals = conn.execute(odoo_schema.LEDGER_TOTALS_SQL).fetchone()
        assert totals is not None
        unbalanced = conn.execute(check_runner.UNBALANCED_SQL).fetchall()
        imbalances = {str(c): str(v) for c, v in conn.execute(check_runner.COMPANY_IMBALANCE_SQL).fetchall()}
        dangling = conn.execute(check_runner.DANGLING_SQL).fetchone() or (0, 0)
        return rc.check_ledger(LedgerFacts(
            posted_moves=int(totals[0]), posted_lines=int(totals[1]), debit_total=str(totals[2]),
            credit_total=str(totals[3]), unbalanced_moves=[str(r[0]) for r in unbalanced],
            unbalanced_move_count=int(unbalanced[0][1]) if unbalanced else 0, company_imbalances=imbalances,
            lines_missing_move=int(dangling[0]), lines_missing_account=int(dangling[1])))

    run.check_id = CheckId.LEDGER  # type: ignore[attr-defined]
    return timed(run)


def database_size(conn: psycopg.Connection) -> int:
    row = conn.execute("select pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def run_pitr_checks(dsn: str, tenant: Tenant, *, sample_rate: float, seed: str,
                    attachment_store: AttachmentStore | None) -> tuple[list[CheckResult], int]:
    """Every check that applies to a point-in-time restore, in the report order, and the database's size.

    :raises psycopg.OperationalError: the restored server cannot be reached (the caller reports an ERROR run).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        size = database_size(conn)
        amcheck = amcheck_on(conn)
        found: dict[str, CheckResult] = {}
        for result in (check_runner.schema_present(conn), *pitr.manifest_bound_unavailable(),
                       ledger_consistency(conn), check_runner.invoice_numbering(conn),
                       check_runner.indexes(conn, *amcheck)):
            found[result.id] = result
        if attachment_store is None:
            found[CheckId.ATTACHMENTS] = CheckResult(CheckId.ATTACHMENTS, CheckStatus.UNAVAILABLE,
                                                     "attachments not verified: no attachment store configured")
        else:
            found[CheckId.ATTACHMENTS] = check_runner.attachments(conn, attachment_store, tenant.attachments,
                                                                  sample_rate, seed)
        assertions: Sequence[CheckResult] = check_runner.assertions(conn, tenant.assertions)
    return [found[c] for c in REPORT_ORDER] + list(assertions), size
