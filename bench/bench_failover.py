"""Approval → writable on local clusters: the governed failover against a bare ``pg_promote()``.

    .venv/bin/python bench/bench_failover.py [--runs 3] [--port-base 62300] [--no-devhost]

Brings up a throwaway stack of its own (four clusters and Azurite under ``.local/bench-failover``,
ports from ``--port-base``), with a writer committing numbered rows to the primary throughout, and per run:

1. **peer** — a bare ``pg_promote()`` on the replica: no fence, no catch-up, no approval, no evidence (and
   two writable primaries afterwards: the unsafe minimum a hurried DBA would do). Timed until the replica
   commits a write.
2. **adapter** — fence (read-only + end sessions) → wait for the replica to replay the fenced primary's
   WAL end → ``pg_promote()``: the execution path of the workflow without the orchestration.
3. **end to end** — through the devhost running function_app.py: request → preflight → approve over HTTP;
   timed from sending the approval until the replica commits a write (polled every 10 ms), plus the
   orchestration's own ``approval_to_writable``.

Lost commits = acknowledged writer rows missing on the new primary. Goal: end to end < 5 s, 0 lost.
The stack is rebuilt between runs and torn down at the end. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from continuity.adapters.azure.secret_store import LocalSecrets, seed_local_recovery_credentials  # noqa: E402
from continuity.adapters.local.identity_store import IdentityStore  # noqa: E402
from continuity.adapters.local.local_stack import LocalStack  # noqa: E402
from continuity.adapters.postgres.connection import ensure_database  # noqa: E402
from continuity.adapters.postgres.failover_local import LocalFailover  # noqa: E402
from continuity.kernel.identity import Role  # noqa: E402
from continuity.kernel.settings import LocalStackSettings  # noqa: E402
from tests.failover_support import ACK, Host, Writer  # noqa: E402

TENANT_DBS = ("odoo_acme_finance", "odoo_globex", "odoo_initech")


def make_stack(port_base: int) -> LocalStack:
    base = LocalStackSettings.from_env()
    settings = replace(base, base_dir=ROOT / ".local" / "bench-failover", azurite_blob_port=port_base,
                       azurite_queue_port=port_base + 1, azurite_table_port=port_base + 2,
                       primary_port=port_base + 10, replica_port=port_base + 11, control_port=port_base + 12,
                       sandbox_port=port_base + 13, devhost_port=port_base + 20)
    return LocalStack(settings)


def wait_writable(dsn: str, timeout: float = 60) -> float:
    """Seconds until ``dsn`` commits a write (polled every 10 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                conn.execute("create table if not exists bench_probe (at timestamptz default now())")
                conn.execute("insert into bench_probe default values")
                return time.monotonic() - started
        except psycopg.Error:
            time.sleep(0.01)
    raise TimeoutError(f"{dsn.split()[1]} never became writable")


def reset(local: LocalFailover) -> None:
    local.restore_original_roles()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        obs = local.observe_replica("neu-replica")
        if obs.in_recovery and "streaming" in obs.detail:
            return
        time.sleep(0.1)
    raise RuntimeError("replica did not resume streaming after the rebuild")


def run_peer(stack: LocalStack, local: LocalFailover) -> tuple[float, int]:
    writer = Writer(stack.dsn("primary"))
    writer.start()
    time.sleep(1.0)
    started = time.monotonic()
    with psycopg.connect(stack.dsn("replica"), autocommit=True) as conn:
        conn.execute("select pg_promote(true, 60)")
    seconds = time.monotonic() - started + wait_writable(stack.dsn("replica"))
    writer.stop()
    return seconds, len(writer.lost_on(stack.dsn("replica")))


def run_adapter(stack: LocalStack, local: LocalFailover) -> tuple[float, int]:
    writer = Writer(stack.dsn("primary"))
    writer.start()
    time.sleep(1.0)
    started = time.monotonic()
    fence = local.fence_primary("weu-primary")
    local.wait_for_replay(fence.final_lsn or "0/0")
    local.promote_replica()
    seconds = time.monotonic() - started + wait_writable(stack.dsn("replica"))
    writer.stop()
    return seconds, len(writer.lost_on(stack.dsn("replica")))


def run_devhost(stack: LocalStack, host: Host) -> tuple[float, float | None, int]:
    writer = Writer(stack.dsn("primary"))
    writer.start()
    code, body = host.request("olivia")
    if code != 202:
        raise RuntimeError(f"request refused: {body}")
    host.wait_state(body["id"], "AWAITING_APPROVAL")
    time.sleep(0.5)
    started = time.monotonic()
    code, answer = host.decide("approve", body["id"], "amir", ack=ACK)
    if code != 202:
        raise RuntimeError(f"approval refused: {answer}")
    seconds = time.monotonic() - started + wait_writable(stack.dsn("replica"))
    done = host.wait_state(body["id"], "COMPLETED", "FAILED", timeout=120)
    writer.stop()
    if done["state"] != "COMPLETED":
        raise RuntimeError(f"failover ended {done['state']}: {done.get('reason')}")
    return seconds, done["timings"].get("approval_to_writable"), len(writer.lost_on(stack.dsn("replica")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port-base", type=int, default=62300)
    parser.add_argument("--no-devhost", action="store_true", help="skip the end-to-end path")
    args = parser.parse_args()

    stack = make_stack(args.port_base)
    stack.up()
    host: Host | None = None
    try:
        for db in TENANT_DBS:
            ensure_database(stack.dsn("primary"), db)
            with psycopg.connect(stack.dsn("primary", db), autocommit=True) as conn:
                conn.execute("create table if not exists res_company (id serial primary key, name text)")
                conn.execute("insert into res_company (name) select 'Main' where not exists "
                             "(select 1 from res_company)")
        local = LocalFailover(stack)
        seed_local_recovery_credentials(["northeurope"], stack.superuser_password(),
                                        LocalSecrets(stack.base / "secrets" / "vault"))
        results: dict[str, list[tuple[float, ...]]] = {"peer": [], "adapter": [], "devhost": []}
        if not args.no_devhost:
            ids = IdentityStore(stack.base)
            keys = {n: ids.add_user(n, r, replace=True) for n, r in (("olivia", [Role.OPERATOR]),
                                                                     ("amir", [Role.APPROVER]))}
            host = Host(stack, keys, stack.settings.devhost_port)
            host.env.update({"CONTINUITY_AZURITE_BLOB_PORT": str(args.port_base),
                             "CONTINUITY_AZURITE_QUEUE_PORT": str(args.port_base + 1),
                             "CONTINUITY_AZURITE_TABLE_PORT": str(args.port_base + 2),
                             "CONTINUITY_APPROVAL_WINDOW_MINUTES": "30"})
            host.start()
        for run in range(1, args.runs + 1):
            reset(local)
            results["peer"].append(run_peer(stack, local))
            reset(local)
            results["adapter"].append(run_adapter(stack, local))
            if host is not None:
                reset(local)
                results["devhost"].append(run_devhost(stack, host))
            print(f"run {run}: peer {results['peer'][-1][0]:.3f}s, adapter {results['adapter'][-1][0]:.3f}s"
                  + (f", end to end {results['devhost'][-1][0]:.3f}s" if host else ""), flush=True)

        peer = statistics.median(r[0] for r in results["peer"])
        print(f"\n{'path':<34} {'median s':>9} {'max s':>8} {'x peer':>7} {'lost commits':>13}")
        for name, label in (("peer", "bare pg_promote (no fence)"), ("adapter", "fence + catch-up + promote"),
                            ("devhost", "approve -> writable via devhost")):
            rows = results[name]
            if not rows:
                continue
            med = statistics.median(r[0] for r in rows)
            print(f"{label:<34} {med:>9.3f} {max(r[0] for r in rows):>8.3f} {med / peer:>7.1f} "
                  f"{sum(int(r[-1]) for r in rows):>13}")
        if results["devhost"]:
            reported = [r[1] for r in results["devhost"] if r[1] is not None]
            if reported:
                print(f"orchestration-reported approval_to_writable median: {statistics.median(reported):.3f}s")
            worst = max(r[0] for r in results["devhost"])
            print(f"goal < 5 s approval -> writable: {'met' if worst < 5 else 'NOT met'} (worst {worst:.3f}s)")
    finally:
        if host is not None:
            host.stop()
        stack.down()
        stack.delete_files()


if __name__ == "__main__":
    main()
