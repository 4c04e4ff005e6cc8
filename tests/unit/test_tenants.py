from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from continuity.kernel.errors import ConfigError, UnknownTenant
from continuity.kernel.tenants import load_registry

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _example() -> dict:
    return yaml.safe_load((ROOT / "config" / "tenants.yaml").read_text())


def test_shipped_registry_has_three_tenants_on_different_tiers() -> None:
    registry = load_registry(ROOT / "config" / "tenants.yaml")
    assert len(registry.tenants) >= 3
    assert len({t.tier for t in registry.tenants}) >= 3


def test_bad_tenant_id_names_file_tenant_and_field(tmp_path: Path) -> None:
    data = _example()
    data["tenants"][1]["id"] = "Globex_Inc"
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    message = str(err.value)
    assert str(path) in message
    assert "tenant Globex_Inc" in message
    assert "field id" in message


def test_unknown_tier_is_refused_naming_the_tenant(tmp_path: Path) -> None:
    data = _example()
    data["tenants"][0]["tier"] = "platinum"
    with pytest.raises(ConfigError, match=r"tenant acme-finance: field tier: unknown tier 'platinum'"):
        load_registry(_write(tmp_path, data))


def test_extra_field_is_refused(tmp_path: Path) -> None:
    data = _example()
    data["tenants"][2]["rto"] = 5
    with pytest.raises(ConfigError, match=r"tenant initech: field rto: Extra inputs are not permitted"):
        load_registry(_write(tmp_path, data))


def test_hostile_database_name_is_refused(tmp_path: Path) -> None:
    data = _example()
    data["tenants"][0]["database"] = 'x"; drop database postgres; --'
    with pytest.raises(ConfigError, match=r"tenant acme-finance: field database"):
        load_registry(_write(tmp_path, data))


def test_duplicate_tenant_id_is_refused(tmp_path: Path) -> None:
    data = _example()
    data["tenants"][1]["id"] = data["tenants"][0]["id"]
    data["tenants"][1]["database"] = "odoo_other"
    with pytest.raises(ConfigError, match="duplicate id"):
        load_registry(_write(tmp_path, data))


def test_contradicting_retention_policy_is_refused(tmp_path: Path) -> None:
    data = _example()
    data["tiers"]["bronze"]["retention"].update({"cool_after_days": 100, "cold_after_days": 30})
    with pytest.raises(ConfigError, match=r"tier bronze: field retention: tier ages must satisfy"):
        load_registry(_write(tmp_path, data))


def test_immutability_longer_than_retention_is_refused(tmp_path: Path) -> None:
    data = _example()
    data["tiers"]["bronze"]["retention"].update({"daily": 7, "weekly": 0, "monthly": 0, "yearly": 0,
                                                 "immutable_days": 30})
    with pytest.raises(ConfigError, match="locked past their retention"):
        load_registry(_write(tmp_path, data))


def test_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tiers: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_registry(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the tenant registry"):
        load_registry(tmp_path / "absent.yaml")


def test_unknown_tenant_lists_known_ids() -> None:
    registry = load_registry(ROOT / "config" / "tenants.yaml")
    with pytest.raises(UnknownTenant, match="known tenants: acme-finance, globex, initech"):
        registry.get_tenant("nobody")
