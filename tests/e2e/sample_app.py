"""A small df.DFApp for the devhost's own tests: every trigger kind the devhost serves, nothing else.

Each invocation appends one JSON line to ``$SAMPLE_OUT_DIR/calls.jsonl`` so tests can see what the
devhost handed the function (types, route params, past-due flags, event fields).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
_lock = threading.Lock()
_attempts: dict[str, int] = {}


def record(function: str, **fields: Any) -> None:
    out = Path(os.environ["SAMPLE_OUT_DIR"]) / "calls.jsonl"
    with _lock, open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps({"function": function, **fields}, default=str) + "\n")


@app.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"hello": req.route_params["name"], "params": dict(req.params)}),
                             mimetype="application/json")


@app.route(route="tenants/{tenant}/backups/{id:int?}", methods=["GET", "POST"])
def tenant_backups(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({
        "method": req.method, "route_params": dict(req.route_params), "url": req.url,
        "body_bytes": len(req.get_body()), "type": type(req).__name__,
    }), status_code=201 if req.method == "POST" else 200, mimetype="application/json")


@app.route(route="tenants/{tenant}/backups/latest", methods=["GET"])
def latest_backup(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"latest_for": req.route_params["tenant"]}), mimetype="application/json")


@app.route(route="master-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def master_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin ok")


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("sample failure with a detail that must not reach the caller")


@app.route(route="echo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), mimetype="application/octet-stream")


@app.route(route="plain", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def plain(req: func.HttpRequest) -> str:
    return "plain text"


@app.route(route="async-hello", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def async_hello(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    import asyncio

    await asyncio.sleep(0)
    return func.HttpResponse(json.dumps({"function": context.function_name, "invocation": context.invocation_id}),
                             mimetype="application/json")


@app.timer_trigger(schedule="%SAMPLE_TICK_SCHEDULE%", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    record("tick", type=type(timer).__name__, past_due=timer.past_due, status=timer.schedule_status)


@app.timer_trigger(schedule="0 0 3 1 1 *", arg_name="timer")
def yearly(timer: func.TimerRequest) -> None:
    record("yearly", type=type(timer).__name__, past_due=timer.past_due)


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    fields: dict[str, Any] = {"type": type(event).__name__, "id": event.id, "subject": event.subject,
                              "data": event.get_json()}
    if isinstance(event, func.EventGridEvent):
        fields.update(event_type=event.event_type, topic=event.topic, data_version=event.data_version,
                      event_time=event.event_time)
    else:
        fields.update(event_type=event.type, source=event.source)
    data = event.get_json()
    fail_times = data.get("fail_times", 0) if isinstance(data, dict) else 0
    with _lock:
        _attempts[event.id] = _attempts.get(event.id, 0) + 1
        attempt = _attempts[event.id]
    record("on_event", attempt=attempt, **fields)
    if attempt <= fail_times:
        raise RuntimeError(f"failing attempt {attempt} of event {event.id} on purpose")
