"""Function indexing: load ``MODULE:ATTR`` and read each function's bindings as the Python worker does.

The worker asks ``app.get_functions()`` for :class:`azure.functions.decorators.function_app.Function`
objects and sends their binding dicts to the host; the host routes triggers by those dicts. This
module turns the same dicts into :class:`IndexedFunction` records the devhost serves from.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from continuity.kernel.errors import ConfigError

logger = logging.getLogger(__name__)


class TriggerType(StrEnum):
    HTTP = "httpTrigger"
    TIMER = "timerTrigger"
    EVENT_GRID = "eventGridTrigger"
    ORCHESTRATION = "orchestrationTrigger"
    ACTIVITY = "activityTrigger"
    ENTITY = "entityTrigger"


# Bindings the devhost supplies besides the trigger; anything else makes the function unservable.
SUPPORTED_BINDINGS = {"http", "durableClient"}
DURABLE_TRIGGERS = {TriggerType.ORCHESTRATION, TriggerType.ACTIVITY, TriggerType.ENTITY}


@dataclass(frozen=True)
class Route:
    """An ASP.NET-style route template (``tenants/{tenant}/backups/{id:int?}``) compiled to a regex."""

    template: str
    pattern: re.Pattern[str]
    params: tuple[str, ...]
    literal_segments: int
    has_catch_all: bool

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path.strip("/"))
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}

    @property
    def precedence(self) -> tuple[int, int, int]:
        """Sort key: literal routes before parameterised ones, catch-alls last (ASP.NET precedence)."""
        return (int(self.has_catch_all), -self.literal_segments, len(self.params))


# Inline constraints the Functions host (ASP.NET routing) knows; unknown ones are tolerated as "any".
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "decimal": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "bool": r"(?:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "datetime": r"[^/]+",
}
_TOKEN = re.compile(r"\{([^{}]+)\}")


def compile_route(template: str) -> Route:
    """Compile a route template; raises :class:`ConfigError` naming the template when it is malformed."""
    cleaned = template.strip().strip("/")
    segments = cleaned.split("/") if cleaned else []
    regex = ""
    params: list[str] = []
    literals = 0
    catch_all = False
    for position, segment in enumerate(segments):
        if not segment:
            raise ConfigError(f"route {template!r}: empty segment; remove the doubled '/'")
        parts: list[str] = []
        last = 0
        optional_segment = False
        tokens = list(_TOKEN.finditer(segment))
        if not tokens:
            literals += 1
        for token in tokens:
            parts.append(re.escape(segment[last:token.start()]))
            last = token.end()
            spec = token.group(1).strip()
            optional = spec.endswith("?")
            spec = spec.rstrip("?")
            if spec.startswith("**") or spec.startswith("*"):
                name = spec.lstrip("*").split(":")[0].split("=")[0]
                if position != len(segments) - 1:
                    raise ConfigError(f"route {template!r}: a catch-all parameter must be the last segment")
                _check_name(template, name, params)
                params.append(name)
                parts.append(f"(?P<{name}>.*)")
                catch_all = True
                optional_segment = True
                continue
            name, _, constraint_text = spec.partition(":")
            name = name.split("=")[0]
            if "=" in spec:
                optional = True  # a default value makes the parameter optional
            _check_name(template, name, params)
            params.append(name)
            body = r"[^/]+"
            for constraint in filter(None, constraint_text.split(":")):
                base = constraint.split("(")[0].lower()
                if base in _CONSTRAINTS:
                    body = _CONSTRAINTS[base]
            parts.append(f"(?P<{name}>{body})")
            if optional:
                if len(tokens) != 1 or segment != token.group(0):
                    raise ConfigError(f"route {template!r}: an optional parameter must fill its whole segment")
                optional_segment = True
        parts.append(re.escape(segment[last:]))
        piece = "".join(parts)
        separator = "/" if position else ""
        regex += f"(?:{separator}{piece})?" if optional_segment else f"{separator}{piece}"
    return Route(template=template, pattern=re.compile(regex, re.IGNORECASE), params=tuple(params),
                 literal_segments=literals, has_catch_all=catch_all)


def _check_name(template: str, name: str, seen: list[str]) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"route {template!r}: parameter name {name!r} must be an identifier")
    if name in seen:
        raise ConfigError(f"route {template!r}: parameter {name!r} appears twice")


@dataclass
class IndexedFunction:
    """One function of the app, as the host sees it."""

    name: str
    trigger_type: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    user_function: Any
    is_async: bool
    trigger_param: str
    client_param: str | None = None
    wants_context: bool = False
    route: Route | None = None
    methods: frozenset[str] | None = None
    auth_level: str = "FUNCTION"
    schedule: str | None = None
    run_on_startup: bool = False
    unservable: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_durable(self) -> bool:
        return self.trigger_type in DURABLE_TRIGGERS

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary for the admin API and ``continuity local status``."""
        info: dict[str, Any] = {"name": self.name, "trigger": self.trigger_type}
        if self.route is not None:
            info.update(route=self.route.template, methods=sorted(self.methods) if self.methods else ["*"],
                        authLevel=self.auth_level)
        if self.schedule is not None:
            info.update(schedule=self.schedule, runOnStartup=self.run_on_startup)
        if self.client_param:
            info["durableClient"] = True
        if self.unservable:
            info["error"] = self.unservable
        return info


def load_app(spec: str) -> Any:
    """Import ``MODULE:ATTR`` (``function_app:app``) from the working directory, as the worker does."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not module_name:
        raise ConfigError(f"app {spec!r}: expected MODULE:ATTR, e.g. function_app:app")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"app {spec!r}: cannot import {module_name!r} ({exc}); run from the project root") from exc
    try:
        app = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"app {spec!r}: module {module_name!r} has no attribute {attr!r}") from exc
    if not hasattr(app, "get_functions"):
        raise ConfigError(f"app {spec!r}: {attr!r} is not a FunctionApp (it has no get_functions())")
    return app


def _binding_dicts(function: Any) -> list[dict[str, Any]]:
    # StringifyEnumJsonEncoder turns enums (direction, authLevel, dataType) into their names, as the
    # worker sends them to the host.
    import json

    from azure.functions.decorators.utils import StringifyEnumJsonEncoder

    return list(json.loads(json.dumps(function.get_dict_repr(), cls=StringifyEnumJsonEncoder))["bindings"])


def index_function(function: Any) -> IndexedFunction:
    """Read one ``Function`` of ``app.get_functions()``."""
    name = str(function.get_function_name())
    bindings = _binding_dicts(function)
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    user_function = function.get_user_function()
    is_async = inspect.iscoroutinefunction(user_function)
    try:
        parameters = inspect.signature(user_function).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    if len(triggers) != 1:
        return IndexedFunction(name=name, trigger_type="none", trigger={}, bindings=bindings,
                               user_function=user_function, is_async=is_async, trigger_param="",
                               unservable="a function needs exactly one trigger binding")
    trigger = triggers[0]
    indexed = IndexedFunction(
        name=name, trigger_type=str(trigger["type"]), trigger=trigger, bindings=bindings,
        user_function=user_function, is_async=is_async, trigger_param=str(trigger.get("name", "")),
        wants_context="context" in parameters and trigger.get("name") != "context",
    )
    for binding in bindings:
        kind = str(binding.get("type", ""))
        if binding is trigger:
            continue
        if kind == "durableClient":
            indexed.client_param = str(binding["name"])
        elif kind not in SUPPORTED_BINDINGS and indexed.trigger_type not in DURABLE_TRIGGERS:
            indexed.unservable = f"binding type {kind!r} is not supported by the devhost"
    if indexed.trigger_type == TriggerType.HTTP:
        try:
            indexed.route = compile_route(str(trigger.get("route") or name))
        except ConfigError as exc:
            indexed.unservable = str(exc)
        methods = trigger.get("methods")
        indexed.methods = frozenset(str(m).upper() for m in methods) if methods else None
        indexed.auth_level = str(trigger.get("authLevel") or "FUNCTION").upper()
    elif indexed.trigger_type == TriggerType.TIMER:
        indexed.schedule = str(trigger.get("schedule", ""))
        indexed.run_on_startup = bool(trigger.get("runOnStartup", False))
    elif indexed.trigger_type not in {t.value for t in TriggerType}:
        indexed.unservable = f"trigger type {indexed.trigger_type!r} is not supported by the devhost"
    return indexed


def list_functions(app: Any) -> list[Any]:
    """``app.get_functions()``, called once: azure-functions remembers the names it validated, so a
    second call on the same app fails as if every function were a duplicate.
    """
    try:
        return list(app.get_functions())
    except ValueError as exc:  # azure-functions validates names and bindings here, as at worker indexing
        raise ConfigError(f"the app's functions do not index: {exc}") from exc


# The Functions host's own rules and messages (Azure/azure-functions-host, ScriptHost.ValidateHttpFunction and
# HttpRoutesConflict): there the function is left in error and never served; here the app is refused at once, so
# `make run` fails where `func start` and Azure would.
RESERVED_ROUTE_PREFIXES = ("admin", "runtime")
RESERVED_ROUTE_MESSAGE = "The specified route conflicts with one or more built in routes."
# Azure/azure-webjobs-sdk-extensions, src/WebJobs.Extensions/Extensions/Timers/Scheduling/TimerSchedule.cs
# @ 0c116b248f8a94a9e88acd25db3d9cb2d5d76ea1 (TimerSchedule.Create): the %SETTING%-resolved expression must parse
# as NCRONTAB with seconds (CronSchedule.TryCreate: CrontabSchedule.ParseOptions IncludingSeconds = true, so six
# fields) or as a TimeSpan; otherwise the timer's binding fails at startup with this message.
SCHEDULE_MESSAGE = "The schedule expression was not recognized as a valid cron expression or timespan string."


def schedule_refusal(function: IndexedFunction) -> str | None:
    """Why the host would refuse this timer's schedule (None when it would schedule it).

    A ``%SETTING%`` that is not set is not refused here: the devhost disables that one timer and reports it in
    ``/admin/host/status`` (tests/e2e/test_devhost_timers.py pins that), as the host leaves it in error.
    """
    from devhost.timers import SETTING_REF, Schedule, app_settings

    raw = (function.schedule or "").strip()
    ref = SETTING_REF.match(raw)
    if ref and not app_settings().get(ref.group(1)):
        return None
    try:
        Schedule.resolve(raw)
    except ConfigError as exc:
        return f"{SCHEDULE_MESSAGE} ({exc})"
    return None


def host_refusal(function: IndexedFunction, earlier: list[IndexedFunction]) -> str | None:
    """Why the Functions host would refuse this function (None when it would load it): a timer whose schedule is
    neither NCRONTAB nor a TimeSpan; an HTTP route in the reserved space or conflicting with an earlier one."""
    if function.trigger_type == TriggerType.TIMER:
        return schedule_refusal(function)
    if function.trigger_type != TriggerType.HTTP:
        return None
    route = str(function.trigger.get("route") or function.name).strip("/").lower()
    if route.startswith(RESERVED_ROUTE_PREFIXES):  # a prefix, as the host checks it: "administration" too
        return RESERVED_ROUTE_MESSAGE
    for other in earlier:
        if other.trigger_type != TriggerType.HTTP:
            continue
        other_route = str(other.trigger.get("route") or other.name).strip("/").lower()
        shared = (function.methods is None or other.methods is None
                  or bool(function.methods & other.methods))
        if other_route == route and shared:
            return f"The route specified conflicts with the route defined by function '{other.name}'."
    return None


def index_app(functions: list[Any]) -> list[IndexedFunction]:
    """Index every function of ``list_functions(app)``; what the host refuses (duplicate names, reserved or
    conflicting routes, timer schedules that are neither NCRONTAB nor TimeSpan) is refused here too, naming every
    function concerned."""
    indexed = [index_function(f) for f in functions]
    names = [f.name for f in indexed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"function names must be unique; duplicated: {', '.join(duplicates)}")
    refused = [f"function {f.name!r}: {reason}" for i, f in enumerate(indexed)
               if (reason := host_refusal(f, indexed[:i]))]
    if refused:
        raise ConfigError("the Functions host would not load this app: " + "; ".join(refused))
    for f in indexed:
        if f.unservable:
            logger.error("function %s is not served: %s", f.name, f.unservable)
    return indexed
