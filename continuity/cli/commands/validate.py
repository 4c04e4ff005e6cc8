"""``continuity validate TENANT``, ``continuity nightly`` and ``continuity report``.

``validate`` and ``nightly`` talk HTTP to the devhost (the same routes as in Azure) as ``--user NAME``
(operator role; without ``--user``, the local identity ``local-operator`` that the CLI creates in this
machine's owner-only keyring on first use) and, with ``--wait``, poll the orchestration until it
finishes; ``--local`` runs the validation in this
process instead (no devhost needed), recording it the same way. ``report --html FILE`` writes the
self-contained recoverability report; ``--json`` prints its data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from continuity.cli.output import emit
from continuity.kernel.errors import ContinuityError, InvalidRequest

WAIT_TIMEOUT_S = 6 * 3600
# The identity validate and nightly act as without --user; created with the operator role on first use. Whoever
# runs the CLI owns the local stack's keyring and user list already, so this grants nothing they could not add.
LOCAL_OPERATOR = "local-operator"
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")


class ValidationRunFailed(ContinuityError):
    code = "validation_run_failed"
    http_status = 500


def register(sub: Any) -> None:
    validate = sub.add_parser("validate", help="restore a tenant's backup into the sandbox and prove it usable")
    validate.add_argument("tenant", metavar="TENANT")
    validate.add_argument("--backup", metavar="ID", default=None, help="backup id (default: the newest)")
    validate.add_argument("--sample-rate", type=float, default=1.0, metavar="RATE",
                          help="fraction of attachments whose sha1 is verified (existence is checked for all)")
    validate.add_argument("--force", action="store_true",
                          help="validate again even if this backup was judged before (a new attempt; "
                               "--local always runs a new attempt)")
    _common(validate)
    validate.set_defaults(handler=cmd_validate)
    nightly = sub.add_parser("nightly", help="validate every tenant's newest backup (nightly-YYYYMMDD)")
    nightly.add_argument("--sample-rate", type=float, default=1.0, metavar="RATE")
    _common(nightly)
    nightly.set_defaults(handler=cmd_nightly)
    report = sub.add_parser("report", help="the recoverability report (HTML with inline SVG charts)")
    report.add_argument("--html", metavar="FILE", type=Path, default=None)
    report.add_argument("--tenant", default=None)
    report.add_argument("--json", action="store_true")
    report.set_defaults(handler=cmd_report)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait for the result (HTTP mode)")
    parser.add_argument("--local", action="store_true", help="run in this process instead of the devhost")
    parser.add_argument("--endpoint", default=None, help="devhost URL (default http://127.0.0.1:<devhost port>)")
    parser.add_argument("--user", default=None,
                        help=f"local identity to act as (operator role; default {LOCAL_OPERATOR}, "
                             f"created on first use)")
    parser.add_argument("--json", action="store_true")


def _rate(value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise InvalidRequest(f"--sample-rate must be in (0, 1], got {value}")
    return value


def _stage(custom: Any) -> str:
    """A running orchestration's custom status in one short line (the bar's description)."""
    return json.dumps(custom)[:80] if custom is not None else ""


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        print(message, file=sys.stderr)


# ---- validate ----------------------------------------------------------------------------------


def render_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary.get('tenant')} {summary.get('backup_id')}: {summary.get('outcome')} — {summary.get('reason')}"]
    checks = summary.get("checks") or {}
    for check_id, status in (checks.items() if isinstance(checks, dict) else []):
        lines.append(f"  {status:<12} {check_id}")
    recorded = summary.get("recorded") or {}
    if recorded:
        lines.append(f"  catalog: {recorded.get('catalog_note')}; evidence seq {recorded.get('evidence_seq')}; "
                     f"{recorded.get('publish_note')}")
    return "\n".join(lines)


def render_nightly(results: list[dict[str, Any]]) -> str:
    """The per-tenant table of a nightly run: one row a tenant, the verdict's reason last."""
    header = f"{'tenant':<16} {'backup':<24} {'outcome':<8} {'objectives':<10} {'failed checks':<24} detail"
    rows = [header, "-" * len(header)]
    for r in results:
        within = r.get("within_objectives")
        objectives = "met" if within is True else "missed" if within is False else "-"
        failed = ", ".join(r.get("failed_checks") or []) or "-"
        reason = str(r.get("reason") or "").split(" — ")[-1]
        rows.append(f"{str(r.get('tenant')):<16} {str(r.get('backup_id') or '-'):<24} {str(r.get('outcome')):<8} "
                    f"{objectives:<10} {failed:<24} {reason}")
    return "\n".join(rows)


def render_report(report: Any) -> str:
    lines = [f"{report.tenant} {report.backup_id}: {report.outcome} — {report.verdict.reason}"]
    for c in report.checks:
        lines.append(f"  {str(c.status):<12} {c.id:<22} {c.duration_s:7.2f}s  {c.detail}")
    return "\n".join(lines)


def validate_local(tenant: str, backup_id: str | None, sample_rate: float) -> dict[str, Any]:
    """One new validation attempt of the backup, in this process, recorded like the devhost's.

    Once the backup is known, every outcome is recorded, a run that could not complete too (an ERROR
    attempt: the backup becomes ``unverified``, and the evidence chain says why).
    """
    from continuity.validation.service import error_report, record_report, summary_of, validate
    from continuity.validation.wiring import (
        local_ports,
        open_recording,
        plan_attempt,
        registry_from_settings,
        resolve_backup_id,
    )

    ports = local_ports(registry_from_settings())
    tenant = ports.registry.get_tenant(tenant).id
    backup = resolve_backup_id(tenant, backup_id)
    run_id = plan_attempt(tenant, backup, force=True).run_id
    _progress(f"validating {tenant} {backup} in the sandbox ({run_id}) …")
    started = datetime.now(UTC)
    try:
        report = validate(ports, tenant, backup, sample_rate=sample_rate, run_id=run_id)
    except ContinuityError as exc:
        report = error_report(tenant, backup, run_id, started, datetime.now(UTC), str(exc))
    catalog, evidence, publish = open_recording()
    recorded = record_report(report, catalog=catalog, evidence=evidence, publish=publish)
    return {**summary_of(report), "checks_detail": [c.to_json() for c in report.checks],
            "recorded": recorded.to_json(), "_text": render_report(report)}


def cmd_validate(args: argparse.Namespace) -> int:
    rate = _rate(args.sample_rate)
    if args.local:
        result = validate_local(args.tenant, args.backup, rate)
        text = result.pop("_text") + "\n" + render_summary({"recorded": result["recorded"]}).split("\n", 1)[-1]
        emit(args, result, text)
        return 0 if result["outcome"] == "passed" else 1
    body: dict[str, Any] = {"sample_rate": rate}
    if args.force:
        body["force"] = True
    if args.backup:
        body["backup_id"] = args.backup
    started = _post(f"/api/tenants/{args.tenant}/validations", body, args.endpoint, args.user)
    return _finish(args, started)


def cmd_nightly(args: argparse.Namespace) -> int:
    rate = _rate(args.sample_rate)
    if args.local:
        from continuity.validation.wiring import registry_from_settings

        results = []
        for tenant in registry_from_settings().list_tenants():
            try:
                result = validate_local(tenant.id, None, rate)
                result.pop("_text")
            except ContinuityError as exc:
                result = {"tenant": tenant.id, "outcome": "error", "reason": str(exc)}
            results.append(result)
        summary = {"instance_id": f"nightly-{datetime.now(UTC):%Y%m%d}-local", "results": results,
                   "passed": sum(1 for r in results if r["outcome"] == "passed"),
                   "failed": sum(1 for r in results if r["outcome"] != "passed")}
        emit(args, summary, render_nightly(results))
        return 0 if summary["failed"] == 0 else 1
    started = _post("/api/validations/nightly", {"sample_rate": rate}, args.endpoint, args.user)
    return _finish(args, started)


def user_key(user: str | None) -> str:
    """The API key the CLI sends: ``--user``'s from the keyring, else ``local-operator``'s (created on first use)."""
    from continuity.adapters.local.identity_store import IdentityStore
    from continuity.kernel.identity import Role

    store = IdentityStore()
    if user:
        return store.client_key(user)
    known = any(u.name == LOCAL_OPERATOR for u in store.list_users())
    if not known or not store.key_file(LOCAL_OPERATOR).exists():
        store.add_user(LOCAL_OPERATOR, [Role.OPERATOR], replace=True)
        _progress(f"created the local identity {LOCAL_OPERATOR} (operator role) to act as; "
                  f"pass --user NAME to act as someone else")
    return store.client_key(LOCAL_OPERATOR)


def _post(path: str, body: dict[str, Any], endpoint: str | None, user: str | None) -> dict[str, Any]:
    """POST as the caller's identity (``X-Continuity-Key``) with the host's master key."""
    from devhost.process import admin_request

    code, answer = admin_request("POST", path, body=body, endpoint_url=endpoint, timeout=60,
                                 headers={"X-Continuity-Key": user_key(user)})
    if code >= 400 or not isinstance(answer, dict):
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else str(answer)[:200]
        raise InvalidRequest(f"the devhost refused {path} ({code}): {message}")
    return answer


def _finish(args: argparse.Namespace, started: dict[str, Any]) -> int:
    from devhost.process import admin_request

    instance = started["instance_id"]
    if not args.wait:
        note = "started" if started.get("created") else f"already {started.get('runtime_status')}"
        emit(args, started, f"{instance}: {note}; follow it with --wait or `continuity local status`")
        return 0
    from continuity.cli.progress import progress

    deadline = time.monotonic() + WAIT_TIMEOUT_S
    status: dict[str, Any] = {}
    with progress(args, f"waiting for {instance}") as bar:
        while time.monotonic() < deadline:
            code, answer = admin_request("GET", f"/runtime/webhooks/durabletask/instances/{instance}",
                                         endpoint_url=args.endpoint)
            status = answer if isinstance(answer, dict) else {}
            runtime = status.get("runtimeStatus")
            if runtime in TERMINAL:
                break
            bar.describe(f"{instance}: {runtime} {_stage(status.get('customStatus'))}")
            time.sleep(1.0)
        else:
            raise ValidationRunFailed(f"{instance} did not finish within {WAIT_TIMEOUT_S}s; it keeps running")
    if status.get("runtimeStatus") != "Completed":
        raise ValidationRunFailed(f"{instance} ended {status.get('runtimeStatus')}: {status.get('output')}")
    output = status.get("output") or {}
    if "results" in output:
        text = render_nightly(output["results"])
        proofs = output.get("archive_proofs") or []
        for proof in proofs:
            state = "skipped" if proof.get("skipped") else "PROVEN" if proof.get("ok") else "FAILED"
            text += f"\narchive {proof.get('server')}: {state}: {proof.get('reason')}"
        ok = (output.get("failed", 0) == 0 and output.get("errors", 0) == 0
              and not any(p.get("ok") is False for p in proofs))
    else:
        text, ok = render_summary(output), output.get("outcome") == "passed"
    emit(args, output, text)
    return 0 if ok else 1


# ---- report ------------------------------------------------------------------------------------


def gather_sections(tenant: str | None = None) -> list[Any]:
    from continuity.validation.report import TenantSection, run_from_history
    from continuity.validation.wiring import recoverability, registry_from_settings, validation_history

    registry = registry_from_settings()
    history = validation_history(tenant)
    sections = []
    for t in registry.list_tenants():
        if tenant and t.id != tenant:
            continue
        runs = tuple(run_from_history(r) for r in history if r["tenant"] == t.id)
        sections.append(TenantSection(t.id, t.name, t.tier, registry.rto_minutes(t), registry.rpo_minutes(t), runs,
                                      recoverability(t.id)))
    return sections


def estate_overview_html(tenant: str | None = None) -> str:
    """The estate overview the live page shows (``GET /api/dashboard``), rendered by the same code, static."""
    from continuity.pages.html import estate_overview
    from continuity.validation.estate import SortKey, count_by_state
    from continuity.validation.wiring import estate

    rows = estate([tenant] if tenant else None)
    return estate_overview(rows, counts=count_by_state(rows), state=None, sort=SortKey.STATE,
                           at=datetime.now(UTC), static=True)


def cmd_report(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from continuity.pages.html import CSS as ESTATE_CSS
    from continuity.validation.report import render_html

    sections = gather_sections(args.tenant)
    head: dict[str, Any] | None
    try:
        from continuity.adapters.postgres.control_db import prepare
        from continuity.adapters.storage.blob_store import BlobStore
        from continuity.adapters.storage.evidence_store import EvidenceStore

        head = EvidenceStore(prepare(), BlobStore()).head().to_json()
    except ContinuityError:
        head = None
    payload = {"generated_at": datetime.now(UTC).isoformat(), "evidence_chain_head": head,
               "tenants": [asdict(s) for s in sections]}
    if args.html:
        args.html.write_text(render_html(sections, datetime.now(UTC), head, overview=estate_overview_html(args.tenant),
                                         overview_css=ESTATE_CSS), encoding="utf-8")
        payload["html"] = str(args.html)
    within = sum(1 for s in sections if s.standing.get("recoverable_within_objectives"))
    emit(args, payload, f"{within} of {len(sections)} tenant(s) recoverable within objectives"
         + (f"; report written to {args.html}" if args.html else ""))
    return 0 if within == len(sections) else 1
