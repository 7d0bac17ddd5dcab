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
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import yaml
from twisted.internet.defer import Deferred, fail

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
#: Keys whose values never appear in an error message (they end up in logs and on the console).
SECRET_KEYS = frozenset({"pin"})
#: Rules that are numbers of days, added to today's date: at most :data:`MAX_DAYS`.
DAY_RULES = frozenset({"loan_days", "hold_shelf_days"})


class DataError(ValueError):
    """A data file is unusable; the message is one line for people."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that an impossible date (``2024-02-30``) stays text.

    PyYAML builds a date from anything shaped like one and raises a bare ``ValueError`` ("day is
    out of range for month") with no file, line or key; kept as text, the key's own check reports
    it as any other bad date: ``patrons[3].expires: expected a date YYYY-MM-DD, got '2024-02-30'``.
    """


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


# -- validation ---------------------------------------------------------------------------------


class _Record:
    """One mapping in the file, read key by key, with errors that say where."""

    def __init__(self, source: str, path: str, node: Any, keys: tuple[str, ...]) -> None:
        self.source, self.path = source, path
        if not isinstance(node, Mapping):
            self.fail("", "a mapping", node)
        unknown = sorted(str(k) for k in node if k not in keys)
        if unknown:
            raise DataError(f"{source}: {path}.{unknown[0]}: unknown key (expected one of: {', '.join(keys)})")
        self.node: Mapping[str, Any] = node

    def fail(self, key: str, expected: str, got: Any) -> None:
        where = f"{self.path}.{key}" if key else self.path
        shown = f"a hidden {type(got).__name__}" if key in SECRET_KEYS else repr(got)
        raise DataError(f"{self.source}: {where}: expected {expected}, got {shown}")

    def has(self, key: str) -> bool:
        return self.node.get(key) is not None

    def text(self, key: str, *, required: bool = False, default: str = "", choices: tuple[str, ...] = ()) -> str:
        value = self.node.get(key)
        if value is None:
            if required:
                self.fail(key, "a value", value)
            return default
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, int | float) and not isinstance(value, bool):
                hint = " (quote it)" if key in SECRET_KEYS else f" (quote it: '{value}')"
            self.fail(key, f"a string{hint}", value)
        value = value.strip()
        if required and not value:
            self.fail(key, "a non-empty string", value)
        if choices and value not in choices:
            self.fail(key, f"one of {', '.join(choices)}", value)
        return value

    def integer(
        self, key: str, default: int | None = None, *, minimum: int | None = 0, maximum: int = INTEGER_MAX
    ) -> int | None:
        """A whole number; at most ``maximum``, by default what an ``INTEGER`` column holds."""
        value = self.node.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            self.fail(key, "a whole number" + (f" >= {minimum}" if minimum is not None else ""), value)
        if abs(value) > maximum:
            self.fail(key, f"a whole number from {-maximum if minimum is None else minimum} to {maximum}", value)
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.node.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def money(self, key: str, *, required: bool = False) -> int | None:
        value = self.node.get(key)
        if value is None:
            if required:
                self.fail(key, "an amount such as 2.50", value)
            return None
        cents = None if isinstance(value, bool) else parse_amount(str(value))
        if cents is None and not isinstance(value, bool) and parse_amount(str(value), maximum=None) is not None:
            self.fail(key, f"an amount of at most {format_cents(MAX_CENTS)}", value)
        if cents is None:
            self.fail(key, "an amount such as 2.50", value)
        return cents

    def date(self, key: str) -> datetime.date | None:
        value = self.node.get(key)
        if value is None:
            return None
        if isinstance(value, datetime.datetime):
            return value.date()
        if isinstance(value, datetime.date):
            return value
        try:
            return datetime.date.fromisoformat(str(value))
        except ValueError:
            self.fail(key, "a date YYYY-MM-DD", value)
        raise AssertionError  # unreachable

    def moment(self, key: str, *, end_of_day: bool = True) -> datetime.datetime | None:
        """A date (taken at 23:59, or at midnight) or a date and time."""
        value = self.node.get(key)
        if value is None:
            return None
        if isinstance(value, datetime.datetime):
            return dbtime.local_naive(value)
        if isinstance(value, datetime.date):
            return dbtime.end_of_day(value) if end_of_day else datetime.datetime.combine(value, datetime.time())
        try:
            parsed = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(key, "a date YYYY-MM-DD or a date and time YYYY-MM-DDTHH:MM", value)
            raise AssertionError from None  # unreachable
        if len(str(value)) == 10 and end_of_day:
            return dbtime.end_of_day(parsed.date())
        return dbtime.local_naive(parsed)


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


def _section(source: str, data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{source}: {name}: expected a list, got {type(value).__name__}")
    return value


def _unique(source: str, section: str, barcodes: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, barcode in enumerate(barcodes):
        if barcode in seen:
            raise DataError(
                f"{source}: {section}[{i}].barcode: expected a unique barcode, "
                f"{barcode!r} is also {section}[{seen[barcode]}]"
            )
        seen[barcode] = i


def _rules(source: str, node: Any) -> dict[str, dict[str, Any]]:
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise DataError(f"{source}: rules: expected a mapping of patron type to rules, got {node!r}")
    out: dict[str, dict[str, Any]] = {}
    for patron_type, body in node.items():
        rec = _Record(source, f"rules.{patron_type}", body, RULE_FIELDS)
        values: dict[str, Any] = {}
        for name in RULE_FIELDS:
            if name == "allow_credit":
                values[name] = rec.flag(name) if rec.has(name) else None
            elif name in MONEY_RULES:
                values[name] = rec.money(name)
            elif name in DAY_RULES:
                values[name] = rec.integer(name, maximum=MAX_DAYS)
            else:
                values[name] = rec.integer(name)
        out[str(patron_type)] = values
    return out


def _patron(source: str, i: int, node: Any) -> PatronData:
    keys = ("barcode", "pin", "name", "email", "phone", "address", "birth_date", "type", "home_library",
            "expires", "blocked", "card_lost", "internet_privileges")  # fmt: skip
    rec = _Record(source, f"patrons[{i}]", node, keys)
    blocked = node.get("blocked")
    if blocked is not None and not isinstance(blocked, bool | str):
        rec.fail("blocked", "true, false or a reason", blocked)
    return PatronData(
        barcode=rec.text("barcode", required=True),
        pin=rec.text("pin") if rec.has("pin") else None,
        name=rec.text("name"),
        email=rec.text("email"),
        phone=rec.text("phone"),
        address=rec.text("address"),
        birth_date=rec.date("birth_date"),
        patron_type=rec.text("type", default=DEFAULT_TYPE),
        home_library=rec.text("home_library"),
        expires=rec.date("expires"),
        blocked=bool(blocked),
        block_reason=blocked.strip() if isinstance(blocked, str) else ("blocked" if blocked else ""),
        card_lost=rec.flag("card_lost"),
        internet_privileges=rec.text("internet_privileges"),
    )


def _item(source: str, i: int, node: Any) -> ItemData:
    keys = ("barcode", "title", "author", "call_number", "media_type", "owner", "location",
            "permanent_location", "status", "security_marker", "price", "rental_fee", "properties")  # fmt: skip
    rec = _Record(source, f"items[{i}]", node, keys)
    owner = rec.text("owner")
    permanent = rec.text("permanent_location", default=owner)
    return ItemData(
        barcode=rec.text("barcode", required=True),
        title=rec.text("title", required=True),
        author=rec.text("author"),
        call_number=rec.text("call_number"),
        media_type=rec.text("media_type", default="book", choices=MEDIA_TYPES),
        owner=owner,
        permanent_location=permanent,
        current_location=rec.text("location", default=permanent),
        status=rec.text("status", default="available", choices=ITEM_STATUSES),
        security_marker=rec.text("security_marker", default="tattle_tape", choices=SECURITY_MARKERS),
        price=rec.money("price"),
        rental_fee=rec.money("rental_fee") or 0,
        properties=rec.text("properties"),
    )


def _loan(source: str, i: int, node: Any, now: datetime.datetime) -> LoanData:
    keys = ("patron", "item", "due", "due_in_days", "days_overdue", "checked_out", "renewals")
    rec = _Record(source, f"loans[{i}]", node, keys)
    given = [k for k in ("due", "due_in_days", "days_overdue") if rec.has(k)]
    if len(given) > 1:
        rec.fail(given[1], f"only one of due, due_in_days, days_overdue (also has {given[0]})", node[given[1]])
    due = rec.moment("due")
    if rec.has("due_in_days"):
        due = dbtime.days_from(now, rec.integer("due_in_days", minimum=None, maximum=MAX_DAYS) or 0)
    if rec.has("days_overdue"):
        due = dbtime.days_from(now, -(rec.integer("days_overdue", minimum=1, maximum=MAX_DAYS) or 1))
    return LoanData(
        path=rec.path,
        patron=rec.text("patron", required=True),
        item=rec.text("item", required=True),
        due=due,
        checked_out=rec.moment("checked_out", end_of_day=False),
        renewals=rec.integer("renewals", 0) or 0,
    )


def _hold(source: str, i: int, node: Any) -> HoldData:
    keys = ("patron", "item", "title", "pickup", "expires", "placed", "state")
    rec = _Record(source, f"holds[{i}]", node, keys)
    item, title = rec.text("item"), rec.text("title")
    state = rec.text("state", default="queued", choices=HOLD_STATES)
    if not item and not title:
        rec.fail("item", "an item barcode or a title", None)
    if state != "queued" and not item:
        rec.fail("item", f"the barcode of the copy set aside for a {state} hold", None)
    return HoldData(
        path=rec.path,
        patron=rec.text("patron", required=True),
        item=item,
        title=title,
        pickup=rec.text("pickup"),
        expires=rec.moment("expires"),
        placed=rec.moment("placed", end_of_day=False),
        state=state,
    )


def _fee(source: str, i: int, node: Any, seen: Counter[str]) -> FeeData:
    keys = ("patron", "type", "amount", "balance", "item", "description", "created", "ref")
    rec = _Record(source, f"fees[{i}]", node, keys)
    patron = rec.text("patron", required=True)
    fee_type = rec.text("type", required=True, choices=FEE_TYPES)
    amount = rec.money("amount", required=True) or 0
    balance = rec.money("balance")
    if balance is not None and balance > amount:
        rec.fail("balance", f"at most the amount {node['amount']}", node["balance"])
    item = rec.text("item")
    ref = rec.text("ref")
    if not ref:
        key = f"{patron}/{fee_type}/{item}/{amount}"
        seen[key] += 1
        ref = f"{key}/{seen[key]}"
    return FeeData(
        path=rec.path,
        patron=patron,
        fee_type=fee_type,
        amount=amount,
        balance=amount if balance is None else balance,
        item=item,
        description=rec.text("description"),
        created=rec.moment("created", end_of_day=False),
        ref=ref,
    )


def _listed(source: str, data: Mapping[str, Any], name: str, parse: Callable[[int, Any], Any]) -> list[Any]:
    return [parse(i, node) for i, node in enumerate(_section(source, data, name))]


def parse_data(data: Any, source: str, now: datetime.datetime) -> Dataset:
    """Validate a data file's content (as YAML-loaded) into a :class:`Dataset`; raises DataError."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise DataError(f"{source}: expected a mapping with keys {', '.join(SECTIONS)}, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in SECTIONS)
    if unknown:
        raise DataError(f"{source}: {unknown[0]}: unknown section (expected one of: {', '.join(SECTIONS)})")
    seen: Counter[str] = Counter()
    dataset = Dataset(
        source=source,
        rules=_rules(source, data.get("rules")),
        patrons=_listed(source, data, "patrons", lambda i, n: _patron(source, i, n)),
        items=_listed(source, data, "items", lambda i, n: _item(source, i, n)),
        loans=_listed(source, data, "loans", lambda i, n: _loan(source, i, n, now)),
        holds=_listed(source, data, "holds", lambda i, n: _hold(source, i, n)),
        fees=_listed(source, data, "fees", lambda i, n: _fee(source, i, n, seen)),
    )
    _unique(source, "patrons", [p.barcode for p in dataset.patrons])
    _unique(source, "items", [p.barcode for p in dataset.items])
    _unique(source, "loans", [p.item for p in dataset.loans])
    return dataset


def read_data_file(path: str, now: datetime.datetime) -> Dataset:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
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
