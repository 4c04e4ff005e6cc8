"""What an Odoo backup brought from elsewhere may hold, decided before anything is loaded: pure rules.

Odoo's database manager and odoo.sh write a zip (``odoo/service/db.py`` ``dump_db``): ``dump.sql`` (a plain
``pg_dump --no-owner``), ``filestore/`` (the attachment files, ``xx/<sha1>``) and ``manifest.json`` (``odoo_dump``,
``db_name``, ``version``, ``major_version``, ``pg_version``, ``modules``). Customers bring them from other hosts,
so they are untrusted input twice over: as an archive (names, sizes) and as SQL (what it asks the server to do).

- :func:`zip_plan` refuses path traversal, absolute or odd names, zip bombs and a zip without a dump, and
  says which member is the dump, the manifest and each filestore file.
- :func:`classify_line` reads ``dump.sql`` line by line (streaming, COPY data aware) and says, for each line,
  keep it, drop it (with what it was: a foreign owner, a privilege, a setting this server does not know,
  pg_dump 17.6+'s ``\\restrict``), or refuse the whole dump (any other psql meta-command, e.g. ``\\!``).
  The definitions are then judged by :func:`continuity.validation.toc.script_refusal`, as a restore's are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

DUMP_NAMES = ("dump.sql",)
MANIFEST_NAME = "manifest.json"
# Odoo dumps compress 5-15x; a member beyond this ratio is treated as a decompression bomb.
MAX_RATIO = 200
MAX_TOTAL_BYTES = 256 * 1024**3
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_MEMBERS = 2_000_000
# A filestore file's key, as Odoo names it (``xx/<sha1>``), and where the database-manager zip holds it.
FILESTORE_KEY = r"[0-9a-f]{2}/[0-9a-f]{40}"
FILESTORE_KEY_RE = re.compile(f"^{FILESTORE_KEY}$")
FILESTORE_RE = re.compile(f"^filestore/({FILESTORE_KEY})$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.@+-]+(?:/[A-Za-z0-9_.@+-]+)*/?$")


@dataclass(frozen=True)
class Member:
    name: str
    size: int  # uncompressed
    compressed: int


@dataclass(frozen=True)
class ZipPlan:
    dump: str
    manifest: str | None
    filestore: tuple[tuple[str, str], ...]  # (member name, store key "xx/<sha1>")
    ignored: tuple[str, ...] = ()


class ImportRefused(ValueError):
    """The backup may not be loaded; the message says why."""


def zip_plan(members: Iterable[Member]) -> ZipPlan:
    """The dump, manifest and filestore files of an Odoo backup zip.

    :raises ImportRefused: a name that could escape the target folder, a decompression bomb, or no dump.
    """
    items = list(members)
    if len(items) > MAX_MEMBERS:
        raise ImportRefused(f"the zip holds {len(items)} entries, more than {MAX_MEMBERS}")
    total = 0
    dump = manifest = None
    filestore: list[tuple[str, str]] = []
    ignored: list[str] = []
    for item in items:
        name = item.name
        if name.startswith("/") or "\\" in name or "\0" in name or any(p in ("..", ".") for p in name.split("/")) \
                or not _SAFE_NAME.match(name):
            raise ImportRefused(f"zip entry {name[:120]!r} is not a plain relative name (path traversal?)")
        total += item.size
        if total > MAX_TOTAL_BYTES:
            raise ImportRefused(f"the zip expands to more than {MAX_TOTAL_BYTES // 1024**3} GiB")
        if item.size > 1024 * 1024 and item.size > MAX_RATIO * max(item.compressed, 1):
            raise ImportRefused(f"zip entry {name[:120]!r} expands {item.size // max(item.compressed, 1)}x "
                                f"(more than {MAX_RATIO}x): a decompression bomb")
        if name.endswith("/"):
            continue
        if name in DUMP_NAMES:
            dump = name
        elif name == MANIFEST_NAME:
            if item.size > MAX_MANIFEST_BYTES:
                raise ImportRefused(f"manifest.json is {item.size} bytes, more than {MAX_MANIFEST_BYTES}")
            manifest = name
        elif (match := FILESTORE_RE.match(name)) is not None:
            filestore.append((name, match.group(1)))
        else:
            ignored.append(name)
    if dump is None:
        raise ImportRefused("the zip holds no dump.sql: not an Odoo database-manager backup")
    return ZipPlan(dump, manifest, tuple(filestore), tuple(ignored))


class LineAction(StrEnum):
    KEEP = "keep"
    DROP_OWNER = "foreign owner"        # ALTER ... OWNER TO: the loading role owns what it loads
    DROP_PRIVILEGE = "privilege"        # GRANT/REVOKE naming roles of another host
    DROP_SETTING = "unknown setting"    # SET of a parameter this server does not have (pg_dump 17/18 output)
    DROP_RESTRICT = "restrict"          # pg_dump 17.6+ \restrict / \unrestrict (psql < 17.6 cannot read them)
    REFUSE = "refuse"


_COPY_START = re.compile(r"^COPY\s.+\sFROM\s+stdin;\s*$", re.IGNORECASE)
_OWNER = re.compile(r"^ALTER\s+.+\sOWNER\s+TO\s+.+;\s*$", re.IGNORECASE)
_PRIVILEGE = re.compile(r"^(GRANT|REVOKE)\s.+;\s*$", re.IGNORECASE)
_SET = re.compile(r"^SET\s+([A-Za-z_][A-Za-z0-9_.]*)\s*(=|TO)\s*.*;\s*$", re.IGNORECASE)
_SET_CONFIG = re.compile(r"^SELECT\s+pg_catalog\.set_config\('([A-Za-z_][A-Za-z0-9_.]*)'", re.IGNORECASE)
_RESTRICT = re.compile(r"^\\(un)?restrict\s+[A-Za-z0-9]+\s*$")


@dataclass
class LineReader:
    """Classifies ``dump.sql`` line by line, keeping COPY data apart from statements."""

    known_settings: frozenset[str]
    in_copy: bool = False
    dropped: dict[str, int] = field(default_factory=dict)
    tables: int = 0

    def classify(self, line: str) -> tuple[LineAction, str]:
        """The action for ``line`` (without its newline), and for REFUSE why."""
        if self.in_copy:
            if line == "\\.":
                self.in_copy = False
            return LineAction.KEEP, ""
        stripped = line.strip()
        if _COPY_START.match(stripped):
            self.in_copy = True
            return LineAction.KEEP, ""
        if stripped.upper().startswith("CREATE TABLE "):
            self.tables += 1
        action = LineAction.KEEP
        if stripped.startswith("\\"):
            if not _RESTRICT.match(stripped):
                return LineAction.REFUSE, (f"the dump holds the psql meta-command {stripped[:60]!r} outside COPY "
                                           "data: a dump may not run client commands")
            action = LineAction.DROP_RESTRICT
        elif _OWNER.match(stripped):
            action = LineAction.DROP_OWNER
        elif _PRIVILEGE.match(stripped):
            action = LineAction.DROP_PRIVILEGE
        else:
            setting = _SET.match(stripped) or _SET_CONFIG.match(stripped)
            if setting and setting.group(1).lower() not in self.known_settings:
                action = LineAction.DROP_SETTING
        if action is not LineAction.KEEP:
            self.dropped[str(action)] = self.dropped.get(str(action), 0) + 1
        return action, ""


def odoo_manifest_facts(raw: dict[str, object]) -> dict[str, object]:
    """The facts of Odoo's ``manifest.json`` worth recording (version, modules, pg_version), small and typed."""
    modules = raw.get("modules")
    return {
        "odoo_dump": str(raw.get("odoo_dump", ""))[:10], "db_name": str(raw.get("db_name", ""))[:64],
        "version": str(raw.get("version", ""))[:40], "major_version": str(raw.get("major_version", ""))[:10],
        "pg_version": str(raw.get("pg_version", ""))[:20],
        "modules": len(modules) if isinstance(modules, dict) else 0,
    }
