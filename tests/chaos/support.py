"""The chaos suite's machinery: the seed and the kill points it picks, a devhost SIGKILLed exactly where a
fault-injection pause holds it, the leftovers a finished workflow must not leave, catalog = evidence.

Kill points are fault-injection pauses (:func:`continuity.adapters.local.fault_injection.pause_at`): the host
is started with one point armed, the test waits until the host's log says it sleeps there, and kills it. No
timing guess: the kill lands at that point every time. The next start arms the next point (or none), so
the redelivered step runs through the point it died at.

Replay a run: ``CONTINUITY_CHAOS_SEED=N .venv/bin/pytest tests/chaos``. The seed is printed in the session
header and in every assertion message.
"""

from __future__ import annotations

import http.client
import json
import os
import random
from pathlib import Path
from typing import Any

import psycopg

from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.local.processes import processes_naming
from continuity.adapters.local.run_folders import ROOT_NAME
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from devhost import process
from tests.failover_support import Host, evidence_container
from tests.waiting import wait_until

DEFAULT_SEED = 160_005  # fixed: CI kills at the same points every run
SEED = int(os.environ.get("CONTINUITY_CHAOS_SEED") or DEFAULT_SEED)
PAUSE_SECONDS = 600  # longer than any wait below: the kill always finds the host asleep at its point

BOUNDARY, INSIDE = "boundary", "inside"

# Each workflow's kill points in the order a run reaches them: (fault-injection point, where it lies).
POINTS: dict[str, tuple[tuple[str, str], ...]] = {
    "validation": (
        ("validation.downloading", INSIDE),  # restore step: the dump's first chunk on disk in the run folder
        ("validation.restoring", INSIDE),  # restore step: the dump landed, the empty scratch database exists
        ("validation.restore", BOUNDARY),  # restored, run folder gone; the result not delivered
        ("validation.checks", BOUNDARY),  # checked; the result not delivered
        ("validation.record", BOUNDARY),  # catalog row, evidence record and event written; result not delivered
    ),
    "drill": (
        ("copy.copied", INSIDE),  # pg_basebackup done; the copy neither configured nor started
        ("copy", BOUNDARY), ("promote", BOUNDARY), ("verify", BOUNDARY),
    ),
    "recovery": (
        ("recovery.restored", INSIDE),  # stage: the staging database restored, the dump still on disk
        ("recovery.stage", BOUNDARY), ("recovery.checks", BOUNDARY),
        # (the approval comes here)
        ("recovery.fence", BOUNDARY), ("recovery.swap", BOUNDARY), ("recovery.reopen", BOUNDARY),
        ("recovery.verify", BOUNDARY), ("recovery.backup", BOUNDARY),
    ),
}


def kill_plan(seed: int) -> dict[str, tuple[str, ...]]:
    """Per workflow, one point inside a long step and one step boundary, in the order a run reaches them."""
    rng = random.Random(seed)
    plan: dict[str, tuple[str, ...]] = {}
    for workflow, points in POINTS.items():
        order = [p for p, _ in points]
        inside = rng.choice([p for p, kind in points if kind == INSIDE])
        boundary = rng.choice([p for p, kind in points if kind == BOUNDARY])
        plan[workflow] = tuple(sorted((inside, boundary), key=order.index))
    return plan


PLAN = kill_plan(SEED)


def context(workflow: str) -> str:
    """For assertion messages: the seed, how to replay it, where this workflow was killed."""
    return (f"chaos seed {SEED} (replay: CONTINUITY_CHAOS_SEED={SEED} pytest tests/chaos), {workflow} killed at "
            f"{' then '.join(PLAN[workflow])}")


class ChaosHost(Host):
    """The devhost serving function_app.py on the chaos stack, killed where a pause holds it."""

    def __init__(self, stack: LocalStack, keys: dict[str, str], port: int, env: dict[str, str]) -> None:
        super().__init__(stack, keys, port)
        self.env.update(env)
        self.log = process.paths(self.env).log
        self._log_mark = 0
        self.starts = 0

    def start_pausing(self, point: str | None) -> None:
        """Start the host with ``point`` armed (None: nothing armed)."""
        self._log_mark = self.log.stat().st_size if self.log.exists() else 0
        self.start(CONTINUITY_FAILOVER_STEP_PAUSE=f"{point}:{PAUSE_SECONDS}" if point else "")
        self.starts += 1

    def restart(self, point: str | None) -> None:
        self.stop()
        self.start_pausing(point)

    def paused_at(self, point: str) -> bool:
        with open(self.log, "rb") as log:
            log.seek(self._log_mark)
            lines = log.read().decode(errors="replace").splitlines()
        for line in lines:
            if '"pausing for fault injection"' not in line:
                continue
            try:
                if json.loads(line).get("point") == point:
                    return True
            except ValueError:
                continue
        return False

    def kill_at(self, point: str, then: str | None, why: str) -> None:
        """Wait until the host sleeps at ``point``, SIGKILL it, start it again with ``then`` armed."""
        wait_until(lambda: self.paused_at(point), timeout=180, what=f"{why}: the host pausing at {point}",
                   interval=0.05)
        self.kill()
        self.start_pausing(then)

    def _resource(self, instance: str) -> str:
        return "recoveries" if instance.startswith("recovery-") else "failovers"

    def status(self, instance: str, user: str = "amir") -> dict[str, Any]:
        code, body = self.call("GET", f"/api/{self._resource(instance)}/{instance}", user)
        assert code == 200, body
        return dict(body)

    def approve(self, instance: str, why: str) -> None:
        """Wait for the request to await approval, then approve it as a second person with what it asks."""
        pending = self.wait_state(instance, "AWAITING_APPROVAL", "FAILED", "REFUSED", "EXPIRED", timeout=180)
        assert pending["state"] == "AWAITING_APPROVAL", (why, pending.get("reason"))
        acks = (pending.get("approval") or {}).get("required_acknowledgements", [])
        code, body = self.call("POST", f"/api/{self._resource(instance)}/{instance}/approve", "amir",
                               {"comment": "chaos", "acknowledge": acks})
        assert code == 202, (why, body)

    def drive(self, instance: str, kills: tuple[str, ...], approve_before: frozenset[str] | None, why: str) -> None:
        """Kill the host at each point of ``kills`` in turn (the first is armed already); approve the request
        before the first point in ``approve_before`` (None: no approval in this workflow), or at the end."""
        approved = approve_before is None
        for number, point in enumerate(kills):
            if not approved and point in approve_before:
                self.approve(instance, why)
                approved = True
            self.kill_at(point, kills[number + 1] if number + 1 < len(kills) else None, why)
        if not approved:
            self.approve(instance, why)

    def durable_status(self, instance: str) -> dict[str, Any]:
        """The instance as the Durable management API shows it (master key), output included."""
        master = json.loads((self.stack.base / "devhost" / "keys.json").read_text())["masterKey"]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", f"/runtime/webhooks/durabletask/instances/{instance}",
                         headers={"x-functions-key": master})
            resp = conn.getresponse()
            body = json.loads(resp.read() or b"null")
        finally:
            conn.close()
        assert resp.status == 200, (resp.status, body)
        return dict(body)

    def wait_output(self, instance: str, why: str, timeout: float = 240) -> dict[str, Any]:
        last: list[Any] = []

        def done() -> dict[str, Any] | None:
            try:
                status = self.durable_status(instance)
            except (OSError, AssertionError) as exc:  # the host is restarting
                last[:] = [exc]
                return None
            last[:] = [status]
            return status if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated") else None

        try:
            status = wait_until(done, timeout=timeout, what=f"{why}: {instance} finishing")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {str(last)[:2000]}") from None
        assert status["runtimeStatus"] == "Completed", (why, status)
        return dict(status["output"])


TOOLS = ("pg_restore", "pg_dump", "pg_basebackup")


def leftovers(stack: LocalStack, tmpdir: Path) -> list[str]:
    """What a finished workflow left behind, in words: scratch databases and restore roles on the sandbox,
    staging databases, run folders and other files in the host's temporary folder, drill directories, and
    pg_restore / pg_dump / pg_basebackup (or a drill's postgres) still running against this stack."""
    found: list[str] = []
    with psycopg.connect(stack.dsn("sandbox"), autocommit=True) as conn:
        found += [f"scratch database {r[0]} on the sandbox" for r in conn.execute(
            r"select datname from pg_database where datname like 'scratch\_%'")]
        found += [f"restore role {r[0]} on the sandbox" for r in conn.execute(
            r"select rolname from pg_roles where rolname like 'scratch\_%'")]
    with psycopg.connect(stack.dsn("primary"), autocommit=True) as conn:
        found += [f"staging database {r[0]} on the primary" for r in conn.execute(
            r"select datname from pg_database where datname like '%\_staging\_%'")]
    runs = tmpdir / ROOT_NAME
    if runs.exists():
        found += [f"run folder {p}" for p in sorted(runs.iterdir())]
    found += [f"temporary file {p}" for p in sorted(tmpdir.iterdir()) if p != runs]  # e.g. a restore's passfile
    drills = stack.pg_root / "drills"
    if drills.exists():
        found += [f"drill directory {p}" for p in sorted(drills.iterdir())]
        found += [f"process {pid} in a drill directory" for pid in processes_naming(str(drills))]
    marks = [str(stack.base.resolve()), str(stack.pg_root), str(stack.socket_dir), str(tmpdir),
             *(f"port={stack.port(c)}" for c in ("primary", "replica", "control", "sandbox"))]
    for pid in {p for tool in TOOLS for p in processes_naming(tool)}:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in marks):
            found.append(f"process {pid}: {cmd[:200]}")
    return found


def evidence_store(stack: LocalStack) -> EvidenceStore:
    # The chaos stack's own chain (dedicated_stack's container): its control database indexes it alone.
    return EvidenceStore(stack.dsn("control", "continuity"), BlobStore(), evidence_container(stack))


def catalog_evidence_disagreements(stack: LocalStack, tenant: str) -> list[str]:
    """Every validation attempt in ``catalog.validations`` has exactly one ``validation.{outcome}`` evidence
    record naming its run id, and every such record a catalog row; the disagreements, in words."""
    with psycopg.connect(stack.dsn("control", "continuity"), autocommit=True) as conn:
        rows = conn.execute("select run_id, backup_id, outcome from catalog.validations where tenant = %s",
                            (tenant,)).fetchall()
    records = [r for r in evidence_store(stack).records(limit=100_000)
               if r.action.startswith("validation.") and r.subject.startswith(f"{tenant}/")]
    problems: list[str] = []
    for run_id, backup_id, outcome in rows:
        mine = [r for r in records if (r.data or {}).get("run_id") == run_id]
        if [(r.subject, r.action) for r in mine] != [(f"{tenant}/{backup_id}", f"validation.{outcome}")]:
            problems.append(f"catalog row {run_id} ({outcome}) has evidence {[(r.seq, r.action) for r in mine]}")
    cataloged = {str(r[0]) for r in rows}
    problems += [f"evidence seq {r.seq} ({r.action}, run {(r.data or {}).get('run_id')}) has no catalog row"
                 for r in records if (r.data or {}).get("run_id") not in cataloged]
    return problems
