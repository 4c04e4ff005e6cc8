"""The identity and schema proofs of a database, read the same way at backup time and after a restore.

At backup time they are read in the dump's snapshot and recorded in the manifest; after a restore the
validation reads them again from the scratch database and compares (``continuity.validation.checks``).
Both sides use this one function, so equal databases give equal proofs.
"""

from __future__ import annotations

import psycopg

from continuity.catalog.manifest import RECOVERY_TABLES, OdooInfo, TableSchema, TenantIdentity
from continuity.validation.odoo.schema import (
    COMPANIES_SQL,
    CONFIG_PARAMETERS_PRESENT_SQL,
    DATABASE_UUID_SQL,
    PROOF_SEARCH_PATH_SQL,
    TABLE_COLUMNS_SQL,
    TABLE_CONSTRAINTS_SQL,
    TABLE_INDEXES_SQL,
    fold_companies,
    fold_tables,
)
from continuity.validation.odoo.versions import DETECT_SQL, odoo_major


def odoo_facts(conn: psycopg.Connection) -> OdooInfo | None:
    """The Odoo version and installed modules (``ir_module_module``); None when the database is not Odoo."""
    present = conn.execute(DETECT_SQL["has_module_table"]).fetchone()
    if not present or not present[0]:
        return None
    row = conn.execute(DETECT_SQL["base_version"]).fetchone()
    version = str(row[0])[:40] if row and row[0] else None
    modules = tuple(str(name)[:128] for (name,) in conn.execute(DETECT_SQL["installed_modules"]).fetchall())
    return OdooInfo(version=version, major=odoo_major(version), modules=modules[:5000])


def tenant_identity(conn: psycopg.Connection) -> TenantIdentity | None:
    """The companies fingerprint and Odoo's database uuid; None when the database has no companies table."""
    present = conn.execute("SELECT to_regclass('public.res_company') IS NOT NULL").fetchone()
    if not present or not present[0]:
        return None
    companies_sha, companies = fold_companies(conn.execute(COMPANIES_SQL).fetchall())
    database_uuid = None
    has_parameters = conn.execute(CONFIG_PARAMETERS_PRESENT_SQL).fetchone()
    if has_parameters and has_parameters[0]:
        row = conn.execute(DATABASE_UUID_SQL).fetchone()
        database_uuid = str(row[0])[:64] if row and row[0] else None
    return TenantIdentity(companies_sha256=companies_sha, companies=companies, database_uuid=database_uuid)


def table_schemas(conn: psycopg.Connection, tables: list[str] | None = None) -> dict[str, TableSchema]:
    """Each table's columns, indexes and constraints, folded (default: the recovery tables)."""
    names = tables if tables is not None else list(RECOVERY_TABLES)
    with conn.transaction():
        conn.execute(PROOF_SEARCH_PATH_SQL)
        proofs = fold_tables(conn.execute(TABLE_COLUMNS_SQL, (names,)).fetchall(),
                             conn.execute(TABLE_INDEXES_SQL, (names,)).fetchall(),
                             conn.execute(TABLE_CONSTRAINTS_SQL, (names,)).fetchall())
    return {name: TableSchema.model_validate(proof) for name, proof in proofs.items()}


def identity_and_schema(conn: psycopg.Connection) -> tuple[TenantIdentity | None, dict[str, TableSchema]]:
    return tenant_identity(conn), table_schemas(conn)
