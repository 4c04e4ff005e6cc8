"""Synthetic Odoo databases, one per major version 12-18, built from the product's own per-version description.

:mod:`continuity.validation.odoo.versions` says which tables and columns recovery needs in each Odoo (with
the Odoo sources it was read from). These fixtures create exactly those, typed as Odoo types them, plus the
few columns the finance queries also read, and fill them with a small balanced ledger: the smallest database
each version's checks accept. Variants break one thing each (unbalanced, gapped, without accounting, a
three-decimal currency's sub-cent imbalance).
"""

from __future__ import annotations

import hashlib
import uuid

import psycopg

from continuity.adapters.storage.blob_store import BlobStore
from continuity.validation.odoo import schema as odoo_schema
from continuity.validation.odoo import versions

# Odoo's column types for the names the description uses (fields.Many2one -> int4, Monetary -> numeric, ...).
TYPES: dict[str, str] = {
    "id": "serial PRIMARY KEY", "name": "varchar", "date": "date", "state": "varchar", "type": "varchar",
    "move_type": "varchar", "code": "varchar", "code_store": "jsonb", "debit": "numeric", "credit": "numeric",
    "balance": "numeric", "amount_currency": "numeric", "rounding": "numeric", "decimal_places": "int4",
    "latest_version": "varchar", "sequence_prefix": "varchar", "sequence_number": "int4",
    "inalterable_hash": "varchar", "secure_sequence_number": "int4", "restrict_mode_hash_table": "bool",
    "store_fname": "varchar", "checksum": "varchar", "file_size": "int4", "res_model": "varchar",
    "res_id": "int4", "parent_state": "varchar", "number": "varchar", "move_name": "varchar",
    "date_invoice": "date", "date_from": "date", "date_to": "date", "prefix": "varchar", "suffix": "varchar",
    "padding": "int4", "number_next": "int4", "number_increment": "int4", "implementation": "varchar",
    "use_date_range": "bool",
}
# Read by the ledger fingerprint (every version has them; the description lists what recovery needs by name).
EXTRA = {"account_move_line": ("partner_id", "amount_currency", "currency_id")}
MOVES = 8


def _type(column: str) -> str:
    return TYPES.get(column, "int4" if column.endswith("_id") else "varchar")


def build(conn: psycopg.Connection, major: int, tenant: str, blobs: BlobStore, *, accounting: bool = True,
          variant: str = "good", version: str | None = None) -> None:
    """Create and fill an Odoo ``major`` database (``variant``: good, unbalanced, gapped, millesimal, continuing)."""
    modules = ["base", "account"] if accounting else ["base"]
    expected = versions.expected_columns(max(12, min(major, 18)), modules)
    for table, columns in expected.items():
        cols = list(dict.fromkeys((*columns, *EXTRA.get(table, ()))))
        if table == "account_account_res_company_rel":
            conn.execute(f"CREATE TABLE {table} (account_account_id int4, res_company_id int4)")
            continue
        conn.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {_type(c)}' for c in cols)})")
    conn.execute(odoo_schema.TABLES_DDL[-1])  # ir_config_parameter
    conn.execute(odoo_schema.DATABASE_UUID_INSERT_SQL, (str(uuid.uuid5(uuid.NAMESPACE_URL, f"odoo:{tenant}")),))
    latest = version or f"{major}.0.1.3"
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ir_module_module (name, state, latest_version) VALUES (%s, 'installed', %s)",
                        [(m, latest) for m in modules])
    conn.execute("INSERT INTO res_partner (id, name) VALUES (1, 'Company partner'), (2, 'Customer')")
    currency = ["id", "name", "rounding"] + (["decimal_places"] if "decimal_places" in expected["res_currency"]
                                             else [])
    # A three-decimal currency (as KWD or TND) for the "millesimal" variant: cents would hide its imbalance.
    rounding, places = ("0.001", 3) if variant == "millesimal" else ("0.01", 2)
    conn.execute(f"INSERT INTO res_currency ({', '.join(currency)}) VALUES (1, 'EUR', {rounding}"
                 + (f", {places})" if len(currency) == 4 else ")"))
    conn.execute("INSERT INTO res_company (id, name, partner_id, currency_id) VALUES (1, %s, 1, 1)",
                 (f"{tenant} SA",))
    content = f"{tenant} invoice scan".encode() * 20
    sha1 = hashlib.sha1(content, usedforsecurity=False).hexdigest()
    blobs.ensure_containers(["attachments"])
    blobs.upload("attachments", f"{tenant}/{sha1[:2]}/{sha1}", content)
    conn.execute("INSERT INTO ir_attachment (store_fname, checksum, type, file_size, res_model, res_id) "
                 "VALUES (%s, %s, 'binary', %s, 'res.company', 1)", (f"{sha1[:2]}/{sha1}", sha1, len(content)))
    if accounting:
        _ledger(conn, major, expected, variant)


def _ledger(conn: psycopg.Connection, major: int, expected: dict[str, tuple[str, ...]], variant: str) -> None:
    if "code_store" in expected["account_account"]:
        conn.execute("""INSERT INTO account_account (id, code_store) VALUES (1, '{"1": "121000"}'),
                        (2, '{"1": "400000"}')""")
        conn.execute("INSERT INTO account_account_res_company_rel VALUES (1, 1), (2, 1)")
    else:
        conn.execute("INSERT INTO account_account (id, code, company_id) VALUES (1, '121000', 1), (2, '400000', 1)")
    conn.execute("INSERT INTO account_journal (id, code, type, company_id) VALUES (1, 'INV', 'sale', 1)")
    move_cols = expected["account_move"]
    kind = versions.move_type_column(major) if 12 <= major <= 18 else None
    for n in range(1, MOVES + 1):
        if variant == "gapped" and n == 4:
            continue  # a posted invoice missing from the middle of its sequence
        # "continuing": a sequence that never resets (INV/00001 on through the years), moves over two years.
        prefix = "INV/" if variant == "continuing" else "INV/2025/"
        day = f"{2024 + n % 2}-03-01" if variant == "continuing" else "2025-03-01"
        values: dict[str, object] = {"id": n, "name": f"{prefix}{n:04d}", "date": day, "state": "posted",
                                     "journal_id": 1, "company_id": 1}
        if kind:
            values[kind] = "out_invoice"
        if "sequence_prefix" in move_cols:
            values.update(sequence_prefix=prefix, sequence_number=n)
        conn.execute(f"INSERT INTO account_move ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))})",
                     list(values.values()))
        amount = 100 + n
        for line, (account, debit, credit) in enumerate(((1, amount, 0), (2, 0, amount)), start=1):
            if variant == "unbalanced" and n == 2 and line == 1:
                debit += 7
            if variant == "millesimal" and n == 2 and line == 1:
                debit = amount + 0.004  # type: ignore[assignment]  # less than a cent, four of the currency's units
            row: dict[str, object] = {"id": n * 10 + line, "move_id": n, "account_id": account, "debit": debit,
                                      "credit": credit, "balance": debit - credit, "company_id": 1,
                                      "journal_id": 1, "date": "2025-03-01", "partner_id": 2,
                                      "amount_currency": debit - credit, "currency_id": 1}
            if "parent_state" in expected["account_move_line"]:
                row["parent_state"] = "posted"
            conn.execute(f"INSERT INTO account_move_line ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
                         list(row.values()))
