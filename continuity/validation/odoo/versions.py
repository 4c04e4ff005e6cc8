"""Per-major-version description (Odoo 12 to 18) of the tables and columns recovery validation reads.

Pure data and small functions: no I/O. The adapter runs :data:`DETECT_SQL`, feeds the base module's
``latest_version`` to :func:`odoo_major` and the installed module names to :func:`expected_columns`.

Every fact is derived from Odoo's own model definitions; the tag in each comment names the source:

- ``[OU13]`` OCA/OpenUpgrade ``addons/account/migrations/13.0.1.1/openupgrade_analysis.txt``; ``[OU14]``,
  ``[OU17]``, ``[OU18]`` ``openupgrade_scripts/scripts/account/{14.0.1.1,17.0.1.2,18.0.1.3}/upgrade_analysis.txt``;
  ``[OUB13]`` ``odoo/addons/base/migrations/13.0.1.3/openupgrade_analysis.txt`` and ``[OUB14]``
  ``openupgrade_scripts/scripts/base/14.0.1.3/upgrade_analysis.txt`` for module ``base``. These are diffs of
  the *stored* fields between two majors, generated from Odoo's models (NEW = first stored in that major, DEL =
  last stored in the previous one). A field in a later source never reported NEW is taken to exist earlier.
- ``[S12]`` an Odoo 12.0 ``addons/account/models/account_move.py`` (stored copy, search-index file id 185024223,
  repository not named by the index; 12.0 by ``uom.uom`` and the 12.0-only ``auto_reverse``/``reverse_entry_id``).
- ``[S14]`` erp-texh-2022/dosyt14c_source@efac5ad6, ``[S15]`` CloudBI-Solutions/vtc_elearning-15-23@57858953,
  ``[S16]`` VishnuVardhanJS/odoo16@f7f91466, ``[S17]`` Hari-49hp/odoo17@16a98639: vendored copies of odoo/odoo
  14.0/15.0/16.0/17.0 (``odoo/release.py`` version_info checked); files under ``addons/account/models`` and
  ``odoo/addons/base/models``. They are snapshots of the branch at some date, not its head.
- ``[S18]`` odoo/odoo ``addons/account/models/account_move.py``@00059361 (18.x: has 18.0's ``origin_payment_id``,
  ``checked``; ``MAX_HASH_VERSION = 4``). ``[S18c]`` Metallerie/odoo18@29b0d739 ``odoo/fields.py`` (18.0 core).
  ``[S19]`` odoo/odoo ``addons/account/models/account_account.py``@00aa9fbd (after 18.0: imports ``fields.Domain``).
- ``[REL]`` odoo/odoo ``odoo/release.py``@004ebc85 and ``odoo/modules/module.py`` ``adapt_version``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

MIN_MAJOR = 12
MAX_MAJOR = 18

NumberingKind = Literal["sequence_mixin", "ir_sequence"]
Columns = Mapping[str, tuple[str, ...]]

# Run by an adapter, each in its own statement. The first never fails; run the other two only when it returns
# true (a non-Odoo database has no ir_module_module, and a failed query would abort the surrounding transaction).
DETECT_SQL: Mapping[str, str] = MappingProxyType({
    "has_module_table": "SELECT to_regclass('ir_module_module') IS NOT NULL",
    # ir.module.module.latest_version, 'Installed Version' [S14..S17 odoo/addons/base/models/ir_module.py].
    "base_version": "SELECT latest_version FROM ir_module_module WHERE name = 'base'",
    "installed_modules": "SELECT name FROM ir_module_module WHERE state = 'installed' ORDER BY name",
})

# latest_version = release.major_version + '.' + manifest version ([REL] adapt_version), e.g. '17.0.1.3'.
# SaaS series are spelled 'saas~16.4' (version_info = ('saas~12', 5, ...) in [REL]) -> 'saas~16.4.1.3'.
_VERSION_RE = re.compile(r"^(saas~)?(\d{1,3})\.(\d{1,3})(?:\.|$)")


def odoo_major(latest_version: str | None) -> int | None:
    """The Odoo major of a base module ``latest_version``; None when absent or unparseable.

    A SaaS series ``saas~X.Y`` counts as major ``X``: it is the stable major it was branched after, and its
    schema lies between X.0 and X+1.0, so checks must still verify columns before querying them.
    Majors outside 12..18 are returned as parsed; :func:`schema_for` refuses them.
    """
    if not latest_version:
        return None
    match = _VERSION_RE.match(latest_version.strip())
    return int(match.group(2)) if match else None


def is_saas(latest_version: str | None) -> bool:
    """True for an intermediate SaaS series (``saas~16.4...``), whose schema is only approximately ``X``'s."""
    return latest_version is not None and latest_version.strip().startswith("saas~")


@dataclass(frozen=True)
class HashVersion:
    """What one version of Odoo's inalterability hash covers."""

    version: int
    move_fields: tuple[str, ...]
    line_fields: tuple[str, ...]
    # From version 3, monetary fields are hashed as float_repr(value, currency.decimal_places) instead of str().
    monetary_as_currency_repr: bool


@dataclass(frozen=True)
class HashChain:
    """Where the inalterability hash lives and how Odoo chains it, for one major."""

    module: str                      # the module that must be installed for the columns to exist
    hash_column: str                 # on account_move
    order_column: str                # ascending order of the chain
    chain_scope: tuple[str, ...]     # account_move columns that partition chains
    journal_flag: str | None         # account_journal column that turns hashing on, if any
    versions: tuple[HashVersion, ...]  # tried in order, as Odoo's own check does
    prefixed: bool                   # from version 4 the hash is stored as "$4$<hex>" and chained without "$4$"
    confirmed: bool                  # False: derived from neighbouring majors, not from this major's source


_V1 = HashVersion(1, ("date", "journal_id", "company_id"), ("debit", "credit", "account_id", "partner_id"), False)
_V2 = HashVersion(2, ("name", "date", "journal_id", "company_id"),
                  ("name", "debit", "credit", "account_id", "partner_id"), False)
_V3 = HashVersion(3, _V2.move_fields, _V2.line_fields, True)
_V4 = HashVersion(4, _V2.move_fields, _V2.line_fields, True)


@dataclass(frozen=True)
class OdooSchema:
    """The tables and columns recovery checks read in one Odoo major."""

    major: int
    core: Columns                        # every Odoo database has these
    accounting: Columns                  # only when module 'account' is installed
    by_module: Mapping[str, Columns]     # further columns when another module is installed
    move_type_column: str | None
    numbering: NumberingKind
    invoice_table: str | None            # separate invoice table (account_invoice in 12)
    account_code_column: str             # 'code' (plain varchar) or 'code_store' (jsonb)
    account_code_by_company: bool        # code_store is {"<root company id>": code}
    hash_chain: HashChain | None


def _freeze(tables: dict[str, tuple[str, ...]]) -> Columns:
    return MappingProxyType(dict(tables))


def _build(major: int) -> OdooSchema:
    core: dict[str, tuple[str, ...]] = {
        # res.company name is related partner_id.name, store=True; currency_id required [S14..S17 res_company.py].
        "res_company": ("id", "name", "partner_id", "currency_id"),
        "res_partner": ("id", "name"),
        # decimal_places is compute store=True in [S14..S17 res_currency.py]. For 12/13 it is not confirmed stored
        # (older copies define it without store=True and [OUB13]/[OUB14] report no change): derive it from rounding
        # as Odoo does, ceil(log10(1/rounding)) for 0 < rounding < 1, else 0.
        "res_currency": ("id", "name", "rounding") + (("decimal_places",) if major >= 14 else ()),
        # store_fname, checksum (sha1, 40), file_size, type ('url'/'binary'), res_model, res_id [S14..S17
        # ir_attachment.py]; none reported NEW in [OUB13]/[OUB14] (13 only retyped res_id, dropped datas_fname).
        "ir_attachment": ("id", "store_fname", "checksum", "type", "file_size", "res_model", "res_id"),
        "ir_module_module": ("id", "name", "state", "latest_version"),
    }
    move = ["id", "name", "date", "state", "journal_id", "company_id"]  # [S12] AccountMove; company_id related stored
    line = ["id", "move_id", "account_id", "debit", "credit", "balance", "company_id", "journal_id", "date"]  # [S12]
    journal = ["id", "code", "type", "company_id"]
    accounting: dict[str, tuple[str, ...]] = {}
    by_module: dict[str, Columns] = {}

    if major == 12:
        # account.move has no type; invoices live in account_invoice [S12, OU13 'account.invoice renamed to
        # account.move']. number is related move_id.name stored, move_name keeps the number across cancel/redraft;
        # state draft/open/in_payment/paid/cancel, type out_invoice/in_invoice/out_refund/in_refund [OU13 DEL lines].
        accounting["account_invoice"] = ("id", "number", "move_name", "state", "type", "move_id", "journal_id",
                                         "company_id", "date_invoice", "date")
        move_type: str | None = None
    elif major == 13:
        move_type = "type"       # [OU13] account.move / type (selection): NEW; [OU14] type DEL
    else:
        move_type = "move_type"  # [OU14] move_type NEW; [S14..S18] move_type = fields.Selection
    if move_type:
        move.append(move_type)

    if major >= 13:
        # 12: parent_state = fields.Char(compute=...) not stored [S12]; 13: "is now stored", related move_id.state
        # [OU13]; related store=True in [S14..S17].
        line.append("parent_state")
        # [OU13] account.move inalterable_hash, secure_sequence_number NEW; account.journal restrict_mode_hash_table
        # NEW; [S14..S18] still defined; [OU18] no change to them.
        move += ["inalterable_hash", "secure_sequence_number"]
        journal.append("restrict_mode_hash_table")
    if 13 <= major <= 17:
        # ir.sequence handing out secure_sequence_number: [OU13] NEW, [S14..S17] defined, [OU18] DEL.
        journal.append("secure_sequence_id")

    if major >= 14:
        # sequence.mixin (abstract) NEW in [OU14]; sequence_prefix Char / sequence_number Integer, compute store=True
        # [S14..S17 sequence_mixin.py]; account.move uses it with _sequence_index = "journal_id" [S18].
        move += ["sequence_prefix", "sequence_number"]
        numbering: NumberingKind = "sequence_mixin"
    else:
        # Numbers come from ir_sequence: journal.sequence_id / refund_sequence_id ([S12] post(); [OU14] both DEL).
        # For implementation 'standard' ir_sequence.number_next is not updated (a PostgreSQL sequence is used).
        journal += ["sequence_id", "refund_sequence_id"]
        accounting["ir_sequence"] = ("id", "prefix", "suffix", "padding", "number_next", "number_increment",
                                     "implementation", "use_date_range", "company_id")
        accounting["ir_sequence_date_range"] = ("id", "sequence_id", "date_from", "date_to", "number_next")
        numbering = "ir_sequence"

    if major >= 18:
        # [OU18] account.account code "not stored anymore", code_store (char) NEW, company_id DEL, company_ids NEW.
        # company_dependent fields are jsonb keyed by company id ([S18c] fields.py:774 column_type); code reads
        # code_store->>'<root company id>' and company_ids uses account_account_res_company_rel ([S19]
        # _field_to_sql; not re-read in an 18.0 copy).
        accounting["account_account"] = ("id", "code_store")
        accounting["account_account_res_company_rel"] = ("account_account_id", "res_company_id")
        code_column, code_by_company = "code_store", True
    else:
        accounting["account_account"] = ("id", "code", "company_id")  # [S14..S17 account_account.py]
        code_column, code_by_company = "code", False

    accounting.update({"account_move": tuple(move), "account_move_line": tuple(line),
                       "account_journal": tuple(journal)})

    hash_chain: HashChain | None
    if major == 12:
        # Only with l10n_fr_certification: account.move l10n_fr_hash, l10n_fr_secure_sequence_number and
        # res.company l10n_fr_secure_sequence_id exist in 12.0 ([OU13] DEL lines, hash moved to 'account').
        # Chaining per company with the v1 fields is from older l10n_fr_certification copies, not a 12.0 source.
        by_module["l10n_fr_certification"] = _freeze({
            "account_move": ("l10n_fr_hash", "l10n_fr_secure_sequence_number"),
            "res_company": ("l10n_fr_secure_sequence_id",),
        })
        hash_chain = HashChain("l10n_fr_certification", "l10n_fr_hash", "l10n_fr_secure_sequence_number",
                               ("company_id",), None, (_V1,), prefixed=False, confirmed=False)
    elif major <= 17:
        # Chain per journal of posted moves ordered by secure_sequence_number; previous = the move numbered n-1
        # (_get_new_hash); sha256(previous_hash + json.dumps(values, sort_keys=True, separators=(',', ':'))).
        # res.company._check_hash_integrity tries hash_version 1, 2, ... up to MAX_HASH_VERSION per move [S17].
        # 14/15 copies hash only INTEGRITY_HASH_*_FIELDS (= v1) [S14, S15]; 13.0 source not read. Version 2 in 13-15
        # is unconfirmed (a 15.x derivative declares MAX_HASH_VERSION = 2); trying it cannot hide a break.
        # 16/17: MAX_HASH_VERSION = 3, v1 / v2,3 fields as below [S16, S17 account_move(_line).py].
        versions = (_V1, _V2, _V3) if major >= 16 else (_V1, _V2)
        hash_chain = HashChain("account", "inalterable_hash", "secure_sequence_number", ("journal_id",),
                               "restrict_mode_hash_table", versions, prefixed=False, confirmed=major >= 14)
    else:
        # 18: chains per (journal_id, sequence_prefix) ordered by sequence_number (_get_chain_info); the hash is
        # stored "$4$<sha256>" and the "$v$" prefix is dropped before chaining (_calculate_hashes) [S18].
        # Line fields for v2-4 are taken from 17 ([S18] move fields only were read).
        hash_chain = HashChain("account", "inalterable_hash", "sequence_number", ("journal_id", "sequence_prefix"),
                               "restrict_mode_hash_table", (_V1, _V2, _V3, _V4), prefixed=True, confirmed=True)

    return OdooSchema(
        major=major, core=_freeze(core), accounting=_freeze(accounting), by_module=MappingProxyType(by_module),
        move_type_column=move_type, numbering=numbering,
        invoice_table="account_invoice" if major == 12 else None,
        account_code_column=code_column, account_code_by_company=code_by_company, hash_chain=hash_chain,
    )


_SCHEMAS: Mapping[int, OdooSchema] = MappingProxyType({m: _build(m) for m in range(MIN_MAJOR, MAX_MAJOR + 1)})


def schema_for(major: int) -> OdooSchema:
    """The description of Odoo ``major``; ValueError outside 12..18."""
    try:
        return _SCHEMAS[major]
    except KeyError:
        raise ValueError(
            f"Odoo {major} is not supported: version-aware checks cover Odoo {MIN_MAJOR} to {MAX_MAJOR}"
        ) from None


def expected_columns(major: int, installed_modules: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Table -> columns a complete database of this major has: core tables always, accounting tables only with
    module 'account', module-specific columns (e.g. l10n_fr_certification in 12) only with that module."""
    schema = schema_for(major)
    installed = set(installed_modules)
    result = dict(schema.core)
    if "account" in installed:
        result.update(schema.accounting)
    for module, tables in schema.by_module.items():
        if module in installed:
            for table, columns in tables.items():
                result[table] = result.get(table, ()) + columns
    return result


def move_type_column(major: int) -> str | None:
    """'move_type' (14+), 'type' (13), None (12: invoices are in account_invoice)."""
    return schema_for(major).move_type_column


def numbering_kind(major: int) -> NumberingKind:
    """'sequence_mixin' (14+: sequence_prefix/sequence_number on account_move) or 'ir_sequence' (12, 13)."""
    return schema_for(major).numbering


def hash_chain(major: int) -> HashChain | None:
    """How Odoo's inalterability hash is stored and chained in this major. In 12 it exists only with module
    l10n_fr_certification (see ``HashChain.module``); callers check that module is installed."""
    return schema_for(major).hash_chain
