"""Bringing an Odoo backup in (issue 17, item 4): Odoo's database-manager zip, hostile ones refused.

The good zip is built with Odoo's layout (``dump.sql`` + ``filestore/xx/<sha1>`` + ``manifest.json``) from a
real ``pg_dump`` of an Odoo 17 database, written the way pg_dump 18 on another host writes it: ``\\restrict``,
a ``SET transaction_timeout`` this PostgreSQL 15 server does not know, owners of that host. Every hostile
file is refused with its reason, and leaves no database and no uploaded file behind.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.connection import ensure_database, libpq_env
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.tools import pgbin
from continuity.kernel.tenants import Registry
from continuity.odoo_backup.service import (
    OdooImportFailed,
    OdooImportRefused,
    export_odoo_backup,
    import_odoo_backup,
)
from tests.integration.test_restore_validation import make_registry
from tests.odoo_fixtures import build

pytestmark = pytest.mark.stack

SOURCE_DB = "odoo_import_source"
SOURCE_TENANT = "elsewhere"
TENANTS = ("oi-good", "oi-refused", "oi-failed", "oi-round", "oi-again")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return make_registry(TENANTS)


@pytest.fixture(scope="module")
def plain_dump(stack: LocalStack, blob_store: BlobStore) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``dump.sql`` of an Odoo 17 database as pg_dump 18 on another host writes it, and its filestore."""
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {SOURCE_DB} with (force)")
    ensure_database(stack.dsn("primary"), SOURCE_DB)
    with psycopg.connect(stack.dsn("primary", SOURCE_DB), autocommit=True) as conn:
        build(conn, 17, SOURCE_TENANT, blob_store)
    sql = subprocess.run([pgbin.tool("pg_dump"), "--format=plain", f"--dbname={stack.dsn('primary', SOURCE_DB)}"],
                         check=True, capture_output=True, env=libpq_env(), timeout=120).stdout.decode()
    key = secrets.token_hex(8)
    lines = sql.splitlines(keepends=True)
    first_set = next(i for i, line in enumerate(lines) if line.startswith("SET "))
    lines[first_set:first_set] = ["SET transaction_timeout = 0;\n"]
    sql = f"\\restrict {key}\n" + "".join(lines) + f"\\unrestrict {key}\n"
    sql = sql.replace("OWNER TO postgres;", "OWNER TO odoo_prod;")
    files = {name.removeprefix(f"{SOURCE_TENANT}/"): blob_store.download("attachments", name)
             for name in blob_store.list_names("attachments", prefix=f"{SOURCE_TENANT}/")}
    yield sql, files
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {SOURCE_DB} with (force)")


def odoo_zip(path: Path, sql: str | bytes, files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> Path:
    manifest = {"odoo_dump": "1", "db_name": SOURCE_DB, "version": "17.0", "version_info": [17, 0, 0, "final", 0],
                "major_version": "17.0", "pg_version": "18.1", "modules": {"base": "17.0.1.3", "account": "17.0.1.2"}}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dump.sql", sql)
        archive.writestr("manifest.json", json.dumps(manifest))
        for key, data in files.items():
            archive.writestr(f"filestore/{key}", data)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def database_exists(stack: LocalStack, name: str) -> bool:
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        return conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is not None


def test_an_odoo_17_database_manager_zip_is_loaded_backed_up_and_validated(
        tmp_path: Path, stack: LocalStack, blob_store: BlobStore, registry: Registry,
        plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    result = import_odoo_backup("oi-good", odoo_zip(tmp_path / "backup.zip", sql, files), registry=registry,
                                blobs=blob_store)
    # Ours and, on a recent PostgreSQL 15 minor, pg_dump's own \restrict pair.
    assert set(result.dropped) == {"restrict", "unknown setting", "foreign owner"}, result.dropped
    assert result.dropped["restrict"] in (2, 4) and result.dropped["unknown setting"] == 1
    assert result.dropped["foreign owner"] > 5
    assert result.odoo_manifest["version"] == "17.0" and result.odoo_manifest["modules"] == 2
    assert result.filestore_files == len(files) == 1
    assert result.validation is not None and result.validation["outcome"] == "passed", result.validation
    assert result.validation["verdict"] == "recoverable", result.validation["reason"]
    with psycopg.connect(stack.dsn("primary", registry.get_tenant("oi-good").database)) as conn:
        assert conn.execute("select count(*) from account_move where state = 'posted'").fetchone() == (8,)


def test_the_imported_backup_exports_as_odoos_zip_and_re_imports_validated(
        tmp_path: Path, stack: LocalStack, blob_store: BlobStore, registry: Registry,
        plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    first = import_odoo_backup("oi-round", odoo_zip(tmp_path / "in.zip", sql, files), registry=registry,
                               blobs=blob_store)
    exported = export_odoo_backup("oi-round", tmp_path / "out.zip", first.backup_id, registry=registry,
                                  blobs=blob_store)
    assert (exported.filestore_files, exported.missing_files) == (len(files), 0)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        dump = archive.read("dump.sql").decode()
    assert names == {"dump.sql", "manifest.json", *(f"filestore/{k}" for k in files)}
    assert (manifest["odoo_dump"], manifest["version"], manifest["major_version"]) == ("1", "17.0", "17.0")
    assert manifest["version_info"][:2] == [17, 0] and manifest["modules"]["account"] == "17.0.1.3"
    assert manifest["pg_version"].startswith("15.") and "OWNER TO" not in dump
    again = import_odoo_backup("oi-again", tmp_path / "out.zip", registry=registry, blobs=blob_store)
    assert again.validation is not None and again.validation["verdict"] == "recoverable", again.validation
    assert again.dropped.get("foreign owner", 0) == 0 and again.filestore_files == len(files)


def refused(tmp_path: Path, stack: LocalStack, blob_store: BlobStore, registry: Registry, file: Path,
            reason: str) -> None:
    with pytest.raises(OdooImportRefused) as caught:
        import_odoo_backup("oi-refused", file, registry=registry, blobs=blob_store, validate=False)
    assert reason in str(caught.value), str(caught.value)
    assert not database_exists(stack, registry.get_tenant("oi-refused").database)
    assert blob_store.list_names("attachments", prefix="oi-refused/") == []


def test_a_file_that_is_neither_zip_nor_sql_text_is_refused(tmp_path: Path, stack: LocalStack,
                                                            blob_store: BlobStore, registry: Registry) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(2048))
    refused(tmp_path, stack, blob_store, registry, path, "dump.sql is not UTF-8 text")


def test_a_utf16_dump_is_refused(tmp_path: Path, stack: LocalStack, blob_store: BlobStore, registry: Registry,
                                 plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    refused(tmp_path, stack, blob_store, registry, odoo_zip(tmp_path / "u16.zip", sql.encode("utf-16"), files),
            "dump.sql is not UTF-8 text")


def test_path_traversal_in_the_zip_is_refused(tmp_path: Path, stack: LocalStack, blob_store: BlobStore,
                                              registry: Registry, plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    path = odoo_zip(tmp_path / "evil.zip", sql, files, {"filestore/../../etc/cron.d/x": b"* * * * * root id"})
    refused(tmp_path, stack, blob_store, registry, path, "is not a plain relative name (path traversal?)")


def test_a_zip_bomb_is_refused(tmp_path: Path, stack: LocalStack, blob_store: BlobStore, registry: Registry,
                               plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    path = odoo_zip(tmp_path / "bomb.zip", sql, files, {"filestore/padding": bytes(16 * 1024 * 1024)})
    refused(tmp_path, stack, blob_store, registry, path, "a decompression bomb")


def test_a_header_only_dump_is_refused(tmp_path: Path, stack: LocalStack, blob_store: BlobStore,
                                       registry: Registry) -> None:
    path = odoo_zip(tmp_path / "header.zip", "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n", {})
    refused(tmp_path, stack, blob_store, registry, path, "creates no table")


def test_a_psql_meta_command_is_refused_and_never_runs(tmp_path: Path, stack: LocalStack, blob_store: BlobStore,
                                                      registry: Registry,
                                                      plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    marker = tmp_path / "pwned"
    path = odoo_zip(tmp_path / "shell.zip", sql.replace("SET client_encoding", f"\\! touch {marker}\nSET "
                                                                               "client_encoding", 1), files)
    refused(tmp_path, stack, blob_store, registry, path, "the psql meta-command '\\\\! touch")
    assert not marker.exists()


def test_a_function_running_a_program_is_refused(tmp_path: Path, stack: LocalStack, blob_store: BlobStore,
                                                 registry: Registry,
                                                 plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    hostile = ("--\n-- Name: pwn(); Type: FUNCTION; Schema: public; Owner: -\n--\n\n"
               "CREATE FUNCTION public.pwn() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
               "COPY (SELECT 1) TO PROGRAM 'id'; END $$;\n\n")
    path = odoo_zip(tmp_path / "program.zip", sql.replace("--\n-- Name: ", hostile + "--\n-- Name: ", 1), files)
    refused(tmp_path, stack, blob_store, registry, path, "COPY ... TO/FROM PROGRAM runs a shell command")


def test_a_dump_cut_inside_its_data_is_refused(tmp_path: Path, stack: LocalStack, blob_store: BlobStore,
                                               registry: Registry, plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    cut = sql[: sql.index("COPY public.account_move_line") + 200]
    refused(tmp_path, stack, blob_store, registry, odoo_zip(tmp_path / "cut.zip", cut, files),
            "ends inside COPY data")


def test_a_custom_format_archive_is_refused_with_what_to_do(tmp_path: Path, stack: LocalStack,
                                                            blob_store: BlobStore, registry: Registry) -> None:
    path = tmp_path / "db.dump"
    path.write_bytes(b"PGDMP\x01\x0e\x00" + bytes(64))
    refused(tmp_path, stack, blob_store, registry, path, "a custom-format pg_dump archive")


def test_an_existing_tenant_database_is_never_overwritten(tmp_path: Path, stack: LocalStack, blob_store: BlobStore,
                                                         registry: Registry,
                                                         plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    database = registry.get_tenant("oi-failed").database
    ensure_database(stack.dsn("primary"), database)
    try:
        with pytest.raises(OdooImportRefused, match="an import never overwrites a database"):
            import_odoo_backup("oi-failed", odoo_zip(tmp_path / "b.zip", sql, files), registry=registry,
                               blobs=blob_store, validate=False)
        assert database_exists(stack, database)
    finally:
        with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
            conn.execute(f"drop database if exists {database} with (force)")


def test_a_load_that_fails_or_an_altered_file_leaves_nothing_behind(
        tmp_path: Path, stack: LocalStack, blob_store: BlobStore, registry: Registry,
        plain_dump: tuple[str, dict[str, bytes]]) -> None:
    sql, files = plain_dump
    database = registry.get_tenant("oi-failed").database
    broken = sql.replace("CREATE TABLE public.account_move_line", "CREATE TABLE public.account_move_line_x", 1)
    with pytest.raises(OdooImportFailed, match="loading dump.sql failed"):
        import_odoo_backup("oi-failed", odoo_zip(tmp_path / "broken.zip", broken, files), registry=registry,
                           blobs=blob_store, validate=False)
    assert not database_exists(stack, database)
    altered = {key: data + b"!" for key, data in files.items()}
    with pytest.raises(OdooImportFailed, match="does not match its sha1 name"):
        import_odoo_backup("oi-failed", odoo_zip(tmp_path / "altered.zip", sql, altered), registry=registry,
                           blobs=blob_store, validate=False)
    assert not database_exists(stack, database)
    assert blob_store.list_names("attachments", prefix="oi-failed/") == []
    assert hashlib.sha1(next(iter(files.values())), usedforsecurity=False).hexdigest() == next(iter(files))[3:]
