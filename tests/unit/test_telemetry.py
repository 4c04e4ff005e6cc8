"""continuity.telemetry: spans, metrics and JSON logs through the real OpenTelemetry SDK.

The console path is read back from its stream. The Azure Monitor path runs in a child process (the
distro installs process-global providers) against a loopback HTTP server standing in for the ingestion
endpoint, so the real exporter's envelopes are read back without leaving the machine.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from continuity import telemetry
from continuity.kernel.errors import InvalidRequest

ROOT = Path(__file__).resolve().parents[2]
# Fake secrets: shaped like the real thing, valid nowhere.
FAKE_ACCOUNT_KEY = "FAKEaccountKEYzzQ0xNDk1LWZha2Uta2V5LW5vdC1yZWFs+/=="
FAKE_PG_PASSWORD = "fake-pg-Pa55word-7c1e"
FAKE_TOPIC_KEY = "FakeTopicKey0123456789abcdefFAKE="
FAKE_SAS_SIG = "fAkEsIgNaTuRe%2B0123456789%3D"
FAKE_BEARER = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJmYWtlIn0.fakesig"
FAKE_MASTER_KEY = "fake-devhost-master-key-42"
SECRETS = (FAKE_ACCOUNT_KEY, FAKE_PG_PASSWORD, FAKE_TOPIC_KEY, FAKE_SAS_SIG, FAKE_BEARER, FAKE_MASTER_KEY)


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Telemetry configured to the console, captured in a buffer; detached afterwards."""
    monkeypatch.setenv("CONTINUITY_EVENTGRID_TOPIC_KEY", FAKE_TOPIC_KEY)
    monkeypatch.setenv("CONTINUITY_DEVHOST_MASTER_KEY", FAKE_MASTER_KEY)
    buf = io.StringIO()
    where = telemetry.configure("continuity-test", connection_string="", stream=buf,
                                metric_export_interval_seconds=3600)
    assert "console" in where
    yield buf
    telemetry.shutdown()


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in buf.getvalue().splitlines() if ln.strip()]


def spans(buf: io.StringIO) -> list[dict[str, Any]]:
    return [o for o in lines(buf) if "context" in o and "kind" in o]


def logs(buf: io.StringIO) -> list[dict[str, Any]]:
    return [o for o in lines(buf) if "level" in o and "message" in o]


def metric_points(buf: io.StringIO) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in lines(buf):
        for rm in o.get("resource_metrics", []):
            for sm in rm["scope_metrics"]:
                for m in sm["metrics"]:
                    out.setdefault(m["name"], []).extend(m["data"]["data_points"])
    return out


def test_span_carries_tenant_run_and_instance_ids_and_nests(console: io.StringIO) -> None:
    with telemetry.span("tenant_validation", tenant="acme-finance", run_id="nightly-20250101",
                        instance_id="validate-acme-finance-b1"), telemetry.span("restore_into_sandbox",
                                                                               backup_id="b1"):
        pass
    by_name = {s["name"]: s for s in spans(console)}
    outer, inner = by_name["tenant_validation"], by_name["restore_into_sandbox"]
    assert outer["attributes"] == {"tenant": "acme-finance", "run_id": "nightly-20250101",
                                   "instance_id": "validate-acme-finance-b1"}
    assert inner["parent_id"] == outer["context"]["span_id"]
    assert inner["context"]["trace_id"] == outer["context"]["trace_id"]
    assert outer["resource"]["attributes"]["service.name"] == "continuity-test"


def test_span_records_the_exception_marks_error_and_reraises(console: io.StringIO) -> None:
    with pytest.raises(RuntimeError, match="sandbox"), telemetry.span("restore", tenant="globex"):
        raise RuntimeError(f"sandbox refused postgresql://continuity:{FAKE_PG_PASSWORD}@sandbox/db")
    (s,) = spans(console)
    assert s["status"]["status_code"] == "ERROR"
    assert s["events"][0]["name"] == "exception"
    assert s["events"][0]["attributes"]["exception.type"] == "RuntimeError"
    assert FAKE_PG_PASSWORD not in console.getvalue()


def test_log_lines_are_json_with_extra_fields_and_span_context(console: io.StringIO) -> None:
    log = logging.getLogger("continuity.test.catalog")
    with telemetry.span("catalog_ingest", tenant="acme-finance", run_id="catalog-x-1", instance_id="catalog-x-1"):
        log.info("backup %s cataloged", "b7", extra={"backup_id": "b7", "rows": 12})
    log.warning("outside any span", extra={"tenant": "globex"})
    inside, outside = logs(console)
    assert inside["message"] == "backup b7 cataloged"
    assert inside["level"] == "INFO" and inside["logger"] == "continuity.test.catalog"
    assert (inside["tenant"], inside["backup_id"], inside["run_id"], inside["instance_id"]) == \
        ("acme-finance", "b7", "catalog-x-1", "catalog-x-1")
    assert inside["rows"] == 12
    (span_out,) = spans(console)
    assert "0x" + inside["trace_id"] == span_out["context"]["trace_id"]
    assert outside["tenant"] == "globex" and "run_id" not in outside and "trace_id" not in outside


def test_metric_helpers_export_points_with_tenant_attributes(console: io.StringIO) -> None:
    telemetry.record_restore_validation_duration("acme-finance", 42.5, "passed")
    telemetry.record_backup_age("acme-finance", 3600)
    telemetry.count_validation_failure("globex", "ledger-balanced")
    telemetry.count_validation_failure("globex", "ledger-balanced")
    telemetry.record_failover_step("westeurope", "promote", 12.0)
    telemetry.record_catalog_ingest_lag("initech", 8)
    telemetry.flush()
    points = metric_points(console)
    (validation,) = points["continuity.restore_validation.duration"]
    assert validation["attributes"] == {"tenant": "acme-finance", "outcome": "passed"}
    assert (validation["count"], validation["sum"]) == (1, 42.5)
    assert points["continuity.backup.age"][0]["value"] == 3600
    (failures,) = points["continuity.validation.failures"]
    assert failures["attributes"] == {"tenant": "globex", "check_id": "ledger-balanced"} and failures["value"] == 2
    (step,) = points["continuity.failover.step.duration"]
    assert step["attributes"] == {"scope": "westeurope", "step": "promote"} and step["sum"] == 12.0
    assert points["continuity.catalog.ingest_lag"][0]["attributes"] == {"tenant": "initech"}


def test_negative_lag_from_clock_skew_counts_as_zero(console: io.StringIO) -> None:
    telemetry.record_catalog_ingest_lag("initech", -3)
    telemetry.record_backup_age("initech", -1)
    telemetry.flush()
    points = metric_points(console)
    assert points["continuity.catalog.ingest_lag"][0]["sum"] == 0
    assert points["continuity.backup.age"][0]["value"] == 0


@pytest.mark.parametrize("call, message", [
    (lambda: telemetry.record_restore_validation_duration("Not A Tenant", 1, "passed"), "is not a tenant id"),
    (lambda: telemetry.record_restore_validation_duration("acme-finance", -1, "passed"), "cannot be negative"),
    (lambda: telemetry.record_restore_validation_duration("acme-finance", 1, "Passed; drop"), "metric outcome"),
    (lambda: telemetry.count_validation_failure("acme-finance", ""), "metric check_id"),
    (lambda: telemetry.record_failover_step("westeurope", "promote", -0.5), "cannot be negative"),
    (lambda: telemetry.record_backup_age("x", 1), "is not a tenant id"),
], ids=["bad-tenant", "negative-duration", "bad-outcome", "empty-check-id", "negative-step", "short-tenant"])
def test_metric_helpers_refuse_bad_input(call: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        call()


def test_configure_refuses_a_bad_service_name() -> None:
    with pytest.raises(InvalidRequest, match="service name"):
        telemetry.configure("Continuity App!", connection_string="")


def test_calls_before_configure_are_harmless_no_ops() -> None:
    telemetry.shutdown()
    with telemetry.span("unconfigured", tenant="acme-finance") as s:
        telemetry.record_backup_age("acme-finance", 1)
    assert not s.get_span_context().is_valid


def log_secrets_everywhere() -> None:
    """Log settings and connection strings holding the fake secrets, every way code might."""
    log = logging.getLogger("continuity.test.leaky")
    storage = (f"DefaultEndpointsProtocol=https;AccountName=devacct;AccountKey={FAKE_ACCOUNT_KEY};"
               "EndpointSuffix=core.windows.net")
    dsn = f"host=pg.example port=5432 dbname=continuity_control user=continuity password={FAKE_PG_PASSWORD}"
    log.info("storage connection: %s", storage)
    log.info(f"control dsn {dsn}")
    log.info("url postgresql://continuity:%s@pg.example:5432/db", FAKE_PG_PASSWORD)
    log.info("sas https://devacct.blob.core.windows.net/backups/x?sv=2024-01-01&sig=%s&se=2030", FAKE_SAS_SIG)
    log.info("calling with Authorization: Bearer %s", FAKE_BEARER)
    log.info("topic key setting is %s", os.environ["CONTINUITY_EVENTGRID_TOPIC_KEY"])
    log.info("settings loaded", extra={"tenant": "acme-finance", "settings": dict(os.environ),
                                       "connection_string": storage, "dsn": dsn})
    log.info("devhost keys %r", {"master": FAKE_MASTER_KEY})
    try:
        raise ConnectionError(f"could not connect: {dsn}")
    except ConnectionError:
        log.exception("control database unreachable", extra={"tenant": "acme-finance"})


def test_redaction_keeps_every_secret_out_of_the_logs(console: io.StringIO) -> None:
    log_secrets_everywhere()
    out = console.getvalue()
    leaked = [s for s in SECRETS if s in out]
    assert leaked == [], f"secrets in the log output: {leaked}"
    records = logs(console)
    assert len(records) == 9, "every line was logged (redacted, not dropped)"
    # The rest of each line survives redaction: the lines stay useful.
    assert "AccountName=devacct;AccountKey=***" in out
    assert "dbname=continuity_control user=continuity password=***" in out
    assert records[6]["tenant"] == "acme-finance" and records[6]["connection_string"] == "***"
    assert records[8]["exception_type"] == "ConnectionError" and "could not connect" in records[8]["exc"]


def test_register_secret_redacts_a_value_learned_at_run_time(console: io.StringIO) -> None:
    telemetry.register_secret("run-time-pass-9f3a")
    logging.getLogger("continuity.test").info("read passfile: %s", "run-time-pass-9f3a")
    assert "run-time-pass-9f3a" not in console.getvalue()
    assert logs(console)[0]["message"] == "read passfile: ***"


# --- Azure Monitor path ----------------------------------------------------------------------------


class _Ingestion(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        items = json.loads(body)
        items = items if isinstance(items, list) else [items]
        type(self).received.extend(items)
        reply = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


CHILD = """
import logging, sys
from continuity import telemetry
from tests.unit.test_telemetry import log_secrets_everywhere
print(telemetry.configure("continuity-func", connection_string=sys.argv[1], live_metrics=False,
                          offline_storage=False, metric_export_interval_seconds=3600))
with telemetry.span("tenant_validation", tenant="acme-finance", run_id="nightly-1", instance_id="validate-acme-b1"):
    logging.getLogger("continuity.child").info("restored", extra={"backup_id": "b1", "tenant": "acme-finance"})
    log_secrets_everywhere()
telemetry.record_restore_validation_duration("acme-finance", 9.5, "passed")
telemetry.flush()
"""


def test_azure_monitor_exporter_sends_tenant_attributes_and_no_secret() -> None:
    _Ingestion.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ingestion)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        connection = (f"InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                      f"IngestionEndpoint=http://127.0.0.1:{port}/;LiveEndpoint=http://127.0.0.1:{port}/")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
        env.update({
            # Keep the child on this machine: no statsbeat, no control plane, no VM metadata probe.
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
            "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
            "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_app_service",
            "CONTINUITY_EVENTGRID_TOPIC_KEY": FAKE_TOPIC_KEY,
            "CONTINUITY_DEVHOST_MASTER_KEY": FAKE_MASTER_KEY,
            "PYTHONPATH": str(ROOT),
        })
        done = subprocess.run([sys.executable, "-c", CHILD, connection], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Azure Monitor" in done.stdout
    finally:
        server.shutdown()
        server.server_close()
    received = _Ingestion.received
    kinds = {item["data"]["baseType"] for item in received}
    # Internal spans arrive as in-process dependencies.
    assert kinds >= {"RemoteDependencyData", "MessageData", "MetricData"}
    span_items = [i for i in received if i["data"]["baseType"] == "RemoteDependencyData"]
    props = {k: v for i in span_items for k, v in i["data"]["baseData"].get("properties", {}).items()}
    assert props["tenant"] == "acme-finance" and props["instance_id"] == "validate-acme-b1"
    messages = [i["data"]["baseData"] for i in received if i["data"]["baseType"] == "MessageData"]
    restored = next(m for m in messages if m["message"] == "restored")
    assert restored["properties"]["backup_id"] == "b1" and restored["properties"]["tenant"] == "acme-finance"
    metric_names = {m["name"] for i in received if i["data"]["baseType"] == "MetricData"
                    for m in i["data"]["baseData"]["metrics"]}
    assert "continuity.restore_validation.duration" in metric_names
    wire = json.dumps(received) + done.stdout + done.stderr
    assert [s for s in SECRETS if s in wire] == []
