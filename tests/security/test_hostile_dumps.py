"""A restore runs nothing the dump asks: hostile dumps against the real sandbox (issue 14, item 4).

Each attack is built the way an attacker with the source superuser would: a small Odoo-shaped
database on the primary gets the hostile object, real ``pg_dump -Fc`` takes it, a manifest that
matches the bytes is stored, and the backup is validated through the real pipeline. Each test
asserts the intended check and its reason, that the command left no trace on the machine (the
marker file it would touch does not exist), and that no scratch database or restore role is left.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.sandbox import SERVER_ACCESS_ROLES, Sandbox, production_dsns_of
from continuity.adapters.storage.blob_store import BlobStore
from continuity.catalog.manifest import DUMP_FILE
from continuity.kernel.tenants import Registry
from continuity.validation.checks import CheckId, CheckStatus
from continuity.validation.service import Outcome, ValidationPorts, validate
from continuity.validation.wiring import local_ports
from tests.integration.test_restore_validation import make_registry, seed_tenant, take_backup, upload_backup

pytestmark = pytest.mark.stack

TENANT = "hx-hostile"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return make_registry((TENANT,))


@pytest.fixture()
def ports(registry: Registry, blob_store: BlobStore, stack: LocalStack) -> ValidationPorts:
    return local_ports(registry, blobs=blob_store)


@pytest.fixture()
def sandbox(registry: Registry, stack: LocalStack) -> Iterator[Sandbox]:
    box = Sandbox(stack.dsn("sandbox"), production_dsns_of(registry))
    yield box
    assert box.list_scratch_databases() == [], "a scratch database or restore role was left behind"


@pytest.fixture()
def marker() -> Iterator[Path]:
    """A path the hostile command would create; it must never exist."""
    path = Path("/tmp") / f"continuity-pwned-{secrets.token_hex(6)}"
    yield path
    path.unlink(missing_ok=True)


def hostile_backup(stack: LocalStack, blobs: BlobStore, registry: Registry,
                   plant: Callable[[psycopg.Connection], None]) -> str:
    """Seed the tenant's database, let ``plant`` add the hostile object, dump it, store it; returns the backup id."""
    database = registry.get_tenant(TENANT).database
    seed_tenant(stack, blobs, database, TENANT, moves=5, attachments=1)
    with psycopg.connect(stack.dsn("primary", database), autocommit=True) as conn:
        plant(conn)
    dump, manifest = take_backup(stack, database, TENANT)
    return upload_backup(blobs, TENANT, dump, manifest).backup_id


def statuses(report: Any) -> dict[str, str]:
    return {c.id: str(c.status) for c in report.checks}


def failed(report: Any) -> list[str]:
    return [c.id for c in report.checks if c.status is CheckStatus.FAIL]


def detail(report: Any, check: str) -> str:
    return next(c.detail for c in report.checks if c.id == check)


def assert_refused_before_restore(report: Any, reason: str) -> None:
    assert failed(report) == [CheckId.ARCHIVE_SAFE], report.to_json()
    assert reason in detail(report, CheckId.ARCHIVE_SAFE), detail(report, CheckId.ARCHIVE_SAFE)
    assert statuses(report)[CheckId.RESTORE_COMPLETED] == "unavailable"
    assert detail(report, CheckId.RESTORE_COMPLETED) == "not run: archive_safe failed"
    assert report.outcome is Outcome.FAILED


# ---- the attacks --------------------------------------------------------------------------------


def test_copy_to_program_in_a_function_body_is_refused_before_restore(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, ports: ValidationPorts, sandbox: Sandbox,
        marker: Path) -> None:
    def plant(conn: psycopg.Connection) -> None:
        # Runs only where it is restored (the scratch database), never on the source.
        conn.execute(f"""
            create function public.pwn(x integer) returns integer language plpgsql as $$
            begin
              if current_database() like 'scratch%' then
                copy (select 1) to program 'touch {marker}';
              end if;
              return x;
            end $$""")
        # A CHECK constraint is restored with its table, before the rows: it runs once per restored row.
        conn.execute("alter table account_move add constraint account_move_pwn check (public.pwn(id) = id)")

    backup_id = hostile_backup(stack, blob_store, registry, plant)
    report = validate(ports, TENANT, backup_id)
    assert_refused_before_restore(report, "COPY ... TO/FROM PROGRAM runs a shell command")
    assert "FUNCTION pwn(integer)" in detail(report, CheckId.ARCHIVE_SAFE)
    assert not marker.exists()


def test_copy_to_program_hidden_from_the_text_rules_is_stopped_by_the_restore_role(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, ports: ValidationPorts, sandbox: Sandbox,
        marker: Path) -> None:
    """Dynamic SQL defeats any text rule; the restore role cannot run programs, so loading the rows fails."""
    def plant(conn: psycopg.Connection) -> None:
        conn.execute(f"""
            create function public.pwn(x integer) returns integer language plpgsql as $$
            begin
              if current_database() like 'scratch%' then
                execute 'co' || 'py (select 1) to pro' || 'gram ''touch {marker}''';
              end if;
              return x;
            end $$""")
        # A CHECK constraint is restored with its table, before the rows: it runs once per restored row.
        conn.execute("alter table account_move add constraint account_move_pwn check (public.pwn(id) = id)")

    backup_id = hostile_backup(stack, blob_store, registry, plant)
    report = validate(ports, TENANT, backup_id)
    assert failed(report) == [CheckId.RESTORE_COMPLETED], report.to_json()
    assert statuses(report)[CheckId.ARCHIVE_SAFE] == "pass"
    assert "pg_execute_server_program" in detail(report, CheckId.RESTORE_COMPLETED)
    assert not marker.exists()


def test_event_trigger_in_the_dump_is_refused_before_restore(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, ports: ValidationPorts, sandbox: Sandbox,
        marker: Path) -> None:
    def plant(conn: psycopg.Connection) -> None:
        conn.execute("""
            create function public.on_ddl() returns event_trigger language plpgsql as $$
            begin
              if current_database() like 'scratch%' then
                execute 'create table public.planted (x int)';
              end if;
            end $$""")
        conn.execute("create event trigger spy on ddl_command_end execute function public.on_ddl()")

    backup_id = hostile_backup(stack, blob_store, registry, plant)
    report = validate(ports, TENANT, backup_id)
    assert_refused_before_restore(report, "an event trigger runs code on every later DDL in the database")
    assert not marker.exists()


def test_foreign_server_and_user_mapping_are_refused_before_restore(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, ports: ValidationPorts, sandbox: Sandbox,
        marker: Path) -> None:
    def plant(conn: psycopg.Connection) -> None:
        conn.execute("create extension postgres_fdw")
        conn.execute("create server exfil foreign data wrapper postgres_fdw "
                     "options (host '127.0.0.1', port '5432', dbname 'postgres')")
        conn.execute("create user mapping for public server exfil options (user 'x', password 'not-a-secret')")

    backup_id = hostile_backup(stack, blob_store, registry, plant)
    report = validate(ports, TENANT, backup_id)
    assert_refused_before_restore(report, "the dump creates extension 'postgres_fdw', which is not on the sandbox's")
    assert not marker.exists()


def test_function_in_an_untrusted_language_is_refused_before_restore(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, ports: ValidationPorts, sandbox: Sandbox,
        marker: Path) -> None:
    """plpython3u is not installed here; LANGUAGE c (a shared library of the dump's choice) is the same attack."""
    def plant(conn: psycopg.Connection) -> None:
        conn.execute("create function public.native() returns void "
                     "as '$libdir/plpgsql', 'plpgsql_call_handler' language c")

    backup_id = hostile_backup(stack, blob_store, registry, plant)
    report = validate(ports, TENANT, backup_id)
    assert_refused_before_restore(report, "is written in language 'c'; only plpgsql, sql functions are restored")
    assert not marker.exists()


def test_flipped_bytes_in_a_toc_definition_are_a_failed_check_not_a_crash(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, ports: ValidationPorts,
        sandbox: Sandbox) -> None:
    database = registry.get_tenant(TENANT).database
    seed_tenant(stack, blob_store, database, TENANT, moves=5, attachments=1)
    dump, manifest = take_backup(stack, database, TENANT)
    at = dump.index(b"CREATE TABLE public.account_move ")
    flipped = dump[:at] + b"\xff\xfe" + dump[at + 2:]  # the TOC of a custom archive is not compressed
    manifest = {**manifest, "files": [{**manifest["files"][0], "sha256": hashlib.sha256(flipped).hexdigest(),
                                       "size": len(flipped)}]}
    backup_id = upload_backup(blob_store, TENANT, flipped, manifest).backup_id
    report = validate(ports, TENANT, backup_id)
    assert report.outcome is Outcome.FAILED
    assert failed(report)[0] in (CheckId.ARCHIVE_SAFE, CheckId.RESTORE_COMPLETED), report.to_json()


def test_manifest_naming_another_dump_file_is_a_refusal_not_a_key_error(
        stack: LocalStack, blob_store: BlobStore, registry: Registry, ports: ValidationPorts,
        sandbox: Sandbox) -> None:
    database = registry.get_tenant(TENANT).database
    seed_tenant(stack, blob_store, database, TENANT, moves=5, attachments=1)
    dump, manifest = take_backup(stack, database, TENANT)
    manifest = {**manifest, "files": [{**manifest["files"][0], "name": "database.dump"}]}
    backup_id = upload_backup(blob_store, TENANT, dump, manifest).backup_id
    report = validate(ports, TENANT, backup_id)
    assert failed(report) == [CheckId.FILE_CHECKSUM], report.to_json()
    assert detail(report, CheckId.FILE_CHECKSUM).startswith(
        f"the manifest lists no {DUMP_FILE} (it lists 'database.dump')")
    assert statuses(report)[CheckId.ARCHIVE_SAFE] == "unavailable"


def test_restore_role_is_no_superuser_and_holds_no_server_access_role(
        stack: LocalStack, registry: Registry, sandbox: Sandbox) -> None:
    name = sandbox.create_scratch_database(TENANT)
    try:
        with psycopg.connect(sandbox.restore_dsn(name), autocommit=True) as conn:
            row = conn.execute("select current_user, rolsuper, rolcreaterole, rolcreatedb from pg_roles "
                               "where rolname = current_user").fetchone()
            assert row == (name, False, False, False)
            for role in SERVER_ACCESS_ROLES:
                assert conn.execute("select pg_has_role(current_user, %s, 'member')", (role,)).fetchone() == (False,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("copy (select 1) to program 'true'")
            owner = conn.execute("select pg_get_userbyid(datdba) from pg_database where datname = %s",
                                 (name,)).fetchone()
            assert owner == (name,)
        assert "password" not in sandbox.restore_dsn(name)
    finally:
        sandbox.drop_scratch_database(name)
