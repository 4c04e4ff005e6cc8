"""The demo generator: deterministic, balanced, gapless, Odoo-shaped (pure, no stack)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from decimal import Decimal

import pytest

from continuity.demo.dataset import MAX_SCALE, DemoTenant, money, scale_size, store_fname
from continuity.validation.odoo.schema import COLUMNS

MOVE = {c: i for i, c in enumerate(COLUMNS["account_move"])}
LINE = {c: i for i, c in enumerate(COLUMNS["account_move_line"])}


def ledger_digest(demo: DemoTenant) -> str:
    digest = hashlib.sha256()
    for item in demo.iter_ledger():
        digest.update(repr((item.move, item.lines)).encode())
    for row in demo.iter_partners():
        digest.update(repr(row).encode())
    return digest.hexdigest()


def test_same_tenant_and_scale_generate_identical_rows() -> None:
    assert ledger_digest(DemoTenant("acme-finance", "ACME", 1)) == ledger_digest(DemoTenant("acme-finance", "ACME", 1))


def test_other_tenant_or_scale_generates_other_rows() -> None:
    base = ledger_digest(DemoTenant("acme-finance", "ACME", 1))
    assert ledger_digest(DemoTenant("globex", "ACME", 1)) != base
    assert ledger_digest(DemoTenant("acme-finance", "ACME", 2)) != base


def test_every_row_has_the_schema_column_count() -> None:
    demo = DemoTenant("acme-finance", "ACME", 1)
    for table, rows in demo.reference_rows().items():
        assert rows and all(len(r) == len(COLUMNS[table]) for r in rows), table
    assert all(len(r) == len(COLUMNS["res_partner"]) for r in demo.iter_partners())
    for item in demo.iter_ledger():
        assert len(item.move) == len(COLUMNS["account_move"])
        assert all(len(line) == len(COLUMNS["account_move_line"]) for line in item.lines)
        if item.attachment:
            assert len(item.attachment.row) == len(COLUMNS["ir_attachment"])


def test_every_move_is_balanced_and_lines_carry_the_move_state() -> None:
    for item in DemoTenant("acme-finance", "ACME", 1).iter_ledger():
        debit = sum(Decimal(str(line[LINE["debit"]])) for line in item.lines)
        credit = sum(Decimal(str(line[LINE["credit"]])) for line in item.lines)
        assert debit == credit > 0, item.move
        assert {line[LINE["parent_state"]] for line in item.lines} == {item.move[MOVE["state"]]}
        assert all(Decimal(str(line[LINE["balance"]])) == Decimal(str(line[LINE["debit"]]))
                   - Decimal(str(line[LINE["credit"]])) for line in item.lines)


def test_numbers_are_gapless_per_journal_and_year_and_drafts_are_unnumbered() -> None:
    seen: dict[str, list[int]] = defaultdict(list)
    drafts = 0
    for item in DemoTenant("acme-finance", "ACME", 1).iter_ledger():
        name, prefix, number = item.move[MOVE["name"]], item.move[MOVE["sequence_prefix"]], item.move[
            MOVE["sequence_number"]]
        if item.move[MOVE["state"]] == "draft":
            assert name == "/"
            drafts += 1
            continue
        assert name == f"{prefix}{number:05d}"
        assert str(prefix).split("/")[1] == str(item.move[MOVE["date"]].year)  # type: ignore[attr-defined]
        seen[str(prefix)].append(int(number))  # type: ignore[call-overload]
    assert drafts > 0
    assert {"INV/2025/", "INV/2026/", "BILL/2025/", "MISC/2026/", "BNK1/2026/"} <= set(seen)
    for prefix, numbers in seen.items():
        assert numbers == list(range(1, len(numbers) + 1)), prefix


def test_attachments_are_content_addressed_like_odoo_filestore() -> None:
    demo = DemoTenant("acme-finance", "ACME", 1)
    attachments = [i.attachment for i in demo.iter_ledger() if i.attachment]
    assert len(attachments) == scale_size(1).attachments
    col = {c: i for i, c in enumerate(COLUMNS["ir_attachment"])}
    for a in attachments:
        sha1 = hashlib.sha1(a.content).hexdigest()
        assert a.store_fname == f"{sha1[:2]}/{sha1}" == a.row[col["store_fname"]]
        assert a.checksum == sha1 == a.row[col["checksum"]]
        assert a.row[col["file_size"]] == len(a.content)
        assert a.content.startswith(b"%PDF-")


def test_store_fname_is_first_two_hex_chars_slash_sha1() -> None:
    assert store_fname(b"hello") == ("aa/aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
                                     "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")


@pytest.mark.parametrize("scale", [0, -1, MAX_SCALE + 1])
def test_scale_outside_range_is_refused(scale: int) -> None:
    with pytest.raises(ValueError, match="scale must be between 1 and"):
        scale_size(scale)


def test_scale_grows_records_linearly_and_caps_attachments() -> None:
    one, ten = scale_size(1), scale_size(10)
    assert (ten.partners, ten.invoices, ten.bills, ten.entries) == (
        10 * one.partners, 10 * one.invoices, 10 * one.bills, 10 * one.entries)
    assert scale_size(MAX_SCALE).attachments == 200


def test_money_formats_cents_exactly() -> None:
    assert [money(0), money(5), money(-1205), money(123456)] == ["0.00", "0.05", "-12.05", "1234.56"]
