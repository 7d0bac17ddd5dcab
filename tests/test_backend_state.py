"""Random sequences of circulation keep the embedded ILS consistent.

A Hypothesis state machine checks out, checks in, renews, places and cancels holds, pays fees and
lets time pass, in any order, on a small library; after every step it checks the invariants:
an item is out to at most one patron (and the backend agrees with a model of who has what), a
patron's charged list is exactly their loans, and no fee balance goes negative (credit disallowed).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sipserver.ils.interface import (
    CheckinRequest,
    CheckoutRequest,
    FeePaidRequest,
    HoldMode,
    HoldRequest,
    ItemRequest,
    PatronRequest,
    RenewRequest,
    SummaryRequest,
    Terminal,
)
from tests.test_backend_support import FakeClock, ctx, make_backend, result_of, rows

PATRONS = ("A", "B", "C")
ITEMS = ("X1", "X2", "Y1", "Y2")  # X1/X2 and Y1/Y2 are copies of one title each
BRANCHES = ("MAIN", "EAST")
LIBRARY = {
    "rules": {
        "default": {
            "loan_days": 7,
            "max_renewals": 1,
            "max_items_out": 2,
            "max_overdue": 0,
            "fine_per_day": "0.10",
            "max_fine": "0.50",
            "fee_limit": "0.30",
            "hold_limit": 2,
            "allow_credit": False,
        }
    },
    "patrons": [{"barcode": p, "pin": "1", "name": f"Patron {p}", "home_library": "MAIN"} for p in PATRONS],
    "items": [{"barcode": i, "title": f"Title {i[0]}", "owner": BRANCHES[n % 2]} for n, i in enumerate(ITEMS)],
}

patrons = st.sampled_from(PATRONS)
items = st.sampled_from(ITEMS)
branches = st.sampled_from(BRANCHES)


class Circulation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.backend = make_backend(data=LIBRARY, clock=self.clock)
        self.borrower: dict[str, str] = {}  # the model: item -> patron

    @rule(patron=patrons, item=items, no_block=st.booleans(), pin=st.sampled_from(["1", "2", None]))
    def checkout(self, patron, item, no_block, pin):
        r = result_of(
            self.backend.checkout(
                CheckoutRequest(
                    terminal=ctx(), patron=patron, item=item, pin=pin, no_block=no_block, fee_acknowledged=True
                )
            )
        )
        if r.ok:
            assert r.renewal == (self.borrower.get(item) == patron)
            self.borrower[item] = patron
        else:
            assert not no_block and r.refusal is not None

    @rule(item=items, location=branches)
    def checkin(self, item, location):
        r = result_of(self.backend.checkin(CheckinRequest(terminal=ctx(location), item=item, branch=location)))
        assert r.ok and r.patron_barcode == self.borrower.pop(item, "")

    @rule(patron=patrons, item=items)
    def renew(self, patron, item):
        r = result_of(self.backend.renew(RenewRequest(terminal=ctx(), patron=patron, item=item, pin=None)))
        if r.ok:
            assert self.borrower.get(item) == patron

    @rule(patron=patrons, item=items, mode=st.sampled_from(list(HoldMode)), by_title=st.booleans())
    def hold(self, patron, item, mode, by_title):
        target = {"title": f"Title {item[0]}"} if by_title else {"item": item}
        result_of(self.backend.hold(HoldRequest(terminal=ctx(), mode=mode, patron=patron, pin=None, **target)))

    @rule(patron=patrons, amount=st.sampled_from(["0.05", "0.10", "0.25", "1.00", "2", "x"]))
    def pay(self, patron, amount):
        r = result_of(self.backend.fee_paid(FeePaidRequest(terminal=ctx(), patron=patron, pin=None, amount=amount)))
        assert not r.balance.startswith("-")

    @precondition(lambda self: self.clock.now.year < 2025)
    @rule(days=st.integers(min_value=1, max_value=10))
    def time_passes(self, days):
        self.clock.advance(days=days)

    @invariant()
    def an_item_is_out_to_at_most_one_patron(self):
        loans = rows(self.backend, "SELECT i.barcode AS item, p.barcode AS patron FROM loans l"
                     " JOIN items i ON i.id = l.item_id JOIN patrons p ON p.id = l.patron_id"
                     " WHERE l.returned IS NULL")  # fmt: skip
        assert not [item for item, n in Counter(r["item"] for r in loans).items() if n > 1]
        assert {r["item"]: r["patron"] for r in loans} == self.borrower
        for item in ITEMS:
            view = result_of(self.backend.item(ItemRequest(terminal=Terminal(institution="T"), item=item)))
            assert view.borrower == self.borrower.get(item, "")
            assert (view.status.value == "charged") == (item in self.borrower)

    @invariant()
    def charged_lists_match_loans(self):
        for patron in PATRONS:
            p = result_of(
                self.backend.patron(
                    PatronRequest(terminal=Terminal(institution="T"), patron=patron, pin=None, summary=SummaryRequest())
                )
            )
            mine = sorted(i for i, who in self.borrower.items() if who == patron)
            assert sorted(i.barcode for i in p.charged_items) == mine
            assert {i.barcode for i in p.overdue_items} <= set(mine)

    @invariant()
    def balances_never_go_negative(self):
        fees = rows(self.backend, "SELECT balance, amount FROM fees")
        assert all(0 <= f["balance"] <= f["amount"] for f in fees)


TestCirculation = Circulation.TestCase
TestCirculation.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
