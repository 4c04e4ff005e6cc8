"""Telemetry: OpenTelemetry traces, metrics and logs, keyed by tenant, run and orchestration instance.

``configure(service_name)`` once per process sends everything to Azure Monitor when
APPLICATIONINSIGHTS_CONNECTION_STRING is set, else to the console (stderr, one JSON object a line).
Before ``configure`` every call here is a cheap no-op, so activities and tests need not configure.

Spans, metric points and log lines share the attribute names ``tenant``, ``run_id``, ``instance_id``
and ``backup_id`` (the `extra` keys of STYLE.md), so one query joins all three in Application Insights.
Logs pass through :class:`RedactingFilter`: connection strings, DSN passwords, SAS signatures, bearer
tokens and the values of secret settings never reach a handler.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricsData, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from continuity.kernel import settings
from continuity.kernel.errors import InvalidRequest
from continuity.kernel.tenants import TENANT_ID_RE

CONTEXT_KEYS = ("tenant", "backup_id", "run_id", "instance_id")
INSTRUMENTATION_NAME = "continuity"
NAME_RE = re.compile(r"^[a-z][a-z0-9_.:-]{0,79}$")
# Settings whose values are secrets wherever they appear (a connection string, a key, a DSN).
SECRET_SETTING_RE = re.compile(r"(KEY|PASSWORD|SECRET|TOKEN|CONNECTION|DSN)", re.IGNORECASE)
REDACTED = "***"
QUIET_LOGGERS = ("azure", "urllib3", "opentelemetry")

_context: ContextVar[Mapping[str, Any]] = ContextVar("continuity_telemetry_context",
                                                    default=MappingProxyType({}))


# --- redaction -------------------------------------------------------------------------------------

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # key=value secrets in connection strings, DSNs, query strings and headers
    (re.compile(r"(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|sig|password|passwd|pwd|secret|"
                r"client_secret|api[-_]?key|aeg-sas-key|aeg-sas-token|access_token|token)(\s*[=:]\s*)"
                r"(\"[^\"]*\"|'[^']*'|[^;&\s,\"')}]+)"), rf"\1\2{REDACTED}"),
    # credentials in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)([^@\s/]+)@", re.IGNORECASE), rf"\1{REDACTED}@"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{REDACTED}"),
)
_SECRET_KEY_RE = re.compile(r"(?i)(password|passwd|secret|token|credential|connection_?string|dsn|account_?key|"
                            r"api_?key|(^|_)key$)")


@dataclass
class Redactor:
    """Removes secrets from text: known secret values first, then secret-shaped key=value pairs."""

    secrets: set[str] = field(default_factory=set)

    def add(self, value: str | None) -> None:
        # Short values would blank out ordinary words; secrets worth the name are longer.
        if value and len(value) >= 6:
            self.secrets.add(value)

    def add_secret_settings(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        for key, value in env.items():
            if SECRET_SETTING_RE.search(key):
                self.add(value)

    def text(self, value: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern, replacement in _SECRET_PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def value(self, value: Any, key: str = "") -> Any:
        if key and _SECRET_KEY_RE.search(key) and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return value


_STANDARD_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so no handler after it sees a secret: message, args, extras, traceback."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_continuity_redacted", False):
            return True
        r = self.redactor
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = r.text(message), None
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's own text may hold a DSN or a key: keep its type and a redacted traceback,
            # drop the live object so no handler formats it again unredacted.
            record.exception_type = record.exc_info[0].__name__
            record.exc_text = r.text("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = r.text(record.exc_text)
        if record.stack_info:
            record.stack_info = r.text(record.stack_info)
        for key in list(record.__dict__):
            if key not in _STANDARD_RECORD_KEYS and not key.startswith("_"):
                record.__dict__[key] = r.value(record.__dict__[key], key)
        record._continuity_redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the context ids, other extras, trace ids."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _context.get()
        for key in CONTEXT_KEYS:
            v = record.__dict__.get(key, context.get(key))
            if v is not None:
                out[key] = v
        for key, v in record.__dict__.items():
            if key not in _STANDARD_RECORD_KEYS and key not in out and not key.startswith("_"):
                out[key] = v
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            out["trace_id"] = format(span_context.trace_id, "032x")
            out["span_id"] = format(span_context.span_id, "016x")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


# --- configuration ---------------------------------------------------------------------------------


@dataclass
class _Telemetry:
    destination: str
    tracer: trace.Tracer
    meter: metrics.Meter
    instruments: dict[str, Any]
    handlers: list[logging.Handler]
    redactor: Redactor
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None


_state: _Telemetry | None = None
_azure_monitor_configured = False


def _instruments(meter: metrics.Meter) -> dict[str, Any]:
    return {
        "restore_validation_duration": meter.create_histogram(
            "continuity.restore_validation.duration", unit="s",
            description="Time to restore a backup into the sandbox and run its checks"),
        "backup_age": meter.create_gauge(
            "continuity.backup.age", unit="s", description="Age of the newest cataloged backup of a tenant"),
        "validation_failures": meter.create_counter(
            "continuity.validation.failures", unit="{failure}", description="Restore checks that failed"),
        "failover_step_duration": meter.create_histogram(
            "continuity.failover.step.duration", unit="s", description="Time taken by one failover step"),
        "catalog_ingest_lag": meter.create_histogram(
            "continuity.catalog.ingest_lag", unit="s",
            description="Time from a backup blob's creation to its catalog entry"),
    }


def _noop() -> _Telemetry:
    meter = metrics.get_meter(INSTRUMENTATION_NAME)
    return _Telemetry("none", trace.get_tracer(INSTRUMENTATION_NAME), meter, _instruments(meter), [], Redactor())


def _current() -> _Telemetry:
    global _state
    if _state is None:
        _state = _noop()
    return _state


def _span_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


def _metrics_line(data: MetricsData) -> str:
    return data.to_json(indent=None) + "\n"


def configure(service_name: str, *, connection_string: str | None = None, stream: IO[str] | None = None,
              level: int = logging.INFO, metric_export_interval_seconds: float = 60.0,
              live_metrics: bool = True, offline_storage: bool = True) -> str:
    """Send traces, metrics and logs to Azure Monitor or the console; returns a sentence saying where.

    :param connection_string: Application Insights; default the APPLICATIONINSIGHTS_CONNECTION_STRING
        setting. Empty means the console.
    :param stream: where console telemetry goes (default stderr, so `--json` output on stdout stays clean).
    :raises InvalidRequest: the service name is not a short lower-case name.
    """
    global _state, _azure_monitor_configured
    if not NAME_RE.match(service_name):
        raise InvalidRequest(f"service name {service_name[:60]!r} must match {NAME_RE.pattern}")
    connection = settings.get("APPLICATIONINSIGHTS_CONNECTION_STRING") if connection_string is None \
        else connection_string
    shutdown()
    redactor = Redactor()
    redactor.add_secret_settings()
    redactor.add(connection)
    root = logging.getLogger()
    root.setLevel(level)
    # The exporters' own HTTP calls log at INFO through azure-core and urllib3: exported, those lines
    # would be exported again, without end.
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    resource = Resource.create({"service.name": service_name})

    if connection:
        if not _azure_monitor_configured:
            # Imported here: the console path must not need the Azure distro at all.
            from continuity.adapters.azure.monitor import export_to_azure_monitor

            export_to_azure_monitor(connection, resource, live_metrics=live_metrics, offline_storage=offline_storage)
            _azure_monitor_configured = True
        meter = metrics.get_meter(INSTRUMENTATION_NAME)
        state = _Telemetry("azure-monitor", trace.get_tracer(INSTRUMENTATION_NAME), meter, _instruments(meter),
                           [], redactor)
        where = f"telemetry for {service_name} goes to Azure Monitor (Application Insights)"
    else:
        out = stream or sys.stderr
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_span_line)))
        reader = PeriodicExportingMetricReader(ConsoleMetricExporter(out=out, formatter=_metrics_line),
                                               export_interval_millis=metric_export_interval_seconds * 1000)
        meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
        handler = logging.StreamHandler(out)
        handler.setFormatter(JsonFormatter())
        handler._continuity_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        meter = meter_provider.get_meter(INSTRUMENTATION_NAME)
        state = _Telemetry("console", tracer_provider.get_tracer(INSTRUMENTATION_NAME), meter, _instruments(meter),
                           [handler], redactor, tracer_provider, meter_provider)
        where = f"telemetry for {service_name} goes to the console (APPLICATIONINSIGHTS_CONNECTION_STRING is empty)"

    # Every handler on the root logger (ours, Azure Monitor's, the Functions worker's) redacts first.
    for h in root.handlers:
        h.filters = [f for f in h.filters if not isinstance(f, RedactingFilter)]
        h.addFilter(RedactingFilter(redactor))
    _state = state
    return where


def register_secret(value: str) -> None:
    """Redact this exact value from every log line from now on (a password read at run time, say)."""
    _current().redactor.add(value)


def flush() -> None:
    """Export what is buffered now (spans and metrics), e.g. before a short-lived process exits."""
    state = _current()
    if state.tracer_provider is not None:
        state.tracer_provider.force_flush()
    if state.meter_provider is not None:
        state.meter_provider.force_flush()
    if state.destination == "azure-monitor":
        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush()
        meter_provider = metrics.get_meter_provider()
        if hasattr(meter_provider, "force_flush"):
            meter_provider.force_flush()
        from opentelemetry._logs import get_logger_provider

        logger_provider = get_logger_provider()
        if hasattr(logger_provider, "force_flush"):
            logger_provider.force_flush()


def shutdown() -> None:
    """Flush and detach what :func:`configure` installed on the console path; safe to call twice."""
    global _state
    state = _state
    if state is None:
        return
    root = logging.getLogger()
    for handler in state.handlers:
        root.removeHandler(handler)
    if state.tracer_provider is not None:
        state.tracer_provider.shutdown()
    if state.meter_provider is not None:
        state.meter_provider.shutdown()
    _state = None


# --- spans -----------------------------------------------------------------------------------------


def _attributes(attrs: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    out: dict[str, str | int | float | bool] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | int | float | bool) else str(value)
    return out


@contextlib.contextmanager
def span(name: str, **attrs: Any) -> Iterator[trace.Span]:
    """A span named ``name`` with these attributes (tenant=, run_id=, instance_id=, backup_id=, ...).

    The context ids also reach every log line written inside it. An exception is recorded on the span,
    which is marked as an error, and re-raised.
    """
    attributes = _attributes(attrs)
    context = dict(_context.get())
    context.update({k: v for k, v in attributes.items() if k in CONTEXT_KEYS})
    token = _context.set(context)
    try:
        with _current().tracer.start_as_current_span(name, attributes=attributes, record_exception=False,
                                                     set_status_on_exception=False) as current:
            try:
                yield current
            except BaseException as exc:
                # The exception's text may hold a DSN or a key: the span gets it redacted.
                redact = _current().redactor.text
                current.record_exception(exc, attributes={
                    "exception.message": redact(str(exc)),
                    "exception.stacktrace": redact("".join(traceback.format_exception(exc)))})
                current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
    finally:
        _context.reset(token)


# --- metrics ---------------------------------------------------------------------------------------


def _tenant(tenant: str) -> str:
    if not TENANT_ID_RE.match(tenant):
        raise InvalidRequest(f"metric tenant {tenant[:60]!r} is not a tenant id ({TENANT_ID_RE.pattern})")
    return tenant


def _name(kind: str, value: str) -> str:
    if not NAME_RE.match(value):
        raise InvalidRequest(f"metric {kind} {value[:60]!r} must match {NAME_RE.pattern}")
    return value


def _duration(seconds: float) -> float:
    if seconds < 0:
        raise InvalidRequest(f"a duration cannot be negative (got {seconds} s)")
    return float(seconds)


def record_restore_validation_duration(tenant: str, seconds: float, outcome: str) -> None:
    """How long restoring and checking one backup took, by tenant and outcome (passed, failed, ...)."""
    _current().instruments["restore_validation_duration"].record(
        _duration(seconds), {"tenant": _tenant(tenant), "outcome": _name("outcome", outcome)})


def record_backup_age(tenant: str, seconds: float) -> None:
    """Age of the tenant's newest backup (the RPO exposure). Clock skew below zero counts as zero."""
    _current().instruments["backup_age"].set(max(0.0, float(seconds)), {"tenant": _tenant(tenant)})


def count_validation_failure(tenant: str, check_id: str) -> None:
    """One failed restore check."""
    _current().instruments["validation_failures"].add(1, {"tenant": _tenant(tenant),
                                                          "check_id": _name("check_id", check_id)})


def record_failover_step(scope: str, step: str, seconds: float) -> None:
    """How long one failover step (fence, promote, repoint, verify...) took in a scope."""
    _current().instruments["failover_step_duration"].record(
        _duration(seconds), {"scope": _name("scope", scope), "step": _name("step", step)})


def record_catalog_ingest_lag(tenant: str, seconds: float) -> None:
    """Time from a backup blob's creation to its catalog entry. Clock skew below zero counts as zero."""
    _current().instruments["catalog_ingest_lag"].record(max(0.0, float(seconds)), {"tenant": _tenant(tenant)})


def configure_if_connected(service_name: str) -> str | None:
    """In Azure: send telemetry to Application Insights when its connection string is set; otherwise do nothing.

    The Functions worker owns console logging in Azure; locally the devhost calls :func:`configure` itself.
    """
    if not settings.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return None
    return configure(service_name)
