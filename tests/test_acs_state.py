"""Random SIP traffic keeps what terminals are told consistent.

A Hypothesis state machine sends checkouts, checkins, renewals, holds and fee payments as SIP
bytes through a session to the embedded backend (demo data), and after every step asks 63 with
each summary: the six counts in 64 match the lists it carries, an item is charged to at most one
patron, and no balance (BV) is ever negative.
"""

from __future__ import annotations

import itertools
import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sipserver.sip2 import decode, encode, make
from tests.support import Hub, Terminal, make_config, sync_backend

PATRONS = ("21000000000001", "21000000000021", "21000000000022", "21000000000003")
ITEMS = ("31000000000001", "31000000000008", "31000000000032", "31000000000010", "31000000000011")
BRANCHES = ("MAIN", "EAST", "WEST")
SUMMARIES = {"AS": 0, "AT": 1, "AU": 2, "AV": 3}
COUNTS = {
    "AS": "hold_items_count",
    "AT": "overdue_items_count",
    "AU": "charged_items_count",
    "AV": "fine_items_count",
}


class SIPTraffic(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.terminal = Terminal(Hub(make_config(Path(tempfile.mkdtemp())), sync_backend()))
        self.sequence = itertools.cycle(range(10))
        assert self.ask("93", CN="sco", CO="scpass").fixed["ok"] == "1"

    def ask(self, code, **fields):
        if code != "93":
            fields.setdefault("AO", "MAIN")
        return decode(self.terminal.one(encode(make(code, **fields), sequence=str(next(self.sequence)))))

    @rule(patron=st.sampled_from(PATRONS), item=st.sampled_from(ITEMS), no_block=st.booleans())
    def checkout(self, patron, item, no_block):
        reply = self.ask("11", sc_renewal_policy=True, no_block=no_block, AA=patron, AB=item, AC="")
        assert reply.code == "12" and reply.fixed["ok"] in "01"

    @rule(item=st.sampled_from(ITEMS), branch=st.sampled_from(BRANCHES))
    def checkin(self, item, branch):
        assert self.ask("09", AP=branch, AB=item, AC="").code == "10"

    @rule(patron=st.sampled_from(PATRONS), item=st.sampled_from(ITEMS))
    def renew(self, patron, item):
        assert self.ask("29", AA=patron, AB=item, AC="").code == "30"

    @rule(patron=st.sampled_from(PATRONS), item=st.sampled_from(ITEMS), mode=st.sampled_from("+-*"))
    def hold(self, patron, item, mode):
        assert self.ask("15", hold_mode=mode, AA=patron, AB=item, BS="MAIN", AC="").code == "16"

    @rule(patron=st.sampled_from(PATRONS), amount=st.sampled_from(["0.25", "1.00", "2.50", "40.00", "abc"]))
    def pay(self, patron, amount):
        reply = self.ask("37", fee_type="01", payment_type="00", currency_type="USD", BV=amount, AA=patron, AC="")
        assert reply.code == "38"

    @invariant()
    def what_64_says_is_consistent(self):
        charged_to: dict[str, list[str]] = {}
        for patron in PATRONS:
            for field, position in SUMMARIES.items():
                summary = " " * position + "Y" + " " * (9 - position)
                reply = self.ask("63", summary=summary, AA=patron, AC="")
                assert int(reply.fixed[COUNTS[field]]) == len(reply.getall(field)), (patron, field, reply)
                if field == "AU":
                    for item in reply.getall(field):
                        charged_to.setdefault(item, []).append(patron)
                balance = reply.get("BV") or "0"
                assert Decimal(balance) >= 0
        assert all(len(patrons) == 1 for patrons in charged_to.values()), charged_to


TestSIPTraffic = SIPTraffic.TestCase
TestSIPTraffic.settings = settings(
    max_examples=25, stateful_step_count=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
