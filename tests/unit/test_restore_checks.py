"""The pure check decisions, recovery objectives and verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from continuity.adapters.postgres.sandbox import (
    Endpoint,
    ProductionServer,
    isolation_refusal,
    scratch_created_at,
    scratch_database_name,
)
from continuity.validation import checks as rc
from continuity.validation.checks import CheckId, CheckResult, CheckStatus, LedgerFacts, SequenceGap, VerdictStatus

NOW = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)


def passing(*ids: str) -> list[CheckResult]:
    return [CheckResult(i, CheckStatus.PASS, "ok", 0.1) for i in ids]


def objectives(measured_s: float = 60, restored: int = 10**9, production: int | None = None,
               age: timedelta = timedelta(minutes=5), rto: int = 60, rpo: int = 15) -> rc.Objectives:
    return rc.evaluate_objectives(rto_minutes=rto, rpo_minutes=rpo, measured_s=measured_s, restored_bytes=restored,
                                  production_size_bytes=production, backup_created_at=NOW - age, run_at=NOW)


# ---- checks ------------------------------------------------------------------------------------


def test_manifest_from_another_tenant_fails_naming_both_tenants() -> None:
    result = rc.check_manifest_tenant("acme", "globex", "acme/2025/06/01/x/")
    assert result.status is CheckStatus.FAIL
    assert "manifest names tenant 'globex', not 'acme'" in result.detail


def test_manifest_under_another_backup_id_fails() -> None:
    result = rc.check_manifest_tenant("acme", "acme", "acme/2025/06/01/b/", manifest_backup_id="a",
                                      path_backup_id="b")
    assert result.status is CheckStatus.FAIL and "lies under 'b'" in result.detail


def test_manifest_of_the_tenant_passes() -> None:
    assert rc.check_manifest_tenant("acme", "acme", "acme/2025/").status is CheckStatus.PASS


def test_checksum_size_mismatch_says_truncated() -> None:
    result = rc.check_file_checksum("db.dump", "a" * 64, 100, "b" * 64, 50)
    assert result.status is CheckStatus.FAIL and "truncated" in result.detail


def test_checksum_digest_mismatch_says_corrupted() -> None:
    result = rc.check_file_checksum("db.dump", "a" * 64, 100, "b" * 64, 100)
    assert result.status is CheckStatus.FAIL and "corrupted" in result.detail


def test_empty_archive_is_not_readable() -> None:
    assert rc.check_archive_readable(True, 0, "").status is CheckStatus.FAIL


def test_restore_timeout_fails_with_the_deadline() -> None:
    result = rc.check_restore_completed(None, [], True, 600)
    assert result.status is CheckStatus.FAIL and "600s" in result.detail


def test_restore_with_errors_fails_with_the_first() -> None:
    result = rc.check_restore_completed(1, ["could not execute query: boom"], False, 600)
    assert result.status is CheckStatus.FAIL and "boom" in result.detail


def test_schema_missing_table_and_column_are_named() -> None:
    result = rc.check_schema_present({"a": ["id", "x"], "b": ["id"]}, {"a": ["id"]})
    assert result.status is CheckStatus.FAIL
    assert "missing table(s): b" in result.detail and "missing column(s): a.x" in result.detail


def test_row_counts_name_each_differing_table() -> None:
    result = rc.check_row_counts({"a": 5, "b": 3}, {"a": 4, "b": 3})
    assert result.status is CheckStatus.FAIL and "a 4 vs 5" in result.detail and "b " not in result.detail


def test_row_counts_with_an_empty_manifest_fail() -> None:
    assert rc.check_row_counts({}, {}).status is CheckStatus.FAIL


def test_ledger_balanced_passes_and_totals_compare_numerically() -> None:
    facts = LedgerFacts(posted_moves=2, posted_lines=4, debit_total="10.00", credit_total="10.00")
    assert rc.check_ledger(facts, 2, 4, "10", "10.0").status is CheckStatus.PASS


def test_ledger_unbalanced_move_and_trial_balance_are_named() -> None:
    facts = LedgerFacts(posted_moves=2, posted_lines=4, debit_total="17", credit_total="10",
                        unbalanced_moves=["INV/1"], unbalanced_move_count=1, company_imbalances={"1": "7"},
                        lines_missing_account=2)
    result = rc.check_ledger(facts)
    assert result.status is CheckStatus.FAIL
    assert "1 posted move(s) unbalanced (e.g. INV/1)" in result.detail
    assert "trial balance not zero for company 1 (7)" in result.detail
    assert "2 line(s) point at a missing account" in result.detail


def test_ledger_totals_differing_from_the_manifest_fail() -> None:
    facts = LedgerFacts(posted_moves=2, posted_lines=4, debit_total="10", credit_total="10")
    result = rc.check_ledger(facts, 3, 4, "10", "10")
    assert result.status is CheckStatus.FAIL and "the manifest says 3" in result.detail


def test_numbering_gap_and_duplicate_both_fail() -> None:
    gap = SequenceGap("INV INV/2025/", 2025, 7, 2)
    failed = rc.check_invoice_numbering([gap], [], 1)
    assert failed.status is CheckStatus.FAIL and "INV INV/2025/ 2025 after 7 (2 missing)" in failed.detail
    assert rc.check_invoice_numbering([], ["INV/2025/00001"], 1).status is CheckStatus.FAIL
    assert rc.check_invoice_numbering([], [], 1).status is CheckStatus.PASS


def test_attachment_check_states_the_sample_rate() -> None:
    result = rc.check_attachments(100, [], 25, [], 0.25)
    assert result.status is CheckStatus.PASS and "a 25% sample" in result.detail
    assert result.data["sample_rate"] == 0.25


def test_attachment_missing_or_mismatched_fails() -> None:
    assert rc.check_attachments(3, ["ab/abc"], 2, [], 1.0).status is CheckStatus.FAIL
    assert rc.check_attachments(3, [], 3, ["ab/abc"], 1.0).status is CheckStatus.FAIL


def test_indexes_without_amcheck_are_unavailable_never_a_pass() -> None:
    result = rc.check_indexes(False, "no contrib", 0, {})
    assert result.status is CheckStatus.UNAVAILABLE and "no contrib" in result.detail


def test_corrupt_index_fails_naming_it() -> None:
    result = rc.check_indexes(True, "", 10, {"account_move_pkey": "item order invariant violated"})
    assert result.status is CheckStatus.FAIL and "account_move_pkey" in result.detail


def test_assertion_error_and_wrong_value_fail() -> None:
    assert rc.check_assertion("x", True, None, "permission denied").status is CheckStatus.FAIL
    assert rc.check_assertion("x", True, False, None).status is CheckStatus.FAIL
    ok = rc.check_assertion("x", 3, 3, None)
    assert ok.status is CheckStatus.PASS and ok.id == "assertion:x"


def test_a_failed_prerequisite_stops_the_run_and_a_failed_finance_check_does_not() -> None:
    assert rc.stop_reason([CheckResult(CheckId.FILE_CHECKSUM, CheckStatus.FAIL, "x")]) == "file_checksum failed"
    assert rc.stop_reason([CheckResult(CheckId.LEDGER, CheckStatus.FAIL, "x")]) is None
    assert rc.not_run(CheckId.LEDGER, "file_checksum failed").status is CheckStatus.UNAVAILABLE


def test_check_result_round_trips_through_json() -> None:
    result = CheckResult(CheckId.LEDGER, CheckStatus.WARN, "detail", 1.23456, {"n": 1})
    assert CheckResult.from_json(result.to_json()) == CheckResult(CheckId.LEDGER, CheckStatus.WARN, "detail", 1.235,
                                                                  {"n": 1})


# ---- objectives and verdict ------------------------------------------------------------------------


def test_projection_scales_linearly_to_a_larger_production_size() -> None:
    assert rc.projected_restore_seconds(60, 10**9, 10 * 10**9) == pytest.approx(600)


def test_projection_never_scales_down() -> None:
    assert rc.projected_restore_seconds(60, 10**9, 10**8) == 60
    assert rc.projected_restore_seconds(60, 10**9, None) == 60


@given(measured=st.floats(0.1, 1e5), restored=st.integers(1, 10**12), production=st.integers(1, 10**13))
def test_projection_is_at_least_the_measured_time(measured: float, restored: int, production: int) -> None:
    assert rc.projected_restore_seconds(measured, restored, production) >= measured


def test_everything_passing_within_objectives_is_recoverable() -> None:
    verdict = rc.decide_verdict(passing("a", "b"), objectives())
    assert verdict.status is VerdictStatus.RECOVERABLE and verdict.within_objectives and verdict.backup_valid
    assert verdict.reason.startswith("recoverable within objectives: all 2 checks passed")


def test_a_failed_check_makes_it_not_recoverable_naming_the_check() -> None:
    results = [*passing("a"), CheckResult("ledger", CheckStatus.FAIL, "x")]
    verdict = rc.decide_verdict(results, objectives())
    assert verdict.status is VerdictStatus.NOT_RECOVERABLE and not verdict.backup_valid
    assert verdict.reason == "not recoverable: check(s) failed: ledger" and verdict.failed_checks == ("ledger",)


def test_unavailable_check_is_not_within_objectives_but_the_backup_stays_valid() -> None:
    results = [*passing("a"), CheckResult("indexes", CheckStatus.UNAVAILABLE, "no amcheck")]
    verdict = rc.decide_verdict(results, objectives())
    assert verdict.status is VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES and verdict.backup_valid
    assert "indexes" in verdict.reason


def test_rto_breach_after_scaling_to_production_size_is_explained() -> None:
    verdict = rc.decide_verdict(passing("a"), objectives(measured_s=600, restored=10**9, production=10 * 10**9))
    assert verdict.status is VerdictStatus.RECOVERABLE_OUTSIDE_OBJECTIVES
    assert "projected restore 100.0 min (measured 10.0 min scaled x10.0 to production size) exceeds RTO 60.0 min" \
        in verdict.reason


def test_rpo_breach_is_explained() -> None:
    verdict = rc.decide_verdict(passing("a"), objectives(age=timedelta(hours=2)))
    assert "backup age 120.0 min exceeds RPO 15.0 min" in verdict.reason


def test_no_checks_is_never_recoverable() -> None:
    assert rc.decide_verdict([], objectives()).status is not VerdictStatus.RECOVERABLE


def test_objectives_round_trip_through_json() -> None:
    value = objectives(production=5 * 10**9)
    assert rc.Objectives.from_json(value.to_json()).to_json() == value.to_json()


# ---- attachment sample and scratch names -------------------------------------------------------------


def test_attachment_sample_is_reproducible_and_sized_by_rate() -> None:
    keys = [f"k{i}" for i in range(100)]
    first = rc.attachment_sample(keys, 0.1, "seed")
    assert len(first) == 10 and first == rc.attachment_sample(keys, 0.1, "seed")
    assert rc.attachment_sample(keys, 1.0, "seed") == keys


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5])
def test_attachment_sample_refuses_a_rate_outside_zero_to_one(rate: float) -> None:
    with pytest.raises(ValueError, match="sample rate"):
        rc.attachment_sample(["a"], rate, "s")


def test_scratch_name_fits_postgres_identifiers_and_parses_back() -> None:
    name = scratch_database_name("a" + "-b" * 19, NOW, "abcdef")
    assert len(name) <= 63 and name.endswith("_20250601020000_abcdef")
    assert scratch_created_at(name) == NOW
    assert scratch_created_at("odoo_acme") is None


def test_isolation_refuses_same_port_on_the_same_machine() -> None:
    servers = [ProductionServer("weu-primary", Endpoint("127.0.0.1", 5432), None)]
    assert "is production server 'weu-primary'" in (isolation_refusal(Endpoint("/run/pg", 5432), "1", "", servers)
                                                     or "")


def test_isolation_passes_a_socket_only_server_of_its_own() -> None:
    servers = [ProductionServer("weu-primary", Endpoint("127.0.0.1", 5432), "1")]
    assert isolation_refusal(Endpoint("/run/pg", 5435), "2", "", servers) is None


# ---- the HTML report -------------------------------------------------------------------------------


def test_report_is_self_contained_and_marks_runs_over_the_rto() -> None:
    from continuity.validation.report import Run, TenantSection, render_html

    runs = (Run("20250601T020000Z-aaaaaa", NOW, "passed", "recoverable", "ok", 100.0, 100.0, 60.0),
            Run("20250602T020000Z-bbbbbb", NOW, "passed", "recoverable_outside_objectives", "slow", 5000.0, 9000.0,
                60.0))
    section = TenantSection("acme", "ACME", "gold", 60, 15, runs, {"recoverable_within_objectives": False,
                                                                    "reason": "projected restore exceeds RTO"})
    html = render_html([section], NOW, {"seq": 3, "hash": "abc"})
    assert html.count("<svg") == 2 and "RTO 60 min" in html and "RPO 15 min" in html
    assert "#c0392b" in html  # the slow run's bar is drawn over the limit
    assert "src=" not in html and "href=" not in html and "<link" not in html  # nothing external
    assert "projected restore exceeds RTO" in html and "seq 3" in html


def test_report_escapes_tenant_supplied_text() -> None:
    from continuity.validation.report import TenantSection, render_html

    section = TenantSection("acme", "<script>x</script>", "gold", 60, 15, (), {})
    assert "<script>" not in render_html([section], NOW, None)


# ---- the orchestrators, driven as generators (deterministic, always drop) --------------------------------


class FakeContext:
    """Just enough of DurableOrchestrationContext to drive a generator: records every activity call."""

    def __init__(self, payload: dict, instance_id: str) -> None:
        self.payload = payload
        self.instance_id = instance_id
        self.current_utc_datetime = NOW
        self.is_replaying = False
        self.calls: list[tuple[str, dict]] = []
        self.statuses: list[dict] = []

    def get_input(self) -> dict:
        return self.payload

    def new_uuid(self) -> str:
        return "0123abcd-0000-5000-8000-000000000000"

    def set_custom_status(self, status: dict) -> None:
        self.statuses.append(status)

    def call_activity(self, fn: object, payload: dict) -> tuple[str, dict]:
        name = fn.build().get_user_function().__name__ if hasattr(fn, "build") else str(fn)
        self.calls.append((name, payload))
        return (name, payload)

    def call_activity_with_retry(self, fn: object, retry: object, payload: dict) -> tuple[str, dict]:
        return self.call_activity(fn, payload)


def drive(gen: object, answers: dict) -> dict:
    """Send each activity's scripted answer (an Exception is thrown into the generator)."""
    result = None
    send: object = None
    throw: BaseException | None = None
    while True:
        try:
            name, _ = gen.throw(throw) if throw else gen.send(send)  # type: ignore[attr-defined]
        except StopIteration as stop:
            result = stop.value
            break
        answer = answers[name]
        throw, send = (answer, None) if isinstance(answer, BaseException) else (None, answer)
    return result


def _tenant_orchestrator() -> object:
    from orchestrations.tenant_validation import tenant_validation

    return tenant_validation.build().get_user_function().orchestrator_function


PICKED = {"tenant": "acme", "backup_id": "20250601T010000Z-abcdef", "created_at": NOW.isoformat()}


def test_tenant_validation_drops_the_scratch_database_after_recording() -> None:
    ctx = FakeContext({"tenant": "acme"}, "validate-acme-20250601T010000Z-abcdef")
    step = {"checks": [], "scratch_database": "x", "restored": True, "restored_bytes": 1, "seconds": 1.0}
    summary = drive(_tenant_orchestrator()(ctx), {
        "pick_backup_for_validation": PICKED, "restore_into_sandbox": step, "run_restore_checks": [],
        "record_validation": {"outcome": "passed"}, "drop_scratch_database": {}})
    names = [c[0] for c in ctx.calls]
    assert names == ["pick_backup_for_validation", "restore_into_sandbox", "run_restore_checks",
                     "record_validation", "drop_scratch_database"]
    scratch = ctx.calls[1][1]["scratch_database"]
    assert scratch == "scratch_acme_20250601020000_0123ab"  # from the replay-safe clock and uuid
    assert ctx.calls[-1][1] == {"scratch_database": scratch}
    assert summary["scratch_dropped"] is True


def test_tenant_validation_records_an_error_and_still_drops_when_the_sandbox_is_down() -> None:
    ctx = FakeContext({"tenant": "acme"}, "validate-acme-x")
    summary = drive(_tenant_orchestrator()(ctx), {
        "pick_backup_for_validation": PICKED,
        "restore_into_sandbox": RuntimeError("the sandbox at '/run' port 1 is unreachable"),
        "record_validation": {"outcome": "error"}, "drop_scratch_database": RuntimeError("unreachable")})
    record = next(payload for name, payload in ctx.calls if name == "record_validation")
    assert record["step"] is None and "the sandbox at '/run' port 1 is unreachable" in record["error"]
    assert [c[0] for c in ctx.calls][-1] == "drop_scratch_database"
    assert summary["scratch_dropped"] is False and "unreachable" in summary["drop_error"]


def test_nightly_fans_out_in_batches_of_the_configured_parallelism() -> None:
    from orchestrations.nightly_validation import nightly_validation, plan_batches

    items = [{"tenant": f"t{i}"} for i in range(5)]
    assert [len(b) for b in plan_batches(items, 2)] == [2, 2, 1]
    assert [len(b) for b in plan_batches(items, 0)] == [1] * 5

    class NightlyContext(FakeContext):
        def __init__(self) -> None:
            super().__init__({"parallelism": 2}, "nightly-20250601")
            self.batches: list[list[str]] = []

        def call_sub_orchestrator(self, name: str, payload: dict, instance_id: str) -> str:
            return instance_id

        def task_all(self, tasks: list[str]) -> tuple[str, list[str]]:
            self.batches.append(tasks)
            return ("task_all", tasks)

    ctx = NightlyContext()
    # The listing activity names each backup's next attempt; t1's first attempt errored, so it gets a second.
    picked = [{"tenant": f"t{i}", "backup_id": f"2025060{i}T010000Z-abcdef",
               "run_id": f"validate-t{i}-2025060{i}T010000Z-abcdef-{2 if i == 1 else 1}"} for i in range(3)]
    picked.append({"tenant": "t9", "backup_id": None, "error": "no backup"})
    gen = nightly_validation.build().get_user_function().orchestrator_function(ctx)
    assert gen.send(None)[0] == "sweep_scratch_databases"
    assert gen.send({"dropped": []})[0] == "list_tenants_for_validation"
    outputs = [{"tenant": p["tenant"], "backup_id": p["backup_id"], "outcome": "passed"} for p in picked[:3]]
    assert gen.send(picked)[0] == "task_all"
    assert gen.send(outputs[:2])[0] == "task_all"
    assert gen.send(outputs[2:])[0] == "list_archived_servers"
    assert gen.send(["weu-primary"]) == ("prove_wal_archive", {"server": "weu-primary",
                                                               "run_id": "archive-proof-weu-primary-nightly-20250601"})
    with pytest.raises(StopIteration) as done:
        gen.send({"server": "weu-primary", "ok": False, "reason": "WAL segment 00000001000000000000000C is missing"})
    summary = done.value.value
    assert summary["archive_proofs_failed"] == 1 and "0000000C" in summary["archive_proofs"][0]["reason"]
    assert ctx.batches == [["validate-t0-20250600T010000Z-abcdef-1", "validate-t1-20250601T010000Z-abcdef-2"],
                           ["validate-t2-20250602T010000Z-abcdef-1"]]
    assert (summary["passed"], summary["skipped"], summary["instance_id"]) == (3, 1, "nightly-20250601")


def test_nightly_validates_flexible_server_tenants_by_point_in_time_restore() -> None:
    from orchestrations.nightly_validation import nightly_validation

    class NightlyContext(FakeContext):
        def __init__(self) -> None:
            super().__init__({"parallelism": 4}, "nightly-20250601")
            self.started: list[tuple[dict, str]] = []

        def call_sub_orchestrator(self, name: str, payload: dict, instance_id: str) -> str:
            self.started.append((payload, instance_id))
            return instance_id

        def task_all(self, tasks: list[str]) -> tuple[str, list[str]]:
            return ("task_all", tasks)

    ctx = NightlyContext()
    picked = [{"tenant": "local-one", "backup_id": "20250601T010000Z-abcdef",
               "run_id": "validate-local-one-20250601T010000Z-abcdef-1"},
              {"tenant": "azure-one", "backup_id": None, "mode": "pitr"}]
    gen = nightly_validation.build().get_user_function().orchestrator_function(ctx)
    gen.send(None)
    gen.send({"dropped": []})
    assert gen.send(picked)[0] == "task_all"
    assert gen.send([{"tenant": "local-one", "outcome": "passed"},
                     {"tenant": "azure-one", "outcome": "passed"}])[0] == "list_archived_servers"
    with pytest.raises(StopIteration):
        gen.send([])
    (local_payload, local_id), (pitr_payload, pitr_id) = ctx.started
    assert local_payload["mode"] == "restore" and local_id == "validate-local-one-20250601T010000Z-abcdef-1"
    assert pitr_payload["mode"] == "pitr"
    assert pitr_id == f"validate-azure-one-pitr-{ctx.current_utc_datetime:%Y%m%d}"


def test_nightly_table_has_one_row_per_tenant_with_objectives_and_failed_checks() -> None:
    from continuity.cli.commands.validate import render_nightly

    table = render_nightly([
        {"tenant": "acme-finance", "backup_id": "20261124T145200Z-37d437", "outcome": "passed",
         "within_objectives": True, "failed_checks": [], "reason": "recoverable within objectives"},
        {"tenant": "globex", "backup_id": "20261124T145200Z-b075bc", "outcome": "failed",
         "within_objectives": False, "failed_checks": ["ledger", "row_counts"], "reason": "2 checks failed"},
        {"tenant": "initech", "backup_id": None, "outcome": "skipped", "reason": "no backup"}])
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["tenant", "backup", "outcome", "objectives", "failed"]
    assert lines[2].split()[:4] == ["acme-finance", "20261124T145200Z-37d437", "passed", "met"]
    assert lines[3].split()[:5] == ["globex", "20261124T145200Z-b075bc", "failed", "missed", "ledger,"]
    assert lines[4].split()[:4] == ["initech", "-", "skipped", "-"]


def test_ledger_query_names_the_move_kind_column_of_the_odoo_version_and_nothing_else() -> None:
    from continuity.validation.odoo.schema import LEDGER_MOVES_SQL, ledger_moves_sql, move_type_column

    assert ledger_moves_sql() == LEDGER_MOVES_SQL and "m.move_type," in LEDGER_MOVES_SQL
    assert "m.type," in ledger_moves_sql("type") and "move_type" not in ledger_moves_sql("type")
    assert (move_type_column(("type",)), move_type_column(None)) == ("type", "move_type")
    with pytest.raises(ValueError, match="not an Odoo move kind column"):
        ledger_moves_sql("type; drop table account_move")


def test_a_check_run_during_the_restore_is_counted_once_against_the_rto() -> None:
    """Its time lies inside the restore's (the step's seconds): the measured restore is not charged for it again."""
    from pathlib import Path

    from continuity.kernel.tenants import load_registry
    from continuity.validation.service import RestoreStep, conclude

    registry = load_registry(Path(__file__).resolve().parents[2] / "config" / "tenants.yaml")
    tenant = registry.list_tenants()[0]
    during = CheckResult(CheckId.LEDGER, CheckStatus.PASS, "ok", 30.0, {"during_restore": True})
    step = RestoreStep(tuple(passing(CheckId.RESTORE_COMPLETED)), "scratch", True, 10**9, 100.0, (during,))
    after = CheckResult(CheckId.INDEXES, CheckStatus.PASS, "ok", 5.0)
    report = conclude(registry, tenant.id, "20250601T010000Z-abcdef", NOW - timedelta(minutes=5), "run", NOW, NOW,
                      step, [during, after])
    assert report.objectives is not None and report.objectives.measured_s == pytest.approx(105.0)
    assert RestoreStep.from_json(step.to_json()) == step  # the orchestration hands the step on as JSON
