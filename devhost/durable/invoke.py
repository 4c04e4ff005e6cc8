"""Calling orchestrator and activity functions the way the Python worker does.

The worker decodes an orchestration trigger with ``OrchestrationTriggerConverter`` (the extension sends the
context as JSON text) and calls the function the ``DFApp.orchestration_trigger`` decorator registered:
``Orchestrator.create(user_fn)``'s ``handle``, which returns the ``OrchestratorState`` JSON or raises an
exception whose message carries that state after ``$OutOfProcData$:``. Activity inputs are decoded and
results encoded with ``ActivityTriggerConverter`` (``df_loads``/``df_dumps``), so custom-object
serialisation behaves as in Azure.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.functions import _abc as func_abc
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter, OrchestrationTriggerConverter

OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"


@dataclass
class DurableFunctions:
    """The orchestrators and activities of an app, by the names ``call_activity``/``start_new`` use."""

    orchestrators: dict[str, Callable[..., Any]] = field(default_factory=dict)
    activities: dict[str, Any] = field(default_factory=dict)  # name -> azure.functions Function

    @classmethod
    def from_functions(cls, functions: list[Any]) -> DurableFunctions:
        """Index ``app.get_functions()``: names are the function names (and the trigger's explicit name)."""
        found = cls()
        for function in functions:
            trigger = function.get_trigger()
            if trigger is None:
                continue
            kind = trigger.get_binding_name()
            names = {function.get_function_name()}
            if kind == "orchestrationTrigger":
                if getattr(trigger, "orchestration", None):
                    names.add(trigger.orchestration)
                for name in names:
                    found.orchestrators[name] = function.get_user_function()
            elif kind == "activityTrigger":
                if getattr(trigger, "activity", None):
                    names.add(trigger.activity)
                for name in names:
                    found.activities[name] = function
        return found


@dataclass
class OrchestratorOutcome:
    """What one orchestrator invocation returned: the OrchestratorState JSON, and the error if it raised."""

    state: dict[str, Any]
    error: str | None = None
    details: str | None = None


def run_orchestrator(handle: Callable[..., Any], context_json: str) -> OrchestratorOutcome:
    """Invoke the registered orchestrator ``handle`` with the context JSON, as the worker does."""
    context = OrchestrationTriggerConverter.decode(meta.Datum(context_json, "json"), trigger_metadata=None)
    try:
        returned = handle(context)
    except Exception as exc:  # noqa: BLE001 - an orchestrator exception fails the orchestration, as in Azure
        message = str(exc)
        head, marker, data = message.partition(OUT_OF_PROC_MARKER)
        state: dict[str, Any] = {"isDone": False, "actions": []}
        if marker:
            try:
                state = json.loads(data)
            except ValueError:
                head = message
        cause = exc.__cause__ or exc
        details = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        return OrchestratorOutcome(state=state, error=head or type(cause).__name__, details=details)
    return OrchestratorOutcome(state=json.loads(returned))


class ActivityContext(func_abc.Context):
    """The ``context`` an activity may declare; the worker passes one per invocation."""

    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return ""

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


@dataclass
class ActivityFailure(Exception):
    """An activity raised; ``reason`` and ``details`` become the TaskFailed event."""

    reason: str
    details: str

    def __str__(self) -> str:
        return self.reason


def run_activity(function: Any, name: str, input_text: str | None) -> str:
    """Run one activity and return its result as the JSON text stored in ``TaskCompleted.Result``.

    :raises ActivityFailure: the activity (or the decoding of its input, or the encoding of its result) failed.
    """
    try:
        trigger = function.get_trigger()
        user_function = function.get_user_function()
        value = ActivityTriggerConverter.decode(meta.Datum(input_text if input_text is not None else "null", "json"),
                                                trigger_metadata=None)
        kwargs: dict[str, Any] = {trigger.name: value}
        if "context" in inspect.signature(user_function).parameters and trigger.name != "context":
            kwargs["context"] = ActivityContext(name)
        result = user_function(**kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return str(ActivityTriggerConverter.encode(result, expected_type=None).value)
    except Exception as exc:  # noqa: BLE001 - any activity error is reported to the orchestrator as TaskFailed
        reason = f"Activity function '{name}' failed: {type(exc).__name__}: {exc}"
        # The first frame is this function; the trace starts in the activity, as the worker reports it.
        trace = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        details = "".join(traceback.format_exception(type(exc), exc, trace or exc.__traceback__))
        raise ActivityFailure(reason, details) from exc


async def _await(awaitable: Any) -> Any:
    return await awaitable
