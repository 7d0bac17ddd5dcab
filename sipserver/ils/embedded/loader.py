"""Loading patrons, items, loans, holds, fees and rules from a YAML data file.

One format (``docs/data-format.md``) for the demo data, a backend's ``seed`` option and the
``sipserver load`` command. A file is first validated whole (every error names the file, the key
path such as ``patrons[3].expires``, and what was expected, in one line), then written in one
transaction, *upserting*: patrons and items by barcode, loans by item, holds by patron and
item/title, fees by their ``ref`` (or a key made from their fields), so loading twice is safe.
Relative dates (``due_in_days``, ``days_overdue``) are taken from the time of loading, which keeps
demo data realistic whatever the day.
"""

from __future__ import annotations

import datetime
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import yaml
from twisted.internet.defer import Deferred, fail

from sipserver.config.schema import REQUIRED, At, Choice, Flag, Key, Section, Source, Text, Type, hint
from sipserver.config.yamlfile import StrictLoader
from sipserver.ils.embedded import dbtime, records
from sipserver.ils.embedded.db.dialect import Tx
from sipserver.ils.embedded.limits import INTEGER_MAX, MAX_DAYS
from sipserver.ils.embedded.money import MAX_CENTS, format_cents, parse_amount
from sipserver.ils.embedded.pins import check_pin, hash_pin
from sipserver.ils.embedded.rules import DEFAULT_TYPE, MONEY_RULES, RULE_FIELDS
from sipserver.ils.interface import BackendConfigError, CirculationStatus

MEDIA_TYPES = (
    "book", "magazine", "bound_journal", "audio", "video", "cd", "dvd", "diskette",
    "book_with_diskette", "book_with_cd", "book_with_audio", "other",
)  # fmt: skip
SECURITY_MARKERS = ("none", "tattle_tape", "whisper_tape", "other")
FEE_TYPES = (
    "administrative", "damage", "overdue", "processing", "rental", "replacement",
    "computer_access", "hold", "other",
)  # fmt: skip
#: Loans and holds set these; a data file may not.
DERIVED_STATUSES = ("charged", "on_hold_shelf")
ITEM_STATUSES = tuple(s.value for s in CirculationStatus if s.value not in DERIVED_STATUSES)
HOLD_STATES = ("queued", "in_transit", "waiting")
SECTIONS = ("rules", "patrons", "items", "loans", "holds", "fees")
#: Rules that are numbers of days, added to today's date: at most :data:`MAX_DAYS`.
DAY_RULES = frozenset({"loan_days", "hold_shelf_days"})


class DataError(ValueError):
    """A data file is unusable; the message is one line for people."""


# -- validation ---------------------------------------------------------------------------------


class _DataFile(Source):
    """A data file being read (:mod:`sipserver.config.schema`), with the errors its users know:
    ``patrons[3].expires: expected a date YYYY-MM-DD, got '31/12/2024'``. A key set to null is a
    key left out; a PIN is never shown."""

    null_is_absent = True

    def error(self, path: str, message: str) -> Exception:
        return DataError(f"{self.name}: {path}: {message}" if path else f"{self.name}: {message}")

    def join(self, parent: str, key: str | int) -> str:
        if isinstance(key, int):
            return f"{parent}[{key}]"
        return f"{parent}.{key}" if parent else str(key)

    def show(self, value: Any, secret: bool = False) -> str:
        return f"a hidden {type(value).__name__}" if secret else repr(value)

    def unknown_key(self, at: At, allowed: Sequence[str]) -> Exception:
        return self.error(at.path, f"unknown key (expected one of: {', '.join(allowed)}){hint(at.key, allowed)}")

    def missing(self, at: At, key: Key) -> Exception:
        return self.error(at.path, f"expected {key.type.missing}, got None")


#: Text as written, without surrounding blanks; a number says to quote it (``0012`` is 10 to YAML).
TEXT = Text(empty=True, strip=True, quote_numbers=True)
#: The same, not empty: barcodes, titles, a loan's patron.
NAME = Text(strip=True, quote_numbers=True)


def _one_of(choices: tuple[str, ...]) -> Type[Any]:
    return TEXT.then(Choice(choices, fold=False))


class WholeNumber(Type[int]):
    """A whole number from *minimum* (None: any sign); at most *maximum* either way, by default
    what an ``INTEGER`` column holds."""

    doc = "whole number"

    def __init__(self, minimum: int | None = 0, maximum: int = INTEGER_MAX) -> None:
        self.minimum, self.maximum = minimum, maximum

    def read(self, value: Any, at: At) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or (self.minimum is not None and value < self.minimum):
            at.expected("a whole number" + (f" >= {self.minimum}" if self.minimum is not None else ""), value)
        if abs(value) > self.maximum:
            low = -self.maximum if self.minimum is None else self.minimum
            at.expected(f"a whole number from {low} to {self.maximum}", value)
        return value


class Money(Type[int]):
    """An amount (``"2.50"``, ``2.5``, ``3``) in cents, at most what a money column holds."""

    doc = missing = "an amount such as 2.50"

    def read(self, value: Any, at: At) -> int:
        cents = None if isinstance(value, bool) else parse_amount(str(value))
        if cents is None and not isinstance(value, bool) and parse_amount(str(value), maximum=None) is not None:
            at.expected(f"an amount of at most {format_cents(MAX_CENTS)}", value)
        if cents is None:
            at.expected(self.missing, value)
        return cents


class Date(Type[datetime.date]):
    doc = "date"

    def read(self, value: Any, at: At) -> datetime.date:
        if isinstance(value, datetime.datetime):
            return value.date()
        if isinstance(value, datetime.date):
            return value
        try:
            return datetime.date.fromisoformat(str(value))
        except ValueError:
            at.expected("a date YYYY-MM-DD", value)


class Moment(Type[datetime.datetime]):
    """A date (taken at 23:59, or at midnight) or a date and time."""

    doc = "date or date and time"

    def __init__(self, *, end_of_day: bool = True) -> None:
        self.end_of_day = end_of_day

    def read(self, value: Any, at: At) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            return dbtime.local_naive(value)
        if isinstance(value, datetime.date):
            return dbtime.end_of_day(value) if self.end_of_day else datetime.datetime.combine(value, datetime.time())
        try:
            parsed = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            at.expected("a date YYYY-MM-DD or a date and time YYYY-MM-DDTHH:MM", value)
        if len(str(value)) == 10 and self.end_of_day:
            return dbtime.end_of_day(parsed.date())
        return dbtime.local_naive(parsed)


class Blocked(Type[tuple[bool, str]]):
    """``blocked``: true, false or the reason (which blocks): whether blocked, and the reason."""

    doc = "true, false or a reason"

    def read(self, value: Any, at: At) -> tuple[bool, str]:
        if isinstance(value, bool):
            return value, "blocked" if value else ""
        if not isinstance(value, str):
            at.expected("true, false or a reason", value)
        return bool(value), value.strip()


def _rule(name: str) -> Key:
    if name == "allow_credit":
        return Key(name, Flag(), default=None)
    if name in MONEY_RULES:
        return Key(name, Money(), default=None)
    return Key(name, WholeNumber(maximum=MAX_DAYS if name in DAY_RULES else INTEGER_MAX), default=None)


#: One patron type's rules; a rule left out is the ``default`` type's (``rules.resolve``).
RULES: Section[dict[str, Any]] = Section(None, tuple(_rule(name) for name in RULE_FIELDS), null=False)

PATRON: Section[dict[str, Any]] = Section(
    None,
    (
        Key("barcode", NAME, default=REQUIRED),
        Key("pin", TEXT, default=None, secret=True),
        Key("name", TEXT, default=""),
        Key("email", TEXT, default=""),
        Key("phone", TEXT, default=""),
        Key("address", TEXT, default=""),
        Key("birth_date", Date(), default=None),
        Key("type", TEXT, default=DEFAULT_TYPE, attr="patron_type"),
        Key("home_library", TEXT, default=""),
        Key("expires", Date(), default=None),
        Key("blocked", Blocked(), default=(False, "")),
        Key("card_lost", Flag(), default=False),
        Key("internet_privileges", TEXT, default=""),
    ),
    null=False,
)

ITEM: Section[dict[str, Any]] = Section(
    None,
    (
        Key("barcode", NAME, default=REQUIRED),
        Key("title", NAME, default=REQUIRED),
        Key("author", TEXT, default=""),
        Key("call_number", TEXT, default=""),
        Key("media_type", _one_of(MEDIA_TYPES), default="book"),
        Key("owner", TEXT, default=""),
        Key("location", TEXT, default=None, attr="current_location"),  # None: the permanent location
        Key("permanent_location", TEXT, default=None),  # None: the owner
        Key("status", _one_of(ITEM_STATUSES), default="available"),
        Key("security_marker", _one_of(SECURITY_MARKERS), default="tattle_tape"),
        Key("price", Money(), default=None),
        Key("rental_fee", Money(), default=0),
        Key("properties", TEXT, default=""),
    ),
    null=False,
)

#: A loan's due date is one of these, or the patron type's loan period from the time of loading.
DUE_KEYS = ("due", "due_in_days", "days_overdue")

LOAN: Section[dict[str, Any]] = Section(
    None,
    (
        Key("patron", NAME, default=REQUIRED),
        Key("item", NAME, default=REQUIRED),
        Key("due", Moment(), default=None),
        Key("due_in_days", WholeNumber(minimum=None, maximum=MAX_DAYS), default=None),
        Key("days_overdue", WholeNumber(minimum=1, maximum=MAX_DAYS), default=None),
        Key("checked_out", Moment(end_of_day=False), default=None),
        Key("renewals", WholeNumber(), default=0),
    ),
    null=False,
)

HOLD: Section[dict[str, Any]] = Section(
    None,
    (
        Key("patron", NAME, default=REQUIRED),
        Key("item", TEXT, default=""),
        Key("title", TEXT, default=""),
        Key("pickup", TEXT, default=""),
        Key("expires", Moment(), default=None),
        Key("placed", Moment(end_of_day=False), default=None),
        Key("state", _one_of(HOLD_STATES), default="queued"),
    ),
    null=False,
)

FEE: Section[dict[str, Any]] = Section(
    None,
    (
        Key("patron", NAME, default=REQUIRED),
        Key("type", NAME.then(Choice(FEE_TYPES, fold=False)), default=REQUIRED, attr="fee_type"),
        Key("amount", Money(), default=REQUIRED),
        Key("balance", Money(), default=None),
        Key("item", TEXT, default=""),
        Key("description", TEXT, default=""),
        Key("created", Moment(end_of_day=False), default=None),
        Key("ref", TEXT, default=""),
    ),
    null=False,
)


@attrs.frozen
class PatronData:
    barcode: str
    pin: str | None
    name: str
    email: str
    phone: str
    address: str
    birth_date: datetime.date | None
    patron_type: str
    home_library: str
    expires: datetime.date | None
    blocked: bool
    block_reason: str
    card_lost: bool
    internet_privileges: str


@attrs.frozen
class ItemData:
    barcode: str
    title: str
    author: str
    call_number: str
    media_type: str
    owner: str
    permanent_location: str
    current_location: str
    status: str
    security_marker: str
    price: int | None
    rental_fee: int
    properties: str


@attrs.frozen
class LoanData:
    path: str
    patron: str
    item: str
    due: datetime.datetime | None  # None: the patron type's loan period from now
    checked_out: datetime.datetime | None
    renewals: int


@attrs.frozen
class HoldData:
    path: str
    patron: str
    item: str
    title: str
    pickup: str
    expires: datetime.datetime | None
    placed: datetime.datetime | None
    state: str


@attrs.frozen
class FeeData:
    path: str
    patron: str
    fee_type: str
    amount: int
    balance: int
    item: str
    description: str
    created: datetime.datetime | None
    ref: str


@attrs.frozen
class Dataset:
    source: str
    rules: dict[str, dict[str, Any]]
    patrons: list[PatronData]
    items: list[ItemData]
    loans: list[LoanData]
    holds: list[HoldData]
    fees: list[FeeData]

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SECTIONS}


def _section(at: At, data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        at.child(name).fail(f"expected a list, got {type(value).__name__}")
    return value


def _unique(at: At, section: str, barcodes: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, barcode in enumerate(barcodes):
        if barcode in seen:
            at.child(section).child(i).child("barcode").fail(
                f"expected a unique barcode, {barcode!r} is also {section}[{seen[barcode]}]"
            )
        seen[barcode] = i


def _rules(at: At, node: Any) -> dict[str, dict[str, Any]]:
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        at.expected("a mapping of patron type to rules", node)
    return {str(patron_type): RULES.read(body, at.child(str(patron_type))) for patron_type, body in node.items()}


def _patron(at: At, node: Any) -> PatronData:
    values = PATRON.read(node, at)
    values["blocked"], values["block_reason"] = values["blocked"]
    return PatronData(**values)


def _item(at: At, node: Any) -> ItemData:
    values = ITEM.read(node, at)
    if values["permanent_location"] is None:
        values["permanent_location"] = values["owner"]
    if values["current_location"] is None:
        values["current_location"] = values["permanent_location"]
    return ItemData(**values)


def _loan(at: At, node: Any, now: datetime.datetime) -> LoanData:
    values = LOAN.read(node, at)
    given = [key for key in DUE_KEYS if values[key] is not None]
    if len(given) > 1:
        at.child(given[1]).expected(f"only one of {', '.join(DUE_KEYS)} (also has {given[0]})", node[given[1]])
    due = values["due"]
    if values["due_in_days"] is not None:
        due = dbtime.days_from(now, values["due_in_days"])
    if values["days_overdue"] is not None:
        due = dbtime.days_from(now, -values["days_overdue"])
    return LoanData(
        path=at.path,
        patron=values["patron"],
        item=values["item"],
        due=due,
        checked_out=values["checked_out"],
        renewals=values["renewals"],
    )


def _hold(at: At, node: Any) -> HoldData:
    values = HOLD.read(node, at)
    if not values["item"] and not values["title"]:
        at.child("item").expected("an item barcode or a title", None)
    if values["state"] != "queued" and not values["item"]:
        at.child("item").expected(f"the barcode of the copy set aside for a {values['state']} hold", None)
    return HoldData(path=at.path, **values)


def _fee(at: At, node: Any, seen: Counter[str]) -> FeeData:
    values = FEE.read(node, at)
    amount, balance = values["amount"], values["balance"]
    if balance is not None and balance > amount:
        at.child("balance").expected(f"at most the amount {node['amount']}", node["balance"])
    if not values["ref"]:
        key = f"{values['patron']}/{values['fee_type']}/{values['item']}/{amount}"
        seen[key] += 1
        values["ref"] = f"{key}/{seen[key]}"
    return FeeData(path=at.path, **{**values, "balance": amount if balance is None else balance})


def _listed(at: At, data: Mapping[str, Any], name: str, parse: Callable[[At, Any], Any]) -> list[Any]:
    here = at.child(name)
    return [parse(here.child(i), node) for i, node in enumerate(_section(at, data, name))]


def parse_data(data: Any, source: str, now: datetime.datetime) -> Dataset:
    """Validate a data file's content (as YAML-loaded) into a :class:`Dataset`; raises DataError."""
    at = _DataFile(source).root()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        at.fail(f"expected a mapping with keys {', '.join(SECTIONS)}, got {type(data).__name__}")
    for name in data:
        if name not in SECTIONS:
            at.child(str(name)).fail(f"unknown section (expected one of: {', '.join(SECTIONS)}){hint(name, SECTIONS)}")
    seen: Counter[str] = Counter()
    dataset = Dataset(
        source=source,
        rules=_rules(at.child("rules"), data.get("rules")),
        patrons=_listed(at, data, "patrons", _patron),
        items=_listed(at, data, "items", _item),
        loans=_listed(at, data, "loans", lambda here, node: _loan(here, node, now)),
        holds=_listed(at, data, "holds", _hold),
        fees=_listed(at, data, "fees", lambda here, node: _fee(here, node, seen)),
    )
    _unique(at, "patrons", [p.barcode for p in dataset.patrons])
    _unique(at, "items", [p.barcode for p in dataset.items])
    _unique(at, "loans", [p.item for p in dataset.loans])
    return dataset


def read_data_file(path: str, now: datetime.datetime) -> Dataset:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DataError(f"{path}: {where}invalid YAML: {problem}") from None
    return parse_data(data, path, now)


# -- writing ------------------------------------------------------------------------------------


def is_empty(tx: Tx) -> bool:
    """Whether the database holds no patrons and no items (seeding loads only into such a one)."""
    return not tx.one("SELECT id FROM patrons") and not tx.one("SELECT id FROM items")


def _upsert(tx: Tx, table: str, key: str, values: Mapping[str, Any]) -> int:
    found = tx.one(f"SELECT id FROM {table} WHERE {key} = ?" + tx.lock, (values[key],))
    names = list(values)
    if found is None:
        columns = ", ".join(names)
        marks = ", ".join("?" for _ in names)
        return tx.insert(f"INSERT INTO {table} ({columns}) VALUES ({marks})", [values[n] for n in names])
    assignments = ", ".join(f"{n} = ?" for n in names)
    tx.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", [*(values[n] for n in names), found["id"]])
    return int(found["id"])


def _write_rules(tx: Tx, rules: dict[str, dict[str, Any]]) -> None:
    for patron_type, values in rules.items():
        if tx.one("SELECT patron_type FROM circ_rules WHERE patron_type = ?", (patron_type,)) is None:
            tx.execute("INSERT INTO circ_rules (patron_type) VALUES (?)", (patron_type,))
        assignments = ", ".join(f"{n} = ?" for n in RULE_FIELDS)
        tx.execute(
            f"UPDATE circ_rules SET {assignments} WHERE patron_type = ?",
            [*(values[n] for n in RULE_FIELDS), patron_type],
        )


def _write_patron(tx: Tx, p: PatronData) -> None:
    values: dict[str, Any] = {
        "barcode": p.barcode, "name": p.name, "email": p.email, "phone": p.phone, "address": p.address,
        "birth_date": dbtime.day(p.birth_date), "patron_type": p.patron_type, "home_library": p.home_library,
        "expires": dbtime.day(p.expires), "blocked": p.blocked, "block_reason": p.block_reason,
        "card_lost": p.card_lost, "internet_privileges": p.internet_privileges,
    }  # fmt: skip
    if p.pin is not None:
        old = records.find_patron(tx, p.barcode)
        keep = old is not None and old.pin_hash and check_pin(p.pin, old.pin_hash)
        values["pin_hash"] = old.pin_hash if keep and old is not None else hash_pin(p.pin)
    _upsert(tx, "patrons", "barcode", values)


def _ids(tx: Tx, table: str, source: str, path: str, barcode: str) -> int:
    row = tx.one(f"SELECT id FROM {table} WHERE barcode = ?", (barcode,))
    if row is None:
        what = "patron" if table == "patrons" else "item"
        raise DataError(f"{source}: {path}: expected a known {what} barcode, got {barcode!r}")
    return int(row["id"])


def _lent_at(source: str, loan: LoanData, due: datetime.datetime, loan_days: int) -> datetime.datetime:
    """When a loan without ``checked_out`` began: one loan period per renewal, and one more, before it was due.

    Too many renewals (or a due date too early) for that to be a date is the file's mistake, named.
    """
    room = (due - datetime.datetime.min).days  # whole days the calendar has before the due date
    if loan_days * (loan.renewals + 1) <= room:
        return due - datetime.timedelta(days=loan_days * (loan.renewals + 1))
    if loan_days > room:
        raise DataError(
            f"{source}: {loan.path}.due: expected a date at least one loan period ({loan_days} days) after"
            f" 0001-01-01 or a checked_out date, got {due.date().isoformat()}"
        )
    raise DataError(
        f"{source}: {loan.path}.renewals: expected at most {room // loan_days - 1} renewals of {loan_days} days"
        f" before the due date {due.date().isoformat()} or a checked_out date, got {loan.renewals}"
    )


def _write_loan(tx: Tx, source: str, loan: LoanData, now: datetime.datetime) -> None:
    patron_id = _ids(tx, "patrons", source, f"{loan.path}.patron", loan.patron)
    item_id = _ids(tx, "items", source, f"{loan.path}.item", loan.item)
    circ = records.rules_for(tx, records.patron_by_id(tx, patron_id).patron_type)
    due = loan.due or dbtime.days_from(now, circ.loan_days)
    checked_out = loan.checked_out or min(now, _lent_at(source, loan, due, circ.loan_days))
    current = records.open_loan(tx, item_id)
    if current is not None and current.patron_id != patron_id:
        tx.execute("UPDATE loans SET returned = ? WHERE id = ?", (dbtime.stamp(now), current.id))
        current = None
    if current is None:
        tx.insert(
            "INSERT INTO loans (item_id, patron_id, checked_out, due, renewals) VALUES (?, ?, ?, ?, ?)",
            (item_id, patron_id, dbtime.stamp(checked_out), dbtime.stamp(due), loan.renewals),
        )
    else:
        tx.execute(
            "UPDATE loans SET checked_out = ?, due = ?, renewals = ? WHERE id = ?",
            (dbtime.stamp(checked_out), dbtime.stamp(due), loan.renewals, current.id),
        )
    tx.execute("UPDATE items SET status = 'charged' WHERE id = ?", (item_id,))


def _write_hold(tx: Tx, source: str, hold: HoldData, now: datetime.datetime) -> None:
    patron_id = _ids(tx, "patrons", source, f"{hold.path}.patron", hold.patron)
    patron = records.patron_by_id(tx, patron_id)
    copy = records.item_by_id(tx, _ids(tx, "items", source, f"{hold.path}.item", hold.item)) if hold.item else None
    if copy is None and tx.one("SELECT id FROM items WHERE title = ?", (hold.title,)) is None:
        raise DataError(f"{source}: {hold.path}.title: expected the title of a known item, got {hold.title!r}")
    title_level = bool(hold.title)
    title = hold.title or (copy.title if copy is not None else "")
    if copy is not None and hold.state != "queued" and records.open_loan(tx, copy.id) is not None:
        raise DataError(f"{source}: {hold.path}.item: expected a copy not on loan for a {hold.state} hold")
    key_sql = "item_id IS NULL AND title = ?" if title_level else "item_id = ?"
    key: Any = title if title_level else copy.id if copy is not None else None
    found = tx.one(
        f"SELECT id FROM holds WHERE patron_id = ? AND {key_sql}"
        " AND state IN ('queued', 'in_transit', 'waiting') ORDER BY id" + tx.lock,
        (patron_id, key),
    )
    trapped = hold.state != "queued" and copy is not None
    shelf_days = records.rules_for(tx, patron.patron_type).hold_shelf_days
    values = (
        None if title_level or copy is None else copy.id,
        title,
        hold.state,
        hold.pickup or patron.home_library,
        dbtime.stamp(hold.expires) if hold.expires else None,
        copy.id if trapped and copy is not None else None,
        dbtime.stamp(dbtime.days_from(now, shelf_days)) if hold.state == "waiting" else None,
    )
    if found is None:
        tx.insert(
            "INSERT INTO holds (item_id, title, state, pickup_location, expires, shelf_item_id, shelf_expires,"
            " patron_id, placed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, patron_id, dbtime.stamp(hold.placed or now)),
        )
    else:
        tx.execute(
            "UPDATE holds SET item_id = ?, title = ?, state = ?, pickup_location = ?, expires = ?,"
            " shelf_item_id = ?, shelf_expires = ? WHERE id = ?",
            (*values, found["id"]),
        )
    if trapped and copy is not None:
        status = "on_hold_shelf" if hold.state == "waiting" else "in_transit"
        tx.execute("UPDATE items SET status = ? WHERE id = ?", (status, copy.id))


def _write_fee(tx: Tx, source: str, fee: FeeData, now: datetime.datetime) -> None:
    values = {
        "ref": fee.ref,
        "patron_id": _ids(tx, "patrons", source, f"{fee.path}.patron", fee.patron),
        "fee_type": fee.fee_type,
        "amount": fee.amount,
        "balance": fee.balance,
        "item_id": _ids(tx, "items", source, f"{fee.path}.item", fee.item) if fee.item else None,
        "created": dbtime.stamp(fee.created or now),
        "description": fee.description,
    }
    _upsert(tx, "fees", "ref", values)


def load_dataset(tx: Tx, dataset: Dataset, now: datetime.datetime) -> dict[str, int]:
    """Write a validated dataset (in the caller's transaction); returns how many of each were loaded."""
    _write_rules(tx, dataset.rules)
    for patron in dataset.patrons:
        _write_patron(tx, patron)
    for item in dataset.items:
        _upsert(tx, "items", "barcode", attrs.asdict(item))
    for loan in dataset.loans:
        _write_loan(tx, dataset.source, loan, now)
    for hold in dataset.holds:
        _write_hold(tx, dataset.source, hold, now)
    for fee in dataset.fees:
        _write_fee(tx, dataset.source, fee, now)
    return dataset.counts()


def load_data_file(tx: Tx, path: str, now: datetime.datetime) -> dict[str, int]:
    """Read, validate and write one data file in the caller's transaction."""
    return load_dataset(tx, read_data_file(path, now), now)


def load_file(backend: Any, path: str) -> Deferred[dict[str, int]]:
    """Load a data file into a started SQL backend; fires with the counts per section.

    Used by the backend's ``seed`` option and the ``sipserver load`` command. Errbacks with
    :class:`DataError` for a bad file (nothing is written) and :class:`BackendConfigError` for a
    backend that cannot load data.
    """
    run_write = getattr(backend, "run_write", None)
    if run_write is None:
        return fail(BackendConfigError(f"backend {type(backend).__name__} cannot load data files"))
    return run_write(load_data_file, os.fspath(path), backend.now())
