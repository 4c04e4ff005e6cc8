"""What a dump may ask the sandbox to do: the table-of-contents policy, pure, decided before any restore.

A backup we validate is untrusted input: restoring a dump runs SQL of the source superuser's choice
(PostgreSQL's own documentation warns of it). Two rules run on what ``pg_restore`` reports, before a
scratch database exists:

- :func:`toc_refusal` reads the ``pg_restore --list`` lines (``ID; OID OID DESC SCHEMA NAME OWNER``)
  and refuses any entry whose kind is not on the allowlist of what a plain Odoo ``pg_dump`` holds
  (no event triggers, foreign data wrappers, servers, user mappings, procedural languages), any
  extension not on :data:`ALLOWED_EXTENSIONS`, and any line it cannot read.
- :func:`script_refusal` reads the SQL ``pg_restore`` would run for every entry except table data
  (the script's ``-- Name: ...; Type: ...`` headers name each entry) and refuses program or
  server-file access, role and system changes, and functions in languages other than sql/plpgsql.

Both return the reason as a sentence, or None when the dump may be restored. Doubt refuses: an
unknown kind, an unreadable line, a definition we cannot place is a refusal, never a pass. The text
rules are a first layer only; the restore also runs as a role that cannot run programs or read
server files (``continuity.adapters.postgres.sandbox``), which covers what text cannot: dynamic SQL,
and the COPY statement or definition of a table data entry, whose SQL is not read beforehand because
pg_restore writes it together with the rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

# Every kind of entry a plain pg_dump of an Odoo database holds (pg_dump's own ``desc`` strings).
ALLOWED_KINDS: frozenset[str] = frozenset({
    "TABLE", "TABLE DATA", "SEQUENCE", "SEQUENCE SET", "SEQUENCE OWNED BY", "INDEX", "INDEX ATTACH",
    "CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT", "DEFAULT", "VIEW", "MATERIALIZED VIEW",
    "MATERIALIZED VIEW DATA", "FUNCTION", "PROCEDURE", "AGGREGATE", "TRIGGER", "RULE", "COMMENT", "SCHEMA",
    "EXTENSION", "ACL", "DEFAULT ACL", "DATABASE PROPERTIES", "ENCODING", "STDSTRINGS", "SEARCHPATH", "TYPE",
    "DOMAIN", "COLLATION", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "STATISTICS",
    "ROW SECURITY", "POLICY", "TABLE ATTACH",
})
# Kinds that are refused by name, with why; anything neither here nor allowed is refused as unknown.
REFUSED_KINDS: dict[str, str] = {
    "EVENT TRIGGER": "an event trigger runs code on every later DDL in the database",
    "FOREIGN DATA WRAPPER": "a foreign data wrapper reaches outside the sandbox",
    "SERVER": "a foreign server reaches outside the sandbox",
    "USER MAPPING": "a user mapping carries credentials for a foreign server",
    "FOREIGN TABLE": "a foreign table reads through a foreign server",
    "PROCEDURAL LANGUAGE": "a procedural language can be untrusted (e.g. plpython3u runs any program)",
    "TRANSFORM": "a transform installs language glue functions",
    "CAST": "a cast can silently call a function of the dump's choice",
    "OPERATOR": "an operator can shadow a built-in one and call a function of the dump's choice",
    "OPERATOR CLASS": "an operator class calls functions of the dump's choice",
    "OPERATOR FAMILY": "an operator family calls functions of the dump's choice",
    "ACCESS METHOD": "an access method is a C-level handler",
    "CONVERSION": "a conversion is a C-level function",
    "TEXT SEARCH PARSER": "a text search parser is a C-level function",
    "TEXT SEARCH TEMPLATE": "a text search template is a C-level function",
    "PUBLICATION": "a publication sends data out of the sandbox",
    "PUBLICATION TABLE": "a publication sends data out of the sandbox",
    "PUBLICATION TABLES IN SCHEMA": "a publication sends data out of the sandbox",
    "SUBSCRIPTION": "a subscription connects out of the sandbox",
    "LARGE OBJECT": "Odoo keeps no large objects; they are not part of what is validated",
    "BLOB": "Odoo keeps no large objects; they are not part of what is validated",
    "BLOBS": "Odoo keeps no large objects; they are not part of what is validated",
    "SECURITY LABEL": "security labels need a label provider the sandbox does not load",
}
# Extensions a plain Odoo database may carry: PostgreSQL's "trusted" ones, which the restore role (a
# database owner, not a superuser) may create. amcheck is not among them: the sandbox installs it
# itself for the indexes check, it is never restored from a dump.
ALLOWED_EXTENSIONS: frozenset[str] = frozenset({
    "plpgsql", "pg_trgm", "unaccent", "btree_gin", "btree_gist", "fuzzystrmatch", "citext", "hstore",
    "intarray", "pgcrypto", "tablefunc", "uuid-ossp", "cube", "ltree", "isn", "seg", "dict_int", "lo",
})
TRUSTED_LANGUAGES: frozenset[str] = frozenset({"sql", "plpgsql"})

_KINDS_LONGEST_FIRST = sorted(ALLOWED_KINDS | set(REFUSED_KINDS), key=len, reverse=True)
_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_HEADER = re.compile(r"^-- (?:Data for )?Name: (.*); Type: (.*); Schema: (.*); Owner: (.*)$", re.MULTILINE)
_LANGUAGE = re.compile(r"\bLANGUAGE\s+\"?([A-Za-z0-9_]+)\"?", re.IGNORECASE)
# SQL no Odoo schema object contains and that reaches the machine, the cluster or its roles.
_FORBIDDEN_SQL: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:TO|FROM)\s+PROGRAM\b", re.IGNORECASE), "COPY ... TO/FROM PROGRAM runs a shell command"),
    (re.compile(r"\bCOPY\b[^;]*?\b(?:TO|FROM)\s+(?:E?'+|\$[A-Za-z0-9_]*\$)\s*/", re.IGNORECASE | re.DOTALL),
     "COPY to or from a server file reads or writes the machine's files"),
    (re.compile(r"\b(?:pg_read_file|pg_read_binary_file|pg_ls_dir|pg_stat_file|lo_import|lo_export|"
                r"pg_file_write|dblink\w*)\s*\(", re.IGNORECASE),
     "a server-file or remote-connection function reaches outside the database"),
    (re.compile(r"\bALTER\s+SYSTEM\b", re.IGNORECASE), "ALTER SYSTEM changes the server's configuration"),
    (re.compile(r"\b(?:CREATE|ALTER|DROP)\s+(?:ROLE|USER|GROUP)\b", re.IGNORECASE), "it creates or changes roles"),
    (re.compile(r"\bSET\s+(?:SESSION\s+)?(?:ROLE|SESSION\s+AUTHORIZATION)\b", re.IGNORECASE),
     "it switches the session's role"),
    (re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:TRUSTED\s+)?(?:PROCEDURAL\s+)?LANGUAGE\b", re.IGNORECASE),
     "it installs a procedural language"),
    (re.compile(r"\bCREATE\s+EVENT\s+TRIGGER\b", re.IGNORECASE), "it creates an event trigger"),
    (re.compile(r"\bCREATE\s+(?:SERVER|FOREIGN\s+DATA\s+WRAPPER|USER\s+MAPPING)\b", re.IGNORECASE),
     "it creates a foreign server, wrapper or user mapping"),
    (re.compile(r"\bLOAD\s+'", re.IGNORECASE), "LOAD loads a shared library into the server"),
    (re.compile(r"(?:^|;)\s*DO\s+(?:LANGUAGE\s+\w+\s+)?(?:E?'|\$[A-Za-z0-9_]*\$)", re.IGNORECASE | re.MULTILINE),
     "a DO block runs code at restore time (pg_dump never writes one)"),
)
_BODY_START = re.compile(r"\bAS\s+(?:E?'|\$[A-Za-z0-9_]*\$)|\bBEGIN\s+ATOMIC\b|\bRETURN\b", re.IGNORECASE)
_CREATES_ROUTINE = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b", re.IGNORECASE)
_SHOWN = 120


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore --list``: ``ID; OID OID DESC SCHEMA NAME OWNER``."""

    dump_id: int
    kind: str
    schema: str
    name_and_owner: str

    @property
    def extension_name(self) -> str:
        """For an EXTENSION entry (``EXTENSION - pg_trgm``, no owner): its name."""
        return self.name_and_owner.split(" ")[0] if self.name_and_owner else ""


def parse_toc_line(line: str) -> TocEntry | None:
    """One listing line as an entry, or None when it is not one (caller decides whether that is a comment)."""
    match = _LINE.match(line)
    if not match:
        return None
    rest = match.group(4)
    for kind in _KINDS_LONGEST_FIRST:
        if rest == kind or rest.startswith(kind + " "):
            after = rest[len(kind) + 1:]
            schema, _, name_and_owner = after.partition(" ")
            return TocEntry(int(match.group(1)), kind, schema, name_and_owner.strip())
    return TocEntry(int(match.group(1)), "", "", rest)


def _shown(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN else flat[:_SHOWN] + "…"


def toc_refusal(listing: Iterable[str]) -> str | None:
    """Why the archive must not be restored, from its ``pg_restore --list`` lines, or None.

    Comment lines (``;``) and blank lines are skipped; every other line must be an entry of an
    allowed kind. The first refusal found is returned, naming the entry by its listing line.
    """
    entries = 0
    for number, raw in enumerate(listing, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        entry = parse_toc_line(line)
        if entry is None:
            return (f"table of contents line {number} is not an entry ({_shown(line)!r}): the listing cannot be "
                    "trusted; the dump was not restored")
        entries += 1
        if entry.kind in REFUSED_KINDS:
            return (f"the dump holds a {entry.kind} entry ({_shown(line)!r}): {REFUSED_KINDS[entry.kind]}; "
                    "the dump was not restored")
        if entry.kind not in ALLOWED_KINDS:
            return (f"the dump holds an entry of unknown kind ({_shown(line)!r}), not one a plain Odoo pg_dump "
                    "contains; the dump was not restored")
        if entry.kind == "EXTENSION" and entry.extension_name not in ALLOWED_EXTENSIONS:
            return (f"the dump creates extension {entry.extension_name!r}, which is not on the sandbox's list "
                    f"({', '.join(sorted(ALLOWED_EXTENSIONS))}); the dump was not restored")
    if entries == 0:
        return "the archive's table of contents holds no entry: there is nothing to restore"
    return None


def script_refusal(script: str) -> str | None:
    """Why the SQL ``pg_restore`` would run (every entry but table data) must not run, or None.

    :param script: ``pg_restore --file=-`` output for the non-data entries; each entry starts with a
        ``-- Name: ...; Type: ...; Schema: ...; Owner: ...`` header, which names it in the reason.
    """
    headers = list(_HEADER.finditer(script))
    # Text before the first header is pg_restore's own preamble (SET lines) plus ENCODING/STDSTRINGS/
    # SEARCHPATH entries, whose definitions come from the dump too: checked like any entry.
    chunks = [("the script's preamble", "", script[: headers[0].start()] if headers else script)]
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(script)
        name, kind = header.group(1).strip(), header.group(2).strip()
        chunks.append((f"{kind} {name}", kind, script[header.end():end]))
    for label, kind, body in chunks:
        for pattern, why in _FORBIDDEN_SQL:
            found = pattern.search(body)
            if found:
                near = body[max(0, found.start() - 40): found.end() + 40]
                return (f"the dump's {label} would run forbidden SQL: {why} (near {_shown(near)!r}); "
                        "the dump was not restored")
        # Every CREATE FUNCTION/PROCEDURE, not only entries typed as routines: a forged header must not
        # hide a function from this rule.
        for language in routine_languages(body):
            if language not in TRUSTED_LANGUAGES:
                return (f"the dump's {label} is written in language {language!r}; only "
                        f"{', '.join(sorted(TRUSTED_LANGUAGES))} functions are restored; the dump was not restored")
        if kind in REFUSED_KINDS:
            return f"the dump's {label} is a {kind}: {REFUSED_KINDS[kind]}; the dump was not restored"
    return None


def routine_languages(body: str) -> list[str]:
    """The language of each CREATE FUNCTION/PROCEDURE in ``body``, read from its header (pg_dump writes
    ``LANGUAGE x`` before ``AS``), so that a word in a function's body is not taken for it; ``"?"`` when
    a header names none."""
    found = []
    for match in _CREATES_ROUTINE.finditer(body):
        end = _BODY_START.search(body, match.end())
        header = body[match.end(): end.start() if end else len(body)]
        language = _LANGUAGE.search(header)
        found.append(language.group(1).lower() if language else "?")
    return found


def archive_refusal(listing: Iterable[str], script: str) -> str | None:
    """:func:`toc_refusal`, then :func:`script_refusal`: the first reason, or None when the dump may be restored."""
    return toc_refusal(listing) or script_refusal(script)


# ---- the archive header: which database, when, by which versions ----------------------------------

_HEADER_FIELDS = {
    "dbname": re.compile(r"^;\s+dbname:\s*(.*)$"),
    "server_version": re.compile(r"^;\s+Dumped from database version:\s*(.*)$"),
    "pg_dump_version": re.compile(r"^;\s+Dumped by pg_dump version:\s*(.*)$"),
    "format": re.compile(r"^;\s+Format:\s*(.*)$"),
}
_CREATED_RE = re.compile(r"^; Archive created at (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (\S+)\s*$")


@dataclass(frozen=True)
class ArchiveHeader:
    """What ``pg_restore --list`` prints before the entries (``PrintTOCSummary`` in pg_backup_archiver.c).

    ``created_at`` is naive wall-clock time in ``created_zone`` (the archive stores no zone: pg_restore
    prints the stored fields in its own zone; both tools run with TZ=UTC here).
    """

    dbname: str | None
    created_at: datetime | None
    created_zone: str | None
    server_version: str | None
    pg_dump_version: str | None
    format: str | None


def archive_header(lines: Iterable[str]) -> ArchiveHeader:
    found: dict[str, str] = {}
    created: datetime | None = None
    zone: str | None = None
    for line in lines:
        if line and not line.startswith(";"):
            break  # the entries begin: the header is over
        match = _CREATED_RE.match(line)
        if match:
            try:
                created = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
                zone = match.group(2)
            except ValueError:
                created = None
            continue
        for key, pattern in _HEADER_FIELDS.items():
            field_match = pattern.match(line)
            if field_match and key not in found:
                found[key] = field_match.group(1).strip()
    return ArchiveHeader(found.get("dbname"), created, zone, found.get("server_version"),
                         found.get("pg_dump_version"), found.get("format"))


# ---- which tables can be read while the restore goes on ------------------------------------------
# Post-data entries that lock their table against readers (ACCESS EXCLUSIVE): ALTER TABLE … ADD CONSTRAINT …
# PRIMARY KEY / UNIQUE / EXCLUDE, CREATE RULE, CREATE POLICY, ALTER TABLE … ENABLE ROW LEVEL SECURITY. A
# check reading the table first would make that entry wait for the check, and every later index build on the
# table would queue behind it; so a table is read only once they are done. Index builds (SHARE), foreign keys
# and triggers (SHARE ROW EXCLUSIVE) take locks a reader never waits for, nor they for it.
LOCKING_KINDS = frozenset({"CONSTRAINT", "RULE", "POLICY", "ROW SECURITY"})
SCHEMA = "public"


class LoadProgress:
    """The tables of ``public`` whose rows are all loaded and that nothing in the restore will lock again.

    Built from the ``pg_restore --list`` lines; told each entry ``pg_restore`` reports finished (its dump
    id), it answers which tables became readable. A table with no data entry, or with two (a name only a
    forged archive repeats), never becomes readable here: what reads it waits for the whole restore.
    Reading early can only ever see fewer rows than the backup holds, never other ones, so a check that ran
    too soon fails; it cannot pass a wrong backup.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        data: dict[str, list[int]] = {}
        self._locking: dict[str, set[int]] = {}
        self._said: dict[int, str] = {}  # dump id -> "KIND TAG", as pg_restore names the entry it finished
        for line in lines:
            entry = parse_toc_line(line) if line and not line.startswith(";") else None
            if entry is None or entry.schema != SCHEMA:
                continue
            # ``NAME OWNER``: the tag, then one owner word; a constraint's or rule's tag is ``TABLE NAME``.
            tag = entry.name_and_owner.rsplit(" ", 1)[0] if " " in entry.name_and_owner else entry.name_and_owner
            if entry.kind == "TABLE DATA":
                data.setdefault(tag, []).append(entry.dump_id)
            elif entry.kind in LOCKING_KINDS:
                self._locking.setdefault(tag.split(" ", 1)[0], set()).add(entry.dump_id)
            else:
                continue
            self._said[entry.dump_id] = f"{entry.kind} {tag}"
        self._data = {ids[0]: table for table, ids in data.items() if len(ids) == 1}
        self._waiting = {table: {dump_id} | self._locking.get(table, set()) for dump_id, table in self._data.items()}
        self._readable: set[str] = set()

    def finished(self, dump_id: int, said: str | None = None) -> set[str]:
        """The tables this finished entry made readable (often none).

        :param said: what pg_restore named the entry (``KIND TAG``); when given, it must be the listing's name
            for that id, else the line is not believed (a table never made readable early only waits longer).
        """
        if said is not None and self._said.get(dump_id) != said:
            return set()
        became: set[str] = set()
        for table, waiting in self._waiting.items():
            if dump_id in waiting:
                waiting.discard(dump_id)
                if not waiting and table not in self._readable:
                    self._readable.add(table)
                    became.add(table)
        return became

    @property
    def readable(self) -> frozenset[str]:
        return frozenset(self._readable)


# pg_restore's leader logs "finished item N KIND TAG" (parallel restore, --verbose) in one write ending the
# line, after its "pg_restore:" and " " written apart (common/logging.c): a worker's own output can land
# between them, so the message is looked for at the end of the line, not after the prefix. A name in some other
# message that mimics one is caught by LoadProgress (the id must be named as the listing names it); one
# crafted to match exactly can only make a check read too soon, which fails it.
_FINISHED = re.compile(r"finished item (\d+) (.+)$")


def finished_item(stderr_line: str) -> tuple[int, str] | None:
    """The dump id and ``KIND TAG`` of a "finished item N KIND TAG" line of ``pg_restore --verbose``, else None."""
    at = stderr_line.rfind("finished item ")
    match = _FINISHED.match(stderr_line, at) if at >= 0 else None
    return (int(match.group(1)), match.group(2)) if match else None
