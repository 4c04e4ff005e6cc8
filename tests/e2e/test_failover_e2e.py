"""Failover end to end: the devhost runs function_app.py against a dedicated throwaway stack (its replica
gets promoted), driven over HTTP with local users' keys; a writer commits numbered rows throughout."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from continuity.adapters.blob_store import BlobStore
from continuity.adapters.evidence_store import EvidenceStore
from continuity.adapters.failover_local import LocalFailover
from continuity.adapters.identity_store import IdentityStore
from continuity.adapters.local_stack import LocalStack
from continuity.adapters.postgres import ensure_database
from continuity.adapters.secret_store import LocalSecrets, seed_local_recovery_credentials
from continuity.identity import Role
from devhost import process
from tests.conftest import PORT_BASE
from tests.failover_support import Writer, dedicated_stack

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

DEVHOST_PORT = PORT_BASE + 73
ACK = ["no_validated_backup"]  # the throwaway stack's catalog has no validated backup: approvers must say so
TENANT_DBS = ("odoo_acme_finance", "odoo_globex", "odoo_initech")


class Host:
    """The devhost process serving function_app.py, and an HTTP client for the failover API."""

    def __init__(self, stack: LocalStack, keys: dict[str, str]) -> None:
        self.stack = stack
        self.user_keys = keys
        s = stack.settings
        self.env = {
            "CONTINUITY_LOCAL_DIR": str(s.base_dir), "CONTINUITY_PRIMARY_PORT": str(s.primary_port),
            "CONTINUITY_REPLICA_PORT": str(s.replica_port), "CONTINUITY_CONTROL_PORT": str(s.control_port),
            "CONTINUITY_SANDBOX_PORT": str(s.sandbox_port), "CONTINUITY_DEVHOST_PORT": str(DEVHOST_PORT),
            "CONTINUITY_DEVHOST_APP": "function_app:app", "CONTINUITY_DEVHOST_SUBSCRIPTIONS": "",
            "CONTINUITY_DEVHOST_WATCHED_CONTAINERS": "", "CONTINUITY_APPROVAL_WINDOW_MINUTES": "0.5",
            "CONTINUITY_FAILOVER_STEP_PAUSE": "", "CONTINUITY_NIGHTLY_SCHEDULE": "0 0 0 1 1 *",
        }
        self.pid: int | None = None

    def start(self, **overrides: str) -> None:
        self.pid = process.start(port=DEVHOST_PORT, env={**self.env, **overrides}, timeout=60)

    def stop(self) -> None:
        process.stop(env=self.env)

    def kill(self) -> None:
        """SIGKILL the devhost and everything it started: no cleanup, no goodbye."""
        assert self.pid is not None
        os.killpg(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except OSError:
                break
            with_zombie = Path(f"/proc/{self.pid}/stat")
            if with_zombie.exists() and " Z " in with_zombie.read_text():
                os.waitpid(self.pid, os.WNOHANG)
            time.sleep(0.05)

    @property
    def function_key(self) -> str:
        return str(json.loads((self.stack.base / "devhost" / "keys.json").read_text())["functionKey"])

    def call(self, method: str, path: str, user: str | None, body: Any = None,
             raw: bytes | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "x-functions-key": self.function_key}
        if user:
            headers["X-Continuity-Key"] = self.user_keys[user]
        conn = http.client.HTTPConnection("127.0.0.1", DEVHOST_PORT, timeout=60)
        try:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, json.loads(payload) if payload else None
        finally:
            conn.close()

    def request(self, user: str, scope: str = "platform", drill: bool = False, region: str = "northeurope",
                reason: str = "westeurope outage") -> tuple[int, Any]:
        return self.call("POST", "/api/failovers", user, {"scope": scope, "target_region": region,
                                                          "reason": reason, "drill": drill})

    def decide(self, verdict: str, instance: str, user: str, ack: list[str] | None = None,
               comment: str = "ok") -> tuple[int, Any]:
        return self.call("POST", f"/api/failovers/{instance}/{verdict}", user,
                         {"comment": comment, "acknowledge": ACK if ack is None else ack})

    def status(self, instance: str, user: str = "amir") -> dict[str, Any]:
        code, body = self.call("GET", f"/api/failovers/{instance}", user)
        assert code == 200, body
        return dict(body)

    def wait_state(self, instance: str, *states: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                body = self.status(instance)
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
                continue
            if body.get("state") in states:
                return body
            time.sleep(0.1)
        raise AssertionError(f"{instance} never reached {states}: {json.dumps(body)[:2000]}")


@pytest.fixture(scope="module")
def fstack(stack: LocalStack) -> Iterator[LocalStack]:
    with dedicated_stack(PORT_BASE, "failover-e2e", offset=44) as local:
        for db in TENANT_DBS:
            ensure_database(local.dsn("primary"), db)
            with psycopg.connect(local.dsn("primary", db), autocommit=True) as conn:
                conn.execute("create table if not exists res_company (id serial primary key, name text)")
                conn.execute("insert into res_company (name) select 'Main' "
                             "where not exists (select 1 from res_company)")
        local.rebuild_replica()
        seed_local_recovery_credentials(["northeurope"], local.superuser_password(),
                                        LocalSecrets(local.base / "secrets" / "vault"))
        yield local


@pytest.fixture(scope="module")
def host(fstack: LocalStack, blob_store: BlobStore) -> Iterator[Host]:
    identities = IdentityStore(fstack.base)
    keys = {name: identities.add_user(name, roles, replace=True) for name, roles in (
        ("olivia", [Role.OPERATOR]), ("oscar", [Role.OPERATOR]), ("amir", [Role.APPROVER]), ("ada", [Role.ADMIN]))}
    devhost = Host(fstack, keys)
    devhost.start()
    yield devhost
    devhost.stop()


@pytest.fixture()
def fresh(fstack: LocalStack, host: Host) -> LocalFailover:
    """Each executing test starts with a writable primary and a streaming replica."""
    local = LocalFailover(fstack)
    obs = local.observe_replica("neu-replica")
    if not obs.in_recovery or local.observe_primary("weu-primary").read_only:
        local.restore_original_roles()
    return local


def evidence(fstack: LocalStack, subject: str) -> list[dict[str, Any]]:
    store = EvidenceStore(fstack.dsn("control", "continuity"), BlobStore())
    return [r.to_json() for r in store.records(subject=subject)]


def events(fstack: LocalStack) -> list[str]:
    path = fstack.base / "devhost" / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line).get("event", {}).get("type", "") for line in path.read_text().splitlines() if line.strip()]


def run_approved_failover(host: Host, fstack: LocalStack) -> tuple[dict[str, Any], Writer]:
    writer = Writer(fstack.dsn("primary"))
    writer.start()
    code, body = host.request("olivia")
    assert code == 202, body
    pending = host.wait_state(body["id"], "AWAITING_APPROVAL")
    checks = {f["check"] for f in pending["preflight"]}
    assert {"replica_in_recovery", "replication_lag", "primary_reachable", "validated_backup",
            "recovery_credentials"} <= checks
    time.sleep(0.5)
    code, decided = host.decide("approve", body["id"], "amir")
    assert code == 202, decided
    return body, writer


# ---- the happy path ---------------------------------------------------------------------------


def test_approved_failover_promotes_replica_with_no_lost_commit_and_fences_old_primary(
        host: Host, fstack: LocalStack, fresh: LocalFailover) -> None:
    body, writer = run_approved_failover(host, fstack)
    done = host.wait_state(body["id"], "COMPLETED", "FAILED")
    writer.stop()
    assert done["state"] == "COMPLETED", done["reason"]
    assert [s["step"] for s in done["steps"]] == ["fence", "promote", "repoint", "verify"]
    assert writer.lost_on(fstack.dsn("replica")) == [], "a commit acknowledged before the fence is missing"
    assert len(writer.acked) > 20
    assert fresh.refuses_writes("primary")
    assert fresh.write_probe(fstack.dsn("replica"), "after")["ok"]
    timings = done["timings"]
    assert timings["approval_to_writable"] is not None and timings["fence"] is not None
    actions = [r["action"] for r in evidence(fstack, body["id"])]
    for action in ("failover.requested", "failover.preflight", "failover.approved", "failover.step.fence",
                   "failover.step.promote", "failover.step.repoint", "failover.step.verify", "failover.completed"):
        assert action in actions
    assert done["chain_head"]["seq"] >= len(actions)
    bundle = BlobStore().download("evidence", done["bundle"]["blob"])
    assert json.loads(bundle)["state"] == "COMPLETED"
    with psycopg.connect(fstack.dsn("control", "continuity"), autocommit=True) as conn:
        routes = conn.execute("select scope, writer_port, region from routing order by scope").fetchall()
    assert routes == [(t, fstack.port("replica"), "northeurope") for t in ("acme-finance", "globex", "initech")]
    published = events(fstack)
    for kind in ("requested", "approved", "completed"):
        assert f"continuity.failover.{kind}" in published
    assert "continuity.routing.changed" in published


def test_drill_promotes_a_sandbox_copy_and_leaves_live_clusters_untouched(
        host: Host, fstack: LocalStack, fresh: LocalFailover) -> None:
    code, body = host.request("olivia", scope="acme-finance", drill=True)
    assert code == 202, body
    host.wait_state(body["id"], "AWAITING_APPROVAL")
    assert host.decide("approve", body["id"], "amir")[0] == 202
    done = host.wait_state(body["id"], "COMPLETED", "FAILED")
    assert done["state"] == "COMPLETED", done["reason"]
    assert [s["step"] for s in done["steps"]] == ["copy", "promote", "verify"]
    assert fresh.observe_replica("neu-replica").in_recovery is True
    assert fresh.observe_primary("weu-primary").read_only is False
    assert not (fresh.drill_root() / done["run_id"]).exists(), "the drill copy was not dropped"


# ---- refusals: 4xx, recorded, nothing executed ------------------------------------------------


def refused_actions(fstack: LocalStack, subject: str) -> list[dict[str, Any]]:
    return [r for r in evidence(fstack, subject) if r["action"] == "failover.refused"]


def test_request_without_credentials_is_401(host: Host) -> None:
    code, body = host.call("POST", "/api/failovers", None, {"scope": "platform", "target_region": "northeurope",
                                                            "reason": "x"})
    assert code == 401 and body["error"]["code"] == "unauthorized"


def test_malformed_body_refused_and_recorded(host: Host, fstack: LocalStack) -> None:
    code, body = host.call("POST", "/api/failovers", "olivia", raw=b"{not json")
    assert code == 400 and "not valid JSON" in body["error"]["message"]
    code, body = host.call("POST", "/api/failovers", "olivia", {"scope": "platform", "target_region": "northeurope",
                                                                 "reason": "x", "extra": 1})
    assert code == 400 and "extra" in body["error"]["message"]
    assert any("not valid JSON" in r["data"]["reason"] for r in refused_actions(fstack, "failover"))


def test_unknown_scope_refused_and_recorded(host: Host, fstack: LocalStack) -> None:
    code, body = host.request("olivia", scope="nosuch-tenant")
    assert code == 404 and body["error"]["code"] == "unknown_tenant"
    assert refused_actions(fstack, "failover-nosuch-tenant")[-1]["data"]["executed"] is False


def test_unknown_region_refused_and_recorded(host: Host, fstack: LocalStack) -> None:
    code, body = host.request("olivia", region="eastus")
    assert code == 400 and "unknown target region 'eastus'" in body["error"]["message"]
    assert "eastus" in refused_actions(fstack, "failover-platform")[-1]["data"]["reason"]


def test_approver_without_operator_role_cannot_request(host: Host) -> None:
    code, body = host.request("amir")
    assert code == 403 and "needs the operator role" in body["error"]["message"]


def test_refusals_while_pending_self_approval_operator_missing_ack_running_then_second_decision(
        host: Host, fstack: LocalStack) -> None:
    code, body = host.request("ada", scope="globex")
    assert code == 202, body
    iid = body["id"]
    host.wait_state(iid, "AWAITING_APPROVAL")
    code, again = host.request("olivia", scope="globex")
    assert code == 409 and "already in progress" in again["error"]["message"]
    code, own = host.decide("approve", iid, "ada")
    assert code == 403 and "cannot approve it: a second person" in own["error"]["message"]
    code, operator = host.decide("approve", iid, "oscar")
    assert code == 403 and "needs the approver role (holds: operator)" in operator["error"]["message"]
    code, no_ack = host.decide("approve", iid, "amir", ack=[])
    assert code == 403 and "requires acknowledging no_validated_backup" in no_ack["error"]["message"]
    code, rejected = host.decide("reject", iid, "amir", comment="not during month-end close")
    assert code == 202 and rejected["state"] == "REJECTED"
    code, second = host.decide("approve", iid, "ada")
    assert code == 409
    done = host.wait_state(iid, "REJECTED")
    assert not any(s for s in done["steps"]), "a rejected failover executed a step"
    reasons = [r["data"]["reason"] for r in refused_actions(fstack, iid)]
    assert any("already in progress" in r for r in reasons)
    assert any("four-eyes" in r for r in reasons)
    assert any("holds: operator" in r for r in reasons)
    assert "continuity.failover.rejected" in events(fstack)


def test_expired_request_refuses_late_approval_and_executes_nothing(host: Host, fstack: LocalStack) -> None:
    code, body = host.request("olivia", scope="initech")
    assert code == 202, body
    iid = body["id"]
    host.wait_state(iid, "AWAITING_APPROVAL")
    done = host.wait_state(iid, "EXPIRED", timeout=90)
    assert done["steps"] == []
    code, late = host.decide("approve", iid, "amir")
    assert code == 409 and "expired" in late["error"]["message"]
    assert "failover.expired" in [r["action"] for r in evidence(fstack, iid)]
    assert "continuity.failover.expired" in events(fstack)


# ---- kill the host mid-step: resume, never two writable primaries ------------------------------


@pytest.mark.parametrize("step", ["fence", "promote"])
def test_host_killed_during_step_resumes_to_completion_without_lost_commits(
        host: Host, fstack: LocalStack, fresh: LocalFailover, step: str) -> None:
    host.stop()
    host.start(CONTINUITY_FAILOVER_STEP_PAUSE=f"{step}:6")
    try:
        body, writer = run_approved_failover(host, fstack)
        if step == "fence":
            wait = lambda: fresh.observe_primary("weu-primary").read_only  # noqa: E731
        else:
            wait = lambda: fresh.observe_replica("neu-replica").in_recovery is False  # noqa: E731
        deadline = time.monotonic() + 60
        while not wait():
            assert time.monotonic() < deadline, f"the {step} step never did its work"
            time.sleep(0.05)
        host.kill()
        # While the host is dead: at most one writable primary.
        writable = [c for c in ("primary", "replica") if not fresh.refuses_writes(c)]
        assert len(writable) <= 1, writable
    finally:
        host.stop()
        host.start()
    done = host.wait_state(body["id"], "COMPLETED", "FAILED", timeout=120)
    writer.stop()
    assert done["state"] == "COMPLETED", done["reason"]
    assert writer.lost_on(fstack.dsn("replica")) == []
    assert fresh.refuses_writes("primary") and not fresh.refuses_writes("replica")
