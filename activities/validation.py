"""Activities of restore validation: thin wrappers over :mod:`continuity.validation.service`.

Inputs and outputs are small JSON (ids, check statuses, numbers), never row sets. Every activity
that touches the sandbox goes through the isolation guard first.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from continuity import telemetry
from continuity.validation import service as validation
from continuity.validation import wiring
from continuity.validation.checks import CheckResult

logger = logging.getLogger(__name__)

bp = df.Blueprint()


_ports = wiring.configured_ports


@bp.activity_trigger(input_name="request")
def list_archived_servers(request: dict[str, Any]) -> list[str]:
    """The servers whose WAL we archive: the nightly proves each archive restores."""
    from continuity.pitr import service as pitr

    return pitr.archived_servers(wiring.registry_from_settings())


@bp.activity_trigger(input_name="request")
def prove_wal_archive(request: dict[str, Any]) -> dict[str, Any]:
    from continuity.pitr import service as pitr

    return pitr.nightly_proof(wiring.registry_from_settings(), request["server"], request["run_id"])


@bp.activity_trigger(input_name="request")
def list_tenants_for_validation(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Each tenant's newest backup, whether it was validated before, or why it has none."""
    return wiring.tenants_for_validation()


@bp.activity_trigger(input_name="request")
def pick_backup_for_validation(request: dict[str, Any]) -> dict[str, Any]:
    ref = validation.pick_backup(_ports().source, request["tenant"], request.get("backup_id"))
    return {"tenant": ref.tenant, "backup_id": ref.backup_id, "created_at": ref.created_at.isoformat()}


@bp.activity_trigger(input_name="request")
def restore_into_sandbox(request: dict[str, Any]) -> dict[str, Any]:
    ports = _ports()
    ref = validation.pick_backup(ports.source, request["tenant"], request["backup_id"])
    logger.info("restoring into the sandbox", extra={"tenant": ref.tenant, "backup_id": ref.backup_id,
                                                     "run_id": request["run_id"]})
    with telemetry.span("restore_into_sandbox", tenant=ref.tenant, backup_id=ref.backup_id,
                        run_id=request["run_id"], instance_id=request["run_id"]):
        step = wiring.restore_in_run_folder(ports, ref, request["scratch_database"],
                                            int(request.get("jobs", validation.RESTORE_JOBS)), request["run_id"],
                                            float(request.get("sample_rate", validation.DEFAULT_SAMPLE_RATE)))
    return step.to_json()


@bp.activity_trigger(input_name="request")
def run_restore_checks(request: dict[str, Any]) -> list[dict[str, Any]]:
    ports = _ports()
    ref = validation.pick_backup(ports.source, request["tenant"], request["backup_id"])
    step = validation.RestoreStep.from_json(request["step"])
    with telemetry.span("run_restore_checks", tenant=ref.tenant, backup_id=ref.backup_id,
                        run_id=request.get("run_id"), instance_id=request.get("run_id")):
        checks = validation.run_restore_checks(ports, ref, step, float(request.get("sample_rate",
                                                                                  validation.DEFAULT_SAMPLE_RATE)))
    wiring.pause_at("validation.checks")  # checked, the result not delivered: the redelivery checks again
    return [c.to_json() for c in checks]


@bp.activity_trigger(input_name="request")
def record_validation(request: dict[str, Any]) -> dict[str, Any]:
    """Conclude (objectives, verdict) and record: catalog, evidence, event. Returns the run's summary."""
    registry = wiring.registry_from_settings()
    started = datetime.fromisoformat(request["started_at"])
    finished = datetime.fromisoformat(request["finished_at"])
    if request.get("error") or not request.get("step"):
        report = validation.error_report(request["tenant"], request["backup_id"], request["run_id"], started,
                                         finished, request.get("error") or "the run did not complete")
    else:
        step = validation.RestoreStep.from_json(request["step"])
        checks = [CheckResult.from_json(c) for c in request.get("checks") or []]
        report = validation.conclude(registry, request["tenant"], request["backup_id"],
                                     datetime.fromisoformat(request["backup_created_at"]), request["run_id"],
                                     started, finished, step, checks)
    catalog, evidence, publish = wiring.open_recording()
    with telemetry.span("record_validation", tenant=report.tenant, backup_id=report.backup_id,
                        run_id=report.run_id, instance_id=report.run_id, outcome=str(report.outcome)):
        recorded = validation.record_report(report, catalog=catalog, evidence=evidence, publish=publish)
    wiring.pause_at("validation.record")  # recorded, the result not delivered: the redelivery records once
    _measure(report)
    logger.info("validation recorded", extra={"tenant": report.tenant, "backup_id": report.backup_id,
                                              "run_id": report.run_id, "outcome": str(report.outcome)})
    return {**validation.summary_of(report), "recorded": recorded.to_json()}


@bp.activity_trigger(input_name="request")
def drop_scratch_database(request: dict[str, Any]) -> dict[str, Any]:
    wiring.drop_scratch_database(request["scratch_database"])
    return {"dropped": request["scratch_database"]}


@bp.activity_trigger(input_name="request")
def sweep_scratch_databases(request: dict[str, Any]) -> dict[str, Any]:
    return {"dropped": wiring.sweep_scratch_databases(int(request["older_than_minutes"]))}


def _measure(report: validation.ValidationReport) -> None:
    """Restore-validation metrics: duration by outcome, the backup's age (RPO), each failed check."""
    telemetry.record_restore_validation_duration(
        report.tenant, (report.finished_at - report.started_at).total_seconds(), str(report.outcome).lower())
    if report.objectives is not None:
        telemetry.record_backup_age(report.tenant, report.objectives.backup_age_s)
    for check_id in report.failed_checks:
        telemetry.count_validation_failure(report.tenant, check_id.lower())
