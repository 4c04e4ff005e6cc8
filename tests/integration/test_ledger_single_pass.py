"""The ledger check's single pass gives the facts the per-fact queries give, on a ledger built to break it.

The restore-side ledger check reads every journal item once (:func:`check_runner.ledger_facts`); the backup
side and the PITR checks still use the per-fact queries (totals, unbalanced moves, trial balance per company,
dangling lines, the fingerprint's per-move rows). Here both run on the same real PostgreSQL database, a small
ledger without foreign keys holding every case the facts tell apart: a three-decimal currency with a 0.004
imbalance, a line booked on another company than its move, lines without a company, a line whose move is gone,
a line whose account is gone, an unbalanced draft, a posted move without lines, Odoo 18's jsonb account codes;
read on one connection, and in two halves at once (the upper half then holds the moves 5 to 7 and the lines
without a move).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres import check_runner
from continuity.adapters.postgres.connection import ensure_database
from continuity.validation.checks import LedgerFacts
from continuity.validation.odoo import schema as odoo_schema

pytestmark = pytest.mark.stack

DDL = """
create table res_currency (id int primary key, rounding numeric);
create table res_company (id int primary key, currency_id int);
create table account_account (id int primary key, {code});
create table account_move (id int primary key, name varchar, date date, move_type varchar, journal_id int,
                           state varchar, company_id int);
create table account_move_line (id int primary key, move_id int, account_id int, partner_id int, debit numeric,
                                credit numeric, amount_currency numeric, currency_id int, company_id int);
insert into res_currency values (1, 0.01), (2, 0.001), (3, 0);
insert into res_company values (1, 1), (2, 2), (3, 3);
"""
CODES = {"code": ("code varchar", "'400000'"), "code_store": ("code_store jsonb", """'{"1": "400000"}'""")}


def build(conn: psycopg.Connection, code_column: str, case: str) -> None:
    column, value = CODES[code_column]
    conn.execute(DDL.format(code=column))
    conn.execute(f"insert into account_account values (1, {value}), (2, {value})")
    moves = [(1, "INV/1", 1, "posted", 1), (2, "INV/2", 1, "posted", 2), (3, None, 2, "posted", 1),
             (4, "DRAFT/1", 1, "draft", 1), (5, "EMPTY/1", 1, "posted", 1), (6, "INV/6", 2, "posted", None),
             (7, "INV/7", 1, "cancel", 3)]
    for move_id, name, journal, state, company in moves:
        conn.execute("insert into account_move values (%s, %s, '2025-03-01', 'out_invoice', %s, %s, %s)",
                     (move_id, name, journal, state, company))
    lines = [
        (1, 1, 1, 7, "100.00", "0", "100.00", 1, 1), (2, 1, 2, 7, "0", "100.00", "-100.00", 1, 1),
        # a three-decimal currency: 0.004 off, which rounding to cents would hide
        (3, 2, 1, None, "10.004", "0", None, 2, 2), (4, 2, 2, None, "0", "10.000", None, 2, 2),
        (5, 3, 1, 8, "5.00", "0", None, None, 1), (6, 3, 2, 8, "0", "5.00", None, None, 1),
        (7, 4, 1, None, "1.00", "0", None, None, 1),                       # an unbalanced draft: not posted
        (8, 6, 1, None, "3.00", "0", None, None, None), (9, 6, 2, None, "0", "3.00", None, None, None),
        (10, 99, 1, None, "4.00", "0", None, None, 1),                     # its move is gone
        (11, 1, 42, None, "0", "0", None, None, 1),                        # its account is gone
        (12, None, 1, None, "0", "0", None, None, 1),                      # no move at all
    ]
    if case == "cross-company":
        # booked on company 2 inside company 1's move: the trial balance is per line's company
        lines.append((13, 3, 1, None, "2.50", "0", None, None, 2))
    if case == "balanced":
        lines = [line for line in lines if line[0] in (1, 2, 5, 6, 8, 9)]
    for line in lines:
        conn.execute("insert into account_move_line values (%s, %s, %s, %s, %s, %s, %s, %s, %s)", line)


def per_fact(conn: psycopg.Connection, code_column: str) -> tuple[LedgerFacts, str]:
    """The facts as the per-fact queries read them (the ledger check before the single pass)."""
    totals = conn.execute(odoo_schema.LEDGER_TOTALS_SQL).fetchone()
    assert totals is not None
    unbalanced = conn.execute(check_runner.UNBALANCED_SQL).fetchall()
    imbalances = {str(c): str(v) for c, v in conn.execute(check_runner.COMPANY_IMBALANCE_SQL).fetchall()}
    dangling = conn.execute(check_runner.DANGLING_SQL).fetchone() or (0, 0)
    facts = LedgerFacts(posted_moves=int(totals[0]), posted_lines=int(totals[1]), debit_total=str(totals[2]),
                        credit_total=str(totals[3]), unbalanced_moves=[str(r[0]) for r in unbalanced],
                        unbalanced_move_count=int(unbalanced[0][1]) if unbalanced else 0,
                        company_imbalances=imbalances, lines_missing_move=int(dangling[0]),
                        lines_missing_account=int(dangling[1]))
    moves = conn.execute(odoo_schema.ledger_moves_sql("move_type", code_column))
    return facts, odoo_schema.fold_ledger(moves)


@pytest.fixture
def scratch(stack: LocalStack) -> Iterator[str]:
    name = f"ledger_{uuid.uuid4().hex[:10]}"
    ensure_database(stack.dsn("control"), name)
    yield stack.dsn("control", name)
    with psycopg.connect(stack.dsn("control"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


@pytest.mark.parametrize("halves", [False, True], ids=["one connection", "two halves at once"])
@pytest.mark.parametrize("code_column", ["code", "code_store"])
@pytest.mark.parametrize("case", ["every fault", "cross-company", "balanced"])
def test_single_pass_ledger_facts_equal_the_per_fact_queries(scratch: str, code_column: str, case: str,
                                                             halves: bool) -> None:
    with psycopg.connect(scratch, autocommit=True) as conn, psycopg.connect(scratch, autocommit=True) as helper:
        build(conn, code_column, case)
        expected, expected_fingerprint = per_fact(conn, code_column)
        got, fingerprint = check_runner.ledger_facts(conn, helper if halves else None)
        # the helper's temporary table is gone: a second scan in the same sessions works the same
        assert check_runner.ledger_facts(conn, helper if halves else None) == (got, fingerprint)
    assert fingerprint == expected_fingerprint
    assert (got.posted_moves, got.posted_lines, got.unbalanced_moves, got.unbalanced_move_count,
            got.lines_missing_move, got.lines_missing_account) == (
        expected.posted_moves, expected.posted_lines, expected.unbalanced_moves, expected.unbalanced_move_count,
        expected.lines_missing_move, expected.lines_missing_account)
    from decimal import Decimal

    assert Decimal(got.debit_total) == Decimal(expected.debit_total)
    assert Decimal(got.credit_total) == Decimal(expected.credit_total)
    assert {c: Decimal(v) for c, v in got.company_imbalances.items()} == {
        c: Decimal(v) for c, v in expected.company_imbalances.items()}
    if case == "every fault":
        assert got.unbalanced_moves == ["INV/2"]  # 0.004 in a 0.001 currency
        assert got.company_imbalances.keys() == {"2"}
        assert (got.lines_missing_move, got.lines_missing_account) == (2, 1)
    if case == "cross-company":
        assert got.unbalanced_moves == ["INV/2", "3"]  # a move without a name is named by its id
        assert got.company_imbalances["2"].startswith("2.504")  # the line counts for its own company
    if case == "balanced":
        assert (got.unbalanced_move_count, got.company_imbalances) == (0, {})
