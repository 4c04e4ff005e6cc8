"""Replica promotion on Flexible Server through the real management SDK, answered at the HTTP transport with
ARM's documented shapes: 202 + Azure-AsyncOperation, async-operation polling, final GET, failure, timeout."""

from __future__ import annotations

import json
import threading
from urllib.parse import urlparse

import pytest
import requests

from continuity.adapters.azure.flexible_server import (
    FlexibleServers,
    PromotionFailed,
    PromotionTimedOut,
    ServerRef,
)
from continuity.kernel.errors import InvalidRequest, ServerUnavailable
from tests.azure_transport import FakeTransport, Reply, StaticCredential

SUB = "00000000-1111-2222-3333-444444444444"
RID = (f"/subscriptions/{SUB}/resourceGroups/rg-continuity/providers/Microsoft.DBforPostgreSQL/flexibleServers/"
       "neu-replica")
OP = "4c3a2c16-8d2a-4c1e-9d0b-0f5d6b7a8e9f"
ASYNC_URL = (f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/"
             f"northeurope/azureAsyncOperation/{OP}?api-version=2026-10-01")
LOCATION_URL = (f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/"
                f"northeurope/operationResults/{OP}?api-version=2026-10-01")


def server_body(role: str, replication_state: str | None, state: str = "Ready") -> dict:
    return {
        "id": RID, "name": "neu-replica", "type": "Microsoft.DBforPostgreSQL/flexibleServers",
        "location": "North Europe",
        "sku": {"name": "Standard_D2ds_v5", "tier": "GeneralPurpose"},
        "properties": {
            "administratorLogin": "continuity", "version": "16", "state": state,
            "fullyQualifiedDomainName": "neu-replica.postgres.database.azure.com",
            "storage": {"storageSizeGB": 128, "autoGrow": "Disabled", "tier": "P10"},
            "replica": {"role": role, "capacity": 5, "replicationState": replication_state},
            "sourceServerResourceId": None if role == "None" else RID.replace("neu-replica", "weu-primary"),
        },
    }


class Arm:
    """ARM for one replica promotion: PATCH → 202, then ``in_progress`` polls, then the final status."""

    def __init__(self, in_progress: int = 2, final: str = "Succeeded", patch_status: int = 202) -> None:
        self.in_progress = in_progress
        self.final = final
        self.patch_status = patch_status
        self.polls = 0
        self.patch_bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, request: requests.PreparedRequest) -> Reply:
        path = urlparse(request.url).path
        if request.method == "PATCH" and path.endswith("/flexibleServers/neu-replica"):
            self.patch_bodies.append(json.loads(request.body or b"{}"))
            if self.patch_status != 202:
                return Reply(self.patch_status, {"error": {
                    "code": "OperationNotAllowed",
                    "message": "Operation 'Update' is not allowed while the server is in 'Updating' state."}})
            return Reply(202, None, {"Azure-AsyncOperation": ASYNC_URL, "Location": LOCATION_URL,
                                     "Retry-After": "0"})
        if request.method == "GET" and "/azureAsyncOperation/" in path:
            with self.lock:
                self.polls += 1
                polls = self.polls
            body: dict = {"name": OP, "startTime": "2026-03-01T03:00:00.000Z"}
            if polls <= self.in_progress:
                return Reply(200, {**body, "status": "InProgress"}, {"Retry-After": "0"})
            if self.final == "Failed":
                return Reply(200, {**body, "status": "Failed", "endTime": "2026-03-01T03:00:09.000Z",
                                   "error": {"code": "InternalServerError",
                                             "message": "An unexpected error occured while processing the request."}})
            return Reply(200, {**body, "status": self.final, "endTime": "2026-03-01T03:00:09.000Z"})
        if request.method == "GET" and path.endswith("/flexibleServers/neu-replica"):
            if self.polls > self.in_progress and self.final == "Succeeded":
                return Reply(200, server_body("None", None))
            return Reply(200, server_body("AsyncReplica", "Active"))
        return Reply(404, {"error": {"code": "ResourceNotFound", "message": f"no route for {request.method} {path}"}})


def servers(arm: Arm) -> tuple[FlexibleServers, FakeTransport, StaticCredential]:
    fake = FakeTransport(arm)
    credential = StaticCredential()
    return FlexibleServers(credential, SUB, transport=fake.transport, polling_interval=0), fake, credential


def test_promote_patches_replica_standalone_planned_and_polls_async_operation_to_success() -> None:
    arm = Arm(in_progress=2)
    flex, fake, credential = servers(arm)
    result = flex.promote_replica(RID, timeout=30)
    assert result == {"server": "neu-replica", "role": "None", "state": "Ready", "forced": False}
    assert arm.patch_bodies == [{"properties": {"replica": {"promoteMode": "Standalone", "promoteOption": "Planned"}}}]
    methods = [(r.method, urlparse(r.url).path.rsplit("/", 2)[-2]) for r in fake.requests]
    assert methods[0] == ("PATCH", "flexibleServers")
    assert [m for m in methods if m[1] == "azureAsyncOperation"] == [("GET", "azureAsyncOperation")] * 3
    assert methods[-1] == ("GET", "flexibleServers")  # ARM's final GET of the patched resource
    patch = fake.requests[0]
    assert "api-version=2026-10-01" in (patch.url or "")
    assert patch.headers["Authorization"] == "Bearer test-token"
    assert credential.scopes[0] == ("https://management.azure.com/.default",)


def test_forced_promotion_sends_forced_option() -> None:
    arm = Arm(in_progress=0)
    flex, _, _ = servers(arm)
    assert flex.promote_replica(RID, forced=True)["forced"] is True
    assert arm.patch_bodies[0]["properties"]["replica"]["promoteOption"] == "Forced"


def test_begin_promote_replica_returns_a_poller() -> None:
    flex, _, _ = servers(Arm(in_progress=1))
    poller = flex.begin_promote_replica(RID)
    server = poller.result(timeout=30)
    assert poller.done() and server.properties.replica.role == "None"


def test_failed_async_operation_raises_promotion_failed_with_arm_error() -> None:
    flex, _, _ = servers(Arm(in_progress=1, final="Failed"))
    with pytest.raises(PromotionFailed, match="promotion of neu-replica failed"):
        flex.promote_replica(RID, timeout=30)


def test_refused_patch_raises_promotion_failed_with_arm_code() -> None:
    flex, _, _ = servers(Arm(patch_status=409))
    with pytest.raises(PromotionFailed, match="Azure refused to promote neu-replica: OperationNotAllowed"):
        flex.promote_replica(RID, timeout=30)


def test_promotion_still_running_at_deadline_times_out_with_continuation_token() -> None:
    arm = Arm(in_progress=10**6)
    flex, _, _ = servers(arm)
    flex.client._config.polling_interval = 0.05
    with pytest.raises(PromotionTimedOut) as err:
        flex.promote_replica(RID, timeout=0.5)
    assert err.value.continuation_token
    assert "still running after 0 s" in str(err.value) or "still running after 1 s" in str(err.value)
    arm.in_progress = 0  # let the SDK's background poller finish
    resumed = flex.promote_replica(RID, timeout=30, continuation_token=err.value.continuation_token)
    assert resumed["role"] == "None"
    assert len(arm.patch_bodies) == 1, "resuming must not promote twice"


def test_replica_state_read_from_server() -> None:
    flex, _, _ = servers(Arm())
    state = flex.get_replica_state(RID)
    assert state.is_replica and state.replication_state == "Active" and state.state == "Ready"


def test_unreachable_arm_raises_server_unavailable() -> None:
    def down(request: requests.PreparedRequest) -> Reply:
        raise requests.ConnectionError("connection refused")

    fake = FakeTransport(down)
    flex = FlexibleServers(StaticCredential(), SUB, transport=fake.transport, polling_interval=0)
    flex.client._config.retry_policy.total_retries = 0
    with pytest.raises(ServerUnavailable, match="cannot read Flexible Server neu-replica"):
        flex.get_replica_state(RID)


def test_malformed_resource_id_refused_before_any_request() -> None:
    flex, fake, _ = servers(Arm())
    with pytest.raises(InvalidRequest, match="is not a Flexible Server resource id"):
        flex.begin_promote_replica("/subscriptions/x/neu-replica")
    assert fake.requests == []
    assert ServerRef.parse(RID).resource_group == "rg-continuity"
