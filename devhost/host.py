"""The devhost: serves one ``df.DFApp`` on this machine as the Functions host and Python worker do.

It owns the pieces: the indexed functions, the keys, one asyncio loop for ``async def`` functions
(the worker runs them all on one loop; the Durable client's shared aiohttp session needs that),
the timer scheduler, local Event Grid (blob watcher, custom topic, deliveries) and, when present,
the durable engine that replays orchestrations and runs activities.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import _abc as func_abc

from continuity.kernel import settings
from continuity.kernel.errors import ConfigError, ContinuityError
from devhost import keys as keys_module
from devhost.eventgrid import BlobWatcher, EventRouter, LocalTopic, parse_subscriptions, to_binding
from devhost.index import IndexedFunction, TriggerType, index_app, list_functions, load_app
from devhost.timers import TimerService

logger = logging.getLogger(__name__)

INVOCATION_TIMEOUT_SECONDS = 2 * 60 * 60  # host.json functionTimeout


class FunctionNotFound(ContinuityError):
    code = "function_not_found"
    http_status = 404


class FunctionFailed(ContinuityError):
    """A function raised: a 5xx for the caller, a stack trace in the devhost log."""

    code = "function_failed"
    http_status = 500


class _TraceContext(func_abc.TraceContext):
    def __init__(self) -> None:
        self._traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._traceparent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> func_abc.RpcException:
        raise AttributeError("no retry exception: the devhost does not retry function invocations")


class InvocationContext(func.Context):
    """``func.Context`` for functions that take a ``context`` parameter, as the worker passes it."""

    _local = threading.local()

    def __init__(self, function_name: str, directory: str, invocation_id: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._directory = directory
        self._trace = _TraceContext()
        self._retry = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._directory

    @property
    def trace_context(self) -> func_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> func_abc.RetryContext:
        return self._retry


def _load_engine_class() -> Any:
    """The durable engine (``devhost.durable.engine.DurableEngine``), or None while it does not exist."""
    try:
        from devhost.durable.engine import DurableEngine
    except ImportError as exc:
        if exc.name and exc.name.startswith("devhost.durable"):
            return None
        raise
    return DurableEngine


class Host:
    """One devhost instance. :meth:`start` brings every service up; :meth:`stop` takes it down."""

    def __init__(self, app_spec: str, port: int, *, durable: bool = True, base_dir: Path | None = None,
                 delivery_backoff_seconds: float = 0.5) -> None:
        self.app_spec = app_spec
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.dir = base_dir or keys_module.devhost_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started_at = dt.datetime.now(dt.UTC)
        self.route_prefix = "api"
        self.app = load_app(app_spec)
        self._read_host_json()
        self.function_objects = list_functions(self.app)
        self.functions = index_app(self.function_objects)
        self.by_name = {f.name: f for f in self.functions}
        self.keys = keys_module.load_keys([f.name for f in self.functions if not f.is_durable])
        self.topic_endpoint = f"{self.base_url}/eventgrid/topics/continuity/api/events"
        # Functions read the topic setting; locally it defaults to this devhost's own topic.
        if not os.environ.get("CONTINUITY_EVENTGRID_TOPIC_ENDPOINT"):
            os.environ["CONTINUITY_EVENTGRID_TOPIC_ENDPOINT"] = self.topic_endpoint
        if not os.environ.get("CONTINUITY_EVENTGRID_TOPIC_KEY"):
            os.environ["CONTINUITY_EVENTGRID_TOPIC_KEY"] = self.keys.topic_key
        self.http_routes = sorted(
            (f for f in self.functions if f.trigger_type == TriggerType.HTTP and f.route and not f.unservable),
            key=lambda f: f.route.precedence if f.route else (0, 0, 0),
        )
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._run_loop, name="devhost-asyncio", daemon=True)
        subscriptions, self.inactive_subscriptions = parse_subscriptions(
            settings.get("CONTINUITY_DEVHOST_SUBSCRIPTIONS"), self.by_name)
        self.events = EventRouter(self, subscriptions, self.dir / "events.jsonl",
                                  backoff_seconds=delivery_backoff_seconds)
        self.topic = LocalTopic(self.events, self.keys)
        containers = [c.strip() for c in settings.get("CONTINUITY_DEVHOST_WATCHED_CONTAINERS").split(",") if c.strip()]
        self.blob_watcher = BlobWatcher(self.events, containers, self.dir / "blobwatch.json",
                                        poll_seconds=float(settings.get("CONTINUITY_DEVHOST_BLOB_POLL_SECONDS") or 2))
        self.timers = TimerService(self, [f for f in self.functions if f.trigger_type == TriggerType.TIMER],
                                   self.dir / "timers.json")
        self.ready = False
        self.engine: Any = None
        self.engine_detail = "no durable functions in this app"
        if durable and any(f.is_durable or f.client_param for f in self.functions):
            self._create_engine()
        elif not durable:
            self.engine_detail = "disabled (--no-durable)"

    # ---- setup -----------------------------------------------------------------------------
    def _read_host_json(self) -> None:
        """routePrefix from host.json beside the app module, as the host reads it."""
        module = __import__(self.app_spec.partition(":")[0])
        module_file = getattr(module, "__file__", None)
        host_json = Path(module_file).parent / "host.json" if module_file else Path("host.json")
        if not host_json.exists():
            return
        try:
            config = json.loads(host_json.read_text())
        except ValueError as exc:
            raise ConfigError(f"{host_json}: not valid JSON ({exc})") from exc
        prefix = config.get("extensions", {}).get("http", {}).get("routePrefix")
        if isinstance(prefix, str):
            self.route_prefix = prefix.strip("/")

    def _create_engine(self) -> None:
        engine_class = _load_engine_class()
        if engine_class is None:
            self.engine_detail = "devhost.durable.engine is not available: orchestrations do not run"
            logger.warning("durable engine unavailable: orchestrations and activities will not run")
            return
        from continuity.adapters.postgres.connection import control_dsn

        # get_functions() remembers the names it validated and refuses a second call; index_app() made the first.
        self.app.functions_bindings = None
        self.engine = engine_class(self.function_objects, control_dsn(), self.base_url,
                                   task_hub="ContinuityHub", activity_workers=4)
        # The URLs the management API hands out carry the durabletask_extension system key, as Azure's do.
        self.engine.api.key = self.keys.durable_task_key
        self.engine_detail = "running"

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._loop_thread.start()
        if self.engine is not None:
            self.engine.start()
        self.events.start()
        self.blob_watcher.start()
        self.timers.start()
        self.ready = True
        logger.info("devhost serving %d functions on %s", len(self.functions), self.base_url)

    def stop(self) -> None:
        self.ready = False
        self.timers.stop()
        self.blob_watcher.stop()
        self.events.stop()
        if self.engine is not None:
            try:
                self.engine.stop()
            except Exception:  # noqa: BLE001 - shutdown goes on; the error is logged, not hidden
                logger.exception("durable engine did not stop cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)

    # ---- invocation ------------------------------------------------------------------------
    def call(self, function: IndexedFunction, kwargs: dict[str, Any]) -> Any:
        """Run the user function with its bindings: sync ones in this thread, async ones on the shared loop.

        :raises FunctionFailed: the function raised; the trace is logged with the invocation id.
        """
        invocation_id = str(uuid.uuid4())
        if function.wants_context:
            kwargs["context"] = InvocationContext(function.name, str(Path.cwd()), invocation_id)
        if function.client_param:
            if self.engine is None:
                raise FunctionFailed(f"function {function.name!r} needs a durable client but the durable engine "
                                     f"is not running ({self.engine_detail})")
            kwargs[function.client_param] = self.client_binding_json()
        started = time.monotonic()
        try:
            if function.is_async:
                future = asyncio.run_coroutine_threadsafe(function.user_function(**kwargs), self._loop)
                result = future.result(timeout=INVOCATION_TIMEOUT_SECONDS)
            else:
                result = function.user_function(**kwargs)
        except Exception as exc:  # noqa: BLE001 - any error in user code is logged and becomes a 500
            logger.exception("function %s failed (invocation %s)", function.name, invocation_id)
            raise FunctionFailed(f"function {function.name!r} raised {type(exc).__name__}; "
                                 f"see the devhost log (invocation {invocation_id})") from exc
        logger.info("function %s succeeded in %.0f ms (invocation %s)", function.name,
                    (time.monotonic() - started) * 1000, invocation_id)
        return result

    def client_binding_json(self) -> str:
        """The ``durableClient`` binding: the engine's task hub, with URLs that carry the system key."""
        from devhost.durable.management import client_binding

        return json.dumps(client_binding(self.engine.base_url, self.engine.task_hub, self.keys.durable_task_key))

    def invoke_http(self, function: IndexedFunction, request: func.HttpRequest) -> Any:
        return self.call(function, {function.trigger_param: request})

    def invoke_timer(self, function: IndexedFunction, *, past_due: bool, status: dict[str, str]) -> None:
        """Fire a timer function with the ``TimerRequest`` the worker builds from the host's JSON."""
        from azure.functions import meta
        from azure.functions.timer import TimerRequestConverter

        payload = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status, "IsPastDue": past_due}
        timer = TimerRequestConverter.decode(meta.Datum(json.dumps(payload), "json"), trigger_metadata=None)
        self.call(function, {function.trigger_param: timer})

    def invoke_event(self, function: IndexedFunction, event: dict[str, Any]) -> None:
        """Invoke an Event Grid trigger with one event (``func.EventGridEvent`` or ``func.CloudEvent``)."""
        self.call(function, {function.trigger_param: to_binding(event)})

    def function(self, name: str) -> IndexedFunction:
        """:raises FunctionNotFound: no function by that name (names compare case-insensitively, as in Azure)."""
        found = self.by_name.get(name) or next((f for f in self.functions if f.name.lower() == name.lower()), None)
        if found is None:
            raise FunctionNotFound(f"no function named {name!r}; GET /admin/host/status lists them")
        return found

    def run_in_background(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except ContinuityError as exc:
                logger.error("%s: %s", name, exc)

        threading.Thread(target=guarded, name=name, daemon=True).start()

    def admin_invoke(self, function: IndexedFunction, body: bytes) -> None:
        """``POST /admin/functions/NAME``: run a non-HTTP function now, as the host's admin API does."""
        if function.trigger_type == TriggerType.HTTP:
            raise ContinuityError(f"function {function.name!r} is an HTTP function; call its route instead")
        if function.unservable:
            raise ContinuityError(f"function {function.name!r} is not served: {function.unservable}")
        if function.trigger_type == TriggerType.TIMER:
            self.timers.fire_now(function)
            return
        if function.trigger_type == TriggerType.EVENT_GRID:
            try:
                payload = json.loads(body or b"{}")
                event = json.loads(payload["input"]) if isinstance(payload.get("input"), str) else payload["input"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ContinuityError('expected {"input": "<one event as a JSON string>"}') from exc
            from devhost.eventgrid import validate_events

            events = validate_events([event] if isinstance(event, dict) else event)
            for one in events:
                self.run_in_background(f"admin-{function.name}", functools.partial(self.invoke_event, function, one))
            return
        raise ContinuityError(f"function {function.name!r} ({function.trigger_type}) runs only through the "
                              f"durable engine")

    # ---- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        orchestrations: list[Any] = []
        orchestration_error = ""
        if self.engine is not None and hasattr(self.engine, "running_instances"):
            try:
                orchestrations = list(self.engine.running_instances())
            except Exception as exc:  # noqa: BLE001 - status must answer even when the task hub does not
                orchestration_error = f"{type(exc).__name__}: {exc}"
        return {
            "state": "Running",
            "app": self.app_spec,
            "pid": os.getpid(),
            "startedAt": self.started_at.isoformat(),
            "baseUrl": self.base_url,
            "routePrefix": self.route_prefix,
            "functions": [f.describe() for f in self.functions],
            "durable": {"engine": self.engine_detail, "orchestrations": orchestrations,
                        **({"error": orchestration_error} if orchestration_error else {})},
            "eventGrid": {"topicEndpoint": self.topic_endpoint,
                          "subscriptions": [s.name for s in self.events.subscriptions],
                          "inactiveSubscriptions": self.inactive_subscriptions,
                          "watchedContainers": self.blob_watcher.containers},
            "timers": self.timers.describe(),
        }
