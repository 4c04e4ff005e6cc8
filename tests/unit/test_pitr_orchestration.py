"""The PITR validation orchestrator replayed through the real Durable SDK (the devhost's in-memory replay
engine), with the real ARM-facing activities (begin, poll, delete) over the transport-level ARM double.

The checks over psycopg and the evidence append need a restored server and a control database, so those
two activities are answered by the test; everything between the orchestrator and ARM's HTTP is real.
``time.sleep`` raises during every run: waiting happens only on durable timers.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from continuity.adapters.azure.flexible_server import FlexibleServers
from continuity.validation import pitr, pitr_service
from devhost.durable import history as h
from devhost.durable.invoke import ActivityFailure, DurableFunctions, run_activity, run_orchestrator
from devhost.durable.replay import EpisodeBuilder, InstanceView, Message, context_json
from tests.app_functions import app_functions
from tests.azure_transport import FakeTransport, StaticCredential
from tests.unit.test_pitr_transport import (
    DNS_ZONE,
    PRIVATE_SOURCE,
    PRIVATELINK_ZONE,
    SOURCE_ID,
    SUB,
    SUBNET,
    Arm,
)

FUNCTIONS = DurableFunctions.from_functions(list(app_functions()))
T0 = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
SERVER = pitr.target_server_name("acme", T0)
ANSWERED = {"check_restored_server", "record_pitr_validation"}

REGISTRY = f"""
tiers:
  gold: {{rto_minutes: 60, rpo_minutes: 15}}
servers:
  weu-primary:
    kind: flexible-server
    region: westeurope
    host: weu-primary.postgres.database.azure.com
    resource_id: {SOURCE_ID}
tenants:
  - {{id: acme, name: ACME, tier: gold, server: weu-primary, database: odoo_acme, primary_region: westeurope,
     secondary_region: northeurope}}
"""


class Run:
    """One orchestration run: activity calls in order, timers created, the result."""

    def __init__(self) -> None:
        self.activities: list[tuple[str, dict[str, Any]]] = []
        self.timers: list[tuple[dt.datetime, dt.datetime]] = []  # (created at, fires at)
        self.result: Any = None
        self.status: str = ""


def checks_answer(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["server_name"] == SERVER
    ready = pitr.restore_completed(SERVER, "Ready", payload["restore_seconds"]).to_json()
    return {"server": {"name": SERVER, "state": "Ready"}, "restored_bytes": 10**9,
            "checks": [ready, {"id": "ledger", "status": "pass", "detail": "ok", "duration_s": 2.0, "data": {}}]}


def record_answer(payload: dict[str, Any]) -> dict[str, Any]:
    return {"recorded": payload}


def drive(arm: Arm, request: dict[str, Any], answers: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
          max_episodes: int = 400) -> Run:
    """Replay episodes until the orchestration ends; run the ARM activities for real, fire timers at their time."""
    answers = {"check_restored_server": checks_answer, "record_pitr_validation": record_answer, **(answers or {})}
    run = Run()
    name = "pitr_validation"
    now = T0
    view = InstanceView(f"pitr-acme-{uuid.uuid4().hex[:6]}", name, "e1", json.dumps(request), None, {})
    past: list[str] = []
    pool = [h.execution_started(now, name, view.instance_id, "e1", view.input_text, None)]
    next_id = 0
    for _ in range(max_episodes):
        builder = EpisodeBuilder(view, now)
        builder.deliver([Message(next_id + i, e) for i, e in enumerate(pool)])
        next_id += len(pool)
        pool = []
        outcome = run_orchestrator(FUNCTIONS.orchestrators[name],
                                   context_json(view, past, [h.orchestrator_started(now), *builder.delivered]))
        episode = builder.apply(outcome, set(FUNCTIONS.orchestrators))
        past += [json.dumps({**e, "IsPlayed": True}) for e in episode.new_events]
        view.state = episode.state
        if episode.runtime_status != "Running":
            run.status = episode.runtime_status
            run.result = json.loads(episode.output_text) if episode.output_text else episode.failure_details
            return run
        for work in episode.activities:
            payload = json.loads(work.input_text or "null")
            run.activities.append((work.name, payload))
            if work.name in answers:
                result = answers[work.name](payload)
                if isinstance(result, Exception):
                    pool.append(h.task_failed(now, work.task_id, str(result), ""))
                else:
                    pool.append(h.task_completed(now, work.task_id, json.dumps(result)))
                continue
            try:
                pool.append(h.task_completed(now, work.task_id,
                                             run_activity(FUNCTIONS.activities[work.name], work.name, work.input_text)))
            except ActivityFailure as failure:
                pool.append(h.task_failed(now, work.task_id, failure.reason, failure.details))
        for timer in episode.timers:
            run.timers.append((now, timer.fire_at))
            pool.append(h.timer_fired(timer.fire_at, timer.timer_id, timer.fire_at))
        now = max([now + dt.timedelta(seconds=1), *(t.fire_at for t in episode.timers)])
    raise AssertionError(f"{name} did not finish in {max_episodes} episodes")


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Arm]:
    """Settings, a registry with one flexible-server tenant, and ARM answered at the transport."""
    registry = tmp_path / "tenants.yaml"
    registry.write_text(REGISTRY)
    monkeypatch.setenv("CONTINUITY_TENANTS_FILE", str(registry))
    monkeypatch.setenv("CONTINUITY_PITR_SUBNET_ID", SUBNET)
    # The tenant's server is a public-access one (as infra deploys them): its restore is reached through a private
    # endpoint registered in the privatelink zone.
    monkeypatch.setenv("CONTINUITY_PITR_DNS_ZONE_ID", PRIVATELINK_ZONE)
    monkeypatch.setenv("CONTINUITY_PITR_POLL_SECONDS", "30")
    monkeypatch.setenv("CONTINUITY_PITR_TIMEOUT_MINUTES", "60")

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"time.sleep({seconds}) during an orchestration run: wait on a durable timer")

    def make(**kwargs: Any) -> Arm:
        arm = Arm(target=SERVER, **kwargs)
        fake = FakeTransport(arm)
        arm.requests = fake.requests  # type: ignore[attr-defined]

        def servers(subscription_id: str) -> FlexibleServers:
            assert subscription_id == SUB
            flex = FlexibleServers(StaticCredential(), subscription_id, transport=fake.transport, polling_interval=0)
            flex.client._config.retry_policy.total_retries = 0
            return flex

        monkeypatch.setattr(pitr_service, "flexible_servers", servers)
        monkeypatch.setattr(time, "sleep", no_sleep)
        return arm

    return make


def names(run: Run) -> list[str]:
    return [n for n, _ in run.activities]


def test_restore_is_polled_on_durable_timers_then_checked_deleted_and_recorded(azure: Callable[..., Arm]) -> None:
    arm = azure(in_progress=3)
    run = drive(arm, {"tenant": "acme"})
    assert run.status == "Completed"
    assert names(run) == ["begin_restore_server", *["poll_restore_operation"] * 4,
                          "connect_restored_server", "poll_restore_operation",  # its private endpoint
                          "connect_restored_server", "poll_restore_operation",  # the endpoint's DNS zone group
                          "check_restored_server",
                          "delete_restored_endpoint", "poll_restore_operation",
                          "delete_restored_server", "poll_restore_operation", "record_pitr_validation"]
    # Three InProgress answers (Retry-After 15 s < the 30 s setting) -> three 30-second durable timers.
    assert [(fires - created).total_seconds() for created, fires in run.timers] == [30.0, 30.0, 30.0]
    [put] = arm.put_bodies
    assert put["properties"]["createMode"] == "PointInTimeRestore"
    # A public-access source restores only to public access (disabled), never into a delegated subnet.
    assert put["properties"]["network"] == {"publicNetworkAccess": "Disabled"}
    assert [path.rsplit("/", 1)[-1] for path, _ in arm.endpoint_bodies] == [f"{SERVER}-pe", "default"]
    assert arm.endpoint_bodies[0][1]["properties"]["subnet"] == {"id": SUBNET}
    record = run.result["recorded"]
    assert record["server_name"] == SERVER and record["error"] == ""
    assert record["deletion"] == {"state": "deleted", "endpoint": {"state": "deleted"}}
    assert arm.deleted and arm.endpoint_deleted
    assert record["restore_seconds"] >= 90 and [c["id"] for c in record["checks"]] == ["restore_completed", "ledger"]
    assert dt.datetime.fromisoformat(record["point_in_time"]) <= dt.datetime.now(dt.UTC) - pitr.RESTORE_LAG


def test_failed_restore_deletes_the_half_created_server_and_records_arms_error(azure: Callable[..., Arm]) -> None:
    arm = azure(in_progress=1, final="Failed")
    run = drive(arm, {"tenant": "acme"})
    assert "check_restored_server" not in names(run)
    assert names(run)[-3:] == ["delete_restored_server", "poll_restore_operation", "record_pitr_validation"]
    record = run.result["recorded"]
    assert record["error"] == (f"point-in-time restore of {SERVER} failed: Azure reported the operation Failed: "
                               "ServerRestoreFailed: The point-in-time restore of server failed. Please retry.")
    assert record["checks"] is None and arm.deleted


def test_restore_still_running_at_the_deadline_is_abandoned_deleted_and_recorded(
        azure: Callable[..., Arm], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_PITR_TIMEOUT_MINUTES", "2")
    arm = azure(in_progress=10**6)
    run = drive(arm, {"tenant": "acme"})
    restore_polls = names(run).index("delete_restored_endpoint")  # never made: already gone
    assert names(run)[1:restore_polls] == ["poll_restore_operation"] * 5  # t = 0, 30, 60, 90, 120 s
    assert run.timers[0][1] - run.timers[0][0] == dt.timedelta(seconds=30)
    record = run.result["recorded"]
    assert record["error"].startswith(f"point-in-time restore of {SERVER} timed out: still InProgress after 2 min")
    assert record["deletion"] == {"state": "deleted", "endpoint": {"state": "gone"}}
    assert "check_restored_server" not in names(run) and "connect_restored_server" not in names(run)


def test_refused_restore_request_still_deletes_by_the_orchestrators_name(azure: Callable[..., Arm]) -> None:
    arm = azure(put_status=409, delete="gone")
    run = drive(arm, {"tenant": "acme"})
    assert names(run) == ["begin_restore_server", "delete_restored_server", "record_pitr_validation"]
    record = run.result["recorded"]
    assert "RestoreRefused: Azure refused to restore weu-primary" in record["error"]
    assert "ServerNameAlreadyExists" in record["error"]
    assert record["deletion"] == {"state": "gone"}


def test_without_an_isolated_network_nothing_is_created(azure: Callable[..., Arm],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    arm = azure(exists=False)
    monkeypatch.setenv("CONTINUITY_PITR_SUBNET_ID", "")
    run = drive(arm, {"tenant": "acme"})
    assert arm.put_bodies == []
    assert "SandboxNotIsolated: no isolated subnet" in run.result["recorded"]["error"]
    assert names(run) == ["begin_restore_server", "delete_restored_server", "record_pitr_validation"]
    assert run.result["recorded"]["deletion"] == {"state": "gone"}


def test_vnet_integrated_source_restores_into_the_delegated_subnet_with_no_endpoint(
        azure: Callable[..., Arm], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_PITR_DNS_ZONE_ID", DNS_ZONE)
    arm = azure(source_network=PRIVATE_SOURCE)
    run = drive(arm, {"tenant": "acme"})
    [put] = arm.put_bodies
    assert put["properties"]["network"] == {"delegatedSubnetResourceId": SUBNET,
                                            "privateDnsZoneArmResourceId": DNS_ZONE}
    assert not {"connect_restored_server", "delete_restored_endpoint"} & set(names(run))
    assert run.result["recorded"]["error"] == "" and run.result["recorded"]["deletion"] == {"state": "deleted"}


def test_public_access_source_with_a_delegated_subnet_zone_is_refused_before_any_put(
        azure: Callable[..., Arm], monkeypatch: pytest.MonkeyPatch) -> None:
    # Today's main sent a delegated subnet for a public-access source, which Azure refuses ("You can't perform
    # PITR across public and private access"); now the mismatch is refused here, naming the zone it needs.
    monkeypatch.setenv("CONTINUITY_PITR_DNS_ZONE_ID", DNS_ZONE)
    arm = azure(exists=False)
    run = drive(arm, {"tenant": "acme"})
    assert arm.put_bodies == [] and arm.endpoint_bodies == []
    assert ("the source is a public-access server: Azure restores it only to public access"
            in run.result["recorded"]["error"])
    assert "privatelink.postgres.database.azure.com" in run.result["recorded"]["error"]


def test_endpoint_refused_is_recorded_and_the_restored_server_still_deleted(azure: Callable[..., Arm]) -> None:
    arm = azure(endpoint_status=400)
    run = drive(arm, {"tenant": "acme"})
    record = run.result["recorded"]
    assert "PrivateEndpointCannotBeCreatedInSubnetThatHasNetworkPoliciesEnabled" in record["error"]
    assert "check_restored_server" not in names(run) and arm.deleted
    assert record["deletion"]["state"] == "deleted"


def test_explicit_restore_point_outside_the_window_is_refused_before_any_put(azure: Callable[..., Arm]) -> None:
    arm = azure(exists=False)
    run = drive(arm, {"tenant": "acme", "point_in_time": "2020-01-01T00:00:00+00:00"})
    assert arm.put_bodies == []
    assert "is before the earliest restore point" in run.result["recorded"]["error"]


def test_a_deletion_that_arm_refuses_is_recorded_for_a_manual_delete(azure: Callable[..., Arm]) -> None:
    arm = azure(in_progress=0, delete="refused")
    run = drive(arm, {"tenant": "acme"})
    deletion = run.result["recorded"]["deletion"]
    assert deletion["state"] == "failed" and "az postgres flexible-server delete" in deletion["reason"]
    assert names(run).count("delete_restored_server") == 3  # retried per RetryOptions before giving up


def test_a_local_cluster_tenant_is_refused_by_name(azure: Callable[..., Arm], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "local.yaml"
    local.write_text(REGISTRY.replace(f"""kind: flexible-server
    region: westeurope
    host: weu-primary.postgres.database.azure.com
    resource_id: {SOURCE_ID}""", "kind: local-cluster\n    cluster: primary\n    region: westeurope"))
    monkeypatch.setenv("CONTINUITY_TENANTS_FILE", str(local))
    arm = azure()
    run = drive(arm, {"tenant": "acme"}, answers={"delete_restored_server": lambda p: {"state": "gone"}})
    assert "tenant acme is on a local-cluster server (weu-primary)" in run.result["recorded"]["error"]
    assert arm.put_bodies == []


def test_tenant_validation_hands_a_pitr_request_to_the_pitr_sub_orchestration() -> None:
    from orchestrations.tenant_validation import tenant_validation

    class Context:
        instance_id = "validate-acme-pitr"
        current_utc_datetime = T0
        is_replaying = False

        def get_input(self) -> dict[str, Any]:
            return {"tenant": "acme", "mode": "pitr", "point_in_time": None}

        def call_sub_orchestrator(self, name: str, payload: Any, instance_id: str) -> tuple[str, Any, str]:
            return (name, payload, instance_id)

    gen = tenant_validation.build().get_user_function().orchestrator_function(Context())
    assert next(gen) == ("pitr_validation", {"tenant": "acme", "mode": "pitr", "point_in_time": None},
                         f"pitr-acme-{T0:%Y%m%d%H%M}")
    with pytest.raises(StopIteration) as done:
        gen.send({"outcome": "passed"})
    assert done.value.value == {"outcome": "passed"}
