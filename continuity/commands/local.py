"""``continuity local up|down|status|pg-bin``: the local counterparts of the Azure services."""

from __future__ import annotations

import argparse
from typing import Any

from continuity.adapters import pgbin
from continuity.adapters.local_stack import LocalStack, StackStatus


def register(sub: Any) -> None:
    local = sub.add_parser("local", help="bring the local stack (PostgreSQL clusters, Azurite) up or down")
    verbs = local.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="start everything (idempotent)")
    up.add_argument("--json", action="store_true")
    up.set_defaults(handler=cmd_up)
    down = verbs.add_parser("down", help="stop everything; no process is left behind")
    down.set_defaults(handler=cmd_down)
    status = verbs.add_parser("status", help="health, role and replication lag of each part")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)
    pg = verbs.add_parser("pg-bin", help="locate (or install) the PostgreSQL binaries and print their dir")
    pg.set_defaults(handler=cmd_pg_bin)


def render(status: StackStatus) -> str:
    lines = [f"{'part':<9} {'state':<9} {'role':<8} {'port':>6}  lag            detail"]
    for c in status.clusters:
        state = "healthy" if c.healthy else ("running" if c.running else "down")
        lag = "-"
        if c.replication_lag_bytes is not None:
            lag = f"{c.replication_lag_bytes} B"
            if c.replication_lag_seconds is not None:
                lag += f"/{c.replication_lag_seconds:.1f}s"
        port = str(c.port) if c.tcp else "socket"
        lines.append(f"{c.name:<9} {state:<9} {c.role:<8} {port:>6}  {lag:<14} {c.detail}")
    az = status.azurite
    lines.append(f"{'azurite':<9} {'healthy' if az.get('healthy') else 'down':<9} {'-':<8} "
                 f"{az.get('blob_port', ''):>6}  {'-':<14} {az.get('server', '')}")
    return "\n".join(lines)


def _print(args: argparse.Namespace, status: StackStatus) -> int:
    from continuity.cli import emit

    emit(args, status.to_json(), render(status))
    return 0 if status.healthy else 1


def cmd_up(args: argparse.Namespace) -> int:
    return _print(args, LocalStack().up())


def cmd_down(args: argparse.Namespace) -> int:
    LocalStack().down()
    print("local stack stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return _print(args, LocalStack().status())


def cmd_pg_bin(args: argparse.Namespace) -> int:
    print(pgbin.locate(install=True))
    return 0
