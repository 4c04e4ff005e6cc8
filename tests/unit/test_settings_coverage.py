"""Every setting the code reads is documented, and deployed.

tests/settings_scan.py scans the code's syntax trees (ast) for reads of settings — ``settings.get("X")``,
``get_int("X")``, ``os.environ.get("X")``, ``os.environ["X"]``, ``os.getenv("X")``, ``"%X%"`` binding expressions
and reads through a loop over literal names — and each X is checked against continuity.kernel.settings.DEFAULTS,
local.settings.example.json and the Function App's settings in infra/.
"""

from __future__ import annotations

import json

from continuity.kernel.settings import DEFAULTS
from tests.settings_scan import NOT_SETTINGS, ROOT, scan_source, settings_read_by_code, settings_reads, unresolved_reads
from tests.unit.test_infra import HOST_SETTINGS, function_app_settings, missing_settings

# Reads whose key the scanner cannot resolve, with why that is safe: each is a reader that passes on a name
# read elsewhere, where the scanner sees it. A new computed read must be resolvable or named here.
PASS_THROUGH_READS: dict[str, dict[str, str]] = {
    "continuity/kernel/settings.py": {"key": "get()/get_int() themselves: their callers' literal keys are scanned"},
    "devhost/timers.py": {"name": "resolves a timer's %SETTING% schedule: the binding expressions are scanned"},
}


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


def test_scanner_resolves_binding_expressions_and_loops_over_literal_names() -> None:
    source = '''
import os
from continuity.kernel import settings
KEYS = {"master": "K_DICT_VALUE_1", "function": "K_DICT_VALUE_2"}
NAMES = ("N_MODULE_TUPLE",)
schedule = "%S_BINDING_REF%"
note = "see %NOT_A_WHOLE_REF% in the docs"
for name, setting in KEYS.items():
    os.environ.get(setting, "")
containers = [settings.get(key) for key in ("C_LITERAL_1", "C_LITERAL_2")]
for n in NAMES:
    settings.get(n)
for key in ("not_a_setting_attr",):
    getattr(object, key)
def read(whatever):
    return os.environ.get(whatever)
'''
    found = scan_source(source)
    assert found.names == {"K_DICT_VALUE_1", "K_DICT_VALUE_2", "N_MODULE_TUPLE", "S_BINDING_REF", "C_LITERAL_1",
                           "C_LITERAL_2"}
    assert found.unresolved == {"whatever"}


def test_scanner_sees_the_settings_the_code_is_known_to_read() -> None:
    reads = settings_read_by_code()
    assert "continuity/kernel/settings.py" in reads["CONTINUITY_PRIMARY_PORT"]
    assert "continuity/kernel/settings.py" in reads["CONTINUITY_LOCAL_DIR"]  # a bare get() in settings.py
    assert "PG_BIN" in reads
    assert "triggers/validation.py" in reads["CONTINUITY_NIGHTLY_SCHEDULE"]  # a timer's %SETTING% schedule
    assert "devhost/keys.py" in reads["CONTINUITY_DEVHOST_EVENTGRID_KEY"]  # through a loop over KEY_SETTINGS


def test_every_setting_read_in_code_is_documented() -> None:
    documented = set(DEFAULTS) | set(HOST_SETTINGS) | set(NOT_SETTINGS)
    undocumented = {k: sorted(v) for k, v in settings_read_by_code().items() if k not in documented}
    assert undocumented == {}, "add these to continuity.kernel.settings.DEFAULTS and local.settings.example.json"


def test_every_computed_settings_read_is_a_known_pass_through() -> None:
    unresolved = unresolved_reads()
    unknown = {path: sorted(keys - set(PASS_THROUGH_READS.get(path, {}))) for path, keys in unresolved.items()}
    assert {path: keys for path, keys in unknown.items() if keys} == {}, (
        "read these settings with literal keys, or name the reader in PASS_THROUGH_READS with the reason")
    stale = {path: sorted(set(keys) - unresolved.get(path, set())) for path, keys in PASS_THROUGH_READS.items()}
    assert {path: keys for path, keys in stale.items() if keys} == {}, "remove these from PASS_THROUGH_READS"


def test_every_setting_is_in_the_example_values_and_comments() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    required = set(DEFAULTS) | set(HOST_SETTINGS)
    assert sorted(required - set(example["Values"])) == [], "missing from Values"
    assert sorted(required - set(example["Comments"])) == [], "missing from Comments"


def test_every_setting_is_provided_by_the_function_app_in_bicep() -> None:
    missing = missing_settings(set(DEFAULTS) | set(HOST_SETTINGS), function_app_settings())
    assert missing == [], "add these to infra/modules/functionapp.bicep appsettings"
