"""A small DFApp that exercises every Durable Functions feature the devhost engine must honour.

Served by ``python -m devhost --app tests.e2e.conformance_app:app``; the tests drive it over HTTP through
its starter functions, which use the real ``DurableOrchestrationClient``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


# ---- activities ------------------------------------------------------------------------------
@app.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    return f"Hello {name}"


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="payload")
def noop(payload: Any) -> Any:
    return payload


@app.activity_trigger(input_name="payload")
def slow_echo(payload: dict[str, Any]) -> Any:
    time.sleep(float(payload.get("seconds", 0.5)))
    return payload.get("value")


@app.activity_trigger(input_name="payload")
def flaky(payload: dict[str, Any]) -> str:
    """Fails ``failures`` times for a key, then succeeds (attempts counted in this process)."""
    with _attempts_lock:
        _attempts[payload["key"]] = _attempts.get(payload["key"], 0) + 1
        attempt = _attempts[payload["key"]]
    if attempt <= int(payload["failures"]):
        raise RuntimeError(f"attempt {attempt} of {payload['key']} failed on purpose")
    return f"succeeded on attempt {attempt}"


@app.activity_trigger(input_name="message")
def explode(message: str) -> None:
    raise ValueError(message)


@app.activity_trigger(input_name="payload")
def record_run(payload: dict[str, Any]) -> int:
    """Appends one line per execution to a file, so a test can count at-least-once executions."""
    time.sleep(float(payload.get("seconds", 0.0)))
    with open(payload["log"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"item": payload["item"], "pid": os.getpid()}) + "\n")
    return int(payload["item"])


# ---- orchestrators ---------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def chaining(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    first = yield context.call_activity(say_hello, "Tokyo")
    second = yield context.call_activity(say_hello, "Seattle")
    third = yield context.call_activity("say_hello", "London")
    return [first, second, third]


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    count = int(context.get_input() or 0)
    results = yield context.task_all([context.call_activity(double, i) for i in range(count)])
    return {"count": len(results), "sum": sum(results)}


@app.orchestration_trigger(context_name="context")
def fan_out_noop(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    count = int(context.get_input() or 0)
    results = yield context.task_all([context.call_activity(noop, i) for i in range(count)])
    return len(results)


@app.orchestration_trigger(context_name="context")
def recorded_fan_out(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    spec = context.get_input()
    tasks = [context.call_activity(record_run, {"item": i, "log": spec["log"], "seconds": spec["seconds"]})
             for i in range(int(spec["count"]))]
    results = yield context.task_all(tasks)
    return sum(results)


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=200,
                              max_number_of_attempts=int(spec["max_attempts"]))
    result = yield context.call_activity_with_retry(flaky, options, {"key": spec["key"],
                                                                     "failures": spec["failures"]})
    return result


@app.orchestration_trigger(context_name="context")
def retry_pair(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Retried activities in flight while the orchestrator keeps scheduling new work around them."""
    key = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=4)
    background = context.call_activity_with_retry(flaky, options, {"key": f"{key}-bg", "failures": 3})
    yield context.task_any([background, context.call_activity(double, 1)])
    results = yield context.task_all([
        context.call_activity_with_retry(flaky, options, {"key": f"{key}-a", "failures": 1}),
        context.call_activity(double, 21),
        context.call_activity_with_retry(flaky, options, {"key": f"{key}-b", "failures": 2}),
    ])
    last = yield context.call_activity_with_retry(flaky, options, {"key": f"{key}-c", "failures": 3})
    chained = yield context.call_activity(double, 50)
    late = yield background
    return [*results, last, chained, late]


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    timeout_seconds = float(context.get_input())
    context.set_custom_status({"stage": "waiting for approval"})
    deadline = context.current_utc_datetime + dt.timedelta(seconds=timeout_seconds)
    timeout = context.create_timer(deadline)
    decision = context.wait_for_external_event("Approval")
    winner = yield context.task_any([decision, timeout])
    if winner == decision:
        timeout.cancel()
        context.set_custom_status({"stage": "approved"})
        return {"approved": True, "by": decision.result}
    context.set_custom_status({"stage": "timed out"})
    return {"approved": False}


@app.orchestration_trigger(context_name="context")
def early_event(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """Waits for an event only after a slow activity, so a prompt raise arrives before the wait exists."""
    yield context.call_activity(slow_echo, {"seconds": 1.0, "value": "warm-up"})
    data = yield context.wait_for_external_event("Early")
    return data


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    value = int(context.get_input())
    doubled = yield context.call_activity(double, value)
    return {"child": context.instance_id, "parent": context.parent_instance_id, "doubled": doubled}


@app.orchestration_trigger(context_name="context")
def failing_child(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    yield context.call_activity(explode, "child broke")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    first = yield context.call_sub_orchestrator(child, 5)
    named = yield context.call_sub_orchestrator("child", 7, instance_id=f"{context.instance_id}-named")
    try:
        yield context.call_sub_orchestrator(failing_child, None)
        failure = None
    except Exception as exc:  # noqa: BLE001 - the test asserts the child's failure reaches the parent
        failure = str(exc)
    return {"first": first, "named": named, "failure": failure}


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    state = context.get_input()
    value = yield context.call_activity(double, state["value"])
    if state["round"] < 3:
        context.continue_as_new({"round": state["round"] + 1, "value": value})
        return None
    return {"round": state["round"], "value": value}


@app.orchestration_trigger(context_name="context")
def catches(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    try:
        yield context.call_activity(explode, "boom from the activity")
    except Exception as exc:  # noqa: BLE001 - catching the activity's failure is the behaviour under test
        return {"caught": str(exc)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def uncaught(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    yield context.call_activity(explode, "nobody catches this")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def deterministic(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    first_uuid = context.new_uuid()
    started = context.current_utc_datetime.isoformat()
    echoed = yield context.call_activity(noop, {"uuid": first_uuid, "started": started})
    yield context.create_timer(context.current_utc_datetime + dt.timedelta(milliseconds=300))
    return {"echoed": echoed, "uuid": first_uuid, "started": started, "replaying_at_end": context.is_replaying}


@app.orchestration_trigger(context_name="context")
def staged(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    context.set_custom_status({"stage": "one"})
    yield context.call_activity(noop, 1)
    context.set_custom_status({"stage": "two", "progress": 50})
    go = yield context.wait_for_external_event("Go")
    context.set_custom_status({"stage": "done"})
    return go


# ---- HTTP starters (the real durable client) ---------------------------------------------------
def _json(payload: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


def _body(req: func.HttpRequest) -> Any:
    raw = req.get_body()
    return json.loads(raw) if raw else None


@app.route(route="start/{name}/{instance_id?}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = req.route_params.get("instance_id") or None
    try:
        new_id = await client.start_new(req.route_params["name"], instance_id, _body(req))
    except Exception as exc:  # noqa: BLE001 - the extension's refusal is what this starter reports
        detail = exc.args[0] if exc.args else str(exc)
        return _json({"error": {"code": "start_refused", "message": str(detail)}}, 409)
    return client.create_check_status_response(req, new_id)


@app.route(route="run/{name}/{instance_id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = req.route_params["instance_id"]
    await client.start_new(req.route_params["name"], instance_id, _body(req))
    return await client.wait_for_completion_or_create_check_status_response(
        req, instance_id, timeout_in_milliseconds=20000, retry_interval_in_milliseconds=100)


@app.route(route="status/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    found = await client.get_status(req.route_params["instance_id"], show_history=bool(req.params.get("history")))
    if not found:
        return _json({"error": {"code": "not_found", "message": "no such instance"}}, 404)
    payload = found.to_json()
    if req.params.get("history"):
        payload["history"] = getattr(found, "historyEvents", None)
    return _json(payload)


@app.route(route="instances", methods=["GET"])
@app.durable_client_input(client_name="client")
async def instances(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    wanted = [df.OrchestrationRuntimeStatus(s) for s in req.params.get("status", "").split(",") if s]
    found = await client.get_status_by(runtime_status=wanted or None,
                                       instance_id_prefix=req.params.get("prefix") or None)
    return _json([s.to_json() for s in found])


@app.route(route="raise/{instance_id}/{event}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def raise_event(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        await client.raise_event(req.route_params["instance_id"], req.route_params["event"], _body(req))
    except Exception as exc:  # noqa: BLE001 - the extension's refusal is what this starter reports
        return _json({"error": {"code": "raise_refused", "message": str(exc)}}, 409)
    return _json({"raised": req.route_params["event"]}, 202)


@app.route(route="terminate/{instance_id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.terminate(req.route_params["instance_id"], req.params.get("reason", "terminated by test"))
    return _json({"terminated": req.route_params["instance_id"]}, 202)


@app.route(route="purge/{instance_id}", methods=["DELETE"])
@app.durable_client_input(client_name="client")
async def purge(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    result = await client.purge_instance_history(req.route_params["instance_id"])
    return _json({"instancesDeleted": result.instances_deleted})
