from __future__ import annotations

import json
from pathlib import Path

from continuity.kernel.settings import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_the_code_reads_is_documented_in_the_example() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    documented = set(example["Values"])
    assert set(DEFAULTS) <= documented
    assert set(example["Comments"]) == documented


def test_example_settings_hold_no_secret() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    for key, value in example["Values"].items():
        if "KEY" in key or "PASSWORD" in key or "CONNECTION" in key:
            assert value in ("", "UseDevelopmentStorage=true"), key


def test_function_app_imports_and_lists_functions() -> None:
    from tests.app_functions import app_functions

    names = {f.get_function_name() for f in app_functions()}
    assert "health" in names
