"""``continuity failover request|approve|reject|status``: the same HTTP API the incident responders use.

Talks to ``--endpoint`` (default: the local devhost) as ``--user NAME`` (a local identity whose key is in
this machine's keyring; `continuity users add`). Locally the devhost's function key is read from its
keys file; against Azure set CONTINUITY_DEVHOST_FUNCTION_KEY to the Function App's key, or rely on
platform authentication in front of it.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from typing import Any

from continuity.cli.output import emit
from continuity.cli.workflow_status import TERMINAL, exit_code, render_workflow
from continuity.kernel.errors import ContinuityError, ServerUnavailable


class HttpRefused(ContinuityError):
    """The API answered a 4xx/5xx; the message is the server's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.code = code
        self.http_status = status


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=None, help="API base URL (default http://127.0.0.1:<devhost port>)")
    parser.add_argument("--user", required=True, help="local identity to act as (its key is in the keyring)")
    parser.add_argument("--json", action="store_true")


def register(sub: Any) -> None:
    failover = sub.add_parser("failover", help="request, approve, reject and follow regional failovers")
    verbs = failover.add_subparsers(dest="verb", required=True, metavar="VERB")
    req = verbs.add_parser("request", help="request a failover (preflight runs, then it waits for approval)")
    req.add_argument("--scope", required=True, help="a tenant id, or 'platform'")
    req.add_argument("--region", required=True, help="target region (where the replica is)")
    req.add_argument("--reason", required=True)
    req.add_argument("--drill", action="store_true", help="promote a sandbox copy; never touch live servers")
    req.add_argument("--wait", action="store_true", help="wait for the preflight and show it")
    _common(req)
    req.set_defaults(handler=cmd_request)
    for verb in ("approve", "reject"):
        decide = verbs.add_parser(verb, help=f"{verb} a pending failover")
        decide.add_argument("id", metavar="ID", help="failover id, e.g. failover-platform")
        decide.add_argument("--comment", default="")
        decide.add_argument("--ack", action="append", default=[], metavar="RISK",
                            help="acknowledge a preflight risk by name (repeatable)")
        decide.add_argument("--digest", default=None, metavar="DIGEST",
                            help="the approval digest `failover status` showed: refused (409) if the request "
                                 "you decide is no longer the one you read")
        decide.add_argument("--wait", action="store_true", help="wait until the failover ends")
        _common(decide)
        decide.set_defaults(handler=cmd_decide, verdict=verb)
    status = verbs.add_parser("status", help="state, preflight, steps with timings, evidence chain head")
    status.add_argument("id", metavar="ID")
    status.add_argument("--wait", action="store_true", help="wait until the failover ends")
    _common(status)
    status.set_defaults(handler=cmd_status)
    seed = verbs.add_parser("seed-credentials", help="local stack only: put the recovery credential of every "
                            "local-cluster region into the local secret source (preflight checks it)")
    seed.set_defaults(handler=cmd_seed_credentials)


def _function_key() -> str:
    from continuity.kernel import settings

    configured = settings.get("CONTINUITY_DEVHOST_FUNCTION_KEY")
    if configured:
        return configured
    from devhost.keys import keys_file

    path = keys_file()
    if not path.exists():
        return ""
    return str(json.loads(path.read_text()).get("functionKey", ""))


def call(args: argparse.Namespace, method: str, path: str, body: Any = None, *,
         function_key: str | None = None) -> Any:
    """One API call as ``--user``; ``function_key`` overrides the host key (the master key for admin routes)."""
    from continuity.adapters.local.identity_store import IdentityStore
    from devhost.process import endpoint

    base = (args.endpoint or endpoint()).rstrip("/")
    headers = {"Content-Type": "application/json", "X-Continuity-Key": IdentityStore().client_key(args.user)}
    key = function_key if function_key is not None else _function_key()
    if key:
        headers["x-functions-key"] = key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - the operator's own endpoint
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error", {})
        except ValueError:
            error = {}
        raise HttpRefused(exc.code, str(error.get("code", "http_error")),
                          str(error.get("message", exc.reason))) from exc
    except OSError as exc:
        raise ServerUnavailable(f"cannot reach {base}: {exc}; is the devhost up (`continuity local status`)?") from exc


def wait_for_state(args: argparse.Namespace, path: str, until: set[str], timeout: float = 3600) -> dict[str, Any]:
    """Poll ``GET path`` until its ``state`` is one of ``until``; state changes go to a terminal, never a pipe."""
    from continuity.cli.progress import progress

    deadline = time.monotonic() + timeout
    with progress(args, f"waiting for {path.rsplit('/', 1)[-1]}") as bar:
        while True:
            body: dict[str, Any] = call(args, "GET", path)
            state = str(body.get("state"))
            bar.describe(f"{body.get('id')}: {state}")
            if state in until or time.monotonic() > deadline:
                return body
            time.sleep(0.5)


def _wait(args: argparse.Namespace, instance: str, until: set[str], timeout: float = 3600) -> dict[str, Any]:
    return wait_for_state(args, f"/api/failovers/{instance}", until, timeout)


def _preflight_lines(body: dict[str, Any]) -> list[str]:
    """Each preflight finding, then the acknowledgements an approval must carry."""
    approval = body.get("approval") or {}
    acks = approval.get("required_acknowledgements") or []
    return ([f"  [{finding['status']:<4}] {finding['detail']}" for finding in body.get("preflight") or []]
            + ([f"  approval requires --ack {' --ack '.join(acks)}"] if acks else [])
            + ([f"  approval digest {approval['digest']} (decide exactly this run with --digest)"]
               if approval.get("digest") and approval.get("state") == "PENDING" else []))


def render(body: dict[str, Any]) -> str:
    request = body.get("request") or {}
    return render_workflow(body, f"{request.get('scope')} -> {request.get('target_region')}", _preflight_lines(body),
                           live_key="approval_to_writable",
                           timing=lambda t: f"approval -> writable {t['approval_to_writable']:.3f}s, "
                                            f"total {t.get('total')}s")


def cmd_request(args: argparse.Namespace) -> int:
    accepted = call(args, "POST", "/api/failovers", {"scope": args.scope, "target_region": args.region,
                                                    "reason": args.reason, "drill": args.drill})
    body = accepted
    if args.wait:
        body = _wait(args, accepted["id"], TERMINAL | {"AWAITING_APPROVAL"})
    emit(args, body, render(body) if args.wait else f"{accepted['id']} requested; follow it with "
         f"`continuity failover status {accepted['id']} --user {args.user}`")
    return exit_code(body)


def cmd_decide(args: argparse.Namespace) -> int:
    decision: dict[str, Any] = {"comment": args.comment, "acknowledge": args.ack}
    if args.digest:
        decision["digest"] = args.digest
    answer = call(args, "POST", f"/api/failovers/{args.id}/{args.verdict}", decision)
    body = _wait(args, args.id, TERMINAL) if args.wait else answer
    emit(args, body, render(body) if args.wait else f"{args.id}: {args.verdict} accepted ({answer.get('state')})")
    return exit_code(body)


def cmd_status(args: argparse.Namespace) -> int:
    body = _wait(args, args.id, TERMINAL) if args.wait else call(args, "GET", f"/api/failovers/{args.id}")
    emit(args, body, render(body))
    return exit_code(body)


def cmd_seed_credentials(args: argparse.Namespace) -> int:
    from continuity.adapters.azure.secret_store import LocalSecrets, seed_local_recovery_credentials
    from continuity.adapters.local.local_stack import LocalStack
    from continuity.kernel import settings
    from continuity.kernel.tenants import ServerKind

    if settings.get("CONTINUITY_KEYVAULT_URL"):
        raise ContinuityError("CONTINUITY_KEYVAULT_URL is set: recovery credentials live in Key Vault; "
                              "seed-credentials only fills the local secret source")
    registry = settings.configured_registry()
    regions = sorted({s.region for s in registry.servers.values() if s.kind is ServerKind.LOCAL_CLUSTER})
    source = LocalSecrets()
    seed_local_recovery_credentials(regions, LocalStack().superuser_password(), source)
    print(f"recovery credentials present for {', '.join(regions)} in {source.directory}")
    return 0
