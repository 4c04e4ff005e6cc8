"""Every setting the code reads is documented, and deployed.

Scans the code's syntax trees (ast) for reads of settings — ``settings.get("X")``, ``get_int("X")``,
``os.environ.get("X")``, ``os.environ["X"]``, ``os.getenv("X")`` — and checks each X against
continuity.kernel.settings.DEFAULTS, local.settings.example.json and the Function App's settings in infra/.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from continuity.kernel.settings import DEFAULTS
from tests.unit.test_infra import HOST_SETTINGS, function_app_settings, missing_settings

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("continuity", "devhost", "triggers", "orchestrations", "activities")
# Process environment the code reads that is not an app setting: none today. Add a name here only with
# the reason it is not a setting.
NOT_SETTINGS: dict[str, str] = {}


def _is_os_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os") or (
        isinstance(node, ast.Name) and node.id == "environ")


def _constant(args: list[ast.expr]) -> str | None:
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


def _reads_setting(call: ast.Call, bare_get: bool) -> bool:
    fn = call.func
    if isinstance(fn, ast.Name):
        return fn.id in ("get_int", "getenv") or (bare_get and fn.id == "get")
    if not isinstance(fn, ast.Attribute):
        return False
    owner = fn.value
    owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
    if fn.attr in ("get", "get_int") and owner_name == "settings":
        return True
    if fn.attr == "get" and _is_os_environ(owner):
        return True
    return fn.attr == "getenv" and owner_name == "os"


def settings_reads(source: str, *, bare_get: bool = False) -> set[str]:
    """Names of settings read with a literal key in this Python source.

    :param bare_get: count ``get("X")`` too (in continuity/kernel/settings.py, where ``get`` is the reader itself).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        key: str | None = None
        if isinstance(node, ast.Call) and _reads_setting(node, bare_get):
            key = _constant(node.args)
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value) and isinstance(node.ctx, ast.Load):
            key = _constant([node.slice])
        if key is not None:
            found.add(key)
    return found


def settings_read_by_code() -> dict[str, set[str]]:
    """Setting name -> files reading it, over the scanned packages and function_app.py."""
    reads: dict[str, set[str]] = {}
    files = [p for d in SCANNED for p in (ROOT / d).rglob("*.py")] + [ROOT / "function_app.py"]
    for path in files:
        for key in settings_reads(path.read_text(), bare_get=path == ROOT / "continuity" / "kernel" / "settings.py"):
            reads.setdefault(key, set()).add(str(path.relative_to(ROOT)))
    return reads


def test_scanner_finds_every_form_of_settings_read() -> None:
    source = '''
import os
from os import environ
from continuity.kernel import settings
from continuity.kernel.settings import get_int
import continuity.kernel.settings
a = settings.get("A_GET")
b = settings.get_int("B_GET_INT")
c = get_int("C_BARE_GET_INT")
d = os.environ.get("D_ENVIRON_GET", "")
e = os.environ["E_ENVIRON_INDEX"]
f = os.getenv("F_GETENV")
g = environ.get("G_BARE_ENVIRON")
h = continuity.kernel.settings.get("H_QUALIFIED")
i = get("I_BARE_GET")
os.environ["NOT_A_READ"] = "x"
other = {}.get("NOT_SETTINGS")
'''
    forms = {"A_GET", "B_GET_INT", "C_BARE_GET_INT", "D_ENVIRON_GET", "E_ENVIRON_INDEX", "F_GETENV",
             "G_BARE_ENVIRON", "H_QUALIFIED"}
    assert settings_reads(source) == forms
    assert settings_reads(source, bare_get=True) == forms | {"I_BARE_GET"}


def test_scanner_sees_the_settings_the_code_is_known_to_read() -> None:
    reads = settings_read_by_code()
    assert "continuity/kernel/settings.py" in reads["CONTINUITY_PRIMARY_PORT"]
    assert "continuity/kernel/settings.py" in reads["CONTINUITY_LOCAL_DIR"]  # a bare get() in settings.py
    assert "PG_BIN" in reads


def test_every_setting_read_in_code_is_documented() -> None:
    documented = set(DEFAULTS) | set(HOST_SETTINGS) | set(NOT_SETTINGS)
    undocumented = {k: sorted(v) for k, v in settings_read_by_code().items() if k not in documented}
    assert undocumented == {}, "add these to continuity.kernel.settings.DEFAULTS and local.settings.example.json"


def test_every_setting_is_in_the_example_values_and_comments() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    required = set(DEFAULTS) | set(HOST_SETTINGS)
    assert sorted(required - set(example["Values"])) == [], "missing from Values"
    assert sorted(required - set(example["Comments"])) == [], "missing from Comments"


def test_every_setting_is_provided_by_the_function_app_in_bicep() -> None:
    missing = missing_settings(set(DEFAULTS) | set(HOST_SETTINGS), function_app_settings())
    assert missing == [], "add these to infra/modules/functionapp.bicep appsettings"
