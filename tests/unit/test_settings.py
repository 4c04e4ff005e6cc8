from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from continuity.kernel.settings import DEFAULTS
from tests.settings_scan import NOT_SETTINGS, settings_read_by_code

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_PACKAGES = ("triggers", "orchestrations", "activities")
# Decorators of azure.functions / durable Blueprints that make a function an Azure Function.
TRIGGER_DECORATORS = {"route", "timer_trigger", "schedule", "event_grid_trigger", "orchestration_trigger",
                      "activity_trigger", "entity_trigger", "blob_trigger", "queue_trigger", "http_type"}
SETTING_REFERENCE = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")


def test_every_setting_the_code_reads_is_documented_in_the_example() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    documented = set(example["Values"])
    read = set(settings_read_by_code()) - set(NOT_SETTINGS)
    assert {"CONTINUITY_PRIMARY_PORT", "CONTINUITY_NIGHTLY_SCHEDULE"} <= read  # the scan found reads at all
    assert sorted(read - documented) == [], "add these to local.settings.example.json Values (and Comments)"
    assert set(example["Comments"]) == documented


def test_example_settings_hold_no_secret() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    for key, value in example["Values"].items():
        if "KEY" in key or "PASSWORD" in key or "CONNECTION" in key:
            assert value in ("", "UseDevelopmentStorage=true"), key


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    return target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else ""


def _declared_functions() -> dict[str, str]:
    """Function name -> module, for every function the blueprint modules decorate as a trigger, read from
    their source (independently of azure.functions' indexing)."""
    declared: dict[str, str] = {}
    for package in FUNCTION_PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                names = {_decorator_name(d) for d in node.decorator_list}
                if names & TRIGGER_DECORATORS:
                    module = f"{package}.{path.stem}"
                    assert node.name not in declared, f"{node.name} declared in {declared[node.name]} and {module}"
                    declared[node.name] = module
    return declared


def _bindings(function: Any) -> list[dict[str, Any]]:
    bindings: list[dict[str, Any]] = json.loads(function.get_function_json())["bindings"]
    return bindings


def test_function_app_imports_and_lists_every_function_its_blueprint_modules_declare() -> None:
    from tests.app_functions import app_functions

    listed = [f.get_function_name() for f in app_functions()]
    declared = _declared_functions()
    assert len(declared) > 40, "the source scan found too few functions to be looking at the right files"
    assert len(listed) == len(set(listed)), "a function name is registered twice"
    assert sorted(set(declared) - set(listed)) == [], "declared but not registered in function_app.py"
    assert sorted(set(listed) - set(declared)) == [], "registered, but declared outside the blueprint packages"
    by_name = {f.get_function_name(): f for f in app_functions()}
    assert [b for b in _bindings(by_name["health"]) if b["type"] == "httpTrigger"] == [
        {"type": "httpTrigger", "direction": "IN", "name": "req", "methods": ["GET"], "authLevel": "ANONYMOUS",
         "route": "health"}]


def test_every_setting_a_function_binding_names_has_a_documented_local_default() -> None:
    # The host resolves "%NAME%" in a binding from app settings and refuses to index the function when the
    # setting is missing, so each one needs a default that local.settings.example.json and Bicep carry.
    from tests.app_functions import app_functions

    referenced: dict[str, list[str]] = {}
    for function in app_functions():
        for binding in _bindings(function):
            for value in binding.values():
                for name in SETTING_REFERENCE.findall(value if isinstance(value, str) else ""):
                    referenced.setdefault(name, []).append(function.get_function_name())
    assert {"CONTINUITY_NIGHTLY_SCHEDULE", "CONTINUITY_RETENTION_SCHEDULE",
            "CONTINUITY_CATALOG_RECONCILE_SCHEDULE"} <= set(referenced)
    assert {name: fns for name, fns in referenced.items() if not DEFAULTS.get(name)} == {}
