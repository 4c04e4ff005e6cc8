"""Attacks on four-eyes approval, played against function_app.py on the devhost of a dedicated throwaway stack.

Only the approve/reject routes can decide: they bind each decision to one run (instance, run id, preflight
digest, verdict, principal id, server time) under an HMAC keyed from the secret store. Each probe plays the
attacker first, then asserts the refusal (401/403/409, or an ``attempted bypass`` the orchestration records),
that the refusal is in the evidence chain, and that the workflow did not move.

The devhost runs with platform authentication on (``X-MS-CLIENT-PRINCIPAL`` is trusted: locally nothing fronts
it) and local keys allowed beside it, so both kinds of identity meet in one person. Drills only: no live
cluster is promoted.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from continuity.adapters.local.identity_store import IdentityStore
from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.storage.blob_store import BlobStore
from continuity.adapters.storage.evidence_store import EvidenceStore
from continuity.kernel.identity import Role
from tests.conftest import PORT_BASE
from tests.failover_support import ACK, Host, failover_stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

DEVHOST_PORT = PORT_BASE + 87  # +81 failover e2e, +84 durable management API probes, +85 recovery e2e
WEBHOOK = "/runtime/webhooks/durabletask"
TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RUN = uuid.uuid4().hex[:8]  # forged decision ids of this session (evidence outlives a session in a kept stack)
OID_PAT = "0b6e6c1e-2a77-4d2c-9a57-3f4c1b2a9d01"


def client_principal(name: str, roles: list[str], oid: str | None = OID_PAT, tid: str | None = TID,
                     tenants: tuple[str, ...] = ("*",)) -> str:
    """An App Service Authentication header, as the platform would put it on a request (scope "*": every tenant)."""
    claims = [{"typ": "preferred_username", "val": name}] + [{"typ": "roles", "val": r} for r in roles]
    claims += [{"typ": "continuity_tenant", "val": t} for t in tenants]
    if oid is not None:
        claims.append({"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid})
    if tid is not None:
        claims.append({"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": tid})
    document = {"auth_typ": "aad", "name_typ": "preferred_username", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(document).encode()).decode()


class FourEyesHost(Host):
    def system_key(self) -> str:
        keys = json.loads((self.stack.base / "devhost" / "keys.json").read_text())
        return str(keys["systemKeys"]["durabletask_extension"])

    def call_as(self, method: str, path: str, headers: dict[str, str], body: Any = None,
                function_key: bool = True) -> tuple[int, Any]:
        """A request with exactly these credentials (and the function key the host asks of every caller)."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        keyed = {"x-functions-key": self.function_key} if function_key else {}
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                         headers={"Content-Type": "application/json", **keyed, **headers})
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def management(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The Durable management API with the system key: what a holder of that key can do."""
        sep = "&" if "?" in path else "?"
        return self.call_as(method, f"{WEBHOOK}{path}{sep}code={self.system_key()}", {}, body, function_key=False)

    def raise_raw(self, instance: str, payload: Any) -> None:
        code, answer = self.management("POST", f"/instances/{instance}/raiseEvent/approval_decision", payload)
        assert code == 202, (code, answer)

    def decision_events(self, instance: str) -> list[dict[str, Any]]:
        code, status = self.management("GET", f"/instances/{instance}?showHistory=true&showHistoryOutput=true")
        assert code in (200, 202), status
        return [json.loads(e["Input"]) for e in status["historyEvents"]
                if e.get("Name") == "approval_decision" and e.get("Input")]


@pytest.fixture(scope="module")
def fstack(stack: LocalStack) -> Iterator[LocalStack]:
    with failover_stack(PORT_BASE, "four-eyes", offset=64) as local:
        yield local


@pytest.fixture(scope="module")
def host(fstack: LocalStack, blob_store: BlobStore) -> Iterator[FourEyesHost]:
    identities = IdentityStore(fstack.base)
    keys = {name: identities.add_user(name, roles, replace=True, tenants=tenants, links=links)
            for name, roles, tenants, links in (
                ("olivia", [Role.OPERATOR], None, None), ("amir", [Role.APPROVER], None, None),
                ("sam", [Role.APPROVER], ["acme-finance"], None),
                # Pat's local key and Pat's Entra ID identity are one person, as Pat declared.
                ("pat", [Role.OPERATOR], None, [f"aad:{TID}/{OID_PAT}"]))}
    devhost = FourEyesHost(fstack, keys, DEVHOST_PORT)
    # Run B waits for its decision through every probe of the module: a window a loaded machine cannot outrun
    # (the expiry probe restarts the host with a short one).
    devhost.env.update(CONTINUITY_PLATFORM_AUTH="true", CONTINUITY_LOCAL_USERS_WITH_PLATFORM_AUTH="true",
                       CONTINUITY_APPROVAL_WINDOW_MINUTES="15")
    devhost.start()
    yield devhost
    devhost.stop()


def evidence(fstack: LocalStack, subject: str) -> list[dict[str, Any]]:
    store = EvidenceStore(fstack.dsn("control", "continuity"), BlobStore())
    return [r.to_json() for r in store.records(subject=subject)]


def recorded_refusal(fstack: LocalStack, subject: str, words: str, decision_id: str | None = None,
                     principal_id: str | None = None) -> dict[str, Any]:
    """Wait for the ``failover.refused`` record whose reason holds ``words`` (of that decision, or of that
    principal: other tests' refusals of the same subject may say the same words); returns it."""
    def about(record: dict[str, Any]) -> bool:
        decision = record["data"].get("claimed") or record["data"].get("decision") or {}
        if principal_id is not None and record["data"].get("principal_id") != principal_id:
            return False
        return decision_id is None or decision.get("id") == decision_id

    def found() -> dict[str, Any] | None:
        return next((r for r in evidence(fstack, subject) if r["action"] == "failover.refused"
                     and words in r["data"]["reason"] and about(r)), None)

    return wait_until(found, timeout=60, what=f"a failover.refused record of {subject} saying {words!r}")


def refused_in_status(host: FourEyesHost, instance: str, decision_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        refusals = (host.status(instance).get("approval") or {}).get("refusals", [])
        return next((r for r in refusals if r["decision_id"] == decision_id), None)

    return wait_until(found, timeout=60, what=f"{instance} refusing decision {decision_id}")


def still_pending(host: FourEyesHost, instance: str, run_id: str) -> None:
    status = host.status(instance)
    assert status["run_id"] == run_id and status["state"] == "AWAITING_APPROVAL", status
    assert status["approval"]["state"] == "PENDING" and status["approval"]["decision"] is None
    assert status["steps"] == []


def request_drill(host: FourEyesHost, user: str, scope: str) -> dict[str, Any]:
    code, body = host.request(user, scope=scope, drill=True)
    assert code == 202, body
    return host.wait_state(body["id"], "AWAITING_APPROVAL")


@pytest.fixture(scope="module")
def run_a(host: FourEyesHost, fstack: LocalStack) -> dict[str, Any]:
    """An acme-finance drill approved by amir and completed; the attacker kept its decision event from the
    history (the management API shows it to whoever holds the system key)."""
    pending = request_drill(host, "olivia", "acme-finance")
    approval = pending["approval"]
    assert len(approval["digest"]) == 64 and approval["run_id"] == pending["run_id"]
    code, decided = host.call("POST", f"/api/failovers/{pending['id']}/approve", "amir",
                              {"comment": "drill", "acknowledge": ACK, "digest": approval["digest"]})
    assert code == 202, decided
    assert (decided["run_id"], decided["digest"]) == (pending["run_id"], approval["digest"])
    done = host.wait_state(pending["id"], "COMPLETED", "FAILED", timeout=180)
    assert done["state"] == "COMPLETED", done["reason"]
    captured = host.decision_events(pending["id"])
    assert [e["verdict"] for e in captured] == ["approve"] and captured[0]["mac"]
    actions = [r["action"] for r in evidence(fstack, pending["id"])]
    assert actions.index("failover.decided") < actions.index("failover.approved")
    return {"status": done, "digest": approval["digest"], "event": captured[0]}


@pytest.fixture(scope="module")
def run_b(host: FourEyesHost, run_a: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A new run of the same instance (failover-acme-finance), requested after run A, awaiting approval."""
    pending = request_drill(host, "olivia", "acme-finance")
    assert pending["id"] == run_a["status"]["id"] and pending["run_id"] != run_a["status"]["run_id"]
    assert pending["approval"]["digest"] != run_a["digest"]
    yield pending
    host.decide("reject", pending["id"], "olivia", comment="probe over: withdrawn")  # unless it expired already
    final = host.wait_state(pending["id"], "REJECTED", "EXPIRED")
    # No forged or replayed decision moved it: it ended without an approval and without a step.
    decision = final["approval"]["decision"]
    assert final["steps"] == [], final["steps"]
    assert decision is None or (decision["verdict"] == "reject" and decision["by"]["id"] == "key:olivia"), decision


# ---- forged and replayed decision events ---------------------------------------------------------------


def test_forged_raw_event_with_the_system_key_but_no_mac_is_refused_recorded_and_the_run_keeps_waiting(
        host: FourEyesHost, fstack: LocalStack, run_b: dict[str, Any]) -> None:
    iid, approval = run_b["id"], run_b["approval"]
    forged = {"id": f"forged-no-mac-{RUN}", "verdict": "approve", "at": approval["requested_at"], "comment": "lgtm",
              "by": {"id": "key:mallory", "name": "mallory", "roles": ["approver", "admin"], "source": "key"},
              "acknowledgements": ACK, "instance_id": iid, "run_id": run_b["run_id"], "digest": approval["digest"]}
    host.raise_raw(iid, forged)
    refusal = refused_in_status(host, iid, f"forged-no-mac-{RUN}")
    assert refusal["reason"].startswith("attempted bypass: a decision without a MAC")
    record = recorded_refusal(fstack, iid, "attempted bypass: a decision without a MAC", f"forged-no-mac-{RUN}")
    assert record["actor"] == "unverified" and record["data"]["claimed"]["by"]["name"] == "mallory"
    assert record["data"]["executed"] is False
    still_pending(host, iid, run_b["run_id"])


def test_run_a_decision_event_replayed_on_run_b_is_refused_as_another_runs(
        host: FourEyesHost, fstack: LocalStack, run_a: dict[str, Any], run_b: dict[str, Any]) -> None:
    iid, captured = run_b["id"], run_a["event"]
    host.raise_raw(iid, captured)
    refusal = refused_in_status(host, iid, captured["id"])
    assert refusal["reason"].startswith(f"attempted bypass: the decision was made for run "
                                        f"{run_a['status']['run_id']!r} of {iid}, not this run")
    recorded_refusal(fstack, iid, "replayed from an earlier run", captured["id"])
    still_pending(host, iid, run_b["run_id"])


def test_run_a_decision_rebound_to_run_b_fails_its_mac(
        host: FourEyesHost, fstack: LocalStack, run_a: dict[str, Any], run_b: dict[str, Any]) -> None:
    iid = run_b["id"]
    rebound = {**run_a["event"], "id": f"rebound-{RUN}", "run_id": run_b["run_id"],
               "digest": run_b["approval"]["digest"]}
    host.raise_raw(iid, rebound)
    assert refused_in_status(host, iid, f"rebound-{RUN}")["reason"].startswith(
        "attempted bypass: the decision's MAC does not verify")
    recorded_refusal(fstack, iid, "MAC does not verify", f"rebound-{RUN}")
    still_pending(host, iid, run_b["run_id"])


def test_run_a_approve_call_replayed_after_run_b_was_requested_is_refused_409(
        host: FourEyesHost, fstack: LocalStack, run_a: dict[str, Any], run_b: dict[str, Any]) -> None:
    iid = run_b["id"]
    code, answer = host.call("POST", f"/api/failovers/{iid}/approve", "amir",
                             {"comment": "drill", "acknowledge": ACK, "digest": run_a["digest"]})
    assert code == 409, answer
    assert f"now shows preflight digest {run_b['approval']['digest']}" in answer["error"]["message"]
    recorded_refusal(fstack, iid, f"not {run_a['digest']} that you decided on")
    still_pending(host, iid, run_b["run_id"])


def test_forged_decision_time_before_the_request_is_refused_and_never_reaches_the_timings(
        host: FourEyesHost, fstack: LocalStack, run_a: dict[str, Any], run_b: dict[str, Any]) -> None:
    iid, approval = run_b["id"], run_b["approval"]
    early = (datetime.fromisoformat(approval["requested_at"]) - timedelta(minutes=3)).isoformat()
    # Everything right but the time, under the MAC of a real decision: the time is part of what the MAC covers.
    forged = {**run_a["event"], "id": f"forged-time-{RUN}", "at": early, "run_id": run_b["run_id"],
              "digest": approval["digest"]}
    host.raise_raw(iid, forged)
    assert refused_in_status(host, iid, f"forged-time-{RUN}")["reason"].startswith("attempted bypass")
    record = recorded_refusal(fstack, iid, "attempted bypass: the decision's MAC does not verify", f"forged-time-{RUN}")
    assert record["data"]["claimed"]["at"] == early
    still_pending(host, iid, run_b["run_id"])
    assert (host.status(iid).get("timings") or {}).get("approval_to_writable") is None


# ---- identities ------------------------------------------------------------------------------------------


def test_self_approval_through_a_second_linked_identity_is_refused_403_and_recorded(
        host: FourEyesHost, fstack: LocalStack) -> None:
    pending = request_drill(host, "pat", "globex")
    iid = pending["id"]
    assert pending["request"]["requester_ids"] == sorted(["key:pat", f"aad:{TID}/{OID_PAT}"])
    twin = {"X-MS-CLIENT-PRINCIPAL": client_principal("pat@example.com", ["Continuity.Approver"])}
    code, answer = host.call_as("POST", f"/api/failovers/{iid}/approve", twin,
                                {"comment": "me again", "acknowledge": ACK})
    assert code == 403, answer
    assert "an identity linked to the requester pat" in answer["error"]["message"]
    record = recorded_refusal(fstack, iid, "four-eyes", principal_id=f"aad:{TID}/{OID_PAT}")
    assert "an identity linked to the requester pat" in record["data"]["reason"]
    still_pending(host, iid, pending["run_id"])
    # A different person who happens to share the display name is not the requester.
    namesake = {"X-MS-CLIENT-PRINCIPAL": client_principal("pat", ["Continuity.Approver"],
                                                          oid="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")}
    code, answer = host.call_as("POST", f"/api/failovers/{iid}/reject", namesake, {"comment": "not now"})
    assert code == 202 and answer["state"] in ("REJECTED", "SUBMITTED"), answer  # SUBMITTED: not yet taken
    host.wait_state(iid, "REJECTED")


def test_platform_principal_without_object_id_is_refused_401_and_recorded(
        host: FourEyesHost, fstack: LocalStack) -> None:
    nameless = {"X-MS-CLIENT-PRINCIPAL": client_principal("ada@example.com", ["Continuity.Admin"], oid=None)}
    code, answer = host.call_as("POST", "/api/failovers/failover-initech/approve", nameless, {"comment": "x"})
    assert code == 401, answer
    assert "no object id and tenant id" in answer["error"]["message"]
    record = recorded_refusal(fstack, "failover-initech", "no object id and tenant id")
    assert record["actor"] == "unauthenticated"
    code, answer = host.call_as("POST", "/api/failovers", nameless,
                                {"scope": "platform", "target_region": "northeurope", "reason": "x"})
    assert code == 401, answer


# ---- one authorization rule per route: kind and scope -------------------------------------------------------


def test_scoped_approver_cannot_decide_another_tenants_recovery_through_the_failover_route(
        host: FourEyesHost, fstack: LocalStack) -> None:
    sam = {"X-Continuity-Key": host.user_keys["sam"]}
    amir = {"X-Continuity-Key": host.user_keys["amir"]}
    body = {"comment": "mine now", "acknowledge": []}
    probes = [
        (sam, "/api/failovers/recovery-globex/approve", "is not a failover"),
        (sam, "/api/recoveries/recovery-globex/approve", "scoped to other tenants"),
        (sam, "/api/failovers/failover-globex/approve", "scoped to other tenants"),
        (sam, "/api/failovers/failover-platform/reject", "it touches every tenant"),
        # The kind holds for unscoped approvers too: each route decides its own kind of workflow only.
        (amir, "/api/failovers/recovery-globex/approve", "is not a failover"),
        (amir, "/api/recoveries/failover-globex/approve", "is not a recovery"),
    ]
    for caller, path, words in probes:
        code, answer = host.call_as("POST", path, caller, body)
        assert code == 403 and words in answer["error"]["message"], (path, code, answer)
        subject = path.split("/")[3]
        kind = path.split("/")[2].removesuffix("s").replace("recoverie", "recovery")
        assert any(words in r["data"]["reason"] for r in evidence(fstack, subject)
                   if r["action"] == f"{kind}.refused"), (path, "no refusal recorded")


def test_an_instance_started_under_a_recovery_id_by_the_management_api_is_not_decided_by_either_route(
        host: FourEyesHost, fstack: LocalStack) -> None:
    """A system-key holder starts the failover orchestration as ``recovery-initech``: the failover route refuses the
    id's kind, and the recovery route refuses the orchestration it runs."""
    now = datetime.now().astimezone().isoformat()
    request = {"scope": "initech", "target_region": "northeurope", "reason": "x", "drill": True,
               "requested_by": "olivia", "requested_by_id": "key:olivia", "requester_ids": ["key:olivia"],
               "requested_at": now}
    code, started = host.management("POST", "/orchestrators/failover/recovery-initech", {
        "run_id": "smuggled", "request": request, "window_minutes": 0.5, "fence_mode": "read-only"})
    assert code == 202, started

    def awaiting() -> bool:
        code, status = host.management("GET", "/instances/recovery-initech")
        return code in (200, 202) and (status.get("customStatus") or {}).get("state") == "AWAITING_APPROVAL"

    wait_until(awaiting, timeout=90, what="the smuggled instance awaiting approval")
    amir = {"X-Continuity-Key": host.user_keys["amir"]}
    body = {"comment": "x", "acknowledge": ACK}
    code, answer = host.call_as("POST", "/api/failovers/recovery-initech/approve", amir, body)
    assert code == 403 and "is not a failover" in answer["error"]["message"], answer
    code, answer = host.call_as("POST", "/api/recoveries/recovery-initech/approve", amir, body)
    assert code == 403 and "not the recovery workflow" in answer["error"]["message"], answer
    code, status = host.management("GET", "/instances/recovery-initech")
    assert status["customStatus"]["approval"]["state"] == "PENDING" and status["customStatus"]["steps"] == []
    assert host.management("POST", "/instances/recovery-initech/terminate?reason=probe-over")[0] == 202


# ---- expiry ----------------------------------------------------------------------------------------------------


def test_decision_after_expiry_is_refused_409_recorded_and_nothing_runs(
        host: FourEyesHost, fstack: LocalStack) -> None:
    host.stop()
    host.start(CONTINUITY_APPROVAL_WINDOW_MINUTES="0.5")
    try:
        pending = request_drill(host, "olivia", "initech")
    finally:  # requested under a 30-second window; later probes (and run B's teardown) get the long one back
        host.stop()
        host.start()
    iid = pending["id"]
    done = host.wait_state(iid, "EXPIRED", timeout=120)
    code, answer = host.call("POST", f"/api/failovers/{iid}/approve", "amir",
                             {"comment": "late", "acknowledge": ACK, "digest": pending["approval"]["digest"]})
    assert code == 409 and "expired" in answer["error"]["message"], answer
    assert done["steps"] == [] and host.status(iid)["steps"] == []
    actions = [r["action"] for r in evidence(fstack, iid)]
    assert "failover.expired" in actions and "failover.approved" not in actions[actions.index("failover.requested"):]
    recorded_refusal(fstack, iid, "expired")
