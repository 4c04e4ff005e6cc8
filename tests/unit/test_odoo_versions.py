"""The per-major Odoo description: version parsing, each major's key facts, refusals."""

from __future__ import annotations

import pytest

from continuity.validation.odoo.versions import (
    DETECT_SQL,
    MAX_MAJOR,
    MIN_MAJOR,
    expected_columns,
    hash_chain,
    is_saas,
    move_type_column,
    numbering_kind,
    odoo_major,
    schema_for,
)

ALL = range(MIN_MAJOR, MAX_MAJOR + 1)


@pytest.mark.parametrize(
    ("version", "major"),
    [("17.0.1.3", 17), ("12.0.1.3", 12), ("18.0", 18), (" 16.0.1.3 ", 16), ("saas~16.4.1.3", 16),
     ("saas~17.2.1.3", 17), ("9.0.1.3", 9), ("19.0.1.3", 19), (None, None), ("", None), ("garbage", None),
     ("v17.0", None), ("17", None)],
)
def test_odoo_major(version: str | None, major: int | None) -> None:
    assert odoo_major(version) == major


def test_is_saas() -> None:
    assert is_saas("saas~16.4.1.3")
    assert not is_saas("16.0.1.3")
    assert not is_saas(None)


def test_detect_sql_reads_the_module_table() -> None:
    assert "name = 'base'" in DETECT_SQL["base_version"]
    assert "state = 'installed'" in DETECT_SQL["installed_modules"]
    assert "to_regclass('ir_module_module')" in DETECT_SQL["has_module_table"]


@pytest.mark.parametrize("major", [11, 19, 9, 0])
def test_unsupported_majors_are_refused(major: int) -> None:
    with pytest.raises(ValueError, match=f"Odoo {major} is not supported"):
        schema_for(major)
    with pytest.raises(ValueError):
        expected_columns(major, ["account"])


def test_move_type_column() -> None:
    assert move_type_column(12) is None
    assert move_type_column(13) == "type"
    assert [move_type_column(m) for m in range(14, 19)] == ["move_type"] * 5


def test_12_keeps_invoices_apart() -> None:
    cols = expected_columns(12, ["base", "account"])
    assert schema_for(12).invoice_table == "account_invoice"
    assert {"number", "move_name", "state", "type", "move_id"} <= set(cols["account_invoice"])
    assert "type" not in cols["account_move"] and "move_type" not in cols["account_move"]
    assert "parent_state" not in cols["account_move_line"]
    assert all(schema_for(m).invoice_table is None for m in range(13, 19))
    assert all("account_invoice" not in expected_columns(m, ["account"]) for m in range(13, 19))


def test_numbering() -> None:
    assert numbering_kind(12) == numbering_kind(13) == "ir_sequence"
    for major in range(14, 19):
        assert numbering_kind(major) == "sequence_mixin"
        move = expected_columns(major, ["account"])["account_move"]
        assert {"sequence_prefix", "sequence_number"} <= set(move)
    for major in (12, 13):
        cols = expected_columns(major, ["account"])
        assert {"sequence_id", "refund_sequence_id"} <= set(cols["account_journal"])
        assert "sequence_prefix" not in cols["account_move"]
        assert "ir_sequence" in cols


def test_parent_state_from_13() -> None:
    for major in range(13, 19):
        assert "parent_state" in expected_columns(major, ["account"])["account_move_line"]


def test_account_code_storage() -> None:
    for major in range(12, 18):
        cols = expected_columns(major, ["account"])
        assert schema_for(major).account_code_column == "code"
        assert {"code", "company_id"} <= set(cols["account_account"])
    s18 = schema_for(18)
    cols = expected_columns(18, ["account"])
    assert s18.account_code_column == "code_store" and s18.account_code_by_company
    assert "code" not in cols["account_account"] and "company_id" not in cols["account_account"]
    assert cols["account_account_res_company_rel"] == ("account_account_id", "res_company_id")


def test_hash_chains() -> None:
    c12 = hash_chain(12)
    assert c12 is not None and c12.module == "l10n_fr_certification" and c12.hash_column == "l10n_fr_hash"
    assert not c12.confirmed and c12.journal_flag is None
    assert "inalterable_hash" not in expected_columns(12, ["account"])["account_move"]
    fr = expected_columns(12, ["account", "l10n_fr_certification"])
    assert {"l10n_fr_hash", "l10n_fr_secure_sequence_number"} <= set(fr["account_move"])
    assert "l10n_fr_secure_sequence_id" in fr["res_company"]
    for major in range(13, 19):
        chain = hash_chain(major)
        assert chain is not None and chain.module == "account" and chain.hash_column == "inalterable_hash"
        cols = expected_columns(major, ["account"])
        assert {"inalterable_hash", "secure_sequence_number"} <= set(cols["account_move"])
        assert "restrict_mode_hash_table" in cols["account_journal"]
        assert ("secure_sequence_id" in cols["account_journal"]) == (major <= 17)
    c16, c17, c18 = hash_chain(16), hash_chain(17), hash_chain(18)
    assert c16 is not None and c17 is not None and c18 is not None
    assert [v.version for v in c17.versions] == [1, 2, 3] and not c17.prefixed
    assert c16.chain_scope == ("journal_id",) and c16.order_column == "secure_sequence_number"
    assert c16.versions[0].move_fields == ("date", "journal_id", "company_id")
    assert "name" in c16.versions[1].move_fields and c16.versions[2].monetary_as_currency_repr
    assert c18.prefixed and c18.order_column == "sequence_number"
    assert c18.chain_scope == ("journal_id", "sequence_prefix") and c18.versions[-1].version == 4


def test_without_account_only_core_tables() -> None:
    for major in ALL:
        cols = expected_columns(major, ["base", "web", "mail"])
        assert set(cols) == {"res_company", "res_partner", "res_currency", "ir_attachment", "ir_module_module"}
        assert {"store_fname", "checksum", "file_size", "res_model", "res_id"} <= set(cols["ir_attachment"])
        assert "latest_version" in cols["ir_module_module"]
        assert ("decimal_places" in cols["res_currency"]) == (major >= 14)


def test_expected_columns_is_a_fresh_dict() -> None:
    cols = expected_columns(17, ["account"])
    cols["res_partner"] = ()
    assert expected_columns(17, ["account"])["res_partner"] == ("id", "name")
