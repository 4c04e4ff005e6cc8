"""Nightly validation: sweep crashed runs' scratch databases, validate every tenant's newest backup, then prove
the WAL archive of every server we run (continuity.pitr: restore + replay in the sandbox, tenants checked).

Instance id ``nightly-YYYYMMDD`` (the trigger makes it; starting twice the same day does nothing new).
One ``validate-{tenant}-{backup_id}-{attempt}`` sub-orchestration per tenant (the activity that lists them
names the attempt), at most ``parallelism`` at once
(the setting arrives in the input: no environment reads here). Output: a small summary per tenant.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities import validation as steps
from continuity.validation.naming import SWEEP_AFTER_MINUTES

bp = df.Blueprint()


def plan_batches(items: list[dict[str, Any]], parallelism: int) -> list[list[dict[str, Any]]]:
    size = max(1, parallelism)
    return [items[i:i + size] for i in range(0, len(items), size)]


@bp.orchestration_trigger(context_name="context")
def nightly_validation(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request: dict[str, Any] = context.get_input() or {}
    parallelism = int(request.get("parallelism", 2))
    swept = yield context.call_activity(steps.sweep_scratch_databases,
                                        {"older_than_minutes": request.get("sweep_after_minutes",
                                                                           SWEEP_AFTER_MINUTES)})
    picked: list[dict[str, Any]] = yield context.call_activity(steps.list_tenants_for_validation, {})
    runnable = [p for p in picked
                if p.get("mode") == "pitr" or (p.get("backup_id") and not p.get("already_validated"))]
    results: list[dict[str, Any]] = [
        {"tenant": p["tenant"], "backup_id": p.get("backup_id"), "outcome": "skipped",
         "reason": p.get("error") or f"its newest backup was judged before ({p.get('run_id')}); no newer backup since"}
        for p in picked if p not in runnable]
    for number, batch in enumerate(plan_batches(runnable, parallelism), 1):
        context.set_custom_status({"stage": "validating", "batch": number, "tenants": [p["tenant"] for p in batch]})
        tasks = [context.call_sub_orchestrator("tenant_validation", {
                     "tenant": p["tenant"], "backup_id": p["backup_id"], "mode": p.get("mode", "restore"),
                     "sample_rate": request.get("sample_rate", 1.0), "jobs": request.get("jobs", 2)},
                     p["run_id"] if p["backup_id"]
                     else f"validate-{p['tenant']}-pitr-{context.current_utc_datetime:%Y%m%d}")
                 for p in batch]
        try:
            outputs = yield context.task_all(tasks)
        except Exception:  # noqa: BLE001 - one tenant's failure must not hide the others' results
            outputs = []
            for p, task in zip(batch, tasks, strict=True):
                try:
                    outputs.append((yield task))
                except Exception as exc:  # noqa: BLE001 - e.g. this backup's validation instance already exists
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                    outputs.append({"tenant": p["tenant"], "backup_id": p["backup_id"], "outcome": "skipped",
                                    "reason": f"not validated in this run: {first}"})
        results.extend(outputs)
    # The WAL archive of every server we run, proven the same night: its newest base backup restored and
    # replayed to a restore point in the sandbox, each tenant checked on the rewound copy.
    servers: list[str] = yield context.call_activity(steps.list_archived_servers, {})
    proofs: list[dict[str, Any]] = []
    for server in servers:
        context.set_custom_status({"stage": "proving archive", "server": server})
        try:
            proof = yield context.call_activity(steps.prove_wal_archive, {
                "server": server, "run_id": f"archive-proof-{server}-{context.instance_id}"})
        except Exception as exc:  # noqa: BLE001 - one server's failure must not hide the summary
            proof = {"server": server, "ok": False,
                     "reason": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}
        proofs.append({k: proof.get(k) for k in ("server", "ok", "skipped", "reason", "seconds", "evidence_seq")})
    summary = {
        "instance_id": context.instance_id, "tenants": len(picked),
        "passed": sum(1 for r in results if r.get("outcome") == "passed"),
        "failed": sum(1 for r in results if r.get("outcome") == "failed"),
        "errors": sum(1 for r in results if r.get("outcome") == "error"),
        "skipped": sum(1 for r in results if r.get("outcome") == "skipped"),
        "swept_scratch_databases": swept.get("dropped", []),
        "results": [{k: r.get(k) for k in ("tenant", "backup_id", "outcome", "verdict", "reason", "failed_checks",
                                           "within_objectives")} for r in results],
        "archive_proofs": proofs,
        "archive_proofs_failed": sum(1 for p in proofs if p.get("ok") is False),
    }
    context.set_custom_status({"stage": "done", "passed": summary["passed"], "failed": summary["failed"]})
    return summary
