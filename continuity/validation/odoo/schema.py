"""The Odoo 17 tables that matter to recovery, as SQL text, and the ledger queries shared by backup and restore.

Table and column names follow Odoo 17.0 (``addons/account``, ``odoo/addons/base``): the ORM's
column types (Char -> varchar, translated Char -> jsonb, Html/Text -> text, Monetary and Float with
digits -> numeric, Many2one -> int4), its ``{table}__{column}_index`` index names and its
``{table}_{column}_fkey`` foreign keys. Only the columns a recovery check or a realistic dump needs
are here; ``res_users`` and ``res_country`` are out of scope, so ``create_uid``, ``write_uid`` and
``country_id`` are plain integers without a foreign key.

The ledger fingerprint is computed the same way at backup time (in the dump's snapshot) and after a
restore: :data:`LEDGER_MOVES_SQL` returns one digest per posted move and :func:`fold_ledger` folds
them into one sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

# Columns written by the demo seed, in COPY order; the DDL below declares each of them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "res_currency": ("id", "name", "full_name", "symbol", "rounding", "decimal_places", "active", "position",
                     "create_date", "write_date"),
    "res_company": ("id", "name", "partner_id", "currency_id", "sequence", "email", "phone", "company_registry",
                    "active", "fiscalyear_last_day", "fiscalyear_last_month", "create_date", "write_date"),
    "res_partner": ("id", "name", "complete_name", "company_id", "type", "ref", "lang", "vat", "street", "street2",
                    "zip", "city", "country_id", "email", "phone", "website", "comment", "is_company", "active",
                    "parent_id", "commercial_partner_id", "commercial_company_name", "customer_rank",
                    "supplier_rank", "create_date", "write_date"),
    "account_account": ("id", "name", "code", "account_type", "internal_group", "reconcile", "deprecated",
                        "non_trade", "note", "currency_id", "company_id", "create_date", "write_date"),
    "account_journal": ("id", "name", "code", "type", "active", "sequence", "default_account_id", "currency_id",
                        "company_id", "invoice_reference_type", "invoice_reference_model", "create_date",
                        "write_date"),
    "account_move": ("id", "name", "ref", "date", "state", "move_type", "journal_id", "company_id", "partner_id",
                     "commercial_partner_id", "currency_id", "sequence_prefix", "sequence_number", "invoice_date",
                     "invoice_date_due", "payment_reference", "invoice_origin", "narration", "payment_state",
                     "amount_untaxed", "amount_tax", "amount_total", "amount_residual", "amount_untaxed_signed",
                     "amount_tax_signed", "amount_total_signed", "amount_total_in_currency_signed",
                     "amount_residual_signed", "auto_post", "posted_before", "create_date", "write_date"),
    "account_move_line": ("id", "move_id", "move_name", "date", "ref", "parent_state", "journal_id", "company_id",
                          "company_currency_id", "account_id", "name", "display_type", "sequence", "debit",
                          "credit", "balance", "amount_currency", "currency_id", "partner_id", "quantity",
                          "price_unit", "discount", "price_subtotal", "price_total", "amount_residual",
                          "amount_residual_currency", "reconciled", "date_maturity", "create_date",
                          "write_date"),
    "ir_attachment": ("id", "name", "description", "res_model", "res_field", "res_id", "company_id", "type", "url",
                      "public", "access_token", "db_datas", "store_fname", "file_size", "checksum", "mimetype",
                      "index_content", "create_date", "write_date"),
    "ir_module_module": ("id", "name", "shortdesc", "summary", "author", "website", "latest_version",
                         "published_version", "sequence", "auto_install", "state", "demo", "license",
                         "application", "create_date", "write_date"),
}

_AUDIT = """    create_uid int4,
    create_date timestamp without time zone,
    write_uid int4,
    write_date timestamp without time zone"""

TABLES_DDL: tuple[str, ...] = (
    f"""CREATE TABLE res_currency (
    id serial NOT NULL PRIMARY KEY,
    name varchar NOT NULL,
    full_name varchar,
    symbol varchar NOT NULL,
    rounding numeric,
    decimal_places int4,
    active bool,
    position varchar,
    currency_unit_label jsonb,
    currency_subunit_label jsonb,
{_AUDIT},
    CONSTRAINT res_currency_unique_name UNIQUE (name),
    CONSTRAINT res_currency_rounding_gt_zero CHECK (rounding > 0)
)""",
    f"""CREATE TABLE res_company (
    id serial NOT NULL PRIMARY KEY,
    name varchar NOT NULL,
    partner_id int4 NOT NULL,
    currency_id int4 NOT NULL,
    parent_id int4,
    sequence int4,
    email varchar,
    phone varchar,
    company_registry varchar,
    active bool,
    fiscalyear_last_day int4 NOT NULL,
    fiscalyear_last_month varchar NOT NULL,
{_AUDIT},
    CONSTRAINT res_company_name_uniq UNIQUE (name)
)""",
    f"""CREATE TABLE res_partner (
    id serial NOT NULL PRIMARY KEY,
    name varchar,
    complete_name varchar,
    company_id int4,
    type varchar,
    ref varchar,
    lang varchar,
    tz varchar,
    vat varchar,
    street varchar,
    street2 varchar,
    zip varchar,
    city varchar,
    state_id int4,
    country_id int4,
    email varchar,
    phone varchar,
    mobile varchar,
    website varchar,
    comment text,
    function varchar,
    is_company bool,
    active bool,
    employee bool,
    parent_id int4,
    commercial_partner_id int4,
    commercial_company_name varchar,
    company_name varchar,
    customer_rank int4,
    supplier_rank int4,
{_AUDIT},
    CONSTRAINT res_partner_check_name CHECK ((type = 'contact' AND name IS NOT NULL) OR type != 'contact')
)""",
    f"""CREATE TABLE account_account (
    id serial NOT NULL PRIMARY KEY,
    name jsonb NOT NULL,
    code varchar(64) NOT NULL,
    account_type varchar NOT NULL,
    internal_group varchar,
    reconcile bool,
    deprecated bool,
    non_trade bool,
    include_initial_balance bool,
    note text,
    currency_id int4,
    company_id int4 NOT NULL,
    group_id int4,
    root_id int4,
{_AUDIT},
    CONSTRAINT account_account_code_company_uniq UNIQUE (code, company_id)
)""",
    f"""CREATE TABLE account_journal (
    id serial NOT NULL PRIMARY KEY,
    name jsonb NOT NULL,
    code varchar(5) NOT NULL,
    type varchar NOT NULL,
    active bool,
    restrict_mode_hash_table bool,
    secure_sequence_id int4,
    sequence int4,
    default_account_id int4,
    suspense_account_id int4,
    currency_id int4,
    company_id int4 NOT NULL,
    invoice_reference_type varchar NOT NULL,
    invoice_reference_model varchar NOT NULL,
{_AUDIT},
    CONSTRAINT account_journal_code_company_uniq UNIQUE (company_id, code)
)""",
    f"""CREATE TABLE account_move (
    id serial NOT NULL PRIMARY KEY,
    name varchar,
    ref varchar,
    date date NOT NULL,
    state varchar NOT NULL,
    move_type varchar NOT NULL,
    journal_id int4 NOT NULL,
    company_id int4,
    partner_id int4,
    commercial_partner_id int4,
    currency_id int4 NOT NULL,
    inalterable_hash varchar,
    secure_sequence_number int4,
    sequence_prefix varchar,
    sequence_number int4,
    invoice_date date,
    invoice_date_due date,
    payment_reference varchar,
    invoice_origin varchar,
    narration text,
    payment_state varchar,
    amount_untaxed numeric,
    amount_tax numeric,
    amount_total numeric,
    amount_residual numeric,
    amount_untaxed_signed numeric,
    amount_tax_signed numeric,
    amount_total_signed numeric,
    amount_total_in_currency_signed numeric,
    amount_residual_signed numeric,
    auto_post varchar NOT NULL,
    posted_before bool,
    to_check bool,
    reversed_entry_id int4,
{_AUDIT}
)""",
    f"""CREATE TABLE account_move_line (
    id serial NOT NULL PRIMARY KEY,
    move_id int4 NOT NULL,
    move_name varchar,
    date date,
    ref varchar,
    parent_state varchar,
    journal_id int4,
    company_id int4,
    company_currency_id int4,
    account_id int4,
    name varchar,
    display_type varchar NOT NULL,
    sequence int4,
    debit numeric,
    credit numeric,
    balance numeric,
    amount_currency numeric,
    currency_id int4 NOT NULL,
    partner_id int4,
    product_id int4,
    quantity numeric,
    price_unit numeric,
    discount numeric,
    price_subtotal numeric,
    price_total numeric,
    tax_line_id int4,
    amount_residual numeric,
    amount_residual_currency numeric,
    reconciled bool,
    full_reconcile_id int4,
    date_maturity date,
{_AUDIT},
    CONSTRAINT account_move_line_check_credit_debit CHECK (credit + debit >= 0 AND credit * debit = 0),
    CONSTRAINT account_move_line_check_accountable_required_fields
        CHECK (COALESCE(display_type IN ('line_section', 'line_note'), 'f') OR account_id IS NOT NULL)
)""",
    f"""CREATE TABLE ir_attachment (
    id serial NOT NULL PRIMARY KEY,
    name varchar NOT NULL,
    description text,
    res_model varchar,
    res_field varchar,
    res_id int4,
    company_id int4,
    type varchar NOT NULL,
    url varchar(1024),
    public bool,
    access_token varchar,
    db_datas bytea,
    store_fname varchar,
    file_size int4,
    checksum varchar(40),
    mimetype varchar,
    index_content text,
    original_id int4,
{_AUDIT}
)""",
    f"""CREATE TABLE ir_module_module (
    id serial NOT NULL PRIMARY KEY,
    name varchar NOT NULL,
    category_id int4,
    shortdesc jsonb,
    summary jsonb,
    description jsonb,
    author varchar,
    maintainer varchar,
    contributors text,
    website varchar,
    latest_version varchar,
    published_version varchar,
    url varchar,
    sequence int4,
    auto_install bool,
    state varchar(16),
    demo bool,
    license varchar(32),
    application bool,
    icon varchar,
    to_buy bool,
{_AUDIT},
    CONSTRAINT ir_module_module_name_uniq UNIQUE (name)
)""",
    # Odoo's system parameters; ``database.uuid`` is written once when Odoo creates the database.
    f"""CREATE TABLE ir_config_parameter (
    id serial NOT NULL PRIMARY KEY,
    key varchar NOT NULL,
    value text NOT NULL,
{_AUDIT},
    CONSTRAINT ir_config_parameter_key_uniq UNIQUE (key)
)""",
)

# Added after the bulk load: building indexes once is much faster than maintaining them per row.
INDEXES_DDL: tuple[str, ...] = (
    "CREATE INDEX res_partner__name_index ON res_partner (name)",
    "CREATE INDEX res_partner__complete_name_index ON res_partner (complete_name)",
    "CREATE INDEX res_partner__ref_index ON res_partner (ref)",
    "CREATE INDEX res_partner__company_id_index ON res_partner (company_id)",
    "CREATE INDEX res_partner__parent_id_index ON res_partner (parent_id)",
    "CREATE INDEX res_partner__commercial_partner_id_index ON res_partner (commercial_partner_id)",
    "CREATE INDEX res_partner__vat_index ON res_partner (vat)",
    "CREATE INDEX account_account__account_type_index ON account_account (account_type)",
    "CREATE INDEX account_account__company_id_index ON account_account (company_id)",
    "CREATE INDEX account_journal__company_id_index ON account_journal (company_id)",
    "CREATE INDEX account_move__date_index ON account_move (date)",
    "CREATE INDEX account_move__state_index ON account_move (state)",
    "CREATE INDEX account_move__journal_id_index ON account_move (journal_id)",
    "CREATE INDEX account_move__partner_id_index ON account_move (partner_id)",
    "CREATE INDEX account_move__commercial_partner_id_index ON account_move (commercial_partner_id)",
    "CREATE INDEX account_move__company_id_index ON account_move (company_id)",
    "CREATE INDEX account_move__invoice_date_index ON account_move (invoice_date)",
    "CREATE INDEX account_move__payment_reference_index ON account_move (payment_reference)",
    "CREATE INDEX account_move_sequence_index ON account_move (journal_id, sequence_prefix desc, "
    "sequence_number desc)",
    "CREATE UNIQUE INDEX account_move_unique_name ON account_move (name, journal_id) "
    "WHERE (state = 'posted' AND name != '/')",
    "CREATE INDEX account_move_to_check_idx ON account_move (journal_id) WHERE to_check = true",
    "CREATE INDEX account_move_line__move_id_index ON account_move_line (move_id)",
    "CREATE INDEX account_move_line__account_id_index ON account_move_line (account_id)",
    "CREATE INDEX account_move_line__partner_id_index ON account_move_line (partner_id)",
    "CREATE INDEX account_move_line__date_index ON account_move_line (date)",
    "CREATE INDEX account_move_line__journal_id_index ON account_move_line (journal_id)",
    "CREATE INDEX account_move_line__company_id_index ON account_move_line (company_id)",
    "CREATE INDEX account_move_line__full_reconcile_id_index ON account_move_line (full_reconcile_id)",
    "CREATE INDEX account_move_line_account_id_date_idx ON account_move_line (account_id, date)",
    "CREATE INDEX account_move_line_partner_id_ref_idx ON account_move_line (partner_id, ref)",
    "CREATE INDEX ir_attachment_res_idx ON ir_attachment (res_model, res_id)",
    "CREATE INDEX ir_attachment__checksum_index ON ir_attachment (checksum)",
    "CREATE INDEX ir_attachment__store_fname_index ON ir_attachment (store_fname)",
    "CREATE INDEX ir_attachment__company_id_index ON ir_attachment (company_id)",
    "CREATE INDEX ir_module_module__state_index ON ir_module_module (state)",
)

# (table, column, referenced table, ON DELETE); Odoo: restrict for required many2ones, set null otherwise.
FOREIGN_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("res_company", "partner_id", "res_partner", "restrict"),
    ("res_company", "currency_id", "res_currency", "restrict"),
    ("res_company", "parent_id", "res_company", "set null"),
    ("res_partner", "company_id", "res_company", "set null"),
    ("res_partner", "parent_id", "res_partner", "set null"),
    ("res_partner", "commercial_partner_id", "res_partner", "set null"),
    ("account_account", "currency_id", "res_currency", "set null"),
    ("account_account", "company_id", "res_company", "restrict"),
    ("account_journal", "default_account_id", "account_account", "restrict"),
    ("account_journal", "suspense_account_id", "account_account", "restrict"),
    ("account_journal", "currency_id", "res_currency", "set null"),
    ("account_journal", "company_id", "res_company", "restrict"),
    ("account_move", "journal_id", "account_journal", "restrict"),
    ("account_move", "company_id", "res_company", "set null"),
    ("account_move", "partner_id", "res_partner", "restrict"),
    ("account_move", "commercial_partner_id", "res_partner", "set null"),
    ("account_move", "currency_id", "res_currency", "restrict"),
    ("account_move", "reversed_entry_id", "account_move", "set null"),
    ("account_move_line", "move_id", "account_move", "cascade"),
    ("account_move_line", "journal_id", "account_journal", "set null"),
    ("account_move_line", "company_id", "res_company", "set null"),
    ("account_move_line", "company_currency_id", "res_currency", "set null"),
    ("account_move_line", "account_id", "account_account", "restrict"),
    ("account_move_line", "currency_id", "res_currency", "restrict"),
    ("account_move_line", "partner_id", "res_partner", "restrict"),
    ("ir_attachment", "company_id", "res_company", "set null"),
    ("ir_attachment", "original_id", "ir_attachment", "set null"),
)


def foreign_keys_ddl() -> list[str]:
    """ALTER TABLE statements adding every foreign key, named as Odoo names them."""
    return [
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_fkey FOREIGN KEY ({column}) "
        f"REFERENCES {target} (id) ON DELETE {on_delete}"
        for table, column, target, on_delete in FOREIGN_KEYS
    ]


def reset_sequences_ddl() -> list[str]:
    """Point each table's id sequence past the ids the bulk load wrote, as Odoo's ORM expects."""
    return [
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT max(id) FROM {table}), 0) + 1, "
        "false)"
        for table in COLUMNS
    ]


# ---- ledger: the same queries at backup time and after a restore ---------------------------------

LEDGER_TABLES = ("account_move", "account_move_line", "account_account")

LEDGER_TOTALS_SQL = """
SELECT
    (SELECT count(*) FROM account_move WHERE state = 'posted') AS posted_moves,
    count(l.id) AS posted_lines,
    COALESCE(sum(l.debit), 0)::text AS debit_total,
    COALESCE(sum(l.credit), 0)::text AS credit_total
FROM account_move_line l
JOIN account_move m ON m.id = l.move_id
WHERE m.state = 'posted'
"""

# The move's kind: ``move_type`` since Odoo 14 (addons/account/models/account_move.py); Odoo 13 and older
# called the same selection ``type``. Both exist in no released version; ``move_type`` wins if they did.
MOVE_TYPE_COLUMNS = ("move_type", "type")
ACCOUNT_CODE_COLUMNS = ("code", "code_store")
# Which names this database uses for the move's kind (Odoo 14+ ``move_type``, 13 ``type``, 12 none: invoices
# lived in account_invoice) and the account's code (``code``, or 18's company-dependent jsonb ``code_store``);
# see :mod:`continuity.validation.odoo.versions` for the sources.
LEDGER_SHAPE_SQL = """
SELECT table_name, column_name FROM information_schema.columns
WHERE table_schema = 'public' AND ((table_name = 'account_move' AND column_name IN ('move_type', 'type'))
   OR (table_name = 'account_account' AND column_name IN ('code', 'code_store')))
"""
MOVE_TYPE_COLUMN_SQL = """
SELECT column_name FROM information_schema.columns
WHERE table_schema = 'public' AND table_name = 'account_move' AND column_name IN ('move_type', 'type')
ORDER BY column_name = 'move_type' DESC LIMIT 1
"""


@dataclass(frozen=True)
class LedgerShape:
    move_type_column: str | None = "move_type"
    account_code_column: str = "code"


def ledger_shape(rows: Iterable[Sequence[object]]) -> LedgerShape:
    """The :class:`LedgerShape` from the rows of :data:`LEDGER_SHAPE_SQL`."""
    found = {(str(t), str(c)) for t, c in rows}
    kind = next((c for c in MOVE_TYPE_COLUMNS if ("account_move", c) in found), None)
    code = next((c for c in ACCOUNT_CODE_COLUMNS if ("account_account", c) in found), "code")
    return LedgerShape(kind, code)


def ledger_moves_sql(move_type_column: str | None = "move_type", account_code_column: str = "code") -> str:
    """One row per posted move, in id order: the move's identity and a sha256 over its lines.

    :param move_type_column: the database's name for the move's kind (see :data:`MOVE_TYPE_COLUMNS`), None
        where moves have none (Odoo 12); the fingerprint is the same whatever the name.
    :param account_code_column: ``code``, or Odoo 18's ``code_store`` (jsonb, folded as its text).
    """
    if move_type_column is not None and move_type_column not in MOVE_TYPE_COLUMNS:
        raise ValueError(f"not an Odoo move kind column: {move_type_column!r}")
    if account_code_column not in ACCOUNT_CODE_COLUMNS:
        raise ValueError(f"not an Odoo account code column: {account_code_column!r}")
    kind = f"m.{move_type_column}" if move_type_column else "NULL"
    return f"""
SELECT m.id, COALESCE(m.name, ''), m.date::text, {kind}, m.journal_id,
       encode(sha256(convert_to({_lines_text(account_code_column)}, 'UTF8')), 'hex')
FROM account_move m
JOIN account_move_line l ON l.move_id = m.id
LEFT JOIN account_account a ON a.id = l.account_id
WHERE m.state = 'posted'
GROUP BY m.id
ORDER BY m.id
"""


def _lines_text(account_code_column: str, only_posted: bool = False) -> str:
    """A move's lines as the fingerprint reads them: one ``|``-joined line each, in line id order."""
    return (f"string_agg(concat_ws('|', l.id, a.{account_code_column}::text, l.partner_id, l.debit::text, "
            "l.credit::text, l.amount_currency::text, l.currency_id), E'\\n' ORDER BY l.id)"
            + (" FILTER (WHERE m.state = 'posted')" if only_posted else ""))


LEDGER_MOVES_SQL = ledger_moves_sql()


# The moves of one part of a ledger scan, by move id (``%(split)s``): a scan read in two halves at once (two
# connections, two cores) covers every move exactly once. The lines are filtered by the same bound (the join
# makes it the same rows): read while the restore still builds the indexes, each half then hashes and sorts
# only its own lines, not all of them (measured: 23-30 s of server CPU for a 700k-move half without it,
# 16-18 s with it, 13-15 s once the indexes exist).
LEDGER_SCAN_PARTS = {"all": "", "below": "WHERE m.id < %(split)s AND l.move_id < %(split)s",
                     "from": "WHERE m.id >= %(split)s AND l.move_id >= %(split)s"}


def ledger_scan_sql(move_type_column: str | None = "move_type", account_code_column: str = "code",
                    part: str = "all") -> str:
    """Every journal item of every move read once, grouped by its move, in move id order: the ledger's facts.

    The same join and order as :func:`ledger_moves_sql`, over every move rather than the posted ones. Per move:
    whether it is posted, the columns and line digest of :func:`ledger_moves_sql` (for posted moves, the same
    text), its line count and debit and credit sums, whether it balances in its company currency's rounding (as
    Odoo's ``float_is_zero(precision_rounding=currency.rounding)``), its debit - credit when not zero (its own
    company's, as long as no line names another company: the running count of those tells), and how many
    lines point at an account that does not exist. Lines whose move does not exist are
    :data:`LEDGER_ORPHAN_LINES_SQL`'s.
    :func:`fold_ledger_scan` turns the rows into totals, the trial balance per company and the fingerprint.

    :param part: ``all``, or one half of :data:`LEDGER_SCAN_PARTS` (parameter ``split``, a move id).
    """
    if move_type_column is not None and move_type_column not in MOVE_TYPE_COLUMNS:
        raise ValueError(f"not an Odoo move kind column: {move_type_column!r}")
    if account_code_column not in ACCOUNT_CODE_COLUMNS:
        raise ValueError(f"not an Odoo account code column: {account_code_column!r}")
    kind = f"m.{move_type_column}" if move_type_column else "NULL"
    own = "l.company_id IS NOT DISTINCT FROM m.company_id"
    posted = "FILTER (WHERE m.state = 'posted')"
    running = "OVER (ORDER BY m.id ROWS UNBOUNDED PRECEDING)"
    # A move with a line of another company sends the check to the line-by-line trial balance, so a move's
    # delta here is all its own company's: no second pair of sums per line.
    own_delta = "COALESCE(sum(l.debit), 0) - COALESCE(sum(l.credit), 0)"
    # Sums run along the rows (a window in the rows' own order: no sort) and are read from the last row, and a
    # move's own-company delta comes only when it is not zero: the fold converts no number per move.
    return f"""
SELECT m.state = 'posted' AS posted, m.id AS move_id, COALESCE(m.name, '') AS name, m.date::text AS date,
       {kind} AS kind, m.journal_id,
       encode(sha256(convert_to({_lines_text(account_code_column, only_posted=True)}, 'UTF8')), 'hex') AS lines,
       round((COALESCE(sum(l.debit), 0) - COALESCE(sum(l.credit), 0)) / COALESCE(min(r.rounding), 0.01)) <> 0
           AS unbalanced,
       m.company_id::text AS company,
       NULLIF({own_delta}, 0)::text AS own_company_delta,
       (sum(count(*)) {posted} {running})::text AS posted_lines,
       (sum(COALESCE(sum(l.debit), 0)) {posted} {running})::text AS debit_total,
       (sum(COALESCE(sum(l.credit), 0)) {posted} {running})::text AS credit_total,
       (sum(count(*) FILTER (WHERE NOT ({own}))) {posted} {running})::text AS other_company_lines,
       (sum(count(*) FILTER (WHERE l.account_id IS NOT NULL AND a.id IS NULL)) {running})::text
           AS missing_account_lines
FROM account_move m
JOIN account_move_line l ON l.move_id = m.id
LEFT JOIN account_account a ON a.id = l.account_id
LEFT JOIN (SELECT c.id, NULLIF(cur.rounding, 0) AS rounding
           FROM res_company c LEFT JOIN res_currency cur ON cur.id = c.currency_id) r ON r.id = m.company_id
{LEDGER_SCAN_PARTS[part]}
GROUP BY m.id
ORDER BY m.id
"""


# The journal items whose move does not exist (one anti-join), and how many of them also point at a missing
# account: the part of the dangling-line facts a scan grouped by existing moves cannot see.
LEDGER_ORPHAN_LINES_SQL = """
SELECT count(*), count(*) FILTER (WHERE l.account_id IS NOT NULL
                                    AND NOT EXISTS (SELECT 1 FROM account_account a WHERE a.id = l.account_id))
FROM account_move_line l
WHERE NOT EXISTS (SELECT 1 FROM account_move m WHERE m.id = l.move_id)
"""


@dataclass
class LedgerScan:
    """The ledger facts of one pass over the journal items (:func:`fold_ledger_scan`)."""

    posted_lines: int = 0
    debit_total: Decimal = Decimal(0)
    credit_total: Decimal = Decimal(0)
    unbalanced_moves: list[str] = field(default_factory=list)  # the first few, by move id
    unbalanced_move_count: int = 0
    # debit - credit of posted moves per their company ("none": no company); the trial balance per company
    # only when no posted line names another company than its move's (else it is summed line by line)
    company_deltas: dict[str, Decimal] = field(default_factory=dict)
    lines_of_another_company: int = 0  # posted lines whose company is not their move's
    lines_missing_account: int = 0  # of the lines of existing moves
    fingerprint: str = ""


def fold_ledger_scan(parts: Iterable[Iterable[Sequence[Any]]], examples: int = 5) -> LedgerScan:
    """Fold the rows of :func:`ledger_scan_sql`, one or more parts in move id order, into a :class:`LedgerScan`.

    The fingerprint folds the posted moves' rows exactly as :func:`fold_ledger` folds :data:`LEDGER_MOVES_SQL`;
    the totals are each part's last row's running sums, added.
    """
    scan = LedgerScan()
    digest = hashlib.sha256()
    with localcontext() as exact:
        exact.prec = 1000  # sums of numeric amounts, added exactly
        for rows in parts:
            last: Sequence[Any] | None = None
            for row in rows:
                last = row
                (posted, move_id, name, date, kind, journal, lines_digest, unbalanced, company, own_delta) = row[:10]
                if not posted:
                    continue
                digest.update(("|".join("" if v is None else str(v)
                                        for v in (move_id, name, date, kind, journal, lines_digest)) + "\n").encode())
                if unbalanced:
                    scan.unbalanced_move_count += 1
                    if len(scan.unbalanced_moves) < examples:
                        scan.unbalanced_moves.append(name or str(move_id))
                key = company if company is not None else "none"
                if key not in scan.company_deltas:
                    scan.company_deltas[key] = Decimal(0)
                if own_delta is not None:
                    scan.company_deltas[key] += Decimal(own_delta)
            if last is None:
                continue
            posted_lines, debit, credit, other_company, missing_account = last[10:15]
            scan.posted_lines += int(posted_lines or 0)
            scan.debit_total += Decimal(debit or 0)
            scan.credit_total += Decimal(credit or 0)
            scan.lines_of_another_company += int(other_company or 0)
            scan.lines_missing_account += int(missing_account or 0)
    scan.fingerprint = digest.hexdigest()
    return scan


LEDGER_TABLES_PRESENT_SQL = """
SELECT count(*) FROM unnest(%s::text[]) AS t(name) WHERE to_regclass('public.' || t.name) IS NOT NULL
"""


def move_type_column(found: Sequence[object] | None) -> str:
    """The column :data:`MOVE_TYPE_COLUMN_SQL` found (``move_type`` when it found none: a later query names it)."""
    return str(found[0]) if found else "move_type"


def ledger_moves_for(shape: LedgerShape) -> str:
    return ledger_moves_sql(shape.move_type_column, shape.account_code_column)


def fold_ledger(moves: Iterable[Sequence[object]]) -> str:
    """One sha256 over the rows of :data:`LEDGER_MOVES_SQL`, in the order given (id order).

    An empty ledger folds to the sha256 of the empty string.
    """
    digest = hashlib.sha256()
    for row in moves:
        digest.update(("|".join("" if v is None else str(v) for v in row) + "\n").encode())
    return digest.hexdigest()


# ---- identity and schema proofs ------------------------------------------------------------------
# Read at backup time in the dump's snapshot (recorded in the manifest) and again in the restored
# database; the same SQL and the same folding on both sides, so equal databases give equal proofs.

COMPANIES_SQL = "SELECT id, name FROM public.res_company ORDER BY id"
# Odoo's per-database uuid (``ir_config_parameter``), made when the database was created and kept by every
# dump and restore since: two tenants' databases never share it, whatever their rows.
CONFIG_PARAMETERS_PRESENT_SQL = "SELECT to_regclass('public.ir_config_parameter') IS NOT NULL"
DATABASE_UUID_SQL = "SELECT value FROM public.ir_config_parameter WHERE key = 'database.uuid'"
DATABASE_UUID_INSERT_SQL = ("INSERT INTO ir_config_parameter (key, value) VALUES ('database.uuid', %s) "
                            "ON CONFLICT (key) DO NOTHING")
# Run first (in a transaction) so that definitions print every name schema-qualified, whatever the
# connection's search_path: the backup's and the validation's sessions then print the same text.
PROOF_SEARCH_PATH_SQL = "SET LOCAL search_path TO pg_catalog"

# Column names, types and nullability of each recovery table, in name order.
TABLE_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attname
"""
# Every index of each recovery table, described by structure (method, uniqueness, columns, partial or
# not) rather than by pg_get_indexdef's text: an expression or predicate printed by one server does not
# always print back the same after a dump and restore, and a proof must not fail a good backup.
TABLE_INDEXES_SQL = """
SELECT t.relname, i.relname,
  concat_ws(' ', am.amname, CASE WHEN x.indisunique THEN 'unique' END, CASE WHEN x.indisprimary THEN 'primary' END,
    '(' || (SELECT string_agg(CASE WHEN k.attnum = 0 THEN 'expr' ELSE a.attname END, ',' ORDER BY k.ord)
            FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
            LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum) || ')',
    CASE WHEN x.indpred IS NOT NULL THEN 'partial' END)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_am am ON am.oid = i.relam
WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY(%s)
ORDER BY t.relname, i.relname
"""
# Every constraint of each recovery table, by structure: kind, columns, and for a foreign key the table and
# columns it references and its update/delete actions (a CHECK's expression text is not compared, for the
# same reason as index expressions).
TABLE_CONSTRAINTS_SQL = """
SELECT t.relname, c.conname,
  concat_ws(' ', c.contype::text,
    '(' || (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) || ')',
    CASE WHEN c.contype = 'f' THEN c.confrelid::regclass::text || '(' ||
      (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) || ') ' || c.confupdtype::text
      || c.confdeltype::text END,
    CASE WHEN NOT c.convalidated THEN 'not valid' END)
FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY(%s)
ORDER BY t.relname, c.conname
"""


def fold_companies(rows: Iterable[Sequence[object]]) -> tuple[str, int]:
    """(sha256, count) over the companies' ids and names, in id order."""
    digest = hashlib.sha256()
    count = 0
    for company_id, name in rows:
        digest.update(f"{company_id}|{name}\n".encode())
        count += 1
    return digest.hexdigest(), count


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fold_tables(columns: Iterable[Sequence[object]], indexes: Iterable[Sequence[object]],
                constraints: Iterable[Sequence[object]]) -> dict[str, dict[str, Any]]:
    """Per table: sha256 of its columns; each index and constraint definition hashed under its name."""
    cols: dict[str, hashlib._Hash] = {}
    out: dict[str, dict[str, Any]] = {}
    for table, name, type_, not_null in columns:
        cols.setdefault(str(table), hashlib.sha256()).update(f"{name} {type_}{' not null' if not_null else ''}\n"
                                                             .encode())
    for table, digest in cols.items():
        out[table] = {"columns": digest.hexdigest(), "indexes": {}, "constraints": {}}
    for table, name, definition in indexes:
        if str(table) in out:
            out[str(table)]["indexes"][str(name)] = _short(str(definition))
    for table, name, definition in constraints:
        if str(table) in out:
            out[str(table)]["constraints"][str(name)] = _short(str(definition))
    return out


def count_rows_sql(table: str) -> str:
    """``SELECT count(*)`` of one of the known tables (never an arbitrary name)."""
    if table not in COLUMNS and table != "continuity_demo_seed":
        raise ValueError(f"not a known Odoo table: {table!r}")
    return f"SELECT count(*) FROM {table}"


# ---- the demo seed's marker ----------------------------------------------------------------------

SEED_MARKER_TABLE = "continuity_demo_seed"
SEED_MARKER_DDL = f"""CREATE TABLE {SEED_MARKER_TABLE} (
    tenant varchar PRIMARY KEY,
    scale int4 NOT NULL,
    generator int4 NOT NULL,
    seeded_at timestamptz NOT NULL DEFAULT now(),
    row_counts jsonb NOT NULL,
    attachment_bytes int8 NOT NULL
)"""
