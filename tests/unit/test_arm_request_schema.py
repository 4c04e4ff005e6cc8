"""The request bodies the app sends to ARM for Flexible Server, as the real SDK serializes them onto the wire,
validated against the Microsoft.DBforPostgreSQL REST spec's JSON schema for the api-version the SDK uses
(2026-10-01). The needed fragment is vendored with its provenance in tests/fixtures/arm/.

Three checks per body: the spec's schema (types, enums, formats, required; draft 4, as Swagger 2.0), no property
the spec does not define (ours: the spec leaves objects open, ARM refuses or ignores unknown ones), and no
property sent where the spec forbids it (``readOnly``, or an ``x-ms-mutability`` without ``create`` on a PUT /
``update`` on a PATCH); and the one cross-field rule the spec states in prose, Network.publicNetworkAccess "is
only supported for servers that are not integrated into a virtual network" (the restore sent both before).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from continuity.adapters.azure.flexible_server import FlexibleServers
from tests.azure_transport import FakeTransport, Reply, StaticCredential

SPEC = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "arm" / "postgresql-2026-10-01-servers.json")
                  .read_text())
SUB = "00000000-1111-2222-3333-444444444444"
SOURCE = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/weu-primary"
SUBNET = f"/subscriptions/{SUB}/resourceGroups/rg-iso/providers/Microsoft.Network/virtualNetworks/v/subnets/pitr"
ZONE = (f"/subscriptions/{SUB}/resourceGroups/rg-iso/providers/Microsoft.Network/privateDnsZones/"
        "r.postgres.database.azure.com")
ASYNC = (f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/westeurope/"
         "azureAsyncOperation/op?api-version=2026-10-01")


def _sent(call: Any) -> tuple[str, str, dict[str, Any]]:
    """Run ``call(flex)`` against an ARM that accepts everything; return (method, api-version, body) sent."""
    sent: list[requests.PreparedRequest] = []

    def arm(request: requests.PreparedRequest) -> Reply:
        sent.append(request)
        if request.method == "GET" and "azureAsyncOperation" in (request.url or ""):
            return Reply(200, {"status": "InProgress"})
        return Reply(202, None, {"Azure-AsyncOperation": ASYNC, "Location": ASYNC})

    fake = FakeTransport(arm)
    flex = FlexibleServers(StaticCredential(), SUB, transport=fake.transport, polling_interval=0)
    call(flex)
    request = next(r for r in sent if r.method in ("PUT", "PATCH"))
    version = (request.url or "").split("api-version=", 1)[1].split("&", 1)[0]
    return request.method or "", version, json.loads(request.body or b"{}")


BODIES = {
    "restore of a public-access source": lambda f: f.begin_restore_server(
        SOURCE, "pitr-acme-202603010300", location="westeurope", point_in_time=datetime(2026, 3, 1, 2, 55, tzinfo=UTC)),
    "restore of a VNet-integrated source": lambda f: f.begin_restore_server(
        SOURCE, "pitr-acme-202603010300", location="westeurope", point_in_time=datetime(2026, 3, 1, 2, 55, tzinfo=UTC),
        delegated_subnet_id=SUBNET, dns_zone_id=ZONE),
    "planned promotion": lambda f: f.begin_promote_replica(SOURCE, forced=False),
    "forced promotion": lambda f: f.begin_promote_replica(SOURCE, forced=True),
}
ROOT = {"PUT": "Server", "PATCH": "ServerForPatch"}


def _closed(schema: Any) -> Any:
    """The schema with every defined object closed to properties it does not list (stubs stay open)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _validator(root: str, closed: bool) -> jsonschema.Draft4Validator:
    definitions = _closed(SPEC["definitions"]) if closed else SPEC["definitions"]
    return jsonschema.Draft4Validator({"$ref": f"#/definitions/{root}", "definitions": definitions},
                                      format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)


def _forbidden(body: Any, schema: dict[str, Any], allowed: str, path: str = "") -> Iterator[str]:
    """Properties sent although the spec marks them readOnly or not mutable on this verb."""
    if "$ref" in schema:
        schema = SPEC["definitions"][schema["$ref"].rsplit("/", 1)[-1]] | {
            k: v for k, v in schema.items() if k != "$ref"}
    if not isinstance(body, dict):
        return
    for key, value in body.items():
        spec = schema.get("properties", {}).get(key)
        if spec is None:
            continue
        where = f"{path}.{key}".lstrip(".")
        if spec.get("readOnly"):
            yield f"{where} is readOnly"
        mutability = spec.get("x-ms-mutability")
        if mutability is not None and allowed not in mutability:
            yield f"{where} is not mutable on {allowed} ({mutability})"
        yield from _forbidden(value, spec, allowed, where)


@pytest.mark.parametrize("what", sorted(BODIES))
def test_request_body_is_valid_for_the_specs_api_version(what: str) -> None:
    method, version, body = _sent(BODIES[what])
    assert version == "2026-10-01" == SPEC["provenance"]["api-version"].split()[0]
    root = ROOT[method]
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(root, closed=True)
              .iter_errors(body)]
    assert errors == [], f"{what}: {body}"
    verb = "create" if method == "PUT" else "update"
    assert list(_forbidden(body, SPEC["definitions"][root], verb)) == [], f"{what}: {body}"
    network = body.get("properties", {}).get("network") or {}
    assert not ("delegatedSubnetResourceId" in network and "publicNetworkAccess" in network), network


def test_the_checks_catch_what_the_spec_forbids() -> None:
    # The validator is not vacuous: an unknown enum value, an unknown property, a read-only property and a
    # create-only property on a PATCH are each caught.
    server = _validator("Server", closed=True)
    assert list(server.iter_errors({"location": "x", "properties": {"createMode": "Restore"}}))
    assert list(server.iter_errors({"location": "x", "properties": {"network": {"publicAccess": "Disabled"}}}))
    assert list(server.iter_errors({"properties": {}})), "location is required"
    assert list(_forbidden({"properties": {"state": "Ready"}}, SPEC["definitions"]["Server"], "create"))
    assert list(_forbidden({"properties": {"replica": {"capacity": 1}}}, SPEC["definitions"]["ServerForPatch"],
                           "update"))
    assert list(_forbidden({"properties": {"pointInTimeUTC": "2026-01-01T00:00:00Z"}},
                           SPEC["definitions"]["Server"], "update"))


def test_vendored_fragment_names_its_source() -> None:
    provenance = SPEC["provenance"]
    assert provenance["repository"] == "Azure/azure-rest-api-specs"
    assert provenance["path"].endswith("/stable/2026-10-01/openapi.json")
    assert len(provenance["commit"]) == 40
