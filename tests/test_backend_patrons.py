"""Patron status, holds, fees and card blocks in the embedded backend."""

from __future__ import annotations

import datetime

import attrs
import pytest

from sipserver.ils.embedded.sqlite import SQLiteBackend
from sipserver.ils.interface import (
    BlockPatronRequest,
    CheckinRequest,
    CheckoutRequest,
    EnablePatronRequest,
    EndSessionRequest,
    FeePaidRequest,
    HoldMode,
    HoldRequest,
    ItemRequest,
    PatronRequest,
    Refusal,
    SummaryRequest,
    Terminal,
)
from tests.test_backend_support import FakeClock, ctx, load, make_backend, result_of, rows


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> SQLiteBackend:
    return make_backend(clock=clock)


def patron(backend, barcode, pin=None, lists=True):
    return result_of(
        backend.patron(
            PatronRequest(
                terminal=Terminal(institution="TEST"),
                patron=barcode,
                pin=pin,
                summary=SummaryRequest() if lists else None,
            )
        )
    )


def hold(backend, mode=HoldMode.ADD, who="P1", pin=None, **kw):
    return result_of(backend.hold(HoldRequest(terminal=ctx(), mode=mode, patron=who, pin=pin, **kw)))


def pay(backend, who, amount, pin=None, **kw):
    return result_of(backend.fee_paid(FeePaidRequest(terminal=ctx(), patron=who, pin=pin, amount=amount, **kw)))


# -- patron status ------------------------------------------------------------------------------


def test_unknown_patron_is_none(backend):
    assert patron(backend, "NOBODY") is None


def test_pin_ok_only_when_a_pin_is_given(backend):
    assert patron(backend, "P1").pin_ok is None
    assert patron(backend, "P1", "1111").pin_ok is True
    assert patron(backend, "P1", "1112").pin_ok is False
    assert patron(backend, "P1", "1111").pin_ok is True  # remembered, still right
    assert patron(backend, "P1", "").pin_ok is False


def test_a_good_patron(backend):
    p = patron(backend, "P1", "1111")
    assert p.name == "Ann Able" and p.home_library == "MAIN" and p.expires == datetime.date(2099, 1, 1)
    assert not any(attrs.asdict(p.status).values())
    assert (p.fee_balance, p.fee_limit, p.charged_limit, p.overdue_limit, p.hold_limit) == ("0.00", "5.00", 3, 1, 2)
    assert p.charged_items == p.overdue_items == p.fine_items == p.hold_items == p.recall_items == ()


@pytest.mark.parametrize(
    ("barcode", "denied", "facts"),
    [
        ("P3", {"charge_denied", "renewal_denied", "recall_denied", "hold_denied"}, {"blocked"}),
        ("P4", {"charge_denied", "renewal_denied", "recall_denied", "hold_denied"}, {"expired"}),
        ("P5", {"charge_denied", "renewal_denied", "recall_denied", "hold_denied", "card_lost"}, set()),
        ("P6", {"charge_denied", "renewal_denied", "excessive_fines"}, set()),
        ("P7", {"charge_denied", "too_many_overdue"}, set()),
        ("P8", {"charge_denied", "too_many_charged"}, set()),
    ],
)
def test_status_flags(backend, barcode, denied, facts):
    p = patron(backend, barcode)
    assert {name for name, value in attrs.asdict(p.status).items() if value} == denied
    assert p.blocked == ("blocked" in facts) and p.expired == ("expired" in facts)


def test_blocked_patron_keeps_the_reason(backend):
    assert patron(backend, "P3").block_reason == "stolen card"


def test_lists_are_filled_and_sorted(backend):
    p7 = patron(backend, "P7")
    assert [i.barcode for i in p7.charged_items] == ["O1", "O2"]  # by due date
    assert [i.barcode for i in p7.overdue_items] == ["O1", "O2"]
    p8 = patron(backend, "P8")
    assert [i.barcode for i in p8.charged_items] == ["F1", "F2", "F3"] and p8.overdue_items == ()
    assert [(f.fee_type, f.amount, f.balance) for f in patron(backend, "P6").fine_items] == [("damage", "6.00", "6.00")]
    assert patron(backend, "P8", lists=False).charged_items == ()


def test_holds_appear_as_available_or_unavailable(backend):
    hold(backend, item="I2")
    hold(backend, title="Twin")
    p = patron(backend, "P1")
    assert p.hold_items == () and [(i.barcode, i.title) for i in p.unavailable_holds] == [("I2", "Beta"), ("", "Twin")]
    result_of(backend.checkin(CheckinRequest(terminal=ctx(), item="I2", branch="MAIN")))
    p = patron(backend, "P1")
    assert [i.barcode for i in p.hold_items] == ["I2"] and [i.title for i in p.unavailable_holds] == ["Twin"]


def test_end_session(backend):
    assert result_of(backend.end_session(EndSessionRequest(terminal=ctx(), patron="P1", pin=None))) is True
    assert result_of(backend.end_session(EndSessionRequest(terminal=ctx(), patron="NOBODY", pin=None))) is False


def test_health(backend):
    assert result_of(backend.health()) is True


# -- holds --------------------------------------------------------------------------------------


def test_hold_on_an_item_queues_in_order(backend):
    result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron="P2", item="I1", pin=None)))
    r = hold(backend, item="I1", pickup_location="WEST", expires=datetime.datetime(2024, 9, 1))
    assert r.ok and r.queue_position == 1 and not r.available
    assert (r.item_barcode, r.title, r.pickup_location, r.expires) == (
        "I1", "Alpha", "WEST", datetime.datetime(2024, 9, 1)
    )  # fmt: skip
    r = hold(backend, who="P9", item="I1")
    assert r.queue_position == 2 and r.pickup_location == "MAIN"  # the terminal's location
    assert result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="I1"))).hold_queue_length == 2


def test_hold_defaults_to_the_patrons_home_library(backend):
    assert hold(backend, who="P2", item="I1").pickup_location == "EAST"


def test_hold_on_a_copy_on_the_shelf_is_available(backend):
    assert hold(backend, item="I2").available
    assert hold(backend, title="Twin").available


def test_title_hold_any_copy(backend):
    r = hold(backend, item="I5", hold_type="2")
    assert r.ok and r.item_barcode == "" and r.title == "Twin"
    assert (
        result_of(backend.checkin(CheckinRequest(terminal=ctx("EAST"), item="I6", branch="EAST"))).hold_patron_barcode
        == "P1"
    )


@pytest.mark.parametrize(
    ("who", "pin", "kw", "refusal"),
    [
        ("NOBODY", None, {"item": "I1"}, Refusal.UNKNOWN_PATRON),
        ("P1", "0", {"item": "I1"}, Refusal.WRONG_PIN),
        ("P1", None, {"item": "NOTHING"}, Refusal.UNKNOWN_ITEM),
        ("P1", None, {"title": "No Such Title"}, Refusal.UNKNOWN_TITLE),
        ("P1", None, {}, Refusal.UNKNOWN_TITLE),
        ("P3", None, {"item": "I1"}, Refusal.PATRON_BLOCKED),
        ("P4", None, {"item": "I1"}, Refusal.PATRON_EXPIRED),
        ("P5", None, {"item": "I1"}, Refusal.CARD_LOST),
        ("P8", None, {"item": "F1"}, Refusal.ALREADY_CHECKED_OUT_TO_YOU),  # already has it
    ],
)
def test_hold_refusals(backend, who, pin, kw, refusal):
    assert hold(backend, who=who, pin=pin, **kw).refusal is refusal


def test_duplicate_holds_and_the_hold_limit(backend):
    assert hold(backend, item="I1").ok
    assert hold(backend, item="I1").refusal is Refusal.HOLD_EXISTS
    assert hold(backend, item="I2").ok
    r = hold(backend, item="I3")
    assert r.refusal is Refusal.HOLD_NOT_ALLOWED and r.message == "2 holds, limit 2"
    assert patron(backend, "P1").status.hold_denied


def test_expired_holds_no_longer_count(backend, clock):
    hold(backend, item="I1", expires=clock.now + datetime.timedelta(days=1))
    clock.advance(days=2)
    assert result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="I1"))).hold_queue_length == 0
    assert hold(backend, item="I1").ok  # not a duplicate any more


def test_cancel_a_hold(backend):
    assert hold(backend, HoldMode.CANCEL, item="I1").refusal is Refusal.HOLD_NOT_FOUND
    hold(backend, item="I1")
    r = hold(backend, HoldMode.CANCEL, item="I1")
    assert r.ok
    assert patron(backend, "P1").unavailable_holds == ()
    hold(backend, title="Twin")
    assert hold(backend, HoldMode.CANCEL, title="Twin").ok


def test_cancel_a_hold_on_the_shelf_sends_the_copy_back(backend):
    hold(backend, item="I2")
    result_of(backend.checkin(CheckinRequest(terminal=ctx(), item="I2", branch="MAIN")))
    assert hold(backend, HoldMode.CANCEL, item="I2").ok
    assert (
        result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="I2"))).status.value
        == "reshelving"
    )
    assert result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron="P2", item="I2", pin=None))).ok


def test_change_a_hold(backend):
    assert hold(backend, HoldMode.CHANGE, item="I1", pickup_location="WEST").refusal is Refusal.HOLD_NOT_FOUND
    hold(backend, item="I1")
    r = hold(backend, HoldMode.CHANGE, item="I1", pickup_location="WEST")
    assert r.ok and r.pickup_location == "WEST" and r.expires is None
    r = hold(backend, HoldMode.CHANGE, item="I1", expires=datetime.datetime(2024, 12, 31))
    assert r.pickup_location == "WEST" and r.expires == datetime.datetime(2024, 12, 31)


# -- fees ---------------------------------------------------------------------------------------


def add_fees(backend):
    load(backend, {"fees": [
        {"patron": "P1", "type": "overdue", "amount": "1.00", "created": "2024-01-01T10:00"},
        {"patron": "P1", "type": "damage", "amount": "3.00", "created": "2024-02-01T10:00"},
    ]})  # fmt: skip
    return [f.fee_id for f in patron(backend, "P1").fine_items]


def test_partial_payment_goes_to_the_oldest_fees_first(backend):
    add_fees(backend)
    r = pay(backend, "P1", "1.50", "1111", currency="USD", payment_type="00")
    assert r.ok and r.balance == "2.50" and r.transaction_id.startswith("PAY")
    assert [(f.fee_type, f.balance) for f in patron(backend, "P1").fine_items] == [("damage", "2.50")]
    assert pay(backend, "P1", "2.5").balance == "0.00"
    assert pay(backend, "P1", "1.00").refusal is Refusal.NO_BALANCE


def test_payment_against_one_fee(backend):
    old, new = add_fees(backend)
    r = pay(backend, "P1", "2.00", fee_id=new, transaction_id="BK-1")
    assert r.ok and r.transaction_id == "BK-1" and r.balance == "2.00"
    assert [(f.fee_id, f.balance) for f in patron(backend, "P1").fine_items] == [(old, "1.00"), (new, "1.00")]
    assert pay(backend, "P1", "2.00", fee_id=new).refusal is Refusal.AMOUNT_INVALID  # more than that fee
    assert pay(backend, "P1", "1.00", fee_id="999").refusal is Refusal.UNKNOWN_FEE
    assert pay(backend, "P1", "1.00", fee_id="abc").refusal is Refusal.UNKNOWN_FEE


@pytest.mark.parametrize("amount", ["", "abc", "-1.00", "0", "0.00", "1.234", "1e3", "1.2.3"])
def test_invalid_amounts(backend, amount):
    add_fees(backend)
    assert pay(backend, "P1", amount).refusal is Refusal.AMOUNT_INVALID


def test_a_fee_id_no_fee_can_have_is_an_unknown_fee(backend):
    # Larger than a BIGINT id, or digits int() refuses: refused like any unknown fee on both
    # databases (not an OverflowError on sqlite, not an "outage" on PostgreSQL).
    add_fees(backend)
    for fee_id in ("99999999999999999999", str(2**63), str(2**63 - 1), "\u00b2", "\u0661"):
        r = pay(backend, "P1", "1.00", fee_id=fee_id)
        assert (r.refusal, r.balance) == (Refusal.UNKNOWN_FEE, "4.00"), fee_id


def test_an_amount_larger_than_a_money_column_holds_is_invalid(backend):
    # P9 may pay ahead (credit): only the bound stands between such an amount and the database.
    load(backend, {"fees": [{"patron": "P9", "type": "damage", "amount": "1.00"}]})
    for amount in ("999999999.99", "21474836.48"):
        r = pay(backend, "P9", amount)
        assert (r.refusal, r.balance) == (Refusal.AMOUNT_INVALID, "1.00"), amount
        assert "21474836.47" in r.message
    r = pay(backend, "P9", "21474836.47")  # the largest amount is still accepted, as a credit
    assert r.ok and r.balance == "-21474835.47"


def test_overpayment_is_refused_without_credit(backend):
    add_fees(backend)
    r = pay(backend, "P1", "4.01")
    assert r.refusal is Refusal.AMOUNT_INVALID and r.balance == "4.00"


def test_overpayment_becomes_credit_when_the_rules_allow(backend):
    load(backend, {"fees": [{"patron": "P9", "type": "damage", "amount": "1.00"}]})
    r = pay(backend, "P9", "3.00")
    assert r.ok and r.balance == "-2.00"
    assert pay(backend, "P9", "1.00").ok  # credit allows paying ahead


def test_a_resent_payment_is_recorded_once(backend):
    add_fees(backend)
    assert pay(backend, "P1", "1.00", transaction_id="T-9").balance == "3.00"
    r = pay(backend, "P1", "1.00", transaction_id="T-9")
    assert r.ok and r.balance == "3.00" and r.message == "payment already recorded"


def test_payment_refusals(backend):
    assert pay(backend, "NOBODY", "1.00").refusal is Refusal.UNKNOWN_PATRON
    assert pay(backend, "P6", "1.00", "0000").refusal is Refusal.WRONG_PIN
    assert pay(backend, "P6", "1.00", "6666").ok


def test_paying_fines_lifts_the_fine_block(backend):
    assert (
        result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron="P6", item="I1", pin=None))).refusal
        is Refusal.FINES_OVER_LIMIT
    )
    pay(backend, "P6", "1.00")
    assert result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron="P6", item="I1", pin=None))).ok
    assert rows(backend, "SELECT SUM(amount) AS paid FROM payment_allocations")[0]["paid"] == 100


# -- block and enable ---------------------------------------------------------------------------


def test_block_and_enable(backend):
    p = result_of(
        backend.block_patron(BlockPatronRequest(terminal=ctx(), patron="P1", card_retained=True, reason="Card misuse"))
    )
    assert p.blocked and p.block_reason == "Card misuse (card retained)" and p.status.charge_denied
    assert (
        result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="I1", pin=None))).refusal
        is Refusal.PATRON_BLOCKED
    )
    assert result_of(
        backend.enable_patron(EnablePatronRequest(terminal=ctx(), patron="P1", pin="0"))
    ).blocked  # wrong PIN: unchanged
    p = result_of(backend.enable_patron(EnablePatronRequest(terminal=ctx(), patron="P1", pin="1111")))
    assert not p.blocked and p.block_reason == "" and p.pin_ok is True
    assert result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron="P1", item="I1", pin=None))).ok


def test_block_without_a_message(backend):
    assert (
        result_of(backend.block_patron(BlockPatronRequest(terminal=ctx(), patron="P2"))).block_reason
        == "blocked by a terminal"
    )


def test_block_and_enable_unknown_patrons(backend):
    assert result_of(backend.block_patron(BlockPatronRequest(terminal=ctx(), patron="NOBODY"))) is None
    assert result_of(backend.enable_patron(EnablePatronRequest(terminal=ctx(), patron="NOBODY", pin=None))) is None
