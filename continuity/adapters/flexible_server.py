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

from continuity.errors import ContinuityError, InvalidRequest, ServerUnavailable

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
