"""The table-of-contents policy (continuity.validation.toc): what a dump may ask the sandbox to do.

Listing lines are the shapes ``pg_restore --list`` prints for PostgreSQL 15; script chunks the
shapes ``pg_restore --file=-`` writes. Every refusal asserts its reason.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from continuity.validation import checks as rc
from continuity.validation import toc
from continuity.validation.checks import CheckId, CheckStatus
from continuity.validation.toc import archive_refusal, parse_toc_line, script_refusal, toc_refusal

HEADER = [
    ";",
    "; Archive created at 2026-11-30 06:00:00 UTC",
    ";     dbname: odoo_acme",
    ";     TOC Entries: 12",
    ";     Compression: gzip",
    ";     Dump Version: 1.14-0",
    ";     Format: CUSTOM",
    ";",
    "; Selected TOC Entries:",
    ";",
]
ODOO_LISTING = [
    *HEADER,
    "3; 2615 2200 SCHEMA - public pg_database_owner",
    "3395; 0 0 COMMENT - SCHEMA public pg_database_owner",
    "2; 3079 16384 EXTENSION - pg_trgm ",
    "3396; 0 0 COMMENT - EXTENSION pg_trgm ",
    "215; 1259 16390 TABLE public account_move odoo",
    "214; 1259 16389 SEQUENCE public account_move_id_seq odoo",
    "3397; 0 0 SEQUENCE OWNED BY public account_move_id_seq odoo",
    "3201; 2604 16391 DEFAULT public account_move id odoo",
    "230; 1255 16500 FUNCTION public odoo_unaccent(text) odoo",
    "3380; 0 16390 TABLE DATA public account_move odoo",
    "3398; 0 0 SEQUENCE SET public account_move_id_seq odoo",
    "3210; 2606 16400 CONSTRAINT public account_move account_move_pkey odoo",
    "3220; 1259 16401 INDEX public account_move_date_index odoo",
    "3230; 2606 16402 FK CONSTRAINT public account_move account_move_journal_id_fkey odoo",
    "3240; 2620 16403 TRIGGER public account_move trg_account_move odoo",
    "216; 1259 16410 VIEW public report_view odoo",
    "217; 1259 16411 MATERIALIZED VIEW public report_mv odoo",
    "3399; 0 16411 MATERIALIZED VIEW DATA public report_mv odoo",
    "3400; 0 0 ACL - SCHEMA public pg_database_owner",
]
ODOO_SCRIPT = """--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
SET client_min_messages = warning;

--
-- Name: pg_trgm; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;

--
-- Name: odoo_unaccent(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.odoo_unaccent(text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $_$ SELECT public.unaccent('public.unaccent', $1) $_$;

--
-- Name: account_move; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.account_move (id integer NOT NULL, name character varying);

--
-- Name: account_move_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.account_move_id_seq', 40, true);
"""


def entry(line: str) -> list[str]:
    return [*HEADER, "215; 1259 16390 TABLE public account_move odoo", line]


def chunk(kind: str, name: str, body: str) -> str:
    return f"--\n-- Name: {name}; Type: {kind}; Schema: public; Owner: -\n--\n\n{body}\n"


def test_plain_odoo_listing_passes() -> None:
    assert toc_refusal(ODOO_LISTING) is None


def test_plain_odoo_script_passes() -> None:
    assert script_refusal(ODOO_SCRIPT) is None
    assert archive_refusal(ODOO_LISTING, ODOO_SCRIPT) is None


def test_listing_line_is_parsed_into_kind_schema_and_name() -> None:
    parsed = parse_toc_line("3230; 2606 16402 FK CONSTRAINT public account_move account_move_journal_id_fkey odoo")
    assert parsed is not None
    assert (parsed.dump_id, parsed.kind, parsed.schema) == (3230, "FK CONSTRAINT", "public")
    assert parsed.name_and_owner == "account_move account_move_journal_id_fkey odoo"


@pytest.mark.parametrize(("line", "reason"), [
    ("4001; 3466 16600 EVENT TRIGGER - evil postgres", "EVENT TRIGGER entry"),
    ("4002; 2328 16601 FOREIGN DATA WRAPPER - evil_fdw postgres", "foreign data wrapper reaches outside"),
    ("4003; 1417 16602 SERVER - exfil postgres", "foreign server reaches outside"),
    ("4004; 1418 16603 USER MAPPING - USER MAPPING postgres SERVER exfil postgres", "carries credentials"),
    ("4005; 2612 16604 PROCEDURAL LANGUAGE - plpython3u postgres", "plpython3u runs any program"),
    ("4006; 1259 16605 FOREIGN TABLE public remote postgres", "foreign table"),
    ("4007; 0 0 SUBSCRIPTION - sub postgres", "subscription connects out"),
])
def test_forbidden_kind_is_refused_with_its_reason(line: str, reason: str) -> None:
    refusal = toc_refusal(entry(line))
    assert refusal is not None and reason in refusal, refusal
    assert refusal.endswith("the dump was not restored")


def test_extension_not_on_the_list_is_refused() -> None:
    refusal = toc_refusal(entry("5; 3079 16700 EXTENSION - postgres_fdw "))
    assert refusal is not None
    assert refusal.startswith("the dump creates extension 'postgres_fdw', which is not on the sandbox's list")


def test_untrusted_extension_amcheck_is_not_restored_from_a_dump() -> None:
    refusal = toc_refusal(entry("6; 3079 16701 EXTENSION - amcheck "))
    assert refusal is not None and "'amcheck'" in refusal


def test_unknown_kind_is_refused_not_ignored() -> None:
    refusal = toc_refusal(entry("7; 1 2 SOMETHING NEW public x odoo"))
    assert refusal is not None and "entry of unknown kind" in refusal


@pytest.mark.parametrize("garbage", [
    "DROP TABLE account_move;",
    "12 1259 16390 TABLE public t odoo",
    "x; 1 2 TABLE public t odoo",
    "\x00\x01\ufffd\ufffd",
    "3;2615 2200 SCHEMA - public",
])
def test_garbage_line_is_refused_never_a_crash(garbage: str) -> None:
    refusal = toc_refusal(entry(garbage))
    assert refusal is not None and "is not an entry" in refusal, refusal


def test_empty_listing_is_refused() -> None:
    assert toc_refusal(HEADER) == "the archive's table of contents holds no entry: there is nothing to restore"


@pytest.mark.parametrize(("body", "reason"), [
    ("CREATE TABLE public.t (x text DEFAULT public.f());\nCOPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned';",
     "COPY ... TO/FROM PROGRAM runs a shell command"),
    ("CREATE FUNCTION public.f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN\n"
     "  copy (select 1) to\n  program 'id'; END $$;", "TO/FROM PROGRAM"),
    ("CREATE TABLE public.t (x int);\nCOPY public.t FROM '/etc/passwd';", "server file"),
    ("CREATE VIEW public.v AS SELECT pg_read_file('/etc/passwd');", "server-file or remote-connection function"),
    ("ALTER SYSTEM SET archive_command = 'sh -c id';", "ALTER SYSTEM"),
    ("CREATE ROLE evil SUPERUSER LOGIN;", "creates or changes roles"),
    ("DO $$ BEGIN EXECUTE 'sel' || 'ect 1'; END $$;", "DO block"),
    ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION public.f();", "event trigger"),
    ("CREATE SERVER exfil FOREIGN DATA WRAPPER postgres_fdw;", "foreign server"),
])
def test_forbidden_sql_in_a_definition_is_refused_naming_the_entry(body: str, reason: str) -> None:
    refusal = script_refusal(ODOO_SCRIPT + chunk("TABLE", "t", body))
    assert refusal is not None and reason in refusal, refusal
    assert refusal.startswith("the dump's TABLE t would run forbidden SQL")


def test_function_in_an_untrusted_language_is_refused() -> None:
    body = "CREATE FUNCTION public.f() RETURNS void LANGUAGE plpython3u AS $$ import os $$;"
    refusal = script_refusal(ODOO_SCRIPT + chunk("FUNCTION", "f()", body))
    assert refusal == ("the dump's FUNCTION f() is written in language 'plpython3u'; only plpgsql, sql functions "
                       "are restored; the dump was not restored")


def test_function_hidden_under_a_forged_header_is_still_checked_for_its_language() -> None:
    body = "CREATE FUNCTION public.f() RETURNS void LANGUAGE c AS '/tmp/evil.so', 'f';"
    refusal = script_refusal(ODOO_SCRIPT + chunk("COMMENT", "x", body))
    assert refusal is not None and "language 'c'" in refusal


def test_program_copy_in_the_preamble_is_refused() -> None:
    refusal = script_refusal("SET x = 1;\nCOPY (select 1) TO PROGRAM 'id';\n" + ODOO_SCRIPT)
    assert refusal is not None and refusal.startswith("the dump's the script's preamble would run forbidden SQL")


def test_archive_safe_check_fails_with_the_refusal_and_stops_the_pipeline() -> None:
    result = rc.check_archive_safe("the dump holds a EVENT TRIGGER entry", 12)
    assert result.id == CheckId.ARCHIVE_SAFE and result.status is CheckStatus.FAIL
    assert result.detail.startswith("the dump holds a EVENT TRIGGER entry; treat this backup as hostile")
    assert rc.stop_reason([result]) == "archive_safe failed"
    assert rc.check_archive_safe(None, 12).status is CheckStatus.PASS


def test_manifest_without_the_dump_is_a_checksum_failure_with_a_reason() -> None:
    result = rc.check_file_listed("db.dump", ["database.dump"])
    assert result is not None and result.status is CheckStatus.FAIL and result.id == CheckId.FILE_CHECKSUM
    assert result.detail.startswith("the manifest lists no db.dump (it lists 'database.dump')")
    assert rc.check_file_listed("db.dump", ["db.dump"]) is None


@given(st.lists(st.text(max_size=80), max_size=20))
def test_any_listing_gets_a_decision_never_a_crash(lines: list[str]) -> None:
    refusal = toc_refusal(lines)
    assert refusal is None or isinstance(refusal, str)


@given(st.text(max_size=400))
def test_any_script_gets_a_decision_never_a_crash(script: str) -> None:
    refusal = script_refusal(script)
    assert refusal is None or isinstance(refusal, str)


def test_the_word_language_inside_a_plpgsql_body_is_not_taken_for_its_language() -> None:
    body = ("CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE plpgsql STABLE\n"
            "    AS $$ BEGIN -- the partner's language of choice\n RETURN 'language python'; END $$;")
    assert script_refusal(ODOO_SCRIPT + chunk("FUNCTION", "f()", body)) is None


def test_function_whose_header_names_no_language_is_refused() -> None:
    body = "CREATE FUNCTION public.f() RETURNS text\n    AS $$ select 1 $$;"
    refusal = script_refusal(ODOO_SCRIPT + chunk("FUNCTION", "f()", body))
    assert refusal is not None and "language '?'" in refusal


# ---- which tables the row checks may read while the restore goes on -------------------------------

LISTING = [
    ";",
    "; Archive created at 2026-11-30 10:00:00 UTC",
    ";",
    "220; 1259 17600 TABLE public account_move continuity",
    "227; 1259 17607 TABLE public account_move_line continuity",
    "3510; 0 17607 TABLE DATA public account_move continuity",
    "3512; 0 17616 TABLE DATA public account_move_line continuity",
    "3513; 0 17700 TABLE DATA public res_partner continuity",
    "3514; 0 17701 TABLE DATA other res_partner continuity",
    "3298; 2606 17614 CONSTRAINT public account_move account_move_pkey continuity",
    "3312; 2606 17625 CONSTRAINT public account_move_line account_move_line_pkey continuity",
    "3307; 1259 17686 INDEX public account_move_line__move_id_index continuity",
    "3400; 2606 17800 FK CONSTRAINT public account_move_line account_move_line_move_id_fkey continuity",
    "3401; 2618 17801 RULE public account_move_line no_delete continuity",
]


def test_a_table_is_readable_once_its_rows_are_in_and_nothing_will_lock_it_again() -> None:
    progress = toc.LoadProgress(LISTING)
    assert progress.finished(3513) == {"res_partner"}  # no constraint: readable as soon as its rows are in
    assert progress.finished(3510) == set()  # rows in, but its primary key (ACCESS EXCLUSIVE) is still to come
    assert progress.finished(3298) == {"account_move"}
    assert progress.finished(3512) == set()
    assert progress.finished(3312) == set()  # a rule on it is still to come
    # An index build and a foreign key never make a reader wait, nor wait for one.
    assert progress.finished(3307) == set() and progress.finished(3400) == set()
    assert progress.finished(3401) == {"account_move_line"}
    assert progress.readable == {"res_partner", "account_move", "account_move_line"}
    assert progress.finished(3401) == set()  # told twice: nothing new


def test_a_table_named_twice_or_outside_public_is_never_read_early() -> None:
    # Only a forged archive holds two data entries for one table: which one's rows are in cannot be told.
    forged = [*LISTING, "3600; 0 17900 TABLE DATA public account_move continuity"]
    progress = toc.LoadProgress(forged)
    for dump_id in (3510, 3600, 3298):
        progress.finished(dump_id)
    assert "account_move" not in progress.readable
    # other.res_partner's rows say nothing about public.res_partner.
    assert toc.LoadProgress(LISTING).finished(3514) == set()


def test_a_finished_entry_is_read_even_when_a_worker_wrote_into_the_line() -> None:
    said = "TABLE DATA account_move_line"
    assert toc.finished_item(f"pg_restore: finished item 3512 {said}") == (3512, said)
    # The leader writes "pg_restore:", " " and the message apart; a worker's line can come in between.
    assert toc.finished_item(f'pg_restore:pg_restore: processing data for table "public.x" finished item 3512 {said}'
                             ) == (3512, said)
    assert toc.finished_item(f" finished item 3512 {said}") == (3512, said)
    assert toc.finished_item(f"pg_restore: launching item 3512 {said}") is None
    assert toc.finished_item("pg_restore: finished item x TABLE DATA y") is None


def test_a_finished_line_is_believed_only_when_it_names_the_entry_as_the_listing_does() -> None:
    progress = toc.LoadProgress(LISTING)
    # A table named to mimic another entry's line ("… finished item 3513 TABLE DATA res_partner.evil") is not it.
    assert progress.finished(3513, "TABLE DATA res_partner.evil") == set()
    assert progress.finished(3513, "TABLE DATA res_partner") == {"res_partner"}
