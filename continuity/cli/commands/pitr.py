"""``continuity pitr``: the WAL archive of the servers we run (Barman's cloud clients, Blob storage).

    continuity pitr base-backup [SERVER]   a base backup into the archive (and the tenants' attachments kept)
    continuity pitr window [SERVER]        base backups and the recovery window, read from storage alone
    continuity pitr prove [SERVER]         the archive proof: restore + replay in the sandbox, checks, evidence

SERVER defaults to every archived server of the registry. A tenant is rewound to a second with
``continuity recover TENANT --to TIME`` (approval-gated, like every recovery).
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

from continuity.cli.output import emit
from continuity.kernel import settings


def register(sub: Any) -> None:
    pitr = sub.add_parser("pitr", help="WAL archive, base backups and the archive proof (point-in-time recovery)")
    verbs = pitr.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text, handler in (("base-backup", "take a base backup of the server into the archive", cmd_base),
                                ("window", "the server's base backups and recovery window", cmd_window),
                                ("prove", "restore + replay the archive in the sandbox and check every tenant",
                                 cmd_prove)):
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("server", nargs="?", default=None, metavar="SERVER")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(handler=handler)


def _servers(args: argparse.Namespace) -> list[str]:
    from continuity.pitr import service

    registry = settings.configured_registry()
    return [args.server] if args.server else service.archived_servers(registry)


def cmd_base(args: argparse.Namespace) -> int:
    from continuity.pitr import service

    registry = settings.configured_registry()
    taken = [service.take_base_backup(registry, s) for s in _servers(args)]
    emit(args, taken, "\n".join(f"{t['server']}: base backup {t['base_backup']} in {t['seconds']} s" for t in taken))
    return 0


def cmd_window(args: argparse.Namespace) -> int:
    from continuity.pitr import service

    registry = settings.configured_registry()
    windows = [service.window(registry, s) for s in _servers(args)]
    lines = []
    for w in windows:
        span = f"{w['earliest']} .. {w['latest']}" if w["restorable"] else "not restorable"
        gap = f"; MISSING SEGMENT {w['gap']}" if w["gap"] else ""
        lines.append(f"{w['server']}: {span} ({w['base_backups']} base backups, {w['segments']} segments, newest "
                     f"{w['newest_segment']}){gap}")
    emit(args, windows, "\n".join(lines))
    return 0 if all(w["restorable"] for w in windows) else 1


def cmd_prove(args: argparse.Namespace) -> int:
    from continuity.pitr import service

    registry = settings.configured_registry()
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
    proofs = [service.prove_archive(registry, s, f"proof-{s}-{stamp}-{uuid.uuid4().hex[:6]}")
              for s in _servers(args)]
    lines = []
    for p in proofs:
        lines.append(f"{p['server']}: {'PROVEN' if p['ok'] else 'FAILED'} in {p['seconds']} s: {p['reason']}")
        for tenant, r in p.get("tenants", {}).items():
            lines.append(f"  {tenant}: {'ok' if not r['failed_checks'] else 'FAILED ' + ', '.join(r['failed_checks'])}"
                         f", {r['seconds']} s of RTO {r['rto_seconds']} s")
    emit(args, proofs, "\n".join(lines))
    return 0 if all(p["ok"] for p in proofs) else 1
