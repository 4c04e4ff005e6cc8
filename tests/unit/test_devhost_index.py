"""The local host refuses at indexing what the Functions host refuses, with the host's own message.

The rules are the host's (Azure/azure-functions-host, ``ScriptHost.ValidateHttpFunction`` and
``HttpRoutesConflict``): a route in the reserved ``admin``/``runtime`` space, and two functions whose routes are
the same template with a method in common. Before, the devhost served such routes and `make run` passed while
`func start` and Azure would leave the function in error.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func
import pytest

from continuity.kernel.errors import ConfigError
from devhost.index import index_app, list_functions
from tests.app_functions import app_functions


def _app(*routes: tuple[str, str, list[str] | None]) -> list[Any]:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for name, route, methods in routes:
        def handler(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("ok")

        handler.__name__ = name
        app.route(route=route, methods=methods)(app.function_name(name)(handler))
    return list_functions(app)


@pytest.mark.parametrize("route", ["admin/catalog/{operation}", "admin/retention/apply", "/Admin/x", "administration/x",
                                   "runtime/webhooks/x", "runtimes"])
def test_route_in_the_hosts_reserved_space_is_refused_at_indexing(route: str) -> None:
    with pytest.raises(ConfigError, match="The specified route conflicts with one or more built in routes"):
        index_app(_app(("reserved", route, ["POST"])))


def test_same_route_with_a_method_in_common_is_refused_naming_the_other_function() -> None:
    with pytest.raises(ConfigError, match="The route specified conflicts with the route defined by function 'first'"):
        index_app(_app(("first", "tenants/{tenant}/holds", ["GET", "POST"]),
                       ("second", "tenants/{tenant}/holds", ["POST"])))


def test_same_route_with_disjoint_methods_or_other_templates_is_served() -> None:
    indexed = index_app(_app(("reads", "tenants/{tenant}/holds", ["GET"]),
                             ("writes", "Tenants/{tenant}/holds", ["POST"]), ("admins", "backoffice/admin", ["POST"])))
    assert sorted(f.name for f in indexed) == ["admins", "reads", "writes"]


def _timers(*schedules: str) -> list[Any]:
    app = func.FunctionApp()
    for i, schedule in enumerate(schedules):
        def tick(timer: func.TimerRequest) -> None:
            return None

        tick.__name__ = f"tick{i}"
        app.timer_trigger(schedule=schedule, arg_name="timer")(app.function_name(f"tick{i}")(tick))
    return list_functions(app)


@pytest.mark.parametrize("schedule", [
    "0 2 * * *",          # five fields: NCRONTAB with seconds needs six
    "0 0 25 * * *",       # hour 25
    "*/5 * * * * * *",    # seven fields
    "every day",
    "%CONTINUITY_TEST_BAD_SCHEDULE%",  # a setting set to a five-field (Unix) expression
])
def test_timer_schedule_the_host_would_not_parse_is_refused_at_indexing(schedule: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_TEST_BAD_SCHEDULE", "0 2 * * *")
    # TimerSchedule.Create (azure-webjobs-sdk-extensions): NCRONTAB with seconds or a TimeSpan, else the binding
    # fails at startup. Before, the devhost indexed such a timer and only logged it as unscheduled.
    with pytest.raises(ConfigError, match="function 'tick0': The schedule expression was not recognized as a "
                                          "valid cron expression or timespan string"):
        index_app(_timers(schedule))


def test_six_field_ncrontab_timespan_and_a_set_setting_are_indexed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_TEST_SCHEDULE", "0 30 2 * * 1-5")
    indexed = index_app(_timers("0 0 2 * * *", "00:05:00", "%CONTINUITY_TEST_SCHEDULE%"))
    assert [f.schedule for f in indexed] == ["0 0 2 * * *", "00:05:00", "%CONTINUITY_TEST_SCHEDULE%"]


def test_timer_on_an_unset_setting_is_indexed_and_left_to_the_scheduler_to_disable() -> None:
    # Not refused at indexing: the devhost disables that timer alone and reports why (tests/e2e/test_devhost_timers).
    [indexed] = index_app(_timers("%CONTINUITY_NO_SUCH_SCHEDULE%"))
    assert indexed.unservable is None


def test_function_app_declares_no_route_the_host_would_reject() -> None:
    # The whole app indexes: no reserved route, no conflicting pair (it raised for admin/... before).
    indexed = index_app(list(app_functions()))
    routes = sorted(f.route.template for f in indexed if f.route is not None)
    assert routes and not [r for r in routes if r.lower().startswith(("admin", "runtime"))]
