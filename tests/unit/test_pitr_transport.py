"""Point-in-time restore to a new Flexible Server through the real management SDK, answered at the HTTP
transport with ARM's documented shapes: PUT with createMode PointInTimeRestore → 202 + Azure-AsyncOperation,
one GET per poll (InProgress / Succeeded / Failed with an error body), the final GET of the new server,
DELETE → 202 / 204, and 404 on delete as success; for a public-access source, the restored server's private
endpoint and its DNS zone group (Microsoft.Network PUTs → 201 + Azure-AsyncOperation) and their deletion.
Nothing here reaches Azure."""

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
# A public-access source's restored server is reached through a private endpoint registered in this zone.
PRIVATELINK_ZONE = (f"/subscriptions/{SUB}/resourceGroups/rg-isolated/providers/Microsoft.Network/privateDnsZones/"
                    "privatelink.postgres.database.azure.com")
# A VNet-integrated source's own subnet (production), never the isolated one.
SOURCE_SUBNET = (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/"
                 "vnet-prod/subnets/postgres")
SOURCE_ZONE = (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateDnsZones/"
               "prod.postgres.database.azure.com")
NET_OP = "0c5e1f2a-9b7d-4e3c-8a6f-1d2b3c4e5f60"
NET_ASYNC_URL = (f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.Network/locations/westeurope/"
                 f"operations/{NET_OP}?api-version=2024-05-01")
# properties.network of each source mode as Servers_Get answers it.
PUBLIC_SOURCE = {"publicNetworkAccess": "Disabled"}
PRIVATE_SOURCE = {"publicNetworkAccess": "Disabled", "delegatedSubnetResourceId": SOURCE_SUBNET,
                  "privateDnsZoneArmResourceId": SOURCE_ZONE}
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
            "network": {"publicNetworkAccess": "Disabled"},
            **extra,
        },
    }


class Arm:
    """ARM for one restore: PUT → 202, ``in_progress`` status GETs, then ``final``; DELETE per ``delete``."""

    def __init__(self, in_progress: int = 1, final: str = "Succeeded", put_status: int = 202,
                 delete: str = "accepted", target: str = TARGET,
                 earliest: str = "2026-02-22T03:00:00.1234567+00:00", exists: bool = True,
                 source_network: dict[str, Any] | None = None, endpoint_status: int = 201,
                 network_final: str = "Succeeded") -> None:
        self.source_network = PUBLIC_SOURCE if source_network is None else source_network
        self.endpoint_status = endpoint_status  # the private endpoint PUT's answer
        self.network_final = network_final  # what Microsoft.Network's async operations end in
        self.endpoint_bodies: list[tuple[str, dict[str, Any]]] = []  # (path, body) of every Microsoft.Network PUT
        self.endpoint_exists = False
        self.endpoint_deleted = False
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
            return Reply(200, server_body("weu-primary", earliest=self.earliest, network=self.source_network))
        if "/providers/Microsoft.Network/privateEndpoints/" in path:
            return self.network(request, path)
        if request.method == "GET" and "/providers/Microsoft.Network/locations/" in path:
            return Reply(200, {"status": self.network_final, **({"error": {
                "code": "PrivateEndpointCreationFailed", "message": "Subnet is full."}}
                if self.network_final == "Failed" else {})})
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


    def network(self, request: requests.PreparedRequest, path: str) -> Reply:
        """Microsoft.Network 2024-05-01: PrivateEndpoints_CreateOrUpdate / PrivateDnsZoneGroups_CreateOrUpdate
        (200/201 + Azure-AsyncOperation), PrivateEndpoints_Delete (202 + Azure-AsyncOperation, 204, or 404)."""
        if f"/privateEndpoints/{self.target}-pe" not in path:
            return Reply(404, {"error": {"code": "ResourceNotFound", "message": f"no endpoint at {path}"}})
        async_header = {"Azure-AsyncOperation": NET_ASYNC_URL, "Retry-After": "10"}
        if request.method == "PUT":
            self.endpoint_bodies.append((path, json.loads(request.body or b"{}")))
            if path.endswith("/privateDnsZoneGroups/default"):
                return Reply(201, {"name": "default", "properties": {"provisioningState": "Updating"}}, async_header)
            if self.endpoint_status not in (200, 201):
                return Reply(self.endpoint_status, {"error": {
                    "code": "PrivateEndpointCannotBeCreatedInSubnetThatHasNetworkPoliciesEnabled",
                    "message": "Private endpoint cannot be created in this subnet."}})
            self.endpoint_exists = True
            return Reply(self.endpoint_status, {"name": f"{self.target}-pe",
                                                "properties": {"provisioningState": "Updating"}}, async_header)
        if request.method == "DELETE":
            if not self.endpoint_exists:
                return Reply(204, None)
            self.endpoint_deleted = True
            return Reply(202, None, async_header)
        return Reply(405, {"error": {"code": "MethodNotAllowed", "message": request.method or ""}})


def servers(arm: Arm) -> tuple[FlexibleServers, FakeTransport]:
    fake = FakeTransport(arm)
    flex = FlexibleServers(StaticCredential(), SUB, transport=fake.transport, polling_interval=0)
    flex.client._config.retry_policy.total_retries = 0
    return flex, fake


def begin(flex: FlexibleServers, *, delegated: bool = False) -> Operation:
    """Restore a public-access source (default) or, with ``delegated``, a VNet-integrated one into SUBNET."""
    return flex.begin_restore_server(SOURCE_ID, TARGET, location="westeurope", point_in_time=POINT,
                                     delegated_subnet_id=SUBNET if delegated else None,
                                     dns_zone_id=DNS_ZONE if delegated else None)


def test_source_server_read_for_location_earliest_restore_point_login_and_network_mode() -> None:
    flex, _ = servers(Arm())
    source = flex.get_source_server(SOURCE_ID)
    assert (source.location, source.administrator_login, source.version) == ("West Europe", "continuity", "16")
    assert source.earliest_restore is not None and source.earliest_restore.isoformat().startswith("2026-02-22T03:00")
    assert (source.delegated_subnet_id, source.public_network_access) == (None, "Disabled")
    vnet_source = servers(Arm(source_network=PRIVATE_SOURCE))[0].get_source_server(SOURCE_ID)
    assert vnet_source.delegated_subnet_id == SOURCE_SUBNET


def test_public_access_source_is_restored_to_public_access_disabled_with_no_subnet() -> None:
    # "If your source server is configured with a public access network, you can only restore to public access":
    # the body names no delegated subnet and no private DNS zone (which Azure refuses for such a source).
    arm = Arm()
    flex, fake = servers(arm)
    operation = begin(flex)
    assert operation == Operation(TARGET, ASYNC_URL, 15.0)
    assert arm.put_bodies == [{"location": "westeurope", "properties": {
        "createMode": "PointInTimeRestore", "sourceServerResourceId": SOURCE_ID,
        "pointInTimeUTC": "2026-03-01T02:55:00Z", "network": {"publicNetworkAccess": "Disabled"}}}]
    assert len(fake.requests) == 1, "begin must not poll: the orchestrator does, on durable timers"


def test_vnet_integrated_source_is_restored_into_the_isolated_delegated_subnet() -> None:
    # Network.publicNetworkAccess "is only supported for servers that are not integrated into a virtual network":
    # a delegated-subnet restore does not send it.
    arm = Arm(source_network=PRIVATE_SOURCE)
    flex, fake = servers(arm)
    operation = begin(flex, delegated=True)
    assert operation == Operation(TARGET, ASYNC_URL, 15.0)
    assert arm.put_bodies == [{"location": "westeurope", "properties": {
        "createMode": "PointInTimeRestore", "sourceServerResourceId": SOURCE_ID,
        "pointInTimeUTC": "2026-03-01T02:55:00Z",
        "network": {"delegatedSubnetResourceId": SUBNET, "privateDnsZoneArmResourceId": DNS_ZONE}}}]
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


TARGET_ID = SOURCE_ID.replace("weu-primary", TARGET)
ENDPOINT_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/privateEndpoints/{TARGET}-pe"


def test_private_endpoint_of_the_restored_server_is_put_in_the_isolated_subnet_then_polled() -> None:
    arm = Arm()
    flex, fake = servers(arm)
    operation = flex.begin_create_private_endpoint(RG, f"{TARGET}-pe", server_resource_id=TARGET_ID,
                                                   location="westeurope", subnet_id=SUBNET)
    assert operation == Operation(f"{TARGET}-pe", NET_ASYNC_URL, 10.0)
    [(path, body)] = arm.endpoint_bodies
    assert path == ENDPOINT_PATH and "api-version=2024-05-01" in (fake.requests[0].url or "")
    assert body == {"location": "westeurope", "properties": {
        "subnet": {"id": SUBNET},
        "privateLinkServiceConnections": [{"name": f"{TARGET}-pe", "properties": {
            "privateLinkServiceId": TARGET_ID, "groupIds": ["postgresqlServer"]}}]}}
    assert fake.requests[0].headers["Authorization"] == "Bearer test-token"
    assert flex.get_operation_status(operation).status == "Succeeded"


def test_private_endpoint_is_registered_in_the_privatelink_zone() -> None:
    arm = Arm()
    flex, _ = servers(arm)
    operation = flex.begin_register_endpoint_dns(RG, f"{TARGET}-pe", dns_zone_id=PRIVATELINK_ZONE)
    assert operation is not None and operation.status_url == NET_ASYNC_URL
    [(path, body)] = arm.endpoint_bodies
    assert path == f"{ENDPOINT_PATH}/privateDnsZoneGroups/default"
    assert body == {"properties": {"privateDnsZoneConfigs": [{
        "name": "privatelink-postgres-database-azure-com", "properties": {"privateDnsZoneId": PRIVATELINK_ZONE}}]}}


def test_refused_private_endpoint_raises_restore_refused_with_arms_code() -> None:
    flex, _ = servers(Arm(endpoint_status=400))
    with pytest.raises(RestoreRefused, match=f"to create private endpoint {TARGET}-pe: HTTP 400 "
                                             "PrivateEndpointCannotBeCreatedInSubnetThatHasNetworkPoliciesEnabled"):
        flex.begin_create_private_endpoint(RG, f"{TARGET}-pe", server_resource_id=TARGET_ID, location="westeurope",
                                           subnet_id=SUBNET)


def test_private_endpoint_deletion_is_polled_and_one_never_made_is_already_gone() -> None:
    arm = Arm()
    flex, _ = servers(arm)
    assert flex.delete_private_endpoint(RG, f"{TARGET}-pe") is None  # never created: 204
    flex.begin_create_private_endpoint(RG, f"{TARGET}-pe", server_resource_id=TARGET_ID, location="westeurope",
                                       subnet_id=SUBNET)
    operation = flex.delete_private_endpoint(RG, f"{TARGET}-pe")
    assert operation is not None and operation.status_url == NET_ASYNC_URL and arm.endpoint_deleted


def test_endpoint_calls_refuse_a_name_that_is_not_a_restored_servers_endpoint() -> None:
    flex, fake = servers(Arm())
    with pytest.raises(InvalidRequest, match="is not a restored server's endpoint name"):
        flex.delete_private_endpoint(RG, "../weu-primary")
    assert fake.requests == []
