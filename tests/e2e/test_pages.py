"""The pages the Function App serves, driven in a real browser (Debian's headless Chromium through Selenium).

Screenshots of every page are kept as test artifacts in ``.local/test-{port base}/screenshots/`` (the estate
with 6, 3 and 500 tenants, a tenant, the evidence, an approval pending and approved).

The devhost runs function_app.py against a dedicated throwaway stack (a failover drill copies its replica),
with a registry of its own: tenants in every state, seeded as catalog rows, one of them named to attack the
page and one with a hostile validation reason; one tenant lives on the local primary and is the drill's scope.
The browser sends the caller's keys as request headers (Chrome DevTools' extra headers), as App Service
Authentication or a header-adding proxy would: no key is ever put in a page or a URL.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from continuity.adapters.azure.secret_store import LocalSecrets, seed_local_recovery_credentials
from continuity.adapters.local.identity_store import IdentityStore
from continuity.adapters.local.local_stack import LocalStack
from continuity.adapters.postgres.catalog_store import PgCatalogStore
from continuity.adapters.postgres.connection import ensure_database
from continuity.adapters.postgres.control_db import prepare
from continuity.adapters.storage.blob_store import BlobStore
from continuity.catalog.manifest import backup_prefix
from continuity.catalog.model import BackupStatus, CatalogEntry
from continuity.demo.estate import synthetic_estate
from continuity.kernel.identity import Role
from tests.conftest import PORT_BASE, PROJECT_ROOT
from tests.failover_support import Host, dedicated_stack

pytestmark = [pytest.mark.stack, pytest.mark.devhost]

DEVHOST_PORT = PORT_BASE + 89  # +81 failover e2e, +85 recovery e2e, +86 chaos, +87 four-eyes
CLUSTER_OFFSET = 60  # this stack's primary, replica, control, sandbox: +60..+63
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000")
SCREENSHOTS = PROJECT_ROOT / os.environ["CONTINUITY_LOCAL_DIR"] / "screenshots"

DRILL_TENANT, DRILL_DB = "pg-drill", "odoo_pg_drill"
HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">Evil & Co "BV"'
HOSTILE_REASON = "ledger unbalanced <script>window.__pwned=2</script>"
EXPECTED = {  # tenant -> the state's words on the page
    "pg-broken": "not recoverable",
    "pg-never": "never validated", "pg-evil": "never validated", DRILL_TENANT: "never validated",
    "pg-stale": "recoverable outside objectives",
    "pg-within": "recoverable within objectives",
}


def _registry(path: Path) -> None:
    shipped = yaml.safe_load((PROJECT_ROOT / "config" / "tenants.yaml").read_text())
    servers = {**shipped["servers"], "weu-flex": {
        "kind": "flexible-server", "region": "westeurope", "host": "weu-flex.postgres.database.azure.com",
        "resource_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
                       "Microsoft.DBforPostgreSQL/flexibleServers/weu-flex"}}

    def tenant(tid: str, tier: str, name: str | None = None, server: str = "weu-flex") -> dict[str, Any]:
        return {"id": tid, "name": name or tid.replace("-", " ").title(), "tier": tier, "server": server,
                "database": "odoo_" + tid.replace("-", "_"), "primary_region": "westeurope",
                "secondary_region": "northeurope"}

    tenants = [tenant("pg-within", "gold"), tenant("pg-stale", "silver"), tenant("pg-broken", "bronze"),
               tenant("pg-never", "gold"), tenant("pg-evil", "silver", HOSTILE_NAME),
               tenant(DRILL_TENANT, "gold", server="weu-primary")]
    path.write_text(yaml.safe_dump({"tiers": shipped["tiers"], "servers": servers, "tenants": tenants}))


def _summary(tenant: str, backup_id: str, verdict: str, within: bool, reason: str,
             failed: list[str]) -> dict[str, Any]:
    at = datetime.now(UTC).isoformat()
    return {"run_id": f"validate-{tenant}-{backup_id}-1", "tenant": tenant, "backup_id": backup_id,
            "outcome": "failed" if failed else "passed", "verdict": verdict, "reason": reason,
            "within_objectives": within, "failed_checks": failed, "checks": {}, "objectives": None,
            "started_at": at, "finished_at": at}


def _entry(tenant: str, age: timedelta, status: BackupStatus, last: dict[str, Any] | None = None,
           suffix: str = "a1b2c3") -> CatalogEntry:
    created = (datetime.now(UTC) - age).replace(microsecond=0)
    backup_id = f"{created:%Y%m%dT%H%M%SZ}-{suffix}"
    if last is not None:
        last = {**last, "backup_id": backup_id, "run_id": f"validate-{tenant}-{backup_id}-1"}
    return CatalogEntry(tenant=tenant, backup_id=backup_id, status=status, created_at=created,
                        container="backups", prefix=backup_prefix(tenant, backup_id, created),
                        completed_at=created, last_validation=last)


def _record(store: PgCatalogStore, entry: CatalogEntry, summary: dict[str, Any], detail: str) -> None:
    """Record a validation attempt of ``entry`` through the catalog's own write path, with its checks."""
    failed = set(summary["failed_checks"])
    checks = [{"id": c, "status": "fail" if c in failed else "pass", "detail": detail if c in failed else "ok",
               "duration_s": 1.0, "data": {}} for c in ("file_checksum", "row_counts", "ledger", "indexes")]
    started = entry.created_at + timedelta(minutes=2)
    summary = {**summary, "objectives": {"rto_s": 3600.0, "rpo_s": 900.0, "measured_s": 95.0, "projected_s": 190.0,
                                         "restored_bytes": 42_000_000, "production_size_bytes": 84_000_000,
                                         "backup_age_s": 120.0, "rto_met": True, "rpo_met": True}}
    store.record_validation(tenant=entry.tenant, backup_id=entry.backup_id, run_id=summary["run_id"],
                            started_at=started, finished_at=started + timedelta(seconds=95), passed=not failed,
                            checks=checks, durations={c["id"]: 1.0 for c in checks}, summary=summary)


def _seed_catalog(dsn: str) -> None:
    ok = "every check passed; restore projected within RTO"
    store = PgCatalogStore(prepare(dsn))
    broken = _entry("pg-broken", timedelta(hours=1), BackupStatus.AVAILABLE)
    older = _entry("pg-broken", timedelta(days=1), BackupStatus.AVAILABLE, suffix="d4e5f6")
    entries = [
        _entry("pg-within", timedelta(minutes=5), BackupStatus.VALIDATED,
               _summary("pg-within", "", "recoverable", True, ok, [])),
        _entry("pg-stale", timedelta(hours=3), BackupStatus.VALIDATED,
               _summary("pg-stale", "", "recoverable", True, ok, [])),
        broken, older,
        _entry("pg-evil", timedelta(minutes=30), BackupStatus.AVAILABLE),
    ]
    store.insert_missing(entries)
    for entry, summary, detail in (
            (older, _summary("pg-broken", "", "recoverable", True, ok, []), "ok"),
            (broken, _summary("pg-broken", "", "not_recoverable", False, HOSTILE_REASON, ["ledger"]), HOSTILE_REASON)):
        run = f"validate-pg-broken-{entry.backup_id}-1"
        _record(store, entry, {**summary, "backup_id": entry.backup_id, "run_id": run}, detail)


@pytest.fixture(scope="module")
def pstack(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Path]]:
    tenants_file = tmp_path_factory.mktemp("pages-e2e") / "tenants.yaml"
    _registry(tenants_file)
    with dedicated_stack(PORT_BASE, "pages-e2e", offset=CLUSTER_OFFSET) as local:
        ensure_database(local.dsn("primary"), DRILL_DB)
        with psycopg.connect(local.dsn("primary", DRILL_DB), autocommit=True) as conn:
            conn.execute("create table if not exists res_company (id serial primary key, name text)")
            conn.execute("insert into res_company (name) select 'Main' where not exists (select 1 from res_company)")
        local.rebuild_replica()
        seed_local_recovery_credentials(["northeurope"], local.superuser_password(),
                                        LocalSecrets(local.base / "secrets" / "vault"))
        ensure_database(local.dsn("control"), "continuity")
        _seed_catalog(local.dsn("control", "continuity"))
        yield local, tenants_file


@pytest.fixture(scope="module")
def host(pstack: tuple[LocalStack, Path], blob_store: BlobStore) -> Iterator[Host]:
    local, tenants_file = pstack
    identities = IdentityStore(local.base)
    keys = {name: identities.add_user(name, roles, replace=True, tenants=tenants) for name, roles, tenants in (
        ("olivia", [Role.OPERATOR], None), ("amir", [Role.APPROVER], None), ("ada", [Role.ADMIN], None),
        ("rita", [Role.READER], None), ("sam", [Role.READER, Role.APPROVER], ["pg-stale"]))}
    devhost = Host(local, keys, DEVHOST_PORT)
    devhost.start(**_main_settings(tenants_file))
    yield devhost
    devhost.stop()


def _main_settings(tenants_file: Path) -> dict[str, str]:
    return {"CONTINUITY_TENANTS_FILE": str(tenants_file), "CONTINUITY_APPROVAL_WINDOW_MINUTES": "5"}


@contextlib.contextmanager
def serving_estate(host: Host, pstack: tuple[LocalStack, Path], count: int, tmp: Path,
                   mix: tuple[int, ...] | None = None, backups: int = 3) -> Iterator[None]:
    """The devhost serving a synthetic estate of ``count`` tenants, written as catalog rows into a control
    database of its own (task hub included), with its own evidence container; the usual host afterwards."""
    local, tenants_file = pstack
    dbname = f"continuity_estate_{count}"
    ensure_database(local.dsn("control"), dbname)
    dsn = prepare(local.dsn("control", dbname))
    estate = synthetic_estate(count, datetime.now(UTC), prefix="e", server="weu-primary", mix=mix, backups=backups)
    store = PgCatalogStore(dsn)
    if store.count() == 0:
        store.insert_missing(estate.entries)
        for validation in estate.validations:
            store.record_validation(**validation)
    shipped = yaml.safe_load((PROJECT_ROOT / "config" / "tenants.yaml").read_text())
    registry = tmp / f"estate-{count}.yaml"
    registry.write_text(yaml.safe_dump({"tiers": shipped["tiers"], "servers": shipped["servers"],
                                        "tenants": estate.tenants}))
    host.stop()
    host.start(CONTINUITY_TENANTS_FILE=str(registry), CONTINUITY_CONTROL_DSN=dsn,
               CONTINUITY_EVIDENCE_CONTAINER=f"evidence-estate-{count}")
    try:
        yield
    finally:
        host.stop()
        host.start(**_main_settings(tenants_file))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are not installed: run `make browser` (root)")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Network.enable", {})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def visit(driver: WebDriver, host: Host, page: str, user: str | None, *, function_key: bool = True) -> None:
    """Open ``/api/{page}`` as ``user``: its keys go as headers on every request the page makes."""
    headers = {"x-functions-key": host.function_key} if function_key else {}
    if user:
        headers["X-Continuity-Key"] = host.user_keys[user]
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})
    driver.get(f"http://127.0.0.1:{host.port}/api/{page}")


def rows(driver: WebDriver) -> dict[str, str]:
    """Tenant -> the text of its state cell, in page order."""
    return {r.get_attribute("data-tenant") or "": r.find_element(By.CSS_SELECTOR, "td.state").text
            for r in driver.find_elements(By.CSS_SELECTOR, "#estate tbody tr[data-tenant]")}


def fetch(host: Host, path: str, headers: dict[str, str], method: str = "GET",
          body: bytes | None = None) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


# ---- the estate -------------------------------------------------------------------------------


def test_dashboard_lists_every_tenant_worst_first_with_its_state_in_words(host: Host, browser: WebDriver) -> None:
    visit(browser, host, "dashboard", "ada")
    shown = rows(browser)
    browser.save_screenshot(str(SCREENSHOTS / "estate-6-tenants.png"))
    assert {t: text.split(" ", 1)[1] for t, text in shown.items()} == EXPECTED  # symbol, then the words
    order = list(shown)
    assert order[0] == "pg-broken" and order[-1] == "pg-within", order  # worst first
    stale = browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="pg-stale"]').text
    assert "RPO missed" in stale and "newest backup is" in stale  # the reason says why it is outside
    assert "no backup" in browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="pg-never"]').text
    assert "Signed in as ada" in browser.find_element(By.CSS_SELECTOR, ".who").text


def test_hostile_tenant_name_and_reason_render_as_text_and_never_run(host: Host, browser: WebDriver) -> None:
    visit(browser, host, "dashboard", "rita")
    evil = browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="pg-evil"] .name')
    broken = browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="pg-broken"] td.reason')
    assert evil.text == HOSTILE_NAME
    assert HOSTILE_REASON in broken.text
    assert browser.execute_script("return window.__pwned === undefined") is True
    assert browser.find_elements(By.CSS_SELECTOR, "#estate img, #estate script") == []


def test_filtering_by_state_works_in_the_browser(host: Host, browser: WebDriver) -> None:
    visit(browser, host, "dashboard", "rita")
    Select(browser.find_element(By.ID, "state")).select_by_value("not_recoverable")
    browser.find_element(By.ID, "apply").click()
    WebDriverWait(browser, 10).until(lambda d: "state=not_recoverable" in d.current_url)
    assert list(rows(browser)) == ["pg-broken"]
    assert "1 of 6 tenants" in browser.find_element(By.CSS_SELECTOR, "#estate caption").text
    browser.find_element(By.CSS_SELECTOR, 'ul.summary a[href*="never_validated"]').click()
    WebDriverWait(browser, 10).until(lambda d: "state=never_validated" in d.current_url)
    assert set(rows(browser)) == {"pg-never", "pg-evil", DRILL_TENANT}
    Select(browser.find_element(By.ID, "state")).select_by_value("")
    Select(browser.find_element(By.ID, "sort")).select_by_value("tenant")
    browser.find_element(By.ID, "apply").click()
    WebDriverWait(browser, 10).until(lambda d: "sort=tenant" in d.current_url)
    assert list(rows(browser)) == sorted(EXPECTED)


def test_a_scoped_reader_sees_only_its_tenant(host: Host, browser: WebDriver) -> None:
    visit(browser, host, "dashboard", "sam")
    assert rows(browser) == {"pg-stale": "\u26a0 recoverable outside objectives"}
    assert "pg-broken" not in browser.page_source and HOSTILE_NAME not in browser.page_source


def test_unauthenticated_caller_gets_a_401_page(host: Host, browser: WebDriver) -> None:
    visit(browser, host, "dashboard", None)
    assert browser.find_element(By.ID, "error").text == "401 Sign in needed"
    assert "X-Continuity-Key" in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_elements(By.CSS_SELECTOR, "#estate") == []
    for page in ("dashboard", "approvals"):
        status, kind, body = fetch(host, f"/api/{page}", {"x-functions-key": host.function_key})
        assert (status, kind.split(";")[0]) == (401, "text/html"), body[:300]
        assert "pg-" not in body
        wrong = {"x-functions-key": host.function_key, "X-Continuity-Key": "not-a-key"}
        assert fetch(host, f"/api/{page}", wrong)[0] == 401
        assert fetch(host, f"/api/{page}", {})[0] == 401  # no function key: the host refuses before the page runs
    status, _, body = fetch(host, "/api/dashboard?state=everything", {"x-functions-key": host.function_key,
                                                                      "X-Continuity-Key": host.user_keys["rita"]})
    assert status == 400 and "is not one of" in body


# ---- approvals --------------------------------------------------------------------------------


def test_an_approver_approves_a_pending_drill_from_the_page_and_the_drill_completes(
        host: Host, browser: WebDriver) -> None:
    code, body = host.request("olivia", scope=DRILL_TENANT, drill=True, reason="quarterly drill")
    assert code == 202, body
    pending = host.wait_state(body["id"], "AWAITING_APPROVAL")
    digest = pending["approval"]["digest"]
    card = f'article[data-instance="{body["id"]}"]'

    visit(browser, host, "approvals", "sam")  # scoped to another tenant: nothing to see
    assert browser.find_element(By.ID, "none").text.startswith("Nothing awaits")
    visit(browser, host, "approvals", "rita")  # a reader sees it, with no decision form and no approve button
    assert browser.find_elements(By.CSS_SELECTOR, f"{card} form.decision") == []
    assert browser.find_elements(By.CSS_SELECTOR, "button") == []
    assert "needs the approver role" in browser.find_element(By.CSS_SELECTOR, card).text
    visit(browser, host, "dashboard", "rita")  # the estate row says a request awaits approval
    drill_row = browser.find_element(By.CSS_SELECTOR, f'tr[data-tenant="{DRILL_TENANT}"] td.open')
    assert drill_row.text == "1 awaiting approval"
    visit(browser, host, "approvals", "olivia")  # the requester may withdraw, never approve
    assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, f"{card} button")] == ["Reject"]

    # CSRF: what a page on another origin can make a browser send with the approver's session, a form or
    # text/plain post, is refused (415) and recorded; the request stays pending.
    amir = {"x-functions-key": host.function_key, "X-Continuity-Key": host.user_keys["amir"]}
    forged = json.dumps({"comment": "csrf", "acknowledge": ["no_validated_backup"]}).encode()
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _, answer = fetch(host, f"/api/failovers/{body['id']}/approve",
                                  {**amir, "Content-Type": media}, method="POST", body=forged)
        assert status == 415 and "application/json" in answer, (media, status, answer)
    assert host.status(body["id"])["state"] == "AWAITING_APPROVAL"

    visit(browser, host, "approvals", "amir")
    article = browser.find_element(By.CSS_SELECTOR, card)
    assert "Failover DRILL of pg-drill" in article.text and "quarterly drill" in article.text
    assert "olivia" in article.text and "Expires" in article.text
    assert article.find_element(By.CSS_SELECTOR, "code.digest").text == digest
    browser.save_screenshot(str(SCREENSHOTS / "approval-pending.png"))
    checks = {c.text for c in article.find_elements(By.CSS_SELECTOR, "table.findings tbody td:first-child")}
    assert {"replica_in_recovery", "validated_backup", "recovery_credentials"} <= checks
    outcome = article.find_element(By.CSS_SELECTOR, ".outcome")
    approve = article.find_element(By.CSS_SELECTOR, 'button[value="approve"]')
    approve.click()  # without acknowledging the missing validated backup: refused, with the reason shown
    WebDriverWait(browser, 20).until(lambda d: outcome.text.startswith("Refused"))
    assert "403" in outcome.text and "no_validated_backup" in outcome.text
    article.find_element(By.CSS_SELECTOR, 'input[name="acknowledge"][value="no_validated_backup"]').click()
    article.find_element(By.NAME, "comment").send_keys("drill approved from the page")
    approve.click()
    WebDriverWait(browser, 30).until(lambda d: outcome.text.startswith("Approved"))
    browser.save_screenshot(str(SCREENSHOTS / "approval-approved.png"))
    assert f"/api/failovers/{body['id']}" in outcome.text

    done = host.wait_state(body["id"], "COMPLETED", "FAILED", timeout=120)
    assert done["state"] == "COMPLETED", done["reason"]
    assert [s["step"] for s in done["steps"]] == ["copy", "promote", "verify"]
    decision = done["approval"]["decision"]
    assert (decision["by"]["name"], decision["digest"], decision["comment"]) == (
        "amir", digest, "drill approved from the page")
    visit(browser, host, "approvals", "amir")
    assert browser.find_elements(By.CSS_SELECTOR, card) == []



# ---- a tenant, the evidence, the estate at 3 and at 500 tenants -------------------------------------


def test_tenant_page_shows_trends_runs_with_each_check_and_backups(host: Host, browser: WebDriver) -> None:
    visit(browser, host, "dashboard", "rita")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="pg-broken"] a.id').click()  # the estate links to it
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/api/tenants/pg-broken/page"))
    browser.save_screenshot(str(SCREENSHOTS / "tenant.png"))
    assert browser.find_element(By.ID, "state").text.endswith("not recoverable")
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert [c.get_attribute("id") for c in charts] == ["chart-rto", "chart-rpo", "chart-size"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-rto rect.bar")) == 2  # both runs, within the RTO
    runs = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run]")
    assert len(runs) == 2
    ledger = runs[0].find_element(By.CSS_SELECTOR, 'li[data-check="ledger"]')  # newest first: the failed one
    assert ledger.text == f"ledger fail: {HOSTILE_REASON}"  # the reason, as text
    assert runs[1].find_element(By.CSS_SELECTOR, 'li[data-check="ledger"]').text == "ledger pass: ok"
    assert browser.execute_script("return window.__pwned === undefined") is True
    backups = [[c.text for c in r.find_elements(By.TAG_NAME, "td")]
               for r in browser.find_elements(By.CSS_SELECTOR, "#backups tbody tr[data-backup]")]
    assert [(b[3].splitlines()[0], b[4], b[5]) for b in backups] == [  # status, storage tier, immutability
        ("failed_validation", "hot", "not immutable"), ("validated", "hot", "not immutable")]
    assert backups[0][3].endswith("-1: failed")  # the status's reason names the run
    assert browser.find_element(By.ID, "open-none").text.startswith("No open incident")


def test_tenant_page_keeps_the_api_scope_rule(host: Host, browser: WebDriver) -> None:
    visit(browser, host, "tenants/pg-broken/page", "sam")  # scoped to pg-stale: 403, before the registry
    assert browser.find_element(By.ID, "error").text == "403 Not allowed"
    assert HOSTILE_REASON not in browser.page_source
    visit(browser, host, "tenants/pg-stale/page", "sam")
    assert browser.find_element(By.ID, "tenant").get_attribute("data-tenant") == "pg-stale"
    visit(browser, host, "tenants/pg-unknown/page", "rita")
    assert browser.find_element(By.ID, "error").text == "404 Not found"
    status, _, _ = fetch(host, "/api/tenants/pg-broken/page", {"x-functions-key": host.function_key})
    assert status == 401


def test_evidence_page_shows_the_chain_head_and_links_the_drills_bundle(host: Host, browser: WebDriver) -> None:
    visit(browser, host, "evidence", "ada")
    browser.save_screenshot(str(SCREENSHOTS / "evidence.png"))
    assert int(browser.find_element(By.ID, "head-seq").text) > 0
    assert len(browser.find_element(By.ID, "head-hash").text) == 64
    link = browser.find_element(By.CSS_SELECTOR, f'#bundles a[href^="/api/evidence/bundles/failover-{DRILL_TENANT}/"]')
    link.click()  # the approved drill (test above) wrote its bundle
    WebDriverWait(browser, 10).until(lambda d: "/api/evidence/bundles/" in d.current_url)
    bundle = json.loads(browser.find_element(By.TAG_NAME, "body").text)
    assert DRILL_TENANT in json.dumps(bundle)
    visit(browser, host, "evidence", "sam")  # scoped to pg-stale: not the drill's bundle
    assert browser.find_elements(By.CSS_SELECTOR, "#bundles a") == []
    status, _, _ = fetch(host, f"/api/evidence/bundles/failover-{DRILL_TENANT}/x",
                         {"x-functions-key": host.function_key, "X-Continuity-Key": host.user_keys["sam"]})
    assert status == 403


def test_estate_of_three_tenants(host: Host, pstack: tuple[LocalStack, Path], browser: WebDriver,
                                 tmp_path: Path) -> None:
    with serving_estate(host, pstack, 3, tmp_path, mix=(4, 3, 2)):
        visit(browser, host, "dashboard", "ada")
        browser.save_screenshot(str(SCREENSHOTS / "estate-3-tenants.png"))
        assert {t: text.split(" ", 1)[1] for t, text in rows(browser).items()} == {
            "e0002-bronze": "not recoverable", "e0001-silver": "recoverable outside objectives",
            "e0000-gold": "recoverable within objectives"}


def test_estate_of_500_tenants_from_catalog_rows(host: Host, pstack: tuple[LocalStack, Path], browser: WebDriver,
                                                 tmp_path: Path) -> None:
    with serving_estate(host, pstack, 500, tmp_path, backups=1):  # one backup each: the estate reads the newest
        visit(browser, host, "dashboard", "ada")
        browser.save_screenshot(str(SCREENSHOTS / "estate-500-tenants.png"))
        shown = rows(browser)
        assert len(shown) == 500
        assert "500 of 500 tenants" in browser.find_element(By.CSS_SELECTOR, "#estate caption").text
        states = [text.split(" ", 1)[1] for text in shown.values()]
        assert states == sorted(states, key=["not recoverable", "never validated", "recoverable outside objectives",
                                             "recoverable within objectives"].index)  # worst first
        assert states.count("not recoverable") == 50 and states.count("never validated") == 100
        Select(browser.find_element(By.ID, "state")).select_by_value("not_recoverable")
        browser.find_element(By.ID, "apply").click()
        WebDriverWait(browser, 10).until(lambda d: "state=not_recoverable" in d.current_url)
        assert len(rows(browser)) == 50
        browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="e0002-bronze"] a.id').click()
        WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/api/tenants/e0002-bronze/page"))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-rto rect.bar, #chart-rto rect.over")) == 1
