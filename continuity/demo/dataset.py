"""Demo tenants: Odoo 17-shaped accounting data, generated deterministically per (tenant, scale).

Pure: no I/O. Rows come out in the column order of :data:`continuity.validation.odoo.schema.COLUMNS` and
streams of moves are generated day by day, so a large scale never sits in memory. The same
(tenant, scale, :data:`GENERATOR_VERSION`) always gives the same rows, byte for byte.

What a scale unit holds (``scale_size(1)``): 200 partners, 1,000 customer invoices, 300 vendor
bills, 100 miscellaneous entries and a bank payment for each invoice paid within the period
(about 600), i.e. roughly 2,000 moves and 8,400 journal items, plus 20 invoice PDFs (capped at
200 attachments for any scale: the bytes of a large tenant are in its ledger and partners).

Measured on PostgreSQL 15 (``pg_dump -Fc`` at its default compression):

- scale 1: ~10,600 rows, ~5.6 MB on disk (net of an empty database), ~0.64 MB of dump;
- scale 10: 106,320 rows, 45.9 MB on disk, 5.9 MB of dump;
- scale 40: 422,744 rows, 177.9 MB on disk, 23.5 MB of dump;

so about 10,570 rows, 4.45 MB on disk and 585 kB of dump per scale unit: scale
:data:`SCALE_FOR_1GB_DUMP` (1,700) gives a dump of about 1 GB (10^9 bytes; 1 GiB is scale 1,840),
from ~18 million rows and ~7.6 GB on disk (extrapolated, not built in tests).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

# 2: the schema gained Odoo's ir_config_parameter (database.uuid) and the hash-chain columns of account_move and
# account_journal, which the version-aware checks expect of an Odoo 17.
GENERATOR_VERSION = 2
MAX_SCALE = 5000
SCALE_FOR_1GB_DUMP = 1700
PERIOD_START = date(2025, 1, 1)
PERIOD_END = date(2026, 10, 31)
TAX_PERCENT = 21
COMPANY_ID = 1
EUR, USD = 1, 2

Row = tuple[object, ...]
# number(journal, day) -> (name, sequence_prefix, sequence_number)
_Numberer = Callable[[int, date], tuple[str, str, int]]


@dataclass(frozen=True)
class ScaleSize:
    """How many records of each kind one scale produces."""

    partners: int
    invoices: int
    bills: int
    entries: int
    attachments: int


def scale_size(scale: int) -> ScaleSize:
    """The record counts of ``scale``.

    :raises ValueError: when the scale is outside 1..MAX_SCALE.
    """
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be between 1 and {MAX_SCALE}, got {scale}")
    return ScaleSize(partners=200 * scale, invoices=1000 * scale, bills=300 * scale, entries=100 * scale,
                     attachments=min(20 * scale, 200))


def seed_of(tenant_id: str, scale: int) -> int:
    """The random seed of a tenant's demo data: stable across Python versions and runs."""
    digest = hashlib.sha256(f"{tenant_id}:{scale}:{GENERATOR_VERSION}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def money(cents: int) -> str:
    """Cents as the numeric text PostgreSQL parses exactly: ``-12.05``."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def store_fname(content: bytes) -> tuple[str, str]:
    """Odoo's filestore name and checksum: ``(ab/abcdef…, abcdef…)`` from the sha1 of the content."""
    sha1 = hashlib.sha1(content, usedforsecurity=False).hexdigest()
    return f"{sha1[:2]}/{sha1}", sha1


@dataclass(frozen=True)
class Attachment:
    """An ``ir_attachment`` row and the file it points to in the filestore."""

    row: Row
    store_fname: str
    checksum: str
    content: bytes


@dataclass(frozen=True)
class LedgerItem:
    """One ``account_move`` row, its ``account_move_line`` rows and maybe an attachment."""

    move: Row
    lines: list[Row]
    attachment: Attachment | None = None


# ---- vocabulary ---------------------------------------------------------------------------------

def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_WORDS = _words(
    "annual maintenance support licence consulting implementation training onsite remote delivery freight "
    "installation configuration migration audit review analysis hosting backup monitoring premium standard "
    "extended warranty service contract subscription hardware software module integration upgrade project "
    "phase milestone retainer hours days expenses travel accommodation material supplies office furniture "
    "desk chair cabinet lamp screen keyboard printer toner paper cartridge cable adapter router switch "
    "server storage rack power unit battery replacement repair inspection calibration certification "
    "quarterly monthly weekly rental lease deposit advance balance final partial recurring discount bulk "
    "order shipment pallet container customs duty insurance handling packaging labels documentation "
    "according to agreed terms as per quotation reference purchase order framework agreement delivered "
    "to warehouse including excluding for the period of covering all sites and users of the team"
)
_FIRST = _words("Anna Bram Chloe Daan Emma Finn Greta Hugo Ines Jonas Katrin Lars Mila Noah Olga Pieter Quinn Rosa "
          "Sven Tess Ugo Vera Willem Xena Yara Zeno")
_LAST = _words("Jansen de Vries Bakker Visser Smit Meijer Mulder Bos Vos Peters Hendriks Dekker Brouwer Schmidt "
         "Muller Weber Fischer Wagner Becker Dubois Martin Bernard Moreau Rossi Ricci Garcia Lopez Novak "
         "Horvat Nielsen")
_TRADES = _words("Logistics Engineering Consulting Foods Textiles Systems Trading Holdings Pharma Robotics Media "
           "Metals Plastics Energy Construction Retail Analytics Marine Aviation Printing")
_SUFFIXES = ("BV", "GmbH", "SARL", "Ltd", "NV", "SpA", "AG", "SA", "Oy", "AB")
_CITIES = (("Amsterdam", "1011"), ("Rotterdam", "3011"), ("Utrecht", "3511"), ("Antwerpen", "2000"),
           ("Brussel", "1000"), ("Hamburg", "20095"), ("Koeln", "50667"), ("Lyon", "69001"),
           ("Milano", "20121"), ("Wien", "1010"), ("Dublin", "D02"), ("Gent", "9000"))
_STREETS = ("Keizersgracht", "Hoofdstraat", "Marktplein", "Stationsweg", "Industrieweg", "Hauptstrasse",
            "Rue de la Paix", "Via Roma", "Kerkstraat", "Havenweg", "Lindenallee", "Molenstraat")
_COUNTRIES = (165, 21, 57, 75, 110, 13, 101)  # res_country ids of a stock Odoo database (NL BE DE FR IT AT IE)

# Odoo's generic chart of accounts (l10n_generic_coa), the accounts the demo ledger posts to.
ACCOUNTS: tuple[tuple[int, str, str, str, bool], ...] = (
    (1, "101401", "Bank", "asset_cash", False),
    (2, "101501", "Cash", "asset_cash", False),
    (3, "121000", "Account Receivable", "asset_receivable", True),
    (4, "131000", "Tax Paid", "asset_current", False),
    (5, "151000", "Fixed Assets", "asset_fixed", False),
    (6, "151100", "Accumulated Depreciation", "asset_non_current", False),
    (7, "201000", "Current Liabilities", "liability_current", False),
    (8, "211000", "Account Payable", "liability_payable", True),
    (9, "251000", "Tax Received", "liability_current", False),
    (10, "301000", "Capital", "equity", False),
    (11, "999999", "Undistributed Profits/Losses", "equity_unaffected", False),
    (12, "400000", "Product Sales", "income", False),
    (13, "600000", "Expenses", "expense", False),
    (14, "610000", "Depreciation", "expense_depreciation", False),
    (15, "630000", "Salary Expenses", "expense", False),
)
A_BANK, A_RECEIVABLE, A_TAX_PAID, A_DEPRECIATION_ACC, A_LIABILITIES = 1, 3, 4, 6, 7
A_PAYABLE, A_TAX_RECEIVED, A_SALES, A_EXPENSES, A_DEPRECIATION, A_SALARIES = 8, 9, 12, 13, 14, 15

# (id, code, name, type, default account)
JOURNALS: tuple[tuple[int, str, str, str, int | None], ...] = (
    (1, "INV", "Customer Invoices", "sale", A_SALES),
    (2, "BILL", "Vendor Bills", "purchase", A_EXPENSES),
    (3, "MISC", "Miscellaneous Operations", "general", None),
    (4, "BNK1", "Bank", "bank", A_BANK),
    (5, "CSH1", "Cash", "cash", 2),
)
J_INV, J_BILL, J_MISC, J_BANK = 1, 2, 3, 4
_JOURNAL_CODE = {j[0]: j[1] for j in JOURNALS}

# (name, shortdesc, application, state) of a plausible Odoo 17 accounting install.
MODULES: tuple[tuple[str, str, bool, str], ...] = (
    ("base", "Base", False, "installed"), ("web", "Web", False, "installed"),
    ("bus", "IM Bus", False, "installed"), ("mail", "Discuss", True, "installed"),
    ("product", "Products & Pricelists", False, "installed"), ("uom", "Units of measure", False, "installed"),
    ("analytic", "Analytic Accounting", False, "installed"), ("portal", "Customer Portal", False, "installed"),
    ("payment", "Payment Engine", False, "installed"), ("account", "Invoicing", True, "installed"),
    ("account_payment", "Payment - Account", False, "installed"),
    ("l10n_generic_coa", "Generic - Accounting", False, "installed"),
    ("contacts", "Contacts", True, "installed"), ("base_setup", "Initial Setup Tools", False, "installed"),
    ("sale", "Sales", False, "installed"), ("sale_management", "Sales", True, "installed"),
    ("purchase", "Purchase", True, "installed"), ("digest", "KPI Digests", False, "installed"),
    ("stock", "Inventory", True, "uninstalled"), ("hr", "Employees", True, "uninstalled"),
    ("website", "Website", True, "uninstalled"), ("crm", "CRM", True, "uninstalled"),
)


def _share(index: int, parts: int, total: int) -> int:
    """The index-th of ``parts`` near-equal integer shares of ``total`` (shares sum to total exactly)."""
    return (index + 1) * total // parts - index * total // parts


@dataclass
class _Product:
    code: str
    name: str
    description: str
    price_cents: int


@dataclass(order=True)
class _DuePayment:
    day: date
    invoice_id: int
    invoice_name: str = field(compare=False)
    partner_id: int = field(compare=False)
    amount_cents: int = field(compare=False)


class DemoTenant:
    """The demo data of one tenant at one scale; each ``iter_*`` call starts from the same seed."""

    def __init__(self, tenant_id: str, company_name: str, scale: int) -> None:
        self.tenant_id = tenant_id
        self.company_name = company_name
        self.scale = scale
        self.size = scale_size(scale)
        self.seed = seed_of(tenant_id, scale)
        self.created = datetime.combine(PERIOD_START, time(8, 0)) - timedelta(days=30)
        # Partner 1 is the company's own partner; customers and vendors follow.
        self.first_partner = 2
        self.last_partner = self.first_partner + self.size.partners - 1
        roles = random.Random(self.seed ^ 0x5EED)
        self.customers: list[int] = []
        self.vendors: list[int] = []
        for pid in range(self.first_partner, self.last_partner + 1):
            r = roles.random()
            if r < 0.75 or not self.customers:
                self.customers.append(pid)
            if r >= 0.6 or not self.vendors and pid == self.last_partner:
                self.vendors.append(pid)
        if not self.vendors:
            self.vendors.append(self.last_partner)
        catalogue = random.Random(self.seed ^ 0xCA7)
        self.products = [
            _Product(code=f"{catalogue.choice(('FURN', 'SRV', 'LIC', 'HW', 'CONS'))}_{1000 + i}",
                     name=" ".join(catalogue.sample(_WORDS, 3)).title(),
                     description=" ".join(catalogue.choices(_WORDS, k=catalogue.randint(8, 24))).capitalize(),
                     price_cents=catalogue.randint(500, 250_000))
            for i in range(150)
        ]

    # ---- reference data -------------------------------------------------------------------------
    def reference_rows(self) -> dict[str, list[Row]]:
        """Currencies, the company, its chart of accounts, journals and installed modules."""
        at = self.created
        en = json.dumps
        slug = self.tenant_id.replace("-", "")
        return {
            "res_currency": [
                (EUR, "EUR", "Euro", "€", "0.01", 2, True, "after", at, at),
                (USD, "USD", "United States dollar", "$", "0.01", 2, True, "before", at, at),
            ],
            "res_company": [
                (COMPANY_ID, self.company_name, 1, EUR, 10, f"finance@{slug}.example", "+31 20 555 0100",
                 f"KVK {self.seed % 100_000_000:08d}", True, 31, "12", at, at),
            ],
            "account_account": [
                (aid, en({"en_US": name}), code, atype, "off" if atype == "off_balance" else atype.split("_")[0],
                 reconcile, False, False, None, None, COMPANY_ID, at, at)
                for aid, code, name, atype, reconcile in ACCOUNTS
            ],
            "account_journal": [
                (jid, en({"en_US": name}), code, jtype, True, jid, default, None, COMPANY_ID, "invoice", "odoo",
                 at, at)
                for jid, code, name, jtype, default in JOURNALS
            ],
            "ir_module_module": [
                (i, name, en({"en_US": desc}), en({"en_US": f"{desc} for Odoo"}), "Odoo S.A.",
                 "https://www.odoo.com", "17.0.1.0" if state == "installed" else None, None, 100 + i,
                 name in ("base", "web", "bus"), state, False, "LGPL-3", application, at, at)
                for i, (name, desc, application, state) in enumerate(MODULES, start=1)
            ],
        }

    def company_partner_row(self) -> Row:
        slug = self.tenant_id.replace("-", "")
        at = self.created
        return (1, self.company_name, self.company_name, COMPANY_ID, "contact", None, "en_US",
                f"NL{self.seed % 10**9:09d}B01", "Keizersgracht 1", None, "1015", "Amsterdam", 165,
                f"finance@{slug}.example", "+31 20 555 0100", f"https://www.{slug}.example", None, True, True,
                None, 1, self.company_name, 0, 0, at, at)

    def iter_partners(self) -> Iterator[Row]:
        """``res_partner`` rows: the company's own partner, then customers and vendors."""
        rng = random.Random(self.seed ^ 0x9A27)
        yield self.company_partner_row()
        customers, vendors = set(self.customers), set(self.vendors)
        for pid in range(self.first_partner, self.last_partner + 1):
            is_company = rng.random() < 0.7
            last = rng.choice(_LAST)
            if is_company:
                name = f"{last} {rng.choice(_TRADES)} {rng.choice(_SUFFIXES)}"
            else:
                name = f"{rng.choice(_FIRST)} {last}"
            city, zipcode = rng.choice(_CITIES)
            domain = "".join(ch for ch in name.lower() if ch.isalnum())[:24] or "partner"
            comment = "<p>" + " ".join(rng.choices(_WORDS, k=rng.randint(12, 40))).capitalize() + ".</p>"
            at = self.created + timedelta(minutes=pid)
            yield (pid, name, name, None, "contact", f"P{pid:06d}", "en_US",
                   f"NL{rng.randint(10**8, 10**9 - 1)}B01" if is_company else None,
                   f"{rng.choice(_STREETS)} {rng.randint(1, 250)}", None, f"{zipcode} {rng.randint(10, 99)}",
                   city, rng.choice(_COUNTRIES), f"info@{domain}.example",
                   f"+31 {rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                   f"https://{domain}.example" if is_company else None, comment, is_company, True, None, pid,
                   name if is_company else None, 1 if pid in customers else 0, 1 if pid in vendors else 0, at, at)

    # ---- the ledger ------------------------------------------------------------------------------
    def iter_ledger(self) -> Iterator[LedgerItem]:
        """Moves with their lines, day by day over the period, numbered per journal and year.

        Customer invoices are 2% draft (named ``/``, not numbered, as in Odoo) and 1% cancelled
        (cancelled invoices keep their number), so posted and cancelled numbers are gapless.
        """
        rng = random.Random(self.seed ^ 0x1ED6E2)
        days = (PERIOD_END - PERIOD_START).days + 1
        counters: dict[tuple[int, int], int] = {}
        due: list[_DuePayment] = []
        state = {"move": 0, "line": 0, "attachment": 0, "invoice": 0}
        step = max(1, self.size.invoices // max(1, self.size.attachments))

        def number(journal: int, day: date) -> tuple[str, str, int]:
            key = (journal, day.year)
            counters[key] = counters.get(key, 0) + 1
            prefix = f"{_JOURNAL_CODE[journal]}/{day.year}/"
            return f"{prefix}{counters[key]:05d}", prefix, counters[key]

        for index in range(days):
            day = PERIOD_START + timedelta(days=index)
            for _ in range(_share(index, days, self.size.invoices)):
                item = self._invoice(rng, day, state, number, due, step)
                yield item
            for _ in range(_share(index, days, self.size.bills)):
                yield self._bill(rng, day, state, number)
            for _ in range(_share(index, days, self.size.entries)):
                yield self._entry(rng, day, state, number)
            while due and due[0].day == day:
                yield self._payment(heapq.heappop(due), state, number)

    def _next(self, state: dict[str, int], key: str) -> int:
        state[key] += 1
        return state[key]

    def _stamp(self, day: date, move_id: int) -> datetime:
        return datetime.combine(day, time(9, 0)) + timedelta(seconds=move_id % 30000)

    def _product_lines(self, rng: random.Random, count: int) -> list[tuple[_Product, int, int, int, int]]:
        """(product, quantity, discount %, subtotal cents, tax cents) per invoice line; tax rounded per line."""
        lines = []
        for _ in range(count):
            product = rng.choice(self.products)
            quantity = rng.randint(1, 20)
            discount = rng.choice((0, 0, 0, 5, 10))
            subtotal = quantity * product.price_cents * (100 - discount) // 100
            tax = (subtotal * TAX_PERCENT + 50) // 100
            lines.append((product, quantity, discount, subtotal, tax))
        return lines

    def _line(self, state: dict[str, int], move_id: int, move_name: str, day: date, ref: str | None,
              parent_state: str, journal: int, account: int, name: str | None, display_type: str, sequence: int,
              debit: int, credit: int, partner: int | None, *, quantity: int | None = None,
              price_unit: int | None = None, discount: int | None = None, subtotal: int | None = None,
              total: int | None = None, residual: int = 0, reconciled: bool = False,
              maturity: date | None = None) -> Row:
        balance = debit - credit
        at = self._stamp(day, move_id)
        return (self._next(state, "line"), move_id, move_name, day, ref, parent_state, journal, COMPANY_ID, EUR,
                account, name, display_type, sequence, money(debit), money(credit), money(balance), money(balance),
                EUR, partner, None if quantity is None else f"{quantity}.00",
                None if price_unit is None else money(price_unit), None if discount is None else f"{discount}.00",
                None if subtotal is None else money(subtotal), None if total is None else money(total),
                money(residual), money(residual), reconciled, maturity, at, at)

    def _invoice(self, rng: random.Random, day: date, state: dict[str, int], number: _Numberer,
                 due: list[_DuePayment], step: int) -> LedgerItem:
        move_id = self._next(state, "move")
        invoice_index = self._next(state, "invoice")
        partner = rng.choice(self.customers)
        r = rng.random()
        status = "draft" if r < 0.02 else "cancel" if r < 0.03 else "posted"
        if status == "draft":
            name, prefix, seq = "/", "/", 0
        else:
            name, prefix, seq = number(J_INV, day)
        products = self._product_lines(rng, rng.randint(1, 6))
        untaxed = sum(p[3] for p in products)
        tax = sum(p[4] for p in products)
        total = untaxed + tax
        terms = rng.choice((15, 30, 30, 45, 60))
        due_date = day + timedelta(days=terms)
        pay_day = day + timedelta(days=rng.randint(0, 50))
        paid = status == "posted" and rng.random() < 0.65 and pay_day <= PERIOD_END
        residual = 0 if paid else total
        payment_state = "paid" if paid else "not_paid"
        origin = f"S{rng.randint(10000, 99999)}"
        narration = (f"<p>Payment terms: {terms} days. "
                     + " ".join(rng.choices(_WORDS, k=rng.randint(6, 30))).capitalize() + ".</p>")
        reference = name if status != "draft" else None
        at = self._stamp(day, move_id)
        move: Row = (move_id, name, None, day, status, "out_invoice", J_INV, COMPANY_ID, partner, partner, EUR,
                     prefix, seq, day, due_date, reference, origin, narration, payment_state, money(untaxed),
                     money(tax), money(total), money(residual), money(untaxed), money(tax), money(total),
                     money(total), money(residual), "no", status != "draft", at, at)
        lines = []
        for i, (product, quantity, discount, subtotal, line_tax) in enumerate(products):
            lines.append(self._line(state, move_id, name, day, None, status, J_INV, A_SALES,
                                    f"[{product.code}] {product.name}\n{product.description}", "product", 10 + i, 0,
                                    subtotal, partner, quantity=quantity, price_unit=product.price_cents,
                                    discount=discount, subtotal=subtotal, total=subtotal + line_tax))
        lines.append(self._line(state, move_id, name, day, None, status, J_INV, A_TAX_RECEIVED,
                                f"Tax {TAX_PERCENT}%", "tax", 100, 0, tax, partner))
        lines.append(self._line(state, move_id, name, day, None, status, J_INV, A_RECEIVABLE, reference or "",
                                "payment_term", 200, total, 0, partner, residual=residual, reconciled=paid,
                                maturity=due_date))
        if paid:
            heapq.heappush(due, _DuePayment(pay_day, move_id, name, partner, total))
        attachment = None
        # Keep pace with one PDF per `step` invoices, catching up after drafts and cancellations.
        made = state["attachment"]
        if status == "posted" and made < self.size.attachments and made * step < invoice_index:
            attachment = self._invoice_pdf(state, move_id, name, day, partner, products, untaxed, tax, total)
        return LedgerItem(move, lines, attachment)

    def _invoice_pdf(self, state: dict[str, int], move_id: int, name: str, day: date, partner: int,
                     products: list[tuple[_Product, int, int, int, int]], untaxed: int, tax: int,
                     total: int) -> Attachment:
        text = [f"{self.company_name} - Invoice {name} - {day.isoformat()} - partner P{partner:06d}"]
        text += [f"{p.code} {p.name} x{q} -{d}% {money(s)}" for p, q, d, s, _ in products]
        text += [f"Untaxed {money(untaxed)}  Tax {money(tax)}  Total {money(total)} EUR"]
        stream = "\n".join(f"BT /F1 10 Tf 50 {780 - 14 * i} Td ({t.replace('(', '[').replace(')', ']')}) Tj ET"
                           for i, t in enumerate(text))
        content = (
            "%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
            "2 0 obj <</Type /Pages /Kids [3 0 R] /Count 1>> endobj\n"
            "3 0 obj <</Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
            "/Resources <</Font <</F1 5 0 R>>>>>> endobj\n"
            f"4 0 obj <</Length {len(stream)}>> stream\n{stream}\nendstream endobj\n"
            "5 0 obj <</Type /Font /Subtype /Type1 /BaseFont /Helvetica>> endobj\n"
            "trailer <</Root 1 0 R>>\n%%EOF\n"
        ).encode("latin-1", "replace")
        fname, checksum = store_fname(content)
        attachment_id = self._next(state, "attachment")
        at = self._stamp(day, move_id)
        row: Row = (attachment_id, f"{name.replace('/', '_')}.pdf", None, "account.move", None, move_id, COMPANY_ID,
                    "binary", None, False, None, None, fname, len(content), checksum, "application/pdf", None, at, at)
        return Attachment(row=row, store_fname=fname, checksum=checksum, content=content)

    def _bill(self, rng: random.Random, day: date, state: dict[str, int], number: _Numberer) -> LedgerItem:
        move_id = self._next(state, "move")
        partner = rng.choice(self.vendors)
        name, prefix, seq = number(J_BILL, day)
        products = self._product_lines(rng, rng.randint(1, 4))
        untaxed = sum(p[3] for p in products)
        tax = sum(p[4] for p in products)
        total = untaxed + tax
        ref = f"VI-{rng.randint(100000, 999999)}"
        due_date = day + timedelta(days=30)
        at = self._stamp(day, move_id)
        move: Row = (move_id, name, ref, day, "posted", "in_invoice", J_BILL, COMPANY_ID, partner, partner, EUR,
                     prefix, seq, day, due_date, ref, None, None, "not_paid", money(untaxed), money(tax), money(total),
                     money(total), money(-untaxed), money(-tax), money(-total), money(-total), money(-total), "no",
                     True, at, at)
        lines = []
        for i, (product, quantity, discount, subtotal, line_tax) in enumerate(products):
            lines.append(self._line(state, move_id, name, day, ref, "posted", J_BILL, A_EXPENSES,
                                    f"[{product.code}] {product.name}\n{product.description}", "product", 10 + i,
                                    subtotal, 0, partner, quantity=quantity, price_unit=product.price_cents,
                                    discount=discount, subtotal=subtotal, total=subtotal + line_tax))
        lines.append(self._line(state, move_id, name, day, ref, "posted", J_BILL, A_TAX_PAID, f"Tax {TAX_PERCENT}%",
                                "tax", 100, tax, 0, partner))
        lines.append(self._line(state, move_id, name, day, ref, "posted", J_BILL, A_PAYABLE, ref, "payment_term", 200,
                                0, total, partner, residual=-total, maturity=due_date))
        return LedgerItem(move, lines)

    def _entry(self, rng: random.Random, day: date, state: dict[str, int], number: _Numberer) -> LedgerItem:
        move_id = self._next(state, "move")
        name, prefix, seq = number(J_MISC, day)
        kind = rng.choice(("salaries", "depreciation", "accrual"))
        debit_account, credit_account = {
            "salaries": (A_SALARIES, A_LIABILITIES),
            "depreciation": (A_DEPRECIATION, A_DEPRECIATION_ACC),
            "accrual": (A_EXPENSES, A_LIABILITIES),
        }[kind]
        pieces = [rng.randint(10_000, 900_000) for _ in range(rng.randint(1, 3))]
        total = sum(pieces)
        ref = f"{kind.title()} {day:%B %Y}"
        at = self._stamp(day, move_id)
        move: Row = (move_id, name, ref, day, "posted", "entry", J_MISC, COMPANY_ID, None, None, EUR, prefix, seq,
                     None, None, None, None, None, "not_paid", "0.00", "0.00", money(total), "0.00", "0.00", "0.00",
                     money(total), money(total), "0.00", "no", True, at, at)
        lines = [self._line(state, move_id, name, day, ref, "posted", J_MISC, debit_account,
                            f"{ref}: " + " ".join(rng.choices(_WORDS, k=rng.randint(3, 10))), "product", 10 + i,
                            amount, 0, None)
                 for i, amount in enumerate(pieces)]
        lines.append(self._line(state, move_id, name, day, ref, "posted", J_MISC, credit_account, ref, "product", 100,
                                0, total, None))
        return LedgerItem(move, lines)

    def _payment(self, payment: _DuePayment, state: dict[str, int], number: _Numberer) -> LedgerItem:
        move_id = self._next(state, "move")
        day = payment.day
        name, prefix, seq = number(J_BANK, day)
        ref = f"Payment of {payment.invoice_name}"
        amount = payment.amount_cents
        at = self._stamp(day, move_id)
        move: Row = (move_id, name, ref, day, "posted", "entry", J_BANK, COMPANY_ID, payment.partner_id,
                     payment.partner_id, EUR, prefix, seq, None, None, payment.invoice_name, None, None, "not_paid",
                     "0.00", "0.00", money(amount), "0.00", "0.00", "0.00", money(amount), money(amount), "0.00", "no",
                     True, at, at)
        lines = [
            self._line(state, move_id, name, day, ref, "posted", J_BANK, A_BANK, ref, "product", 10, amount, 0,
                       payment.partner_id),
            self._line(state, move_id, name, day, ref, "posted", J_BANK, A_RECEIVABLE, ref, "product", 20, 0, amount,
                       payment.partner_id, reconciled=True),
        ]
        return LedgerItem(move, lines)
