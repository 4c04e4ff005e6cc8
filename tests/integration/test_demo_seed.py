"""Demo seed against the real primary cluster and Azurite: balanced, gapless, filestore in storage, idempotent."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.demo_seed import SeedResult, attachment_blob_name, seed_tenant
from continuity.adapters.storage.blob_store import BlobStore
from continuity.cli import main as cli
from continuity.demo.dataset import scale_size
from continuity.kernel.errors import Conflict, StoreUnavailable
from continuity.kernel.tenants import Registry, Tenant
from continuity.validation.odoo.schema import FOREIGN_KEYS, INDEXES_DDL

pytestmark = pytest.mark.stack
CONFIG = Path(__file__).resolve().parents[2] / "config" / "tenants.yaml"


def make_registry(*tenants: tuple[str, str]) -> Registry:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["tenants"] = [{"id": tid, "name": f"Demo {tid}", "tier": "silver", "server": "weu-primary", "database": db,
                       "primary_region": "westeurope", "secondary_region": "northeurope"} for tid, db in tenants]
    return Registry.model_validate(raw)


def drop_database(stack: LocalStack, name: str) -> None:
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_exists(stack: LocalStack, name: str) -> bool:
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        return conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is not None


def query(stack: LocalStack, database: str, sql: str) -> list[Any]:
    with psycopg.connect(stack.dsn("primary", database), autocommit=True) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def clear_blobs(store: BlobStore, container: str, prefix: str) -> None:
    for name in store.list_names(container, prefix):
        store.delete(container, name)


@pytest.fixture()
def fresh_tenant(stack: LocalStack, blob_store: BlobStore) -> Iterator[tuple[Registry, Tenant]]:
    token = secrets.token_hex(3)
    registry = make_registry((f"t{token}", f"demo_{token}"))
    tenant = registry.tenants[0]
    yield registry, tenant
    drop_database(stack, tenant.database)
    clear_blobs(blob_store, "attachments", tenant.attachments)


@pytest.fixture(scope="module")
def seeded(stack: LocalStack, blob_store: BlobStore) -> Iterator[tuple[Registry, Tenant, SeedResult]]:
    token = secrets.token_hex(3)
    registry = make_registry((f"t{token}", f"demo_{token}"))
    tenant = registry.tenants[0]
    result = seed_tenant(registry, tenant, 1, store=blob_store)
    yield registry, tenant, result
    drop_database(stack, tenant.database)
    clear_blobs(blob_store, "attachments", tenant.attachments)


def test_seed_creates_odoo_tables_with_the_counts_it_reports(stack: LocalStack, seeded: Any) -> None:
    _, tenant, result = seeded
    assert result.status == "seeded"
    for table, count in result.row_counts.items():
        assert query(stack, tenant.database, f"select count(*) from {table}") == [(count,)], table
    size = scale_size(1)
    assert result.row_counts["res_partner"] == size.partners + 1
    assert result.row_counts["ir_attachment"] == size.attachments == result.attachments


def test_seed_creates_odoo_foreign_keys_and_indexes(stack: LocalStack, seeded: Any) -> None:
    _, tenant, _ = seeded
    fkeys = {name for (name,) in query(stack, tenant.database, "select conname from pg_constraint where contype='f'")}
    assert fkeys == {f"{t}_{c}_fkey" for t, c, _, _ in FOREIGN_KEYS}
    indexes = {name for (name,) in query(stack, tenant.database, "select indexname from pg_indexes "
                                                                 "where schemaname='public'")}
    assert {ddl.split()[2] if ddl.split()[1] == "INDEX" else ddl.split()[3] for ddl in INDEXES_DDL} <= indexes


def test_posted_moves_are_balanced_each_and_in_total(stack: LocalStack, seeded: Any) -> None:
    _, tenant, _ = seeded
    unbalanced = query(stack, tenant.database, """
        select m.name from account_move m join account_move_line l on l.move_id = m.id
        where m.state = 'posted' group by m.id having sum(l.debit) <> sum(l.credit)""")
    assert unbalanced == []
    [(posted, debit, credit)] = query(stack, tenant.database, """
        select count(distinct m.id), sum(l.debit), sum(l.credit) from account_move m
        join account_move_line l on l.move_id = m.id where m.state = 'posted'""")
    assert posted > 1000 and debit == credit > 0


def test_invoice_numbers_are_gapless_per_journal_and_year(stack: LocalStack, seeded: Any) -> None:
    _, tenant, _ = seeded
    rows = query(stack, tenant.database, """
        select m.sequence_prefix, array_agg(m.sequence_number order by m.sequence_number),
               bool_and(m.name = m.sequence_prefix || lpad(m.sequence_number::text, 5, '0')),
               bool_and(extract(year from m.date)::text = split_part(m.sequence_prefix, '/', 2))
        from account_move m join account_journal j on j.id = m.journal_id
        where m.move_type = 'out_invoice' and m.state in ('posted', 'cancel') and j.code = 'INV'
        group by m.sequence_prefix order by 1""")
    assert [r[0] for r in rows] == ["INV/2025/", "INV/2026/"]
    for prefix, numbers, names_match, years_match in rows:
        assert numbers == list(range(1, len(numbers) + 1)), prefix
        assert names_match and years_match
    assert query(stack, tenant.database, "select min(m.name) from account_move m where m.state = 'posted' "
                                         "and m.move_type = 'out_invoice'") == [("INV/2025/00001",)]
    assert query(stack, tenant.database, "select distinct name from account_move where state = 'draft'") == [("/",)]


def test_attachments_are_in_azurite_under_the_tenant_prefix_with_matching_sha1(
        stack: LocalStack, blob_store: BlobStore, seeded: Any) -> None:
    _, tenant, _ = seeded
    rows = query(stack, tenant.database, "select store_fname, checksum, file_size, res_model from ir_attachment")
    assert rows
    for fname, checksum, file_size, res_model in rows:
        assert fname == f"{checksum[:2]}/{checksum}" and res_model == "account.move"
        data = blob_store.download("attachments", attachment_blob_name(tenant, fname))
        assert hashlib.sha1(data).hexdigest() == checksum
        assert len(data) == file_size


def test_reseed_at_the_same_scale_is_a_no_op(stack: LocalStack, blob_store: BlobStore, seeded: Any) -> None:
    registry, tenant, first = seeded
    before = query(stack, tenant.database, "select seeded_at, (select max(xmin::text::bigint) from account_move) "
                                           "from continuity_demo_seed")
    again = seed_tenant(registry, tenant, 1, store=blob_store)
    assert again.status == "already seeded"
    assert again.row_counts == first.row_counts
    assert query(stack, tenant.database, "select seeded_at, (select max(xmin::text::bigint) from account_move) "
                                         "from continuity_demo_seed") == before


def test_seed_at_another_scale_is_refused_without_force_and_force_rebuilds(
        stack: LocalStack, blob_store: BlobStore, fresh_tenant: tuple[Registry, Tenant]) -> None:
    registry, tenant = fresh_tenant
    seed_tenant(registry, tenant, 1, store=blob_store)
    with pytest.raises(Conflict, match="already seeded at scale 1.*--force"):
        seed_tenant(registry, tenant, 2, store=blob_store)
    rebuilt = seed_tenant(registry, tenant, 2, force=True, store=blob_store)
    assert rebuilt.status == "rebuilt"
    assert query(stack, tenant.database, "select scale from continuity_demo_seed") == [(2,)]
    assert query(stack, tenant.database, "select count(*) from res_partner") == [(scale_size(2).partners + 1,)]
    again = seed_tenant(registry, tenant, 2, force=True, store=blob_store)
    assert again.status == "rebuilt" and again.row_counts == rebuilt.row_counts


def test_a_demo_database_of_an_older_generator_is_rebuilt_without_force(
        stack: LocalStack, blob_store: BlobStore, fresh_tenant: tuple[Registry, Tenant]) -> None:
    """A developer's stack seeded before the demo schema changed follows it on the next `make run`."""
    registry, tenant = fresh_tenant
    seed_tenant(registry, tenant, 1, store=blob_store)
    with psycopg.connect(stack.dsn("primary", tenant.database), autocommit=True) as conn:
        conn.execute("update continuity_demo_seed set generator = generator - 1")
        conn.execute("drop table ir_config_parameter")  # as the older schema had none
    rebuilt = seed_tenant(registry, tenant, 1, store=blob_store)
    assert rebuilt.status == "rebuilt"
    assert query(stack, tenant.database, "select count(*) from ir_config_parameter where key = 'database.uuid'") \
        == [(1,)]


def test_seed_refuses_a_database_that_holds_other_tables_even_with_force(
        stack: LocalStack, blob_store: BlobStore, fresh_tenant: tuple[Registry, Tenant]) -> None:
    registry, tenant = fresh_tenant
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{tenant.database}"')
    with psycopg.connect(stack.dsn("primary", tenant.database), autocommit=True) as conn:
        conn.execute("create table customer_data (id int primary key)")
    with pytest.raises(Conflict, match="holds tables that are not demo data"):
        seed_tenant(registry, tenant, 1, force=True, store=blob_store)
    assert query(stack, tenant.database, "select to_regclass('customer_data') is not null") == [(True,)]


def test_seed_with_storage_down_fails_before_creating_the_database(
        stack: LocalStack, fresh_tenant: tuple[Registry, Tenant]) -> None:
    registry, tenant = fresh_tenant
    closed = BlobStore("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                       "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    with pytest.raises(StoreUnavailable, match="blob storage unavailable"):
        seed_tenant(registry, tenant, 1, store=closed)
    assert not database_exists(stack, tenant.database)


def test_cli_refuses_more_tenants_than_the_registry_has(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "seed", "--tenants", "99", "--scale", "1"]) == 2
    assert "--tenants must be between 1 and 3" in capsys.readouterr().err


def test_cli_refuses_a_scale_out_of_range(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "seed", "--tenants", "1", "--scale", "0", "--json"]) == 2
    assert "scale must be between 1 and" in capsys.readouterr().err
