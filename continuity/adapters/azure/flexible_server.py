"""Azure Database for PostgreSQL Flexible Server through the management SDK: promote a read replica.

Which SDK: ``azure-mgmt-postgresqlflexibleservers`` 3.0.0, not ``azure-mgmt-rdbms`` 10.1.1. The rdbms
package's ``postgresql_flexibleservers`` module is pinned to api-version 2021-06-01, which predates read
replicas on Flexible Server: its ``Server`` model has no ``replica`` property and there is no promote
operation at all. The dedicated package (api-version 2026-10-01 in 3.0.0) promotes a replica through
``servers.begin_update`` with ``ServerForPatch(properties=ServerPropertiesForPatch(replica=Replica(
promote_mode="Standalone", promote_option="Planned" | "Forced")))`` — there is no separate promote
operation; the PATCH is answered ``202 Accepted`` with ``Azure-AsyncOperation`` and ``Location``
headers and completes through ARM's async-operation polling, then a final GET of the server.

``promote_option``: ``Planned`` waits until the replica has all data of its source (our read-only fence
plus catch-up, done by Azure), ``Forced`` promotes at once (the source is down: committed data that had
not reached the replica is lost). Every call is bounded: the poller is given a deadline, and a promotion
still running at the deadline is reported with its continuation token so a retried activity resumes
polling instead of promoting twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.transport import HttpTransport
from azure.core.polling import LROPoller
from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient
from azure.mgmt.postgresqlflexibleservers.models import (
    Replica,
    Server,
    ServerForPatch,
    ServerPropertiesForPatch,
)

from continuity.kernel.errors import ContinuityError, InvalidRequest, ServerUnavailable

logger = logging.getLogger(__name__)

RESOURCE_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-fA-F-]{36})/resourceGroups/(?P<rg>[-\w._()]{1,90})"
    r"/providers/Microsoft\.DBforPostgreSQL/flexibleServers/(?P<name>[a-z0-9][a-z0-9-]{1,61}[a-z0-9])$",
    re.IGNORECASE)


class PromotionFailed(ContinuityError):
    code = "promotion_failed"
    http_status = 502


class PromotionTimedOut(ContinuityError):
    code = "promotion_timed_out"
    http_status = 504

    def __init__(self, message: str, continuation_token: str) -> None:
        super().__init__(message)
        self.continuation_token = continuation_token


@dataclass(frozen=True)
class ServerRef:
    subscription_id: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, resource_id: str) -> ServerRef:
        """:raises InvalidRequest: not a Flexible Server resource id."""
        match = RESOURCE_ID_RE.match(resource_id or "")
        if not match:
            raise InvalidRequest(f"{resource_id[:200]!r} is not a Flexible Server resource id "
                                 "(/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.DBforPostgreSQL/"
                                 "flexibleServers/<name>)")
        return cls(match["sub"], match["rg"], match["name"])


@dataclass(frozen=True)
class ReplicaState:
    name: str
    role: str | None
    replication_state: str | None
    state: str | None

    @property
    def is_replica(self) -> bool:
        return (self.role or "").lower() in ("asyncreplica", "geoasyncreplica")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "replication_state": self.replication_state,
                "state": self.state}


def _text(value: Any) -> str | None:
    """An SDK enum or string as the service spells it (``Ready``, not ``ServerState.READY``)."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _describe(exc: AzureError) -> str:
    if isinstance(exc, HttpResponseError) and exc.error is not None:
        return f"{exc.error.code}: {exc.error.message}"
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


# ---- point-in-time restore to a new server (restore validation's Azure path) ------------------------
#
# Not run against real Azure from this repository: proven at the HTTP transport level with ARM's
# documented shapes (tests/unit/test_pitr_transport.py). The long-running operation is *not* waited on
# here: begin returns ARM's async-operation URL, and the orchestrator polls it one GET per activity,
# waiting between GETs on durable timers, so no activity sleeps and a host restart loses nothing.


class RestoreRefused(ContinuityError):
    """ARM refused to start the point-in-time restore (quota, name taken, bad network, no permission)."""

    code = "pitr_restore_refused"
    http_status = 502


@dataclass(frozen=True)
class SourceServer:
    """What a point-in-time restore needs to know about the source server."""

    name: str
    location: str
    earliest_restore: datetime | None
    administrator_login: str | None
    version: str | None
    # Its network mode as ARM reports it (``properties.network``): a delegated subnet means private access
    # (VNet-integrated); none means public access (reached, here, through private endpoints).
    delegated_subnet_id: str | None = None
    public_network_access: str | None = None


@dataclass(frozen=True)
class Operation:
    """An ARM long-running operation as the orchestrator keeps it (JSON-small)."""

    server_name: str
    status_url: str  # Azure-AsyncOperation, else Location
    retry_after_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"server_name": self.server_name, "status_url": self.status_url, "retry_after_s": self.retry_after_s}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Operation:
        return cls(str(raw["server_name"]), str(raw["status_url"]), raw.get("retry_after_s"))


@dataclass(frozen=True)
class OperationStatus:
    """One GET of an async operation: ARM's ``status`` and, when it failed, its error code and message."""

    status: str
    error: str = ""
    retry_after_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "error": self.error, "retry_after_s": self.retry_after_s}


@dataclass(frozen=True)
class RestoredServer:
    name: str
    state: str | None
    fqdn: str | None
    administrator_login: str | None
    storage_gb: int | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "fqdn": self.fqdn,
                "administrator_login": self.administrator_login, "storage_gb": self.storage_gb}


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return float(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None  # an HTTP-date Retry-After: our own poll interval applies


class _Initial:
    """Captures the initial response of an LRO (``raw_response_hook``) so its polling URL can be kept.

    The hook runs inside the retry policy, once per attempt: the last call is the response the SDK used."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}

    def __call__(self, response: Any) -> None:
        self.status = response.http_response.status_code
        self.headers = dict(response.http_response.headers)

    def operation(self, server_name: str) -> Operation | None:
        url = self.headers.get("Azure-AsyncOperation") or self.headers.get("azure-asyncoperation") \
            or self.headers.get("Location") or self.headers.get("location")
        return Operation(server_name, url, _retry_after(self.headers)) if url else None


def _restore_body(location: str, source_resource_id: str, point_in_time: datetime,
                  delegated_subnet_id: str | None, dns_zone_id: str | None) -> Any:
    """The Servers_Create body of a point-in-time restore, in the source's network mode.

    Public-access source (no delegated subnet): only ``publicNetworkAccess: Disabled``. Azure restores such a
    source only to public access (see :class:`continuity.validation.pitr.NetworkMode`); Azure's own CLI sends
    the source's ``network`` unchanged for it (Azure/azure-cli, src/azure-cli/azure/cli/command_modules/
    postgresql/commands/custom_commands.py @ 03ee58cefb54a92fd1afb01aa5bdca6a98f766a4, flexible_server_restore:
    ``parameters.network = source_server_object.network``), which for our primaries is exactly this.
    VNet-integrated source: the isolated delegated subnet and its private DNS zone, and no publicNetworkAccess
    (REST spec 2026-10-01, Network.publicNetworkAccess: "only supported for servers that are not integrated into
    a virtual network").
    """
    from azure.mgmt.postgresqlflexibleservers.models import Network, ServerProperties

    network = (Network(delegated_subnet_resource_id=delegated_subnet_id, private_dns_zone_arm_resource_id=dns_zone_id)
               if delegated_subnet_id else Network(public_network_access="Disabled"))
    return Server(location=location, properties=ServerProperties(
        create_mode="PointInTimeRestore", source_server_resource_id=source_resource_id,
        point_in_time_utc=point_in_time, network=network))


# Microsoft.Network REST API version of the private endpoint calls (the same as infra/modules/private-endpoint.bicep).
NETWORK_API_VERSION = "2024-05-01"
# Flexible Server's private-link sub-resource (group id) and the zone its endpoints register in.
POSTGRES_GROUP_ID = "postgresqlServer"


SERVER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class FlexibleServers:
    """Flexible Server management operations this product needs, each bounded by a timeout."""

    def __init__(self, credential: TokenCredential, subscription_id: str, *, transport: HttpTransport | None = None,
                 base_url: str | None = None, polling_interval: float = 10.0) -> None:
        kwargs: dict[str, Any] = {"polling_interval": polling_interval, "retry_total": 3,
                                  "connection_timeout": 10, "read_timeout": 60}
        if transport is not None:
            kwargs["transport"] = transport
        if base_url is not None:
            kwargs["base_url"] = base_url
        self.client = PostgreSQLManagementClient(credential, subscription_id, **kwargs)

    @classmethod
    def with_managed_identity(cls, subscription_id: str) -> FlexibleServers:
        """The client as the Function App runs it: its managed identity (DefaultAzureCredential)."""
        from azure.identity import DefaultAzureCredential

        return cls(DefaultAzureCredential(), subscription_id)

    def get_replica_state(self, resource_id: str) -> ReplicaState:
        """The server's replication role and state.

        :raises ServerUnavailable: ARM did not answer or refused.
        """
        ref = ServerRef.parse(resource_id)
        try:
            server: Server = self.client.servers.get(ref.resource_group, ref.name)
        except AzureError as exc:
            raise ServerUnavailable(f"cannot read Flexible Server {ref.name}: {_describe(exc)}") from exc
        props = server.properties
        replica = props.replica if props else None
        return ReplicaState(name=ref.name, role=_text(replica.role) if replica else None,
                            replication_state=_text(replica.replication_state) if replica else None,
                            state=_text(props.state) if props else None)

    def begin_promote_replica(self, resource_id: str, *, forced: bool = False,
                              continuation_token: str | None = None) -> LROPoller[Server]:
        """Start promoting a read replica to a standalone server; returns the poller.

        :param forced: promote without waiting for the replica to catch up (the source is down).
        :param continuation_token: resume polling a promotion started earlier instead of starting another.
        :raises PromotionFailed: ARM refused to start the operation.
        """
        ref = ServerRef.parse(resource_id)
        patch = ServerForPatch(properties=ServerPropertiesForPatch(
            replica=Replica(promote_mode="Standalone", promote_option="Forced" if forced else "Planned")))
        try:
            if continuation_token:
                return self.client.servers.begin_update(ref.resource_group, ref.name, patch,
                                                        continuation_token=continuation_token)
            return self.client.servers.begin_update(ref.resource_group, ref.name, patch)
        except AzureError as exc:
            raise PromotionFailed(f"Azure refused to promote {ref.name}: {_describe(exc)}") from exc

    def promote_replica(self, resource_id: str, *, forced: bool = False, timeout: float = 900.0,
                        continuation_token: str | None = None) -> dict[str, Any]:
        """Promote and wait at most ``timeout`` seconds.

        :raises PromotionFailed: the operation ended in Failed/Canceled (ARM's error code and message).
        :raises PromotionTimedOut: still running at the deadline; carries the continuation token.
        """
        poller = self.begin_promote_replica(resource_id, forced=forced, continuation_token=continuation_token)
        name = ServerRef.parse(resource_id).name
        try:
            poller.wait(timeout)
            if not poller.done():
                raise PromotionTimedOut(f"promotion of {name} still running after {timeout:.0f} s; "
                                        "resume with the continuation token", poller.continuation_token())
            server = poller.result()
        except PromotionTimedOut:
            raise
        except AzureError as exc:
            raise PromotionFailed(f"promotion of {name} failed: {_describe(exc)}") from exc
        props = server.properties
        role = props.replica.role if props and props.replica else None
        state = props.state if props else None
        logger.info("flexible server promoted", extra={"server": name, "role": _text(role), "state": _text(state)})
        return {"server": name, "role": _text(role), "state": _text(state), "forced": forced}

    # ---- point-in-time restore (see the section comment above) ----

    def get_source_server(self, resource_id: str) -> SourceServer:
        """The source's location, earliest restore point and administrator login.

        :raises ServerUnavailable: ARM did not answer or refused.
        """
        ref = ServerRef.parse(resource_id)
        try:
            server: Server = self.client.servers.get(ref.resource_group, ref.name)
        except AzureError as exc:
            raise ServerUnavailable(f"cannot read Flexible Server {ref.name}: {_describe(exc)}") from exc
        props = server.properties
        backup = props.backup if props else None
        network = props.network if props else None
        return SourceServer(name=ref.name, location=str(server.location or ""),
                            earliest_restore=backup.earliest_restore_date if backup else None,
                            administrator_login=props.administrator_login if props else None,
                            version=_text(props.version) if props else None,
                            delegated_subnet_id=(network.delegated_subnet_resource_id or None) if network else None,
                            public_network_access=_text(network.public_network_access) if network else None)

    def begin_restore_server(self, source_resource_id: str, target_name: str, *, location: str,
                             point_in_time: datetime, delegated_subnet_id: str | None = None,
                             dns_zone_id: str | None = None) -> Operation:
        """PUT a new server ``target_name`` restored from the source at ``point_in_time``: into the isolated
        delegated subnet when ``delegated_subnet_id`` is given (VNet-integrated source), else with public network
        access disabled (public-access source; reached afterwards through :meth:`begin_create_private_endpoint`).
        Returns the operation to poll.

        :raises RestoreRefused: ARM refused the PUT (its code and message), or answered without a polling URL.
        """
        ref = ServerRef.parse(source_resource_id)
        hook = _Initial()
        body = _restore_body(location, source_resource_id, point_in_time, delegated_subnet_id, dns_zone_id)
        try:
            self.client.servers.begin_create_or_update(ref.resource_group, target_name, body, polling=False,
                                                       raw_response_hook=hook)
        except AzureError as exc:
            # The REST spec (Servers_Create) answers 200, 201 or 202 on success; SDK 3.0.0 accepts only 202 and
            # raises on the others, so those are judged by the response itself (and polled like a 202).
            if hook.status not in (200, 201):
                raise RestoreRefused(f"Azure refused to restore {ref.name} to {target_name} at "
                                     f"{point_in_time.isoformat()}: {_describe(exc)}") from exc
        operation = hook.operation(target_name)
        if operation is None:
            raise RestoreRefused(f"Azure accepted the restore of {target_name} (HTTP {hook.status}) without an "
                                 "Azure-AsyncOperation or Location header: nothing to poll")
        logger.info("point-in-time restore started", extra={"server": target_name, "source": ref.name,
                                                            "point_in_time": point_in_time.isoformat()})
        return operation

    def _check_status_url(self, url: str) -> None:
        """Only ARM's own endpoint is polled: a status URL is replayed from history, never trusted blindly."""
        from urllib.parse import urlparse

        base = urlparse(self.client._config.base_url)
        target = urlparse(url)
        if target.scheme != base.scheme or target.netloc != base.netloc:
            raise InvalidRequest(f"operation status URL {url[:200]!r} is not on {base.scheme}://{base.netloc}")

    def get_operation_status(self, operation: Operation) -> OperationStatus:
        """One GET of the operation's status URL (no waiting, no sleeping).

        :raises ServerUnavailable: ARM did not answer, or answered neither 200/202 nor a status body.
        """
        from azure.core.rest import HttpRequest

        self._check_status_url(operation.status_url)
        try:
            response = self.client.send_request(HttpRequest("GET", operation.status_url))
        except AzureError as exc:
            raise ServerUnavailable(f"cannot read the operation on {operation.server_name}: {_describe(exc)}") from exc
        retry_after = _retry_after(response.headers)
        if response.status_code == 202:  # a Location URL answers 202 while the operation runs
            return OperationStatus("InProgress", retry_after_s=retry_after)
        if response.status_code not in (200, 201, 204):
            raise ServerUnavailable(f"reading the operation on {operation.server_name} returned HTTP "
                                    f"{response.status_code}; retry")
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        status = str(body.get("status") or ("Succeeded" if "/operationResults/" in operation.status_url else ""))
        if not status:
            raise ServerUnavailable(f"the operation on {operation.server_name} answered without a status")
        error = body.get("error") or {}
        text = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ") if error else ""
        return OperationStatus(status, text[:500], retry_after)

    def get_restored_server(self, resource_group: str, name: str) -> RestoredServer:
        """The restored server's state and private FQDN.

        :raises ServerUnavailable: ARM did not answer or refused (404 included: the restore left no server).
        """
        try:
            server: Server = self.client.servers.get(resource_group, name)
        except AzureError as exc:
            raise ServerUnavailable(f"cannot read restored server {name}: {_describe(exc)}") from exc
        props = server.properties
        storage = props.storage if props else None
        return RestoredServer(name=name, state=_text(props.state) if props else None,
                              fqdn=props.fully_qualified_domain_name if props else None,
                              administrator_login=props.administrator_login if props else None,
                              storage_gb=storage.storage_size_gb if storage else None)

    # ---- the restored server's private endpoint (public-access sources) ----
    #
    # A public-access source restores only to public access, and "private endpoints are not carried over", so the
    # restored server (public network access disabled) is reached through an endpoint of its own in the isolated
    # subnet, registered in the privatelink zone. Microsoft.Network has no SDK in this app: the calls go through the
    # same ARM pipeline (bearer token, retries) as raw requests, shaped as REST spec Microsoft.Network 2024-05-01
    # PrivateEndpoints_CreateOrUpdate / PrivateDnsZoneGroups_CreateOrUpdate / PrivateEndpoints_Delete.

    def _arm_url(self, path: str) -> str:
        base = str(self.client._config.base_url).rstrip("/")
        return f"{base}{path}?api-version={NETWORK_API_VERSION}"

    def _endpoint_path(self, resource_group: str, endpoint: str) -> str:
        if not SERVER_NAME_RE.match(endpoint.removesuffix("-pe")) or not endpoint.endswith("-pe"):
            raise InvalidRequest(f"{endpoint[:80]!r} is not a restored server's endpoint name (<server>-pe)")
        return (f"/subscriptions/{self.client._config.subscription_id}/resourceGroups/{resource_group}"
                f"/providers/Microsoft.Network/privateEndpoints/{endpoint}")

    def _send(self, method: str, url: str, body: dict[str, Any] | None, what: str) -> Any:
        from azure.core.rest import HttpRequest

        try:
            return self.client.send_request(HttpRequest(method, url, json=body))
        except AzureError as exc:
            raise ServerUnavailable(f"ARM did not answer {what}: {_describe(exc)}") from exc

    @staticmethod
    def _refused(response: Any) -> str:
        try:
            error = (response.json() or {}).get("error") or {}
        except ValueError:
            error = {}
        return f"HTTP {response.status_code} {error.get('code', '')}: {error.get('message', '')}".strip(": ")

    def _put(self, url: str, body: dict[str, Any], name: str, what: str) -> Operation | None:
        response = self._send("PUT", url, body, what)
        if response.status_code not in (200, 201, 202):
            raise RestoreRefused(f"Azure refused {what}: {self._refused(response)}")
        operation = _Initial()
        operation.headers = dict(response.headers)
        found = operation.operation(name)
        if found is None and response.status_code == 202:
            raise RestoreRefused(f"Azure accepted {what} without an Azure-AsyncOperation or Location header")
        return found  # None: 200/201 with nothing to poll, the resource is already there

    def begin_create_private_endpoint(self, resource_group: str, endpoint: str, *, server_resource_id: str,
                                      location: str, subnet_id: str) -> Operation | None:
        """PUT the restored server's private endpoint in the isolated subnet (auto-approved: the caller holds
        ``Microsoft.DBforPostgreSQL/flexibleServers/privateEndpointConnectionsApproval/action``).

        :returns: the operation to poll, or None when ARM answered without one (already provisioned).
        :raises RestoreRefused: ARM refused the PUT (its code and message).
        """
        body = {"location": location, "properties": {
            "subnet": {"id": subnet_id},
            "privateLinkServiceConnections": [{"name": endpoint, "properties": {
                "privateLinkServiceId": server_resource_id, "groupIds": [POSTGRES_GROUP_ID]}}]}}
        return self._put(self._arm_url(self._endpoint_path(resource_group, endpoint)), body, endpoint,
                         f"to create private endpoint {endpoint}")

    def begin_register_endpoint_dns(self, resource_group: str, endpoint: str, *, dns_zone_id: str) -> Operation | None:
        """PUT the endpoint's DNS zone group, so ``<server>.postgres.database.azure.com`` resolves to its private IP.

        :raises RestoreRefused: ARM refused the PUT (its code and message).
        """
        zone = dns_zone_id.rsplit("/", 1)[-1]
        body = {"properties": {"privateDnsZoneConfigs": [
            {"name": zone.replace(".", "-"), "properties": {"privateDnsZoneId": dns_zone_id}}]}}
        url = self._arm_url(self._endpoint_path(resource_group, endpoint) + "/privateDnsZoneGroups/default")
        return self._put(url, body, endpoint, f"to register private endpoint {endpoint} in {zone}")

    def delete_private_endpoint(self, resource_group: str, endpoint: str) -> Operation | None:
        """Start deleting the endpoint (its DNS records go with its zone group); succeeds if it is already gone.

        :returns: the deletion to poll (202), or None (200, 204, 404).
        :raises ServerUnavailable: ARM refused or did not answer.
        """
        url = self._arm_url(self._endpoint_path(resource_group, endpoint))
        response = self._send("DELETE", url, None, f"to delete private endpoint {endpoint}")
        if response.status_code in (200, 204, 404):
            return None
        if response.status_code != 202:
            raise ServerUnavailable(f"Azure refused to delete private endpoint {endpoint}: {self._refused(response)}; "
                                    f"delete it by hand (az network private-endpoint delete -g {resource_group} "
                                    f"-n {endpoint})")
        operation = _Initial()
        operation.headers = dict(response.headers)
        return operation.operation(endpoint)

    def delete_server(self, resource_group: str, name: str) -> Operation | None:
        """Start deleting server ``name``; succeeds if it is already gone.

        :returns: the deletion to poll (202), or None when nothing is left to wait for (204, 404).
        :raises ServerUnavailable: ARM refused or did not answer (the caller retries; the server may be left).
        """
        from azure.core.exceptions import ResourceNotFoundError

        if not SERVER_NAME_RE.match(name):
            raise InvalidRequest(f"{name[:80]!r} is not a Flexible Server name")
        hook = _Initial()
        try:
            self.client.servers.begin_delete(resource_group, name, polling=False, raw_response_hook=hook)
        except ResourceNotFoundError:
            logger.info("server already gone", extra={"server": name})
            return None
        except AzureError as exc:
            raise ServerUnavailable(f"Azure refused to delete {name}: {_describe(exc)}; delete it by hand "
                                    f"(az postgres flexible-server delete -g {resource_group} -n {name})") from exc
        if hook.status == 204:
            return None
        return hook.operation(name)
