"""Checkout, checkin and renewal rules of the embedded backend."""

from __future__ import annotations

import datetime
import time

import pytest

from sipserver.ils.embedded.sqlite import SQLiteBackend
from sipserver.ils.interface import (
    BlockPatronRequest,
    CheckinRequest,
    CheckoutRequest,
    CirculationStatus,
    EnablePatronRequest,
    FeePaidRequest,
    HoldMode,
    HoldRequest,
    ItemRequest,
    ItemStatusUpdateRequest,
    PatronRequest,
    Refusal,
    RenewAllRequest,
    RenewRequest,
    SummaryRequest,
    Terminal,
)
from tests.test_backend_support import NOW, FakeClock, ctx, load, make_backend, result_of, rows

DUE = datetime.datetime(2024, 6, 17, 23, 59)  # NOW + 14 days at 23:59


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> SQLiteBackend:
    return make_backend(clock=clock)


def checkout(backend, patron="P1", item="I1", pin="1111", **kw):
    return result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron=patron, item=item, pin=pin, **kw)))


def checkin(backend, item="I1", location="MAIN", **kw):
    return result_of(backend.checkin(CheckinRequest(terminal=ctx(location), item=item, branch=location, **kw)))


def test_checkout_lends_the_item_until_the_end_of_the_loan_period(backend):
    r = checkout(backend)
    assert r.ok and not r.renewal and r.refusal is None and r.desensitize
    assert r.due == DUE
    assert r.item.status is CirculationStatus.CHARGED and r.item.borrower == "P1" and r.item.due == DUE
    assert r.transaction_id
    patron = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None, summary=SummaryRequest())
        )
    )
    assert [i.barcode for i in patron.charged_items] == ["I1"]


def test_each_loan_gets_a_new_id_named_by_its_transaction_id_never_reused(backend):
    """The checkout's read allocates the loan id (no RETURNING round trip): it must be the stored
    loan's, and new even when the largest loan so far was deleted."""
    first = checkout(backend)
    assert checkin(backend).ok
    stored = rows(backend, "SELECT id FROM loans ORDER BY id DESC LIMIT 1")[0]["id"]
    assert first.transaction_id == f"L{stored}"
    result_of(backend.run_write(lambda tx: tx.execute("DELETE FROM loans WHERE id = ?", (stored,))))
    second = checkout(backend)
    newest = rows(backend, "SELECT id FROM loans ORDER BY id DESC LIMIT 1")[0]["id"]
    assert second.ok and second.transaction_id == f"L{newest}" and newest > stored


def test_pin_none_is_not_checked(backend):
    assert checkout(backend, pin=None).ok


@pytest.mark.parametrize(
    ("patron", "item", "pin", "refusal"),
    [
        ("NOBODY", "I1", None, Refusal.UNKNOWN_PATRON),
        ("P1", "NOTHING", "1111", Refusal.UNKNOWN_ITEM),
        ("P1", "I1", "0000", Refusal.WRONG_PIN),
        ("P1", "I1", "", Refusal.WRONG_PIN),
        ("P3", "I1", "3333", Refusal.PATRON_BLOCKED),
        ("P4", "I1", "4444", Refusal.PATRON_EXPIRED),
        ("P5", "I1", "5555", Refusal.CARD_LOST),
        ("P6", "I1", "6666", Refusal.FINES_OVER_LIMIT),
        ("P7", "I1", "7777", Refusal.TOO_MANY_OVERDUE),
        ("P8", "I1", "8888", Refusal.TOO_MANY_ITEMS),
        ("P1", "IL", "1111", Refusal.ITEM_NOT_CIRCULATING),
        ("P1", "IM", "1111", Refusal.ITEM_NOT_CIRCULATING),
        ("P1", "F1", "1111", Refusal.ITEM_CHECKED_OUT_TO_OTHER),
    ],
)
def test_checkout_refusals(backend, patron, item, pin, refusal):
    r = checkout(backend, patron, item, pin)
    assert not r.ok and r.refusal is refusal and not r.desensitize
    if item != "NOTHING":
        assert r.item is not None and r.item.barcode == item  # the ACS still needs the title
    assert rows(backend, "SELECT COUNT(*) AS n FROM loans WHERE returned IS NULL")[0]["n"] == 5


def test_limit_refusals_say_what_the_limit_is(backend):
    assert checkout(backend, "P6", pin="6666").message == "owes 6.00, limit 5.00"
    assert checkout(backend, "P8", pin="8888").message == "3 items out, limit 3"


def test_rental_fee_must_be_acknowledged_and_is_then_charged(backend):
    r = checkout(backend, item="IR")
    assert r.refusal is Refusal.FEE_NOT_ACKNOWLEDGED
    assert (r.fee_type, r.fee_amount) == ("rental", "1.00")
    r = checkout(backend, item="IR", fee_acknowledged=True)
    assert r.ok and (r.fee_type, r.fee_amount) == ("rental", "1.00")
    patron = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None, summary=SummaryRequest())
        )
    )
    assert patron.fee_balance == "1.00"
    assert [(f.fee_type, f.balance, f.item_barcode) for f in patron.fine_items] == [("rental", "1.00", "IR")]


def test_checkout_of_an_item_held_for_another_patron_is_refused(backend):
    result_of(
        backend.hold(
            HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P2", pin=None, item="I1", pickup_location="MAIN")
        )
    )
    assert checkout(backend).refusal is Refusal.ITEM_ON_HOLD_FOR_OTHER  # queued first
    checkin(backend, "I1")  # traps it for P2: now on the hold shelf
    assert checkout(backend).refusal is Refusal.ITEM_ON_HOLD_FOR_OTHER
    assert checkout(backend, "P2", pin="2222").ok


def test_title_hold_of_another_patron_blocks_every_copy(backend):
    result_of(backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P2", pin=None, title="Twin")))
    assert checkout(backend, item="I5").refusal is Refusal.ITEM_ON_HOLD_FOR_OTHER
    r = checkout(backend, "P2", "I6", "2222")
    assert r.ok and "filled hold" in rows(backend, "SELECT detail FROM audit_log ORDER BY id DESC")[0]["detail"]
    assert checkout(backend, item="I5").ok  # the hold is filled


def test_checkout_of_an_item_on_the_shelf_for_this_patron_fills_the_hold(backend):
    result_of(backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P1", pin=None, item="I2")))
    checkin(backend, "I2")
    before = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None, summary=SummaryRequest())
        )
    )
    assert [i.barcode for i in before.hold_items] == ["I2"]
    assert checkout(backend, item="I2").ok
    after = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None, summary=SummaryRequest())
        )
    )
    assert after.hold_items == () and after.unavailable_holds == ()
    assert rows(backend, "SELECT state FROM holds")[0]["state"] == "filled"


LAST_PICKUP = datetime.datetime(2024, 6, 10, 23, 59)  # NOW + hold_shelf_days (7) at 23:59


def hold_states(backend) -> list[tuple[str, str]]:
    found = rows(backend, "SELECT p.barcode, h.state FROM holds h JOIN patrons p ON p.id = h.patron_id ORDER BY h.id")
    return [(r["barcode"], r["state"]) for r in found]


def test_a_hold_not_picked_up_by_its_last_day_no_longer_reserves_the_copy(backend, clock):
    """Nothing runs when the last pickup day ends: every read treats the hold as lapsed from then
    on, and the checkout that lends the copy to someone else records it as expired."""
    result_of(
        backend.hold(
            HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P2", pin=None, item="I1", pickup_location="MAIN")
        )
    )
    assert checkin(backend, "I1").hold_patron_barcode == "P2"
    clock.advance(days=7, hours=13)  # 23:00 on the last pickup day: still P2's
    item = result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="I1")))
    assert item.status is CirculationStatus.ON_HOLD_SHELF and item.hold_pickup_date == LAST_PICKUP
    assert checkout(backend).refusal is Refusal.ITEM_ON_HOLD_FOR_OTHER
    clock.advance(hours=1)  # past 23:59: lapsed
    item = result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="I1")))
    assert item.status is CirculationStatus.RESHELVING and item.hold_pickup_date is None
    assert item.hold_queue_length == 0
    p2 = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P2", pin=None, summary=SummaryRequest())
        )
    )
    assert p2.hold_items == () and p2.unavailable_holds == ()
    assert hold_states(backend) == [("P2", "waiting")]  # as stored: nothing ran at 23:59
    r = checkout(backend)
    assert r.ok and r.item.status is CirculationStatus.CHARGED
    assert hold_states(backend) == [("P2", "expired")]
    assert checkin(backend, "I1").item.status is CirculationStatus.AVAILABLE  # no hold traps it again


def test_a_checkin_after_the_last_pickup_day_serves_the_next_hold_or_shelves_the_copy(backend, clock):
    result_of(
        backend.hold(
            HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P2", pin=None, item="I1", pickup_location="MAIN")
        )
    )
    result_of(
        backend.hold(
            HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P9", pin=None, item="I1", pickup_location="MAIN")
        )
    )
    assert checkin(backend, "I1").hold_patron_barcode == "P2"
    clock.advance(days=3)
    r = checkin(backend, "I1")  # scanned again on the shelf: the last pickup day stays
    assert r.hold_patron_barcode == "P2" and r.item.hold_pickup_date == LAST_PICKUP
    clock.advance(days=5)  # past P2's last pickup day
    r = checkin(backend, "I1")
    assert r.alert_kind == "hold_here" and r.hold_patron_barcode == "P9"
    assert r.item.status is CirculationStatus.ON_HOLD_SHELF and r.item.hold_queue_length == 0
    assert r.item.hold_pickup_date == LAST_PICKUP + datetime.timedelta(days=8)
    assert hold_states(backend) == [("P2", "expired"), ("P9", "waiting")]
    clock.advance(days=8)  # past P9's too: nobody else waits
    r = checkin(backend, "I1")
    assert r.ok and not r.alert and r.hold_patron_barcode == ""
    assert r.item.status is CirculationStatus.AVAILABLE and r.item.hold_pickup_date is None
    assert hold_states(backend) == [("P2", "expired"), ("P9", "expired")]


def test_a_hold_that_lapsed_on_the_shelf_no_longer_counts_against_the_hold_limit(backend, clock):
    for item in ("I2", "I3"):
        assert result_of(
            backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P1", pin=None, item=item))
        ).ok
    assert checkin(backend, "I2").hold_patron_barcode == "P1"
    assert result_of(
        backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
    ).status.hold_denied  # limit 2
    clock.advance(days=8)
    assert not result_of(
        backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
    ).status.hold_denied
    assert result_of(
        backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P1", pin=None, item="I2"))
    ).ok  # a new one


def test_checkout_of_an_item_the_patron_has_is_a_renewal(backend, clock):
    checkout(backend)
    clock.advance(days=3)
    r = checkout(backend)
    assert r.ok and r.renewal and r.due == DUE + datetime.timedelta(days=3)
    assert checkout(backend).renewal
    r = checkout(backend)
    assert r.refusal is Refusal.TOO_MANY_RENEWALS and r.message == "renewal limit 2"


def test_renewal_by_checkout_respects_holds_and_the_terminal_policy(backend):
    checkout(backend)
    assert checkout(backend, renewal_allowed=False).refusal is Refusal.ALREADY_CHECKED_OUT_TO_YOU
    result_of(backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P2", pin=None, item="I1")))
    assert checkout(backend).refusal is Refusal.RENEWAL_BLOCKED_BY_HOLD


def test_store_and_forward_checkout_is_recorded_whatever_the_rules(backend):
    nb_due = datetime.datetime(2024, 6, 10, 12, 0)
    r = checkout(backend, "P3", "I1", None, no_block=True, nb_due=nb_due)  # blocked patron
    assert r.ok and r.due == nb_due
    r = checkout(backend, "P1", "F1", "wrong", no_block=True)  # out to P8: checked in from them first
    assert r.ok and r.due == DUE and r.item.borrower == "P1"
    p8 = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P8", pin=None, summary=SummaryRequest())
        )
    )
    assert [i.barcode for i in p8.charged_items] == ["F2", "F3"]
    assert checkout(backend, "P1", "F1", None, no_block=True).renewal


def test_an_offline_checkout_uploaded_again_changes_nothing(backend, clock):
    nb_due = datetime.datetime(2024, 6, 20, 23, 59)
    first = checkout(backend, "P2", "IR", None, no_block=True, nb_due=nb_due)
    clock.advance(hours=2)  # the terminal was not sure the upload arrived: it sends it again
    again = checkout(backend, "P2", "IR", None, no_block=True, nb_due=nb_due)
    assert first.ok and not first.renewal and again.ok and not again.renewal
    assert again.due == first.due == nb_due and again.transaction_id == first.transaction_id
    assert again.item.borrower == "P2" and again.fee_amount == ""
    assert rows(backend, "SELECT renewals FROM loans WHERE returned IS NULL AND due = ?", ("2024-06-20T23:59:00",)) == [
        {"renewals": 0}
    ]
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P2", pin=None))
        ).fee_balance
        == "1.00"
    )  # one rental fee
    later = checkout(backend, "P2", "IR", None, no_block=True, nb_due=nb_due + datetime.timedelta(days=7))
    assert later.renewal and later.transaction_id == first.transaction_id + "R1"  # a real offline renewal


def test_checkin_ends_the_loan(backend):
    checkout(backend)
    r = checkin(backend)
    assert r.ok and r.patron_barcode == "P1" and r.resensitize and not r.alert and r.fine_amount == ""
    assert r.item.status is CirculationStatus.AVAILABLE and r.item.borrower == ""
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).status.too_many_charged
        is False
    )


def test_checkin_of_an_item_not_checked_out_is_a_return_to_the_shelf(backend):
    r = checkin(backend, "I2")
    assert r.ok and r.patron_barcode == "" and r.fine_amount == "" and not r.alert


def test_checkin_of_an_unknown_item(backend):
    r = checkin(backend, "NOTHING")
    assert not r.ok and r.refusal is Refusal.UNKNOWN_ITEM


def test_late_checkin_charges_a_fine_per_day_capped(backend, clock):
    checkout(backend)
    clock.advance(days=14 + 3)
    r = checkin(backend)
    assert r.fine_amount == "0.75"
    checkout(backend)
    clock.advance(days=60)
    assert checkin(backend).fine_amount == "2.00"  # max_fine
    patron = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None, summary=SummaryRequest())
        )
    )
    assert patron.fee_balance == "2.75" and [f.fee_type for f in patron.fine_items] == ["overdue", "overdue"]


def test_checkin_uses_the_return_date_for_fines(backend, clock):
    checkout(backend)
    clock.advance(days=30)
    assert checkin(backend, return_date=NOW + datetime.timedelta(days=15)).fine_amount == "0.25"
    checkout(backend)
    assert checkin(backend, return_date=clock.now - datetime.timedelta(days=1)).fine_amount == ""


def test_an_uncapped_fine_stays_within_what_a_money_column_holds(backend):
    # A loan may be centuries late (a store-and-forward checkout with a terminal's year-1 due date);
    # with no max_fine the fine is still recordable on both databases (PostgreSQL refused it as
    # "integer out of range", an apparent outage). A return date in the future no longer gets
    # there: it counts as now (see the test below).
    load(backend, {"rules": {"uncapped": {"fine_per_day": "100.00", "max_fine": "0"}},
                   "patrons": [{"barcode": "PU", "type": "uncapped"}]})  # fmt: skip
    checkout(backend, "PU", "I1", None, no_block=True, nb_due=datetime.datetime(1, 1, 2, 12, 0))
    r = checkin(backend)
    assert r.ok and r.fine_amount == "21474836.47"
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="PU", pin=None))
        ).fee_balance
        == "21474836.47"
    )


def test_a_utc_date_at_the_end_of_the_calendar_is_its_last_second_locally(backend, monkeypatch):
    # A terminal's "99991231Z   235959" raised OverflowError converting it to local time on a
    # server east of UTC, where that moment is already past the calendar's end.
    last = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        r = checkout(backend, "P1", "I1", None, no_block=True, nb_due=last)
        assert r.ok and r.due == datetime.datetime(9999, 12, 31, 23, 59, 59)
        assert checkin(backend, return_date=last).ok
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("no_block", [False, True], ids=["online", "store-and-forward"])
def test_a_return_date_in_the_future_counts_as_now(backend, clock, no_block):
    # A terminal whose clock runs a year ahead: no fine for days that have not happened yet.
    checkout(backend)
    clock.advance(days=3)  # still within the loan
    r = checkin(backend, no_block=no_block, return_date=clock.now + datetime.timedelta(days=365))
    assert r.ok and r.fine_amount == "" and r.patron_barcode == "P1"
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "0.00"
    )
    returned = rows(backend, "SELECT returned FROM loans ORDER BY id DESC LIMIT 1")[0]["returned"]
    assert returned == clock.now.isoformat()
    detail = rows(backend, "SELECT detail FROM audit_log ORDER BY id DESC")[0]["detail"]
    assert "in the future, counted as now" in detail


def test_checkin_with_a_hold_here_puts_it_on_the_hold_shelf(backend):
    result_of(
        backend.hold(
            HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P1", pin=None, item="I2", pickup_location="MAIN")
        )
    )
    r = checkin(backend, "I2", "MAIN")
    assert r.alert and r.alert_kind == "hold_here" and r.transit_to == ""
    assert (r.hold_patron_barcode, r.hold_patron_name, r.hold_pickup_location) == ("P1", "Ann Able", "MAIN")
    assert r.item.status is CirculationStatus.ON_HOLD_SHELF
    assert r.item.hold_pickup_date == datetime.datetime(2024, 6, 10, 23, 59)


def test_checkin_with_a_hold_elsewhere_sends_it_in_transit_to_the_pickup_library(backend):
    result_of(
        backend.hold(
            HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P2", pin=None, item="I2", pickup_location="EAST")
        )
    )
    r = checkin(backend, "I2", "MAIN")
    assert r.alert and r.alert_kind == "hold_other_branch" and r.transit_to == "EAST"
    assert r.hold_patron_barcode == "P2" and r.item.status is CirculationStatus.IN_TRANSIT
    p2 = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P2", pin=None, summary=SummaryRequest())
        )
    )
    assert p2.hold_items == () and [i.barcode for i in p2.unavailable_holds] == ["I2"]
    r = checkin(backend, "I2", "EAST")  # arrives
    assert r.alert_kind == "hold_here" and r.item.status is CirculationStatus.ON_HOLD_SHELF
    p2 = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P2", pin=None, summary=SummaryRequest())
        )
    )
    assert [i.barcode for i in p2.hold_items] == ["I2"] and p2.unavailable_holds == ()


def test_checkin_away_from_home_sends_it_home(backend):
    r = checkin(backend, "I4", "MAIN")
    assert r.alert and r.alert_kind == "transit" and r.transit_to == "EAST"
    assert r.item.status is CirculationStatus.IN_TRANSIT and r.item.current_location == "MAIN"
    r = checkin(backend, "I4", "EAST")
    assert not r.alert and r.item.status is CirculationStatus.AVAILABLE


def test_checkin_of_a_lost_item_finds_it(backend):
    assert checkin(backend, "IL").item.status is CirculationStatus.AVAILABLE


def test_store_and_forward_checkin(backend, clock):
    checkout(backend)
    clock.advance(days=20)
    r = checkin(backend, no_block=True, return_date=NOW + datetime.timedelta(days=1))
    assert r.ok and r.fine_amount == ""
    assert "offline" in rows(backend, "SELECT detail FROM audit_log ORDER BY id DESC")[0]["detail"]


def test_a_late_offline_checkin_does_not_end_a_loan_made_after_the_return(backend, clock):
    returned = clock.now  # an offline terminal takes I1 back at 10:00 and uploads it at noon
    clock.advance(hours=1)
    assert checkout(backend, "P2", "I1", "2222").ok  # 11:00, online, to someone else
    clock.advance(hours=1)
    r = checkin(backend, no_block=True, return_date=returned)
    assert r.ok and r.patron_barcode == "" and r.fine_amount == ""
    assert r.item.status is CirculationStatus.CHARGED and r.item.borrower == "P2"
    assert rows(backend, "SELECT checked_out, returned FROM loans l JOIN items i ON i.id = l.item_id"
                " WHERE i.barcode = 'I1'") == [{"checked_out": "2024-06-03T11:00:00", "returned": None}]  # fmt: skip
    p2 = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P2", pin=None, summary=SummaryRequest())
        )
    )
    assert [i.barcode for i in p2.charged_items] == ["I1"]
    assert "before loan" in rows(backend, "SELECT detail FROM audit_log ORDER BY id DESC")[0]["detail"]
    assert checkin(backend, no_block=True, return_date=clock.now).patron_barcode == "P2"  # a later return ends it


def test_an_online_checkin_ends_the_loan_even_if_the_terminal_clock_lags(backend, clock):
    assert checkout(backend).ok
    r = checkin(backend, return_date=clock.now - datetime.timedelta(minutes=5))
    assert r.patron_barcode == "P1" and r.item.status is CirculationStatus.AVAILABLE


def test_checkin_cancel_undoes_a_checkout(backend):
    checkout(backend, item="IR", fee_acknowledged=True)
    r = checkin(backend, "IR", cancel=True)
    assert r.ok and r.item.status is CirculationStatus.AVAILABLE and r.item.borrower == ""
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "0.00"
    )  # rental fee voided
    assert not checkin(backend, "IR", cancel=True).ok  # nothing left to undo


def test_checkin_cancel_undoes_a_renewal(backend, clock):
    checkout(backend)
    clock.advance(days=2)
    checkout(backend)
    r = checkin(backend, cancel=True)
    assert r.ok and r.item.due == DUE and r.item.borrower == "P1"


def test_checkin_cancel_of_a_renewal_voids_only_its_rental_fee(backend):
    checkout(backend, item="IR", fee_acknowledged=True)
    assert checkout(backend, item="IR", fee_acknowledged=True).renewal
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "2.00"
    )
    assert checkin(backend, "IR", cancel=True).ok
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "1.00"
    )


def test_checkin_cancel_of_a_late_renewal_voids_its_fine_so_the_days_are_fined_once(backend, clock):
    checkout(backend)
    clock.advance(days=16)  # two days late
    assert result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P1", item="I1", pin=None))).ok
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "0.50"
    )
    assert checkin(backend, cancel=True).ok  # the old due date is back...
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "0.00"
    )
    assert checkin(backend).fine_amount == "0.50"  # ...and the return fines those two days, once
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "0.50"
    )


def test_checkin_cancel_of_an_on_time_renewal_keeps_an_earlier_renewals_fine(backend, clock):
    checkout(backend)
    clock.advance(days=16)
    assert result_of(
        backend.renew(RenewRequest(terminal=ctx(), patron="P1", item="I1", pin=None))
    ).ok  # late: fined 0.50
    clock.advance(days=2)
    assert result_of(
        backend.renew(RenewRequest(terminal=ctx(), patron="P1", item="I1", pin=None))
    ).ok  # on time: no fine
    assert checkin(backend, cancel=True).ok
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "0.50"
    )


def test_a_resent_checkin_cancel_of_a_renewal_changes_nothing(backend, clock):
    """Terminals resend on doubt, and a resend on a new connection reaches the backend: the second
    cancel must not go on to undo the checkout under the renewal, nor void its rental fee."""
    checkout(backend, item="IR", fee_acknowledged=True)
    clock.advance(days=2)
    assert checkout(backend, item="IR", fee_acknowledged=True).renewal
    first = checkin(backend, "IR", cancel=True)
    again = checkin(backend, "IR", cancel=True)
    assert first.ok and again.ok and again.patron_barcode == first.patron_barcode == "P1"
    assert again.item == first.item and again.item.borrower == "P1" and again.item.due == DUE
    assert again.item.status is CirculationStatus.CHARGED
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "1.00"
    )  # the checkout's fee stays
    clock.advance(days=1)
    assert checkout(backend, item="IR", fee_acknowledged=True).renewal  # a new renewal can be cancelled
    assert checkin(backend, "IR", cancel=True).ok
    assert checkin(backend, "IR", cancel=True).item.borrower == "P1"


def test_checkin_cancel_puts_a_filled_hold_back_on_the_shelf(backend):
    result_of(backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P1", pin=None, item="I2")))
    checkin(backend, "I2")
    checkout(backend, item="I2")
    r = checkin(backend, "I2", cancel=True)
    assert r.item.status is CirculationStatus.ON_HOLD_SHELF
    patron = result_of(
        backend.patron(
            PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None, summary=SummaryRequest())
        )
    )
    assert [i.barcode for i in patron.hold_items] == ["I2"]


def test_checkout_cancel_undoes_a_checkin(backend, clock):
    checkout(backend)
    clock.advance(days=16)
    assert checkin(backend).fine_amount == "0.50"
    r = checkout(backend, cancel=True)
    assert r.ok and r.due == DUE and r.item.borrower == "P1"
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "0.00"
    )
    assert checkout(backend, "P2", "I2", None, cancel=True).refusal is Refusal.NOT_PERMITTED


def test_renew(backend, clock):
    checkout(backend)
    clock.advance(days=10)
    r = result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P1", item="I1", pin="1111")))
    assert r.ok and r.due == DUE + datetime.timedelta(days=10) and r.item.due == r.due


def test_renew_by_title(backend):
    checkout(backend, item="I5")
    r = result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P1", item="", pin=None, title="Twin")))
    assert r.ok and r.item.barcode == "I5"
    assert (
        result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P1", item="", pin=None, title="Nope"))).refusal
        is Refusal.UNKNOWN_TITLE
    )


def test_renew_of_an_overdue_loan_charges_the_fine_so_far(backend, clock):
    checkout(backend)
    clock.advance(days=16)
    assert result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P1", item="I1", pin=None))).ok
    assert (
        result_of(
            backend.patron(PatronRequest(terminal=Terminal(institution="TEST"), patron="P1", pin=None))
        ).fee_balance
        == "0.50"
    )


@pytest.mark.parametrize(
    ("patron", "item", "pin", "refusal"),
    [
        ("NOBODY", "I1", None, Refusal.UNKNOWN_PATRON),
        ("P1", "NOTHING", None, Refusal.UNKNOWN_ITEM),
        ("P1", "I2", None, Refusal.NOT_CHECKED_OUT),
        ("P8", "F1", "0000", Refusal.WRONG_PIN),
        ("P7", "O1", None, None),  # overdue items may still be renewed
        ("P2", "F1", None, Refusal.NOT_CHECKED_OUT),
    ],
)
def test_renew_refusals(backend, patron, item, pin, refusal):
    assert result_of(backend.renew(RenewRequest(terminal=ctx(), patron=patron, item=item, pin=pin))).refusal is refusal


def test_renew_refused_for_blocked_patrons_holds_and_limits(backend):
    result_of(backend.checkout(CheckoutRequest(terminal=ctx(), patron="P3", item="I1", pin=None, no_block=True)))
    assert (
        result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P3", item="I1", pin=None))).refusal
        is Refusal.PATRON_BLOCKED
    )
    result_of(backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P1", pin=None, item="F1")))
    assert (
        result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P8", item="F1", pin=None))).refusal
        is Refusal.RENEWAL_BLOCKED_BY_HOLD
    )
    for _ in range(2):
        assert result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P8", item="F2", pin=None))).ok
    assert (
        result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P8", item="F2", pin=None))).refusal
        is Refusal.TOO_MANY_RENEWALS
    )


def test_store_and_forward_renew(backend):
    nb_due = datetime.datetime(2024, 7, 1, 23, 59)
    r = result_of(
        backend.renew(RenewRequest(terminal=ctx(), patron="P8", item="F1", pin="bad", no_block=True, nb_due=nb_due))
    )
    assert r.ok and r.due == nb_due


def test_renew_all(backend):
    result_of(backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron="P1", pin=None, item="F2")))
    for _ in range(2):
        result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P8", item="F3", pin=None)))
    r = result_of(backend.renew_all(RenewAllRequest(terminal=ctx(), patron="P8", pin="8888")))
    assert r.ok and r.renewed == ("F1",)
    assert r.unrenewed == (("F2", "on hold for another patron"), ("F3", "renewal limit reached"))
    assert len(rows(backend, "SELECT * FROM audit_log WHERE request = 'renew_all'")) == 3


def test_renew_all_refusals(backend):
    assert (
        result_of(backend.renew_all(RenewAllRequest(terminal=ctx(), patron="NOBODY", pin=None))).refusal
        is Refusal.UNKNOWN_PATRON
    )
    assert (
        result_of(backend.renew_all(RenewAllRequest(terminal=ctx(), patron="P8", pin="0"))).refusal is Refusal.WRONG_PIN
    )
    assert (
        result_of(backend.renew_all(RenewAllRequest(terminal=ctx(), patron="P3", pin=None))).refusal
        is Refusal.PATRON_BLOCKED
    )
    r = result_of(backend.renew_all(RenewAllRequest(terminal=ctx(), patron="P1", pin=None)))
    assert r.ok and r.renewed == () and r.unrenewed == ()


def test_item_status_update_stores_the_properties(backend):
    r = result_of(
        backend.item_status_update(ItemStatusUpdateRequest(terminal=ctx(), item="I1", properties="shelf 3, top"))
    )
    assert r.ok and r.item.properties == "shelf 3, top"
    assert (
        result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="I1"))).properties
        == "shelf 3, top"
    )
    assert (
        result_of(
            backend.item_status_update(ItemStatusUpdateRequest(terminal=ctx(), item="NOTHING", properties="x"))
        ).refusal
        is Refusal.UNKNOWN_ITEM
    )


def test_item_lookup(backend):
    assert result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="NOTHING"))) is None
    item = result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="IR")))
    assert (item.media_type, item.fee_type, item.fee_amount, item.owner) == ("dvd", "rental", "1.00", "MAIN")
    assert result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item="F1"))).borrower == "P8"


def test_every_mutation_is_audited_without_pins(backend):
    c = ctx()
    checkout(backend, pin="1111")
    checkout(backend, item="I2", pin="9876")
    checkin(backend)
    result_of(backend.renew(RenewRequest(terminal=ctx(), patron="P8", item="F1", pin="8888")))
    result_of(backend.renew_all(RenewAllRequest(terminal=ctx(), patron="P8", pin="8888")))
    result_of(backend.hold(HoldRequest(terminal=c, mode=HoldMode.ADD, patron="P1", pin="1111", item="F1")))
    result_of(backend.fee_paid(FeePaidRequest(terminal=c, patron="P6", pin="6666", amount="1.00")))
    result_of(backend.block_patron(BlockPatronRequest(terminal=c, patron="P1", reason="misuse")))
    result_of(backend.enable_patron(EnablePatronRequest(terminal=c, patron="P1", pin="1111")))
    result_of(backend.item_status_update(ItemStatusUpdateRequest(terminal=c, item="I1", properties="x")))
    log = rows(backend, "SELECT * FROM audit_log ORDER BY id")
    requests = [r["request"] for r in log]
    for name in ("checkout", "checkin", "renew", "renew_all", "hold+", "fee_paid", "block_patron",
                 "enable_patron", "item_status_update"):  # fmt: skip
        assert name in requests
    assert log[1]["outcome"] == "wrong_pin" and log[0]["outcome"] == "ok"
    assert (log[0]["institution"], log[0]["login"], log[0]["location"], log[0]["peer"]) == (
        "TEST", "sc1", "MAIN", "127.0.0.1"
    )  # fmt: skip
    assert log[0]["logged_at"] == NOW.isoformat()
    text = repr(log)
    for pin in ("1111", "8888", "6666", "9876"):
        assert pin not in text


def test_the_item_in_each_answer_is_the_item_as_stored(backend, clock):
    """Checkout and checkin describe the item from what they changed, without reading it back."""

    def same(result, barcode):
        assert result.item == result_of(backend.item(ItemRequest(terminal=Terminal(institution="TEST"), item=barcode)))
        return result

    def hold(patron, **kw):
        assert result_of(backend.hold(HoldRequest(terminal=ctx(), mode=HoldMode.ADD, patron=patron, pin=None, **kw))).ok

    assert same(checkout(backend), "I1").ok
    assert same(checkout(backend), "I1").renewal
    hold("P2", item="I1", pickup_location="EAST", expires=NOW + datetime.timedelta(days=1))
    assert same(checkout(backend), "I1").refusal is Refusal.RENEWAL_BLOCKED_BY_HOLD
    assert same(checkin(backend, "I1", "MAIN"), "I1").alert_kind == "hold_other_branch"
    assert same(checkin(backend, "I1", "EAST"), "I1").alert_kind == "hold_here"
    assert same(checkout(backend), "I1").refusal is Refusal.ITEM_ON_HOLD_FOR_OTHER
    clock.advance(days=2)  # P2's hold is past its expiry date: back in the queue, it no longer counts
    r = same(checkout(backend, pin=None, no_block=True), "I1")
    assert r.ok and r.item.hold_queue_length == 0
    hold("P9", title="Twin")
    hold("P2", title="Twin", pickup_location="MAIN")
    r = same(checkout(backend, "P9", "I5", "9999"), "I5")
    assert r.ok and r.item.hold_queue_length == 1
    assert same(checkin(backend, "I5", "MAIN"), "I5").hold_patron_barcode == "P2"
    assert same(checkout(backend, "P1", "I6"), "I6").ok
    assert same(checkout(backend, "P9", "I5", None, no_block=True), "I5").ok  # P2's copy, lent offline
    assert same(checkin(backend, "I1", "WEST"), "I1").alert_kind == "transit"
    assert same(checkout(backend, "P9", "F1", None, no_block=True), "F1").ok  # out to P8 until now
    assert same(checkout(backend, "P9", "IR", "9999"), "IR").refusal is Refusal.FEE_NOT_ACKNOWLEDGED
    assert same(checkout(backend, "P9", "IR", "9999", fee_acknowledged=True), "IR").ok
    assert same(checkin(backend, "IR", cancel=True), "IR").ok
    assert same(checkout(backend, "P9", "IR", "9999", cancel=True), "IR").message == "checkin cancelled"
    assert same(checkin(backend, "IR", "EAST"), "IR").alert_kind == "transit"
    assert same(checkout(backend, "NOBODY", "I2"), "I2").refusal is Refusal.UNKNOWN_PATRON
    assert same(checkout(backend, "P3", "I2", "3333"), "I2").refusal is Refusal.PATRON_BLOCKED
    assert same(checkin(backend, "IL", "MAIN"), "IL").ok
