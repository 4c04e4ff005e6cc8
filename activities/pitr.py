"""Activities of point-in-time restore validation on Flexible Server: thin wrappers over
:mod:`continuity.validation.pitr_service`.

No activity waits for Azure: begin returns the operation's status URL, poll does one GET, and the
orchestrator waits between polls on durable timers. Inputs and outputs are small JSON. Proven at the
HTTP transport level only (tests/unit/test_pitr_transport.py): this repository cannot reach Azure.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from continuity.validation import pitr_service

bp = df.Blueprint()


@bp.activity_trigger(input_name="request")
def begin_restore_server(request: dict[str, Any]) -> dict[str, Any]:
    """Plan (isolation, restore point, target name) and PUT the restore; returns the operation to poll."""
    return pitr_service.begin_restore_server(request)


@bp.activity_trigger(input_name="request")
def poll_restore_operation(request: dict[str, Any]) -> dict[str, Any]:
    """One GET of the operation's status (restore or deletion); never waits."""
    return pitr_service.poll_restore_operation(request)


@bp.activity_trigger(input_name="request")
def connect_restored_server(request: dict[str, Any]) -> dict[str, Any]:
    """Public-access source: the restored server's private endpoint, then its DNS registration (one PUT each)."""
    return pitr_service.connect_restored_server(request)


@bp.activity_trigger(input_name="request")
def delete_restored_endpoint(request: dict[str, Any]) -> dict[str, Any]:
    """Delete the restored server's private endpoint; succeeds if it is already gone."""
    return pitr_service.delete_restored_endpoint(request)


@bp.activity_trigger(input_name="request")
def check_restored_server(request: dict[str, Any]) -> dict[str, Any]:
    """The restored server is Ready; then the checks over psycopg (TLS, credentials from the secret store)."""
    return pitr_service.check_restored_server(request)


@bp.activity_trigger(input_name="request")
def delete_restored_server(request: dict[str, Any]) -> dict[str, Any]:
    """Delete the restored server; succeeds if it is already gone (or was never created)."""
    return pitr_service.delete_restored_server(request)


@bp.activity_trigger(input_name="request")
def record_pitr_validation(request: dict[str, Any]) -> dict[str, Any]:
    """Conclude the verdict and append it to the evidence chain (idempotent by run id)."""
    return pitr_service.record_pitr_validation(request)
