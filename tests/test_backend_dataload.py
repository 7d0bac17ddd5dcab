"""The YAML data format: the demo data, upserts, and error messages that say where and what."""

from __future__ import annotations

import datetime
import textwrap

import pytest

from sipserver.ils.embedded.loader import DataError, load_file, parse_data
from sipserver.ils.interface import (
    BackendConfigError,
    BlockPatronRequest,
    CheckoutRequest,
    CirculationStatus,
    FeePaidRequest,
    HoldMode,
    HoldRequest,
    ItemRequest,
    PatronRequest,
    Refusal,
    RenewRequest,
    SummaryRequest,
    Terminal,
)
from tests.test_backend_support import DEMO, NOW, ctx, make_backend, result_of, rows

EMPTY: dict = {}


def count(backend, table, where="1 = 1"):
    return rows(backend, f"SELECT COUNT(*) AS n FROM {table} WHERE {where}")[0]["n"]


@pytest.fixture(scope="module")
def demo():
    backend = make_backend(data=EMPTY)
    counts = result_of(load_file(backend, DEMO))
    return backend, counts


def test_demo_data_has_enough_of_everything(demo):
    backend, counts = demo
    assert counts["patrons"] >= 20 and counts["items"] >= 100
    assert counts["loans"] > 10 and counts["holds"] >= 5 and counts["fees"] >= 5
    statuses = {r["status"] for r in rows(backend, "SELECT DISTINCT status FROM items")}
    assert {"available", "charged", "in_transit", "on_hold_shelf", "lost", "missing"} <= statuses
    media = {r["media_type"] for r in rows(backend, "SELECT DISTINCT media_type FROM items")}
    assert {"book", "dvd", "cd", "audio", "magazine"} <= media
    branches = {r["owner"] for r in rows(backend, "SELECT DISTINCT owner FROM items")}
    assert branches == {"MAIN", "EAST", "WEST"}
    titles = {r["title"] for r in rows(backend, "SELECT title FROM items")}
    for title in ("Cien años de soledad", "Les Misérables", "Über Tage", "Война и мир", "Οδύσσεια", "羅生門",
                  "أولاد حارتنا", "红楼梦"):  # fmt: skip
        assert title in titles


def test_demo_jane_doe(demo):
    backend, _ = demo
    jane = result_of(
        backend.patron(
            PatronRequest(
                terminal=Terminal(institution="X"), patron="21000000000001", pin="1234", summary=SummaryRequest()
            )
        )
    )
    assert (jane.name, jane.email, jane.pin_ok, jane.fee_balance) == ("Jane Doe", "jane@example.org", True, "2.50")
    assert len(jane.charged_items) == 2 and len(jane.hold_items) == 1 and jane.overdue_items == ()
    assert not jane.status.charge_denied


def test_demo_scenarios(demo):
    backend, _ = demo

    def refusal(patron, pin, item):
        return result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron=patron, item=item, pin=pin))).refusal

    assert refusal("21000000000002", "0002", "31000000000008") is Refusal.FINES_OVER_LIMIT
    assert refusal("21000000000004", "0004", "31000000000008") is Refusal.TOO_MANY_OVERDUE
    assert refusal("21000000000005", "0005", "31000000000008") is Refusal.PATRON_BLOCKED
    assert refusal("21000000000006", "0006", "31000000000008") is Refusal.PATRON_EXPIRED
    assert refusal("21000000000007", "0007", "31000000000008") is Refusal.CARD_LOST
    assert refusal("21000000000020", "0020", "31000000000008") is Refusal.TOO_MANY_ITEMS
    assert refusal("21000000000001", "1234", "31000000000052") is Refusal.ITEM_ON_HOLD_FOR_OTHER
    assert refusal("21000000000001", "1234", "31000000000088") is Refusal.FEE_NOT_ACKNOWLEDGED
    assert refusal("21000000000001", "1234", "31000000000005") is Refusal.ITEM_NOT_CIRCULATING
    assert refusal("21000000000001", "1234", "31000000000012") is Refusal.ITEM_NOT_CIRCULATING
    assert (
        result_of(backend.item(ItemRequest(terminal=Terminal(institution="X"), item="31000000000007"))).status
        is CirculationStatus.IN_TRANSIT
    )
    amara = result_of(
        backend.renew(RenewRequest(terminal=ctx(), patron="21000000000003", item="31000000000032", pin="0003"))
    )
    assert amara.refusal is Refusal.RENEWAL_BLOCKED_BY_HOLD


def test_loading_twice_changes_nothing(tmp_path):
    backend = make_backend(str(tmp_path / "ils.db"), data=EMPTY)
    first = result_of(load_file(backend, DEMO))
    tables = ("patrons", "items", "loans", "holds", "fees", "circ_rules")
    before = {t: count(backend, t) for t in tables}
    pins = rows(backend, "SELECT barcode, pin_hash FROM patrons ORDER BY barcode")
    assert result_of(load_file(backend, DEMO)) == first
    assert {t: count(backend, t) for t in tables} == before
    assert rows(backend, "SELECT barcode, pin_hash FROM patrons ORDER BY barcode") == pins  # PINs kept


def test_loading_again_resets_the_records(tmp_path):
    backend = make_backend(str(tmp_path / "ils.db"), data=EMPTY)
    result_of(load_file(backend, DEMO))
    result_of(backend.block_patron(BlockPatronRequest(terminal=ctx(), patron="21000000000001")))
    result_of(backend.fee_paid(FeePaidRequest(terminal=ctx(), patron="21000000000001", pin=None, amount="2.50")))
    result_of(
        backend.hold(
            HoldRequest(
                terminal=ctx(), mode=HoldMode.CANCEL, patron="21000000000010", pin=None, title="Cien años de soledad"
            )
        )
    )
    result_of(load_file(backend, DEMO))
    jane = result_of(
        backend.patron(PatronRequest(terminal=Terminal(institution="X"), patron="21000000000001", pin=None))
    )
    assert not jane.blocked and jane.fee_balance == "2.50"
    jose = result_of(
        backend.patron(
            PatronRequest(
                terminal=Terminal(institution="X"), patron="21000000000010", pin=None, summary=SummaryRequest()
            )
        )
    )
    assert len(jose.unavailable_holds) == 1


def test_pins_are_hashed(demo):
    backend, _ = demo
    stored = rows(backend, "SELECT pin_hash FROM patrons WHERE barcode = '21000000000001'")[0]["pin_hash"]
    assert stored.startswith("pbkdf2_sha256$") and "1234" not in stored


def test_relative_and_absolute_due_dates():
    data = {
        "patrons": [{"barcode": "P", "name": "x"}],
        "items": [{"barcode": f"I{n}", "title": "t"} for n in range(4)],
        "loans": [
            {"patron": "P", "item": "I0", "due_in_days": 3},
            {"patron": "P", "item": "I1", "days_overdue": 2},
            {"patron": "P", "item": "I2", "due": datetime.date(2024, 7, 1)},
            {"patron": "P", "item": "I3", "due": "2024-07-02T12:30"},
        ],
    }
    loans = parse_data(data, "f.yaml", NOW).loans
    assert [loan.due for loan in loans] == [
        datetime.datetime(2024, 6, 6, 23, 59),
        datetime.datetime(2024, 6, 1, 23, 59),
        datetime.datetime(2024, 7, 1, 23, 59),
        datetime.datetime(2024, 7, 2, 12, 30),
    ]


def test_a_loan_without_a_due_date_gets_the_loan_period():
    backend = make_backend(data={
        "patrons": [{"barcode": "P", "name": "x"}], "items": [{"barcode": "I", "title": "t"}],
        "loans": [{"patron": "P", "item": "I"}],
    })  # fmt: skip
    assert result_of(backend.item(ItemRequest(terminal=Terminal(institution="X"), item="I"))).due == datetime.datetime(
        2024, 6, 24, 23, 59
    )  # 21 days


BASE = """
patrons:
  - {barcode: "P1", name: "One"}
items:
  - {barcode: "I1", title: "Book"}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- 1\n", "expected a mapping with keys rules, patrons, items, loans, holds, fees, got list"),
        ("people: []\n", "people: unknown section"),
        ("patrons: {}\n", "patrons: expected a list, got dict"),
        ("patrons:\n  - 12\n", r"patrons\[0\]: expected a mapping, got 12"),
        (
            "patrons:\n  - {barcode: 21000000000001}\n",
            r"patrons\[0\].barcode: expected a string \(quote it: '21000000000001'\), got 21000000000001",
        ),
        ("patrons:\n  - {name: x}\n", r"patrons\[0\].barcode: expected a value, got None"),
        (
            'patrons:\n  - {barcode: "A"}\n  - {barcode: "B", expires: "31/12/2024"}\n',
            r"patrons\[1\].expires: expected a date YYYY-MM-DD, got '31/12/2024'",
        ),
        # A PIN never appears in the message: it ends up in logs and on the console.
        (
            'patrons:\n  - {barcode: "A", pin: 1234}\n',
            r"patrons\[0\].pin: expected a string \(quote it\), got a hidden int$",
        ),
        ('patrons:\n  - {barcode: "A", pin: [9876]}\n', r"patrons\[0\].pin: expected a string, got a hidden list$"),
        ('patrons:\n  - {barcode: "A", blocked: 3}\n', r"patrons\[0\].blocked: expected true, false or a reason"),
        ('patrons:\n  - {barcode: "A", card_lost: "yes"}\n', r"patrons\[0\].card_lost: expected true or false"),
        ('patrons:\n  - {barcode: "A", colour: red}\n', r"patrons\[0\].colour: unknown key \(expected one of: barcode"),
        (
            'patrons:\n  - {barcode: "A"}\n  - {barcode: "A"}\n',
            r"patrons\[1\].barcode: expected a unique barcode, 'A' is also patrons\[0\]",
        ),
        ('items:\n  - {barcode: "I"}\n', r"items\[0\].title: expected a value"),
        (
            'items:\n  - {barcode: "I", title: t, media_type: vinyl}\n',
            r"items\[0\].media_type: expected one of book, magazine",
        ),
        ('items:\n  - {barcode: "I", title: t, status: charged}\n', r"items\[0\].status: expected one of other"),
        (
            'items:\n  - {barcode: "I", title: t, price: "two"}\n',
            r"items\[0\].price: expected an amount such as 2.50, got 'two'",
        ),
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1", due_in_days: 3, days_overdue: 2}\n',
            r"loans\[0\].days_overdue: expected only one of due, due_in_days, days_overdue",
        ),
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1", days_overdue: 0}\n',
            r"loans\[0\].days_overdue: expected a whole number >= 1, got 0",
        ),
        (
            BASE + 'loans:\n  - {patron: "P9", item: "I1"}\n',
            r"loans\[0\].patron: expected a known patron barcode, got 'P9'",
        ),
        (BASE + 'loans:\n  - {patron: "P1", item: "I9"}\n', r"loans\[0\].item: expected a known item barcode"),
        (BASE + 'holds:\n  - {patron: "P1"}\n', r"holds\[0\].item: expected an item barcode or a title"),
        (
            BASE + 'holds:\n  - {patron: "P1", title: "Book", state: waiting}\n',
            r"holds\[0\].item: expected the barcode of the copy set aside for a waiting hold",
        ),
        (
            BASE + 'holds:\n  - {patron: "P1", title: "Nope"}\n',
            r"holds\[0\].title: expected the title of a known item, got 'Nope'",
        ),
        (BASE + 'holds:\n  - {patron: "P1", item: "I1", state: gone}\n', r"holds\[0\].state: expected one of queued"),
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1"}\nholds:\n  - {patron: "P1", item: "I1", state: waiting}\n',
            r"holds\[0\].item: expected a copy not on loan for a waiting hold",
        ),
        (BASE + 'fees:\n  - {patron: "P1", type: fine, amount: "1.00"}\n', r"fees\[0\].type: expected one of"),
        (BASE + 'fees:\n  - {patron: "P1", type: damage}\n', r"fees\[0\].amount: expected an amount such as 2.50"),
        (
            BASE + 'fees:\n  - {patron: "P1", type: damage, amount: "1.00", balance: "2.00"}\n',
            r"fees\[0\].balance: expected at most the amount 1.00, got '2.00'",
        ),
        ("rules:\n  default: {loan_days: -1}\n", r"rules.default.loan_days: expected a whole number >= 0, got -1"),
        ("rules:\n  default: {fee_limit: lots}\n", r"rules.default.fee_limit: expected an amount"),
        ("rules:\n  default: {loans: 3}\n", r"rules.default.loans: unknown key"),
        ("rules: [1]\n", r"rules: expected a mapping of patron type to rules"),
        ("patrons:\n  - {barcode: 'A'\n", r"line \d+: invalid YAML: "),
        # Impossible dates: PyYAML's own date parsing raised a bare ValueError, with no file or key.
        (
            'patrons:\n  - {barcode: "A", expires: 2024-13-45}\n',
            r"patrons\[0\].expires: expected a date YYYY-MM-DD, got '2024-13-45'$",
        ),
        (
            BASE + 'holds:\n  - {patron: "P1", title: "Book", placed: 2024-02-30}\n',
            r"holds\[0\].placed: expected a date YYYY-MM-DD or a date and time YYYY-MM-DDTHH:MM, got '2024-02-30'$",
        ),
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1", due: 2024-06-01 25:00:00}\n',
            r"loans\[0\].due: expected a date YYYY-MM-DD or a date and time YYYY-MM-DDTHH:MM,"
            r" got '2024-06-01 25:00:00'$",
        ),
        # Numbers past what the columns hold, or past the calendar once added to a date.
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1", due_in_days: 100000000}\n',
            r"loans\[0\].due_in_days: expected a whole number from -36525 to 36525, got 100000000$",
        ),
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1", days_overdue: 36526}\n',
            r"loans\[0\].days_overdue: expected a whole number from 1 to 36525, got 36526$",
        ),
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1", due_in_days: 3, renewals: 10000000}\n',
            r"loans\[0\].renewals: expected at most \d+ renewals of 21 days before the due date 2024-06-06"
            r" or a checked_out date, got 10000000$",
        ),
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1", due_in_days: 3, renewals: 2147483648}\n',
            r"loans\[0\].renewals: expected a whole number from 0 to 2147483647, got 2147483648$",
        ),
        (
            BASE + 'loans:\n  - {patron: "P1", item: "I1", due: 0001-01-02}\n',
            r"loans\[0\].due: expected a date at least one loan period \(21 days\) after 0001-01-01"
            r" or a checked_out date, got 0001-01-02$",
        ),
        (
            "rules:\n  default: {loan_days: 100000000000}\n",
            r"rules.default.loan_days: expected a whole number from 0 to 36525, got 100000000000$",
        ),
        (
            "rules:\n  default: {max_items_out: 2147483648}\n",
            r"rules.default.max_items_out: expected a whole number from 0 to 2147483647, got 2147483648$",
        ),
        (
            "items:\n  - {barcode: Y1, title: T, price: '999999999'}\n",
            r"items\[0\].price: expected an amount of at most 21474836.47, got '999999999'$",
        ),
        (
            BASE + 'fees:\n  - {patron: "P1", type: damage, amount: 21474836.48}\n',
            r"fees\[0\].amount: expected an amount of at most 21474836.47, got 21474836.48$",
        ),
    ],
)
def test_validation_errors_say_where_and_what(tmp_path, text, message):
    path = tmp_path / "data.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    backend = make_backend(data=EMPTY)
    with pytest.raises(DataError, match=f"^{path}: {message}") as caught:
        result_of(load_file(backend, str(path)))
    assert "\n" not in str(caught.value)
    assert count(backend, "patrons") == 0  # all or nothing


def test_missing_and_unreadable_files(tmp_path):
    backend = make_backend(data=EMPTY)
    with pytest.raises(DataError, match=r"nope\.yaml: data file not found"):
        result_of(load_file(backend, str(tmp_path / "nope.yaml")))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("patrons: [{barcode: 'A', name: 'Jos\u00e9'}]".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.yaml: not UTF-8 text"):
        result_of(load_file(backend, str(bad)))


def test_load_file_needs_an_sql_backend():
    with pytest.raises(BackendConfigError, match="cannot load data files"):
        result_of(load_file(object(), DEMO))


def test_an_empty_file_loads_nothing(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    counts = result_of(load_file(make_backend(data=EMPTY), str(path)))
    assert set(counts.values()) == {0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Plain YAML keeps the second of two equal keys without a word: which PIN did the file mean?
        (
            'patrons:\n  - {barcode: "A", pin: "1111", pin: "2222"}\n',
            r"line 2: invalid YAML: found duplicate key 'pin'$",
        ),
        (
            'patrons:\n  - {barcode: "A", nmae: "Ann"}\n',
            r"patrons\[0\].nmae: unknown key \(expected one of: barcode, .*\) \(did you mean 'name'\?\)$",
        ),
        ('items:\n  - {barcode: "I", title: t, media_type: dvdd}\n', r"got 'dvdd' \(did you mean 'dvd'\?\)$"),
    ],
)
def test_duplicate_keys_are_refused_and_typos_get_a_hint(tmp_path, text, message):
    path = tmp_path / "data.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        result_of(load_file(make_backend(data=EMPTY), str(path)))
    assert str(caught.value).startswith(f"{path}: ") and "1111" not in str(caught.value)
