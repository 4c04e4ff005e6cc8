"""``continuity local up|down|status|pg-bin``: the local counterparts of the Azure services."""

from __future__ import annotations

import argparse
from typing import Any

from continuity.adapters.local.local_stack import LocalStack, StackStatus
from continuity.adapters.tools import pgbin
from continuity.cli import stack
from continuity.cli.output import emit


def register(sub: Any) -> None:
    local = sub.add_parser("local", help="bring the local stack (PostgreSQL clusters, Azurite, devhost) up or down")
    verbs = local.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="start everything (idempotent)")
    up.add_argument("--json", action="store_true")
    up.set_defaults(handler=cmd_up)
    down = verbs.add_parser("down", help="stop everything; no process is left behind")
    down.set_defaults(handler=cmd_down)
    status = verbs.add_parser("status", help="health of each part, devhost functions, orchestrations")
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
    lines.extend(render_devhost(status.devhost))
    return "\n".join(lines)


def render_devhost(devhost: dict[str, Any]) -> list[str]:
    """The devhost line, then its functions and running orchestrations."""
    if not devhost:
        return []
    state = "healthy" if devhost.get("healthy") else "down"
    lines = [f"{'devhost':<9} {state:<9} {'-':<8} {devhost.get('port', ''):>6}  {'-':<14} {devhost.get('detail', '')}"]
    for f in devhost.get("functions", []):
        what = f.get("route") and f"/{f['route']} {','.join(f.get('methods', []))} ({f.get('authLevel', '')})" \
            or f.get("schedule") or ""
        error = f"  NOT SERVED: {f['error']}" if f.get("error") else ""
        lines.append(f"  fn {f.get('name', ''):<28} {f.get('trigger', ''):<21} {what}{error}")
    durable = devhost.get("durable") or {}
    if durable:
        running = durable.get("orchestrations") or []
        lines.append(f"  durable engine: {durable.get('engine', '')}; {len(running)} orchestration(s) running")
        for item in running:
            if isinstance(item, dict):
                lines.append(f"    {item.get('instanceId', item.get('instance_id', ''))} {item.get('name', '')} "
                             f"{item.get('runtimeStatus', item.get('status', ''))}")
            else:
                lines.append(f"    {item}")
    return lines


def _print(args: argparse.Namespace, status: StackStatus) -> int:
    emit(args, status.to_json(), render(status))
    return 0 if status.healthy else 1


def cmd_up(args: argparse.Namespace) -> int:
    return _print(args, stack.up(LocalStack()))


def cmd_down(args: argparse.Namespace) -> int:
    stack.down(LocalStack())
    print("local stack stopped")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return _print(args, stack.status(LocalStack()))


def cmd_pg_bin(args: argparse.Namespace) -> int:
    print(pgbin.locate(install=True))
    return 0
