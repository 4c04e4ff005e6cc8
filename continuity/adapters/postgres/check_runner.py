"""The SQL checks, run against a restored scratch database; each gathers facts and lets
:mod:`continuity.validation.checks` decide.

Every function takes an open autocommit connection to the scratch database and returns one
:class:`CheckResult` with its duration. Nothing here writes to tenant tables: the only statements
that change anything are ``CREATE EXTENSION amcheck`` and the grants that let tenant assertions run
under a role that can read and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from continuity.adapters.postgres.proofs import odoo_facts, table_schemas, tenant_identity
from continuity.catalog.manifest import Manifest, OdooInfo, TenantIdentity
from continuity.kernel.tenants import Assertion
from continuity.validation import checks as rc
from continuity.validation.checks import CheckId, CheckResult, CheckStatus, LedgerFacts, SequenceGap
from continuity.validation.odoo import schema as odoo_schema

logger = logging.getLogger(__name__)

# Tables whose B-tree indexes amcheck verifies.
FINANCE_TABLES = ("res_company", "res_partner", "res_currency", "account_account", "account_journal",
                  "account_move", "account_move_line", "ir_attachment")
# A role that can read the restored tables and nothing else; tenant assertions run as it.
ASSERTION_ROLE = "continuity_assertion_reader"
ASSERTION_TIMEOUT_MS = 30_000


def expected_schema() -> dict[str, tuple[str, ...]]:
    """The Odoo tables and columns a usable restore must have (the demo seed's and the checks' needs)."""
    return dict(odoo_schema.COLUMNS)


def timed(fn: Callable[[], CheckResult]) -> CheckResult:
    """Run one check and stamp its duration; a database error becomes a failed check naming it."""
    started = time.monotonic()
    try:
        result = fn()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        name = getattr(fn, "check_id", "check")
        result = CheckResult(name, CheckStatus.FAIL, f"query failed: {first[:300]}", data={"query_failed": True})
    return CheckResult(result.id, result.status, result.detail, time.monotonic() - started, result.data)


def _tagged(check_id: str, fn: Callable[[], CheckResult]) -> Callable[[], CheckResult]:
    fn.check_id = check_id  # type: ignore[attr-defined]
    return fn


def schema_present(conn: psycopg.Connection, manifest: Manifest | None = None,
                   odoo: OdooInfo | None = None) -> CheckResult:
    """Expected tables and columns exist; with the manifest's schema proof, the recovery tables' columns,
    indexes and constraints are the ones recorded at backup time (read as the backup read them)."""

    def run() -> CheckResult:
        rows = conn.execute("select table_name, column_name from information_schema.columns "
                            "where table_schema = 'public'").fetchall()
        present: dict[str, list[str]] = {}
        for table, column in rows:
            present.setdefault(str(table), []).append(str(column))
        problems = None
        if manifest is not None and manifest.tables is not None:
            actual = {name: proof.model_dump() for name, proof in table_schemas(conn, list(manifest.tables)).items()}
            problems = rc.schema_proof_problems(manifest.tables, actual)
        expected = rc.expected_odoo_schema(odoo) if odoo is not None or manifest is not None else expected_schema()
        return rc.check_schema_present(expected, present, problems, odoo)

    return timed(_tagged(CheckId.SCHEMA_PRESENT, run))


def tenant_fingerprint(conn: psycopg.Connection, manifest: Manifest,
                       established: tuple[str, TenantIdentity] | None) -> CheckResult:
    """The restored database's uuid and companies against the manifest's and the tenant's last validated backup."""

    def run() -> CheckResult:
        return rc.check_tenant_fingerprint(manifest.identity, tenant_identity(conn), established)

    return timed(_tagged(CheckId.TENANT_FINGERPRINT, run))


def row_counts(conn: psycopg.Connection, expected: Mapping[str, int]) -> CheckResult:
    def run() -> CheckResult:
        actual: dict[str, int | None] = {}
        for table in expected:
            exists = conn.execute("select to_regclass(%s) is not null", (f"public.{table}",)).fetchone()
            if not exists or not exists[0]:
                actual[table] = None
                continue
            row = conn.execute(sql.SQL("select count(*) from public.{}").format(sql.Identifier(table))).fetchone()
            actual[table] = int(row[0]) if row else None
        return rc.check_row_counts(expected, actual)

    return timed(_tagged(CheckId.ROW_COUNTS, run))


# A move (and a company's trial balance) is unbalanced when its debit - credit does not round to zero in the
# company currency's rounding, as Odoo's float_is_zero(precision_rounding=currency.rounding) judges it: a
# three-decimal currency (rounding 0.001) shows an imbalance of 0.004 that rounding to cents would hide.
UNBALANCED_SQL = """
select coalesce(m.name, m.id::text), count(*) over ()
from account_move m join account_move_line l on l.move_id = m.id
left join res_company c on c.id = m.company_id
left join res_currency cur on cur.id = c.currency_id
where m.state = 'posted'
group by m.id, m.name
having round((coalesce(sum(l.debit), 0) - coalesce(sum(l.credit), 0))
             / coalesce(nullif(min(cur.rounding), 0), 0.01)) <> 0
order by m.id
limit 5
"""

COMPANY_IMBALANCE_SQL = """
select coalesce(l.company_id::text, 'none'), (coalesce(sum(l.debit), 0) - coalesce(sum(l.credit), 0))::text
from account_move_line l join account_move m on m.id = l.move_id
left join res_company c on c.id = l.company_id
left join res_currency cur on cur.id = c.currency_id
where m.state = 'posted'
group by l.company_id
having round((coalesce(sum(l.debit), 0) - coalesce(sum(l.credit), 0))
             / coalesce(nullif(min(cur.rounding), 0), 0.01)) <> 0
"""

DANGLING_SQL = """
select
  (select count(*) from account_move_line l where not exists (select 1 from account_move m where m.id = l.move_id)),
  (select count(*) from account_move_line l where l.account_id is not null
     and not exists (select 1 from account_account a where a.id = l.account_id))
"""


# The trial balance of the companies a single pass summed: each company's debit - credit, not zero in its currency's
# rounding (the same rule as COMPANY_IMBALANCE_SQL, on the sums instead of the lines).
COMPANY_DELTAS_SQL = """
select d.company, d.delta::text
from unnest(%s::text[], %s::numeric[]) as d(company, delta)
left join res_company c on c.id::text = d.company
left join res_currency cur on cur.id = c.currency_id
where round(d.delta / coalesce(nullif(cur.rounding, 0), 0.01)) <> 0
"""
POSTED_MOVES_SQL = "select count(*) from account_move where state = 'posted'"


@dataclass(frozen=True)
class LedgerPass:
    """What one pass over the journal items found (:func:`ledger_scan`)."""

    posted_moves: int
    scan: odoo_schema.LedgerScan
    orphan_lines: int  # lines whose move does not exist
    orphan_lines_missing_account: int


def ledger_scan(conn: psycopg.Connection, helper: psycopg.Connection | None = None) -> LedgerPass:
    """The restored ledger's facts from one pass over the journal items (and one anti-join for orphan lines).

    With a ``helper`` connection the scan is read in two halves at once, split at the middle move id: the
    upper half is aggregated into a temporary table of the helper's session while the lower half streams
    through the fold here, then the upper half's rows follow in move id order. The rows, their order and so
    every fact and the fingerprint are those of the single query; the two halves use two cores.
    """
    row = conn.execute(POSTED_MOVES_SQL).fetchone()
    posted_moves = int(row[0]) if row else 0
    shape = odoo_schema.ledger_shape(conn.execute(odoo_schema.LEDGER_SHAPE_SQL).fetchall())
    kind, code = shape.move_type_column, shape.account_code_column
    bounds = conn.execute("select min(id), max(id) from account_move").fetchone() if helper is not None else None
    if helper is None or bounds is None or bounds[0] is None or bounds[0] == bounds[1]:
        orphans = conn.execute(odoo_schema.LEDGER_ORPHAN_LINES_SQL).fetchone() or (0, 0)
        with conn.transaction(), conn.cursor(name="continuity_ledger_scan") as cur:
            # A server-side cursor: the rows (one per move) stream through the fold, never all in memory.
            cur.itersize = 20_000
            cur.execute(odoo_schema.ledger_scan_sql(kind, code))
            return LedgerPass(posted_moves, odoo_schema.fold_ledger_scan([cur]), int(orphans[0]), int(orphans[1]))
    split = {"split": (int(bounds[0]) + int(bounds[1])) // 2 + 1}

    def upper_half() -> tuple[int, int]:
        found = helper.execute(odoo_schema.LEDGER_ORPHAN_LINES_SQL).fetchone() or (0, 0)
        helper.execute("create temporary table continuity_ledger_upper on commit preserve rows as "
                       + odoo_schema.ledger_scan_sql(kind, code, "from"), split)
        return int(found[0]), int(found[1])

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        built = pool.submit(upper_half)

        def lower() -> Iterator[Any]:
            with conn.transaction(), conn.cursor(name="continuity_ledger_lower") as cur:
                cur.itersize = 20_000
                cur.execute(odoo_schema.ledger_scan_sql(kind, code, "below"), split)
                yield from cur

        def upper() -> Iterator[Any]:
            built.result()
            with helper.transaction(), helper.cursor(name="continuity_ledger_upper") as cur:
                cur.itersize = 20_000
                cur.execute("select * from continuity_ledger_upper order by move_id")
                yield from cur

        scan = odoo_schema.fold_ledger_scan([lower(), upper()])
        orphans = built.result()
        return LedgerPass(posted_moves, scan, *orphans)
    finally:
        pool.shutdown(wait=True)
        with contextlib.suppress(psycopg.Error):
            helper.execute("drop table if exists continuity_ledger_upper")


def ledger_facts(conn: psycopg.Connection,
                 helper: psycopg.Connection | None = None) -> tuple[LedgerFacts, str]:
    """The restored ledger's facts and its fingerprint, from one pass over the journal items (see
    :func:`ledger_scan` for ``helper``)."""
    found = ledger_scan(conn, helper)
    scan = found.scan
    if scan.lines_of_another_company:
        # A posted line booked on another company than its move's: the per-company sums of the single pass
        # do not cover it, so the trial balance is summed line by line, as before the single pass.
        imbalances = {str(c): str(v) for c, v in conn.execute(COMPANY_IMBALANCE_SQL).fetchall()}
    else:
        companies = sorted(scan.company_deltas)
        imbalances = {str(c): str(v) for c, v in conn.execute(
            COMPANY_DELTAS_SQL, (companies, [scan.company_deltas[c] for c in companies])).fetchall()}
    facts = LedgerFacts(
        posted_moves=found.posted_moves, posted_lines=scan.posted_lines, debit_total=format(scan.debit_total, "f"),
        credit_total=format(scan.credit_total, "f"), unbalanced_moves=scan.unbalanced_moves,
        unbalanced_move_count=scan.unbalanced_move_count, company_imbalances=imbalances,
        lines_missing_move=found.orphan_lines,
        lines_missing_account=scan.lines_missing_account + found.orphan_lines_missing_account,
    )
    return facts, scan.fingerprint


def ledger(conn: psycopg.Connection, manifest: Manifest, helper: psycopg.Connection | None = None) -> CheckResult:
    def run() -> CheckResult:
        facts, fingerprint = ledger_facts(conn, helper)
        result = rc.check_ledger(facts, manifest.ledger.posted_moves, manifest.ledger.posted_lines,
                                 manifest.ledger.debit_total, manifest.ledger.credit_total)
        if fingerprint != manifest.ledger.fingerprint:
            problem = (f"ledger fingerprint {fingerprint[:12]}… differs from the manifest's "
                       f"{manifest.ledger.fingerprint[:12]}…: posted entries changed between backup and restore")
            detail = problem if result.status is CheckStatus.PASS else f"{result.detail}; {problem}"
            return CheckResult(CheckId.LEDGER, CheckStatus.FAIL, detail, data={**result.data, "fingerprint": False})
        return CheckResult(result.id, result.status, result.detail, data={**result.data, "fingerprint": True})

    return timed(_tagged(CheckId.LEDGER, run))


# Per journal and sequence prefix: the numbers used, each with the one before it. Odoo keeps a cancelled
# move's number, so numbers of posted and cancelled moves together must be gapless. The prefix is the
# sequence (sequence.mixin): it carries the year or fiscal period when the journal's numbering resets
# (INV/2025/), and nothing when it never does (INV/), so a never-resetting sequence is one run across years.
GAPS_SQL = """
with posted as (
  select m.journal_id, coalesce(j.code, m.journal_id::text) as journal, m.sequence_prefix,
         extract(year from m.date)::int as year, m.sequence_number as n
  from account_move m left join account_journal j on j.id = m.journal_id
  where m.state in ('posted', 'cancel') and m.sequence_number is not null and m.sequence_prefix is not null
), ordered as (
  select journal, sequence_prefix, year, n, lag(n) over w as prev, row_number() over w as rn
  from posted window w as (partition by journal_id, sequence_prefix order by n)
)
select journal, sequence_prefix, year, coalesce(prev, 0) as after, n - coalesce(prev, 0) - 1 as missing,
       (select count(distinct (journal_id, sequence_prefix)) from posted) as sequences
from ordered
where (prev is null and n > 1) or (prev is not null and n - prev > 1)
order by journal, year, n
limit 50
"""
# The distinct pairs as a subquery, counted: hashed (a handful of sequences), where count(distinct (…)) sorts
# every move (measured at 3.4 M moves: 0.6 s of server CPU against 6.5 s).
SEQUENCES_SQL = """
select count(*) from (
  select distinct journal_id, sequence_prefix
  from account_move where state in ('posted', 'cancel') and sequence_number is not null
    and sequence_prefix is not null) s
"""
DUPLICATES_SQL = """
select m.name from account_move m
where m.state in ('posted', 'cancel') and m.name is not null and m.name <> '/'
group by m.journal_id, m.name having count(*) > 1
order by m.name limit 10
"""


# Odoo 13 and older number moves from ir_sequence and keep no sequence_prefix/sequence_number: the number is the
# name's trailing digits, the sequence its journal and the name before them (which holds the year or the
# fiscal period, as the journal's sequence pattern made it), as sequence.mixin splits names from Odoo 14.
NAME_NUMBERS = """
  select m.journal_id, coalesce(j.code, m.journal_id::text) as journal,
         substring(m.name from '^(.*?)[0-9]+$') as sequence_prefix, extract(year from m.date)::int as year,
         substring(m.name from '([0-9]+)$')::bigint as n
  from account_move m left join account_journal j on j.id = m.journal_id
  where m.state in ('posted', 'cancel') and m.name ~ '[0-9]+$' and m.name <> '/'
"""
NAME_GAPS_SQL = GAPS_SQL.replace(GAPS_SQL[GAPS_SQL.index("with posted as ("):GAPS_SQL.index("), ordered as")],
                                 f"with posted as ({NAME_NUMBERS}")
NAME_SEQUENCES_SQL = f"select count(*) from (select distinct journal_id, sequence_prefix from ({NAME_NUMBERS}) p) s"


def invoice_numbering(conn: psycopg.Connection, by_name: bool = False) -> CheckResult:
    """Gaps and duplicates in posted numbers; ``by_name`` for Odoo <= 13 (numbers read from the names)."""
    def run() -> CheckResult:
        gaps = [SequenceGap(f"{r[0]} {r[1]}".strip(), int(r[2]), int(r[3]), int(r[4]))
                for r in conn.execute(NAME_GAPS_SQL if by_name else GAPS_SQL).fetchall()]
        sequences_row = conn.execute(NAME_SEQUENCES_SQL if by_name else SEQUENCES_SQL).fetchone()
        duplicates = [str(r[0]) for r in conn.execute(DUPLICATES_SQL).fetchall()]
        return rc.check_invoice_numbering(gaps, duplicates, int(sequences_row[0]) if sequences_row else 0)

    return timed(_tagged(CheckId.INVOICE_NUMBERING, run))


class AttachmentStore:
    """What the attachment check needs from blob storage: list names under a prefix, read one blob."""

    def __init__(self, list_names: Callable[[str], Iterable[str]], read: Callable[[str], bytes]) -> None:
        self.list_names = list_names
        self.read = read


ATTACHMENTS_SQL = """
select store_fname, checksum from ir_attachment
where type = 'binary' and store_fname is not null and store_fname <> ''
order by id
"""


def attachments(conn: psycopg.Connection, store: AttachmentStore, prefix: str, sample_rate: float,
                seed: str, workers: int = 8) -> CheckResult:
    """Existence of every stored file (one listing), sha1 of a reproducible sample at ``sample_rate``."""

    def run() -> CheckResult:
        expected = {str(name): (str(sha1) if sha1 else "") for name, sha1 in conn.execute(ATTACHMENTS_SQL)}
        present = {name.removeprefix(prefix) for name in store.list_names(prefix)}
        missing = sorted(name for name in expected if name not in present)
        to_hash = rc.attachment_sample(sorted(n for n in expected if n in present), sample_rate, seed)

        def mismatch(name: str) -> str | None:
            actual = hashlib.sha1(store.read(prefix + name), usedforsecurity=False).hexdigest()
            return name if actual != expected[name] else None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            mismatched = sorted(n for n in pool.map(mismatch, to_hash) if n is not None)
        unreferenced = sorted(name for name in present if name not in expected)
        return rc.check_attachments(len(expected), missing, len(to_hash), mismatched, sample_rate, unreferenced)

    return timed(_tagged(CheckId.ATTACHMENTS, run))


INDEXES_SQL = """
select c.oid::regclass::text
from pg_index i
join pg_class c on c.oid = i.indexrelid
join pg_class t on t.oid = i.indrelid
join pg_am a on a.oid = c.relam
where a.amname = 'btree' and t.relnamespace = 'public'::regnamespace and t.relname = any(%s) and i.indisvalid
order by 1
"""


def indexes(conn: psycopg.Connection, amcheck_available: bool, why_unavailable: str) -> CheckResult:
    def run() -> CheckResult:
        if not amcheck_available:
            return rc.check_indexes(False, why_unavailable, 0, {})
        conn.execute("create extension if not exists amcheck")
        names = [str(r[0]) for r in conn.execute(INDEXES_SQL, (list(FINANCE_TABLES),)).fetchall()]
        corrupt: dict[str, str] = {}
        for name in names:
            try:
                conn.execute("select bt_index_check(%s::regclass)", (name,))
            except psycopg.Error as exc:
                corrupt[name] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return rc.check_indexes(True, "", len(names), corrupt)

    return timed(_tagged(CheckId.INDEXES, run))


def prepare_assertion_role(conn: psycopg.Connection) -> None:
    """A NOLOGIN role that may only read the restored tables (cluster-wide role, per-database grants)."""
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (ASSERTION_ROLE,)).fetchone()
    if not exists:
        # Another validation may create it concurrently.
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(ASSERTION_ROLE)))
    conn.execute(sql.SQL("grant usage on schema public to {}").format(sql.Identifier(ASSERTION_ROLE)))
    conn.execute(sql.SQL("grant select on all tables in schema public to {}").format(sql.Identifier(ASSERTION_ROLE)))


def revoke_assertion_role(conn: psycopg.Connection) -> None:
    """Take back what :func:`prepare_assertion_role` granted in this database (a database that goes, or is,
    live keeps no grant of the checks' role)."""
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (ASSERTION_ROLE,)).fetchone()
    if exists:
        role = sql.Identifier(ASSERTION_ROLE)
        conn.execute(sql.SQL("revoke all on all tables in schema public from {}").format(role))
        conn.execute(sql.SQL("revoke usage on schema public from {}").format(role))


def assertions(conn: psycopg.Connection, items: Sequence[Assertion],
               timeout_ms: int = ASSERTION_TIMEOUT_MS) -> list[CheckResult]:
    """Run each tenant assertion read-only, as a read-only role, with a statement timeout."""
    if not items:
        return []
    prepare_assertion_role(conn)
    results = []
    for item in items:
        def run(item: Assertion = item) -> CheckResult:
            got: Any = None
            error: str | None = None
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute("set transaction read only")
                    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(ASSERTION_ROLE)))
                    conn.execute(sql.SQL("set local statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
                    row = conn.execute(item.sql).fetchone()  # registry-owned SQL, run read-only
                    got = row[0] if row else None
            except psycopg.Error as exc:
                error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return rc.check_assertion(item.name, item.expect, got, error)

        results.append(timed(_tagged(rc.assertion_check_id(item.name), run)))
    return results


def run_all(dsn: str, ref: Any, tenant: Any, sample_rate: float, amcheck: tuple[bool, str],
            attachment_store: AttachmentStore | None = None,
            done: Sequence[CheckResult] = ()) -> list[CheckResult]:
    """Every check after the restore, reported in a fixed order.

    Three lanes run at once, each on its own connection: the attachment store (network-bound), the
    ledger (the heaviest query) and everything else. The scratch database is throwaway and read-only
    to the checks, so nothing orders them but the report.

    :param done: checks already run while the restore went on (:class:`ChecksDuringRestore`): reported as
        they are, not run again.

    :param ref: the :class:`continuity.validation.service.BackupRef` (its manifest holds the expectations).
    :param tenant: the :class:`continuity.kernel.tenants.Tenant` (attachment prefix, assertions).
    """
    manifest: Manifest = ref.manifest
    with psycopg.connect(dsn, autocommit=True) as conn:
        odoo = odoo_facts(conn)  # the restored database says which Odoo it is, not the manifest
    skip = rc.odoo_not_applicable(odoo)
    earlier = {r.id: r for r in done}

    def applicable(check_id: str, run: Callable[[], list[CheckResult]]) -> list[CheckResult]:
        if check_id in earlier:
            return [earlier[check_id]]
        if check_id in skip:
            return [CheckResult(check_id, CheckStatus.NOT_APPLICABLE, skip[check_id])]
        return run()

    def attachments_lane() -> list[CheckResult]:
        if attachment_store is None and CheckId.ATTACHMENTS not in earlier:
            return [CheckResult(CheckId.ATTACHMENTS, CheckStatus.UNAVAILABLE,
                                "attachments not verified: no attachment store configured")]

        def run() -> list[CheckResult]:
            assert attachment_store is not None
            with psycopg.connect(dsn, autocommit=True) as conn:
                return [attachments(conn, attachment_store, tenant.attachments, sample_rate, ref.backup_id)]
        return applicable(CheckId.ATTACHMENTS, run)

    def ledger_lane() -> list[CheckResult]:
        def run() -> list[CheckResult]:
            with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn, autocommit=True) as helper:
                return [ledger(conn, manifest, helper)]
        return applicable(CheckId.LEDGER, run)

    def database_lane() -> list[CheckResult]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return [schema_present(conn, manifest, odoo),
                    *applicable(CheckId.TENANT_FINGERPRINT, lambda: [
                        tenant_fingerprint(conn, manifest, getattr(ref, "established", None))]),
                    *applicable(CheckId.ROW_COUNTS, lambda: [row_counts(conn, manifest.row_counts)]),
                    *applicable(CheckId.INVOICE_NUMBERING, lambda: [invoice_numbering(
                        conn, by_name=odoo is not None and odoo.major is not None and odoo.major <= 13)]),
                    *applicable(CheckId.INDEXES, lambda: [indexes(conn, *amcheck)]),
                    *assertions(conn, tenant.assertions)]

    with ThreadPoolExecutor(max_workers=3) as pool:
        lanes = [pool.submit(lane) for lane in (attachments_lane, ledger_lane, database_lane)]
        found = {r.id: r for lane in lanes for r in lane.result()}
    order = [CheckId.SCHEMA_PRESENT, CheckId.TENANT_FINGERPRINT, CheckId.ROW_COUNTS, CheckId.LEDGER,
             CheckId.INVOICE_NUMBERING, CheckId.ATTACHMENTS, CheckId.INDEXES]
    return [found.pop(c) for c in order] + list(found.values())


# ---- checks while the restore goes on --------------------------------------------------------------
# The checks that read only rows, and the tables each reads (with ir_module_module: which Odoo it is decides
# whether a check applies). Schema, indexes and tenant assertions read what post-data builds: after the restore.
ROW_CHECK_TABLES: dict[str, frozenset[str]] = {
    CheckId.LEDGER: frozenset({*odoo_schema.LEDGER_TABLES, "res_company", "res_currency"}),
    CheckId.INVOICE_NUMBERING: frozenset({"account_move", "account_journal"}),
    CheckId.ATTACHMENTS: frozenset({"ir_attachment"}),
    CheckId.TENANT_FINGERPRINT: frozenset({"res_company", "ir_config_parameter"}),
}
ODOO_TABLES = frozenset({"ir_module_module"})


class ChecksDuringRestore:
    """The row checks, each started on its own connection as soon as ``pg_restore`` has loaded every table it
    reads (and nothing in the restore will lock them again: :class:`continuity.validation.toc.LoadProgress`).

    The biggest table loads last and alone, leaving a core idle, and its index builds follow: the invoice
    numbering, attachments, row counts and fingerprint run in that time, and the ledger while the indexes are
    built, instead of after the whole restore. Each check keeps its meaning: it reads the same rows with the
    same SQL. Results whose query failed (a lock timeout, a cancelled statement) are dropped so that the check
    runs again after the restore; a check never started early runs then too.
    """

    def __init__(self, dsn: str, ref: Any, tenant: Any, sample_rate: float,
                 attachment_store: AttachmentStore | None = None) -> None:
        self.dsn = dsn
        self.ref = ref
        self.tenant = tenant
        self.sample_rate = sample_rate
        self.attachment_store = attachment_store
        manifest: Manifest = ref.manifest
        self._needs: dict[str, frozenset[str]] = {
            c: tables | ODOO_TABLES for c, tables in ROW_CHECK_TABLES.items()
            if c != CheckId.ATTACHMENTS or attachment_store is not None}
        if manifest.row_counts:
            self._needs[CheckId.ROW_COUNTS] = frozenset(manifest.row_counts) | ODOO_TABLES
        self._readable: set[str] = set()
        self._started: dict[str, Future[CheckResult]] = {}
        self._connections: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._abandoned = False
        self._pool = ThreadPoolExecutor(max_workers=len(self._needs) or 1, thread_name_prefix="checks-during-restore")

    def tables_readable(self, tables: Iterable[str]) -> None:
        """Start every check whose tables are now all readable."""
        with self._lock:
            self._readable.update(tables)
            if self._abandoned:
                return
            for check_id, needs in self._needs.items():
                if check_id not in self._started and needs <= self._readable:
                    self._started[check_id] = self._pool.submit(self._run, check_id)

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True)
        with self._lock:
            self._connections.append(conn)
            if self._abandoned:
                conn.cancel()
        return conn

    def _run(self, check_id: str) -> CheckResult:
        manifest: Manifest = self.ref.manifest
        with self._connect() as conn:
            odoo = odoo_facts(conn)
            skip = rc.odoo_not_applicable(odoo)
            if check_id in skip:
                return CheckResult(check_id, CheckStatus.NOT_APPLICABLE, skip[check_id])
            if check_id == CheckId.LEDGER:
                with self._connect() as helper:
                    return ledger(conn, manifest, helper)
            if check_id == CheckId.INVOICE_NUMBERING:
                return invoice_numbering(conn, by_name=odoo is not None and odoo.major is not None and odoo.major <= 13)
            if check_id == CheckId.ATTACHMENTS:
                assert self.attachment_store is not None
                return attachments(conn, self.attachment_store, self.tenant.attachments, self.sample_rate,
                                   self.ref.backup_id)
            if check_id == CheckId.TENANT_FINGERPRINT:
                return tenant_fingerprint(conn, manifest, getattr(self.ref, "established", None))
            return row_counts(conn, manifest.row_counts)

    def finish(self) -> list[CheckResult]:
        """Wait for the checks started; their results, each marked as run during the restore."""
        results = []
        for check_id, future in self._started.items():
            try:
                result = future.result()
            except psycopg.Error as exc:  # could not even connect: the check runs after the restore
                logger.warning("check %s could not run during the restore: %s", check_id, exc)
                continue
            if result.data.get("query_failed"):
                continue
            results.append(CheckResult(result.id, result.status, result.detail, result.duration_s,
                                       {**result.data, "during_restore": True}))
        self._pool.shutdown(wait=True)
        return results

    def abandon(self) -> None:
        """The restore failed: cancel what runs, wait for it, keep nothing."""
        with self._lock:
            self._abandoned = True
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(psycopg.Error):
                conn.cancel()
        for future in self._started.values():
            with contextlib.suppress(Exception):
                future.result()
        self._pool.shutdown(wait=True)
