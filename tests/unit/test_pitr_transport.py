"""Point-in-time restore to a new Flexible Server through the real management SDK, answered at the HTTP
transport with ARM's documented shapes: PUT with createMode PointInTimeRestore → 202 + Azure-AsyncOperation,
one GET per poll (InProgress / Succeeded / Failed with an error body), the final GET of the new server,
DELETE → 202 / 204, and 404 on delete as success. Nothing here reaches Azure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

from continuity.adapters.azure.flexible_server import (
    FlexibleServers,
    Operation,
    RestoreRefused,
)
from continuity.kernel.errors import InvalidRequest, ServerUnavailable
from tests.azure_transport import FakeTransport, Reply, StaticCredential

SUB = "00000000-1111-2222-3333-444444444444"
RG = "rg-tenants"
SOURCE_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/flexibleServers/weu-primary"
TARGET = "pitr-acme-202603010300"
SUBNET = (f"/subscriptions/{SUB}/resourceGroups/rg-isolated/providers/Microsoft.Network/virtualNetworks/"
          "vnet-restore/subnets/pitr")
DNS_ZONE = (f"/subscriptions/{SUB}/resourceGroups/rg-isolated/providers/Microsoft.Network/privateDnsZones/"
            "restore.postgres.database.azure.com")
OP = "7b2f0b1e-1c5a-4a5e-8a0e-3a1f9f6c2d11"
ASYNC_URL = (f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/"
             f"westeurope/azureAsyncOperation/{OP}?api-version=2026-10-01")
LOCATION_URL = (f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/"
                f"westeurope/operationResults/{OP}?api-version=2026-10-01")
POINT = datetime(2026, 3, 1, 2, 55, tzinfo=UTC)


def server_body(name: str, state: str = "Ready", earliest: str = "2026-02-22T03:00:00.1234567+00:00",
                **extra: Any) -> dict[str, Any]:
    return {
        "id": SOURCE_ID.replace("weu-primary", name), "name": name,
        "type": "Microsoft.DBforPostgreSQL/flexibleServers", "location": "West Europe",
        "sku": {"name": "Standard_D2ds_v5", "tier": "GeneralPurpose"},
        "properties": {
            "administratorLogin": "continuity", "version": "16", "state": state,
            "fullyQualifiedDomainName": f"{name}.restore.postgres.database.azure.com",
            "storage": {"storageSizeGB": 128, "autoGrow": "Disabled", "tier": "P10"},
            "backup": {"backupRetentionDays": 7, "geoRedundantBackup": "Disabled",
                       "earliestRestoreDate": earliest},
            "network": {"publicNetworkAccess": "Disabled", "delegatedSubnetResourceId": SUBNET,
                        "privateDnsZoneArmResourceId": DNS_ZONE},
            **extra,
        },
    }


class Arm:
    """ARM for one restore: PUT → 202, ``in_progress`` status GETs, then ``final``; DELETE per ``delete``."""

    def __init__(self, in_progress: int = 1, final: str = "Succeeded", put_status: int = 202,
                 delete: str = "accepted", target: str = TARGET,
                 earliest: str = "2026-02-22T03:00:00.1234567+00:00", exists: bool = True) -> None:
        self.target = target
        self.exists = exists  # False: no server until a PUT is accepted (a DELETE before then is a 404)
        self.earliest = earliest
        self.in_progress = in_progress
        self.final = final
        self.put_status = put_status
        self.delete = delete
        self.polls = 0
        self.put_bodies: list[dict[str, Any]] = []
        self.deleted = False

    def __call__(self, request: requests.PreparedRequest) -> Reply:
        path = urlparse(request.url).path
        if request.method == "GET" and path.endswith("/flexibleServers/weu-primary"):
            return Reply(200, server_body("weu-primary", earliest=self.earliest))
        if request.method == "PUT" and path.endswith(f"/flexibleServers/{self.target}"):
            self.put_bodies.append(json.loads(request.body or b"{}"))
            if self.put_status in (200, 201):  # the spec's other success answers (Servers_Create: 200, 201, 202)
                self.exists = True
                return Reply(self.put_status, server_body(self.target, state="Provisioning"),
                             {"Azure-AsyncOperation": ASYNC_URL, "Retry-After": "15"})
            if self.put_status != 202:
                taken = f"Specified server name '{self.target}' is already used."
                return Reply(self.put_status, {"error": {"code": "ServerNameAlreadyExists", "message": taken}})
            self.exists = True
            return Reply(202, None, {"Azure-AsyncOperation": ASYNC_URL, "Location": LOCATION_URL, "Retry-After": "15"})
        if request.method == "GET" and "/azureAsyncOperation/del-" in path:  # the deletion's operation
            return Reply(200, {"name": path.rsplit("/", 1)[-1], "status": "Succeeded"})
        if request.method == "GET" and "/azureAsyncOperation/" in path:
            self.polls += 1
            body: dict[str, Any] = {"name": OP, "startTime": "2026-03-01T03:00:00.000Z"}
            if self.polls <= self.in_progress:
                return Reply(200, {**body, "status": "InProgress"}, {"Retry-After": "15"})
            if self.final == "Failed":
                return Reply(200, {**body, "status": "Failed", "endTime": "2026-03-01T03:20:00.000Z",
                                   "error": {"code": "ServerRestoreFailed",
                                             "message": "The point-in-time restore of server failed. Please retry."}})
            return Reply(200, {**body, "status": self.final, "endTime": "2026-03-01T03:20:00.000Z"})
        if request.method == "GET" and path.endswith(f"/flexibleServers/{self.target}"):
            if self.deleted:
                return Reply(404, {"error": {"code": "ResourceNotFound", "message": "not found"}})
            return Reply(200, server_body(self.target))
        if request.method == "DELETE" and path.endswith(f"/flexibleServers/{self.target}"):
            if self.delete == "gone" or not self.exists:
                missing = f"The Resource '.../flexibleServers/{self.target}' was not found."
                return Reply(404, {"error": {"code": "ResourceNotFound", "message": missing}})
            if self.delete == "refused":
                return Reply(409, {"error": {"code": "ServerBusy", "message": "Another operation is in progress."}})
            self.deleted = True
            if self.delete == "done":
                return Reply(204, None)
            return Reply(202, None, {"Azure-AsyncOperation": ASYNC_URL.replace(OP, "del-" + OP[4:]),
                                     "Location": LOCATION_URL})
        return Reply(404, {"error": {"code": "ResourceNotFound", "message": f"no route for {request.method} {path}"}})


def servers(arm: Arm) -> tuple[FlexibleServers, FakeTransport]:
    fake = FakeTransport(arm)
    flex = FlexibleServers(StaticCredential(), SUB, transport=fake.transport, polling_interval=0)
    flex.client._config.retry_policy.total_retries = 0
    return flex, fake


def begin(flex: FlexibleServers) -> Operation:
    return flex.begin_restore_server(SOURCE_ID, TARGET, location="westeurope", point_in_time=POINT,
                                     subnet_id=SUBNET, dns_zone_id=DNS_ZONE)


def test_source_server_read_for_location_earliest_restore_point_and_login() -> None:
    flex, _ = servers(Arm())
    source = flex.get_source_server(SOURCE_ID)
    assert (source.location, source.administrator_login, source.version) == ("West Europe", "continuity", "16")
    assert source.earliest_restore is not None and source.earliest_restore.isoformat().startswith("2026-02-22T03:00")


def test_restore_puts_point_in_time_restore_into_the_isolated_network_and_returns_the_async_operation() -> None:
    arm = Arm()
    flex, fake = servers(arm)
    operation = begin(flex)
    assert operation == Operation(TARGET, ASYNC_URL, 15.0)
    assert arm.put_bodies == [{"location": "westeurope", "properties": {
        "createMode": "PointInTimeRestore", "sourceServerResourceId": SOURCE_ID,
        "pointInTimeUTC": "2026-03-01T02:55:00Z",
        "network": {"publicNetworkAccess": "Disabled", "delegatedSubnetResourceId": SUBNET,
                    "privateDnsZoneArmResourceId": DNS_ZONE}}}]
    put = fake.requests[0]
    assert put.method == "PUT" and "api-version=2026-10-01" in (put.url or "")
    assert urlparse(put.url).path.endswith(f"/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/"
                                           f"flexibleServers/{TARGET}")
    assert len(fake.requests) == 1, "begin must not poll: the orchestrator does, on durable timers"
    assert json.dumps(operation.to_json()) and Operation.from_json(operation.to_json()) == operation


def test_each_poll_is_one_get_of_the_async_operation_until_succeeded_then_the_server_is_read() -> None:
    arm = Arm(in_progress=2)
    flex, fake = servers(arm)
    operation = begin(flex)
    seen = [flex.get_operation_status(operation) for _ in range(3)]
    assert [s.status for s in seen] == ["InProgress", "InProgress", "Succeeded"]
    assert seen[0].retry_after_s == 15.0
    assert [r.method for r in fake.requests] == ["PUT", "GET", "GET", "GET"]
    assert all(r.headers["Authorization"] == "Bearer test-token" for r in fake.requests)
    restored = flex.get_restored_server(RG, TARGET)
    assert restored.to_json() == {"name": TARGET, "state": "Ready",
                                  "fqdn": f"{TARGET}.restore.postgres.database.azure.com",
                                  "administrator_login": "continuity", "storage_gb": 128}


def test_failed_operation_carries_arms_error_code_and_message() -> None:
    flex, _ = servers(Arm(in_progress=0, final="Failed"))
    status = flex.get_operation_status(begin(flex))
    assert status.status == "Failed"
    assert status.error == "ServerRestoreFailed: The point-in-time restore of server failed. Please retry."


def test_location_url_answering_202_is_still_in_progress() -> None:
    def arm(request: requests.PreparedRequest) -> Reply:
        return Reply(202, None, {"Location": LOCATION_URL, "Retry-After": "30"})

    fake = FakeTransport(arm)
    flex = FlexibleServers(StaticCredential(), SUB, transport=fake.transport)
    status = flex.get_operation_status(Operation(TARGET, LOCATION_URL))
    assert (status.status, status.retry_after_s) == ("InProgress", 30.0)


@pytest.mark.parametrize("status", [200, 201])
def test_restore_accepted_with_the_specs_other_success_codes_is_polled_not_refused(status: int) -> None:
    # Microsoft.DBforPostgreSQL REST spec, Servers_Create: 200, 201 and 202 are all success; SDK 3.0.0 accepts
    # only 202 and raised on the others, so an accepted restore was reported as refused.
    flex, _ = servers(Arm(put_status=status))
    assert begin(flex) == Operation(TARGET, ASYNC_URL, 15.0)


def test_refused_put_raises_restore_refused_with_arm_code() -> None:
    flex, _ = servers(Arm(put_status=409))
    with pytest.raises(RestoreRefused, match=f"Azure refused to restore weu-primary to {TARGET} at "
                                             "2026-03-01T02:55:00\\+00:00: ServerNameAlreadyExists"):
        begin(flex)


def test_status_url_off_the_arm_endpoint_is_refused_before_any_request() -> None:
    flex, fake = servers(Arm())
    with pytest.raises(InvalidRequest, match="is not on https://management.azure.com"):
        flex.get_operation_status(Operation(TARGET, "https://attacker.example/op?x=1"))
    assert fake.requests == []


def test_unreachable_arm_while_polling_raises_server_unavailable() -> None:
    def down(request: requests.PreparedRequest) -> Reply:
        raise requests.ConnectionError("connection refused")

    fake = FakeTransport(down)
    flex = FlexibleServers(StaticCredential(), SUB, transport=fake.transport)
    flex.client._config.retry_policy.total_retries = 0
    with pytest.raises(ServerUnavailable, match=f"cannot read the operation on {TARGET}"):
        flex.get_operation_status(Operation(TARGET, ASYNC_URL))


def test_delete_accepted_returns_the_deletion_to_poll() -> None:
    arm = Arm(delete="accepted")
    flex, fake = servers(arm)
    operation = flex.delete_server(RG, TARGET)
    assert operation is not None and "/azureAsyncOperation/del-" in operation.status_url
    assert fake.requests[-1].method == "DELETE" and len(fake.requests) == 1


def test_delete_answered_204_needs_no_polling() -> None:
    flex, _ = servers(Arm(delete="done"))
    assert flex.delete_server(RG, TARGET) is None


def test_delete_of_a_server_already_gone_succeeds() -> None:
    flex, fake = servers(Arm(delete="gone"))
    assert flex.delete_server(RG, TARGET) is None
    assert [r.method for r in fake.requests] == ["DELETE"]


def test_delete_refused_raises_server_unavailable_naming_the_manual_command() -> None:
    flex, _ = servers(Arm(delete="refused"))
    with pytest.raises(ServerUnavailable, match=f"Azure refused to delete {TARGET}: ServerBusy.*az postgres "
                                                f"flexible-server delete -g {RG} -n {TARGET}"):
        flex.delete_server(RG, TARGET)


def test_delete_refuses_a_name_that_is_not_a_server_name() -> None:
    flex, fake = servers(Arm())
    with pytest.raises(InvalidRequest, match="is not a Flexible Server name"):
        flex.delete_server(RG, "../weu-primary")
    assert fake.requests == []
