"""Every SIP2 request answered right, from request bytes to reply bytes, against the embedded backend
loaded with the demo data (decode -> session -> ACS handler -> backend -> encode)."""

from __future__ import annotations

import datetime
import itertools

import attrs
import pytest
from twisted.internet import defer

from sipserver.accounts.registry import Registry
from sipserver.ils.embedded.sqlite import SQLiteBackend
from sipserver.ils.interface import BackendUnavailable
from sipserver.sip2 import Message, decode, encode, make
from sipserver.sip2.codes import format_date
from tests.relay import SocketTerminal, start_pair
from tests.support import Hub, Terminal, make_config

JANE, JANE_PIN = "21000000000001", "1234"
FINED = "21000000000002"  # 18.00 owed, limit 10.00
OVERDUE_ONE = "21000000000003"  # Amara: 2 overdue, has 31000000000032 which two patrons want
TOO_MANY_OVERDUE = "21000000000004"
BLOCKED = "21000000000005"
EXPIRED = "21000000000006"
LOST_CARD = "21000000000007"
RAVI = "21000000000018"  # 31000000000052 waits for him on the EAST hold shelf
AT_LIMIT = "21000000000020"  # restricted type, 2 items out of 2
HANA, FELIX = "21000000000021", "21000000000022"
FREE = "31000000000008"
JANES_ITEM = "31000000000001"
WANTED = "31000000000032"
ON_SHELF_FOR_RAVI = "31000000000052"
RENTAL_DVD = "31000000000088"
EAST_BOOK = "31000000000010"  # owned by EAST, available


@pytest.fixture(params=["direct", pytest.param("relayed", marks=pytest.mark.e2e)])
def terminal(request, tmp_path, backend):
    """A logged-in terminal: on the backend in this process (``direct``), or, for ``relayed``,
    over TCP on a daemon whose ``sip2`` backend relays to a second daemon on the embedded backend
    with the demo data (``tests.relay``): every behaviour here holds through the relay too."""
    if request.param == "direct":
        term = Terminal(Hub(make_config(tmp_path), backend))
    else:
        if backend.name != "embedded" or not isinstance(backend, SQLiteBackend):
            pytest.skip("the relay runs once, with a sqlite upstream")
        pair = start_pair(tmp_path)
        request.addfinalizer(pair.stop)
        term = SocketTerminal(pair.relay.port("raw"))
        request.addfinalizer(term.close)
    reply = decode(term.one(encode(make("93", CN="sco", CO="scpass"))))
    assert reply.fixed["ok"] == "1"
    term.sequence = itertools.cycle(range(10))
    return term


def ask(terminal: Terminal, code: str, **fields) -> Message:
    """Send a request as bytes (with a checksum) and decode the reply bytes."""
    if code in ("23", "63", "11", "09", "01", "35", "37", "17", "19", "25", "15", "29", "65"):
        fields.setdefault("AO", "MAIN")
    # A new sequence number each time, as a real SC does: an identical request with the same AY and
    # AZ would be (rightly) answered as a retransmission.
    sequence = str(next(terminal.sequence))
    raw = terminal.one(encode(make(code, **fields), sequence=sequence))
    assert raw.endswith(b"\r") and b"AY" + sequence.encode() + b"AZ" in raw
    return decode(raw)


def checkout(terminal, patron, item, pin=None, **extra):
    extra.setdefault("sc_renewal_policy", True)
    return ask(terminal, "11", AA=patron, AB=item, AC="", AD=pin, **extra)


# 99 -> 98 ----------------------------------------------------------------------------------------


def test_sc_status(terminal):
    reply = ask(terminal, "99", status_code="0", max_print_width=" 80", protocol_version="2.00")
    assert reply.code == "98"
    f = reply.fixed
    assert (f["online_status"], f["checkin_ok"], f["checkout_ok"], f["acs_renewal_policy"]) == ("Y", "Y", "Y", "Y")
    assert (f["status_update_ok"], f["offline_ok"], f["timeout_period"], f["retries_allowed"]) == (
        "Y",
        "Y",
        "050",
        "003",
    )
    assert f["protocol_version"] == "2.00"
    assert reply.get("AO") == "MAIN" and reply.get("AM") == "Test Library" and reply.get("AN") == "MAIN-DESK1"
    assert reply.get("BX") == "Y" * 16


def test_sc_status_refuses_an_old_protocol_version(terminal):
    reply = ask(terminal, "99", protocol_version="0.50")
    assert reply.fixed["online_status"] == "N" and "not supported" in reply.get("AF")


# 23 -> 24 ----------------------------------------------------------------------------------------


def test_patron_status_of_a_patron_in_good_standing(terminal):
    reply = ask(terminal, "23", language="001", AA=JANE, AC="", AD=JANE_PIN)
    assert reply.code == "24"
    assert reply.fixed["patron_status"] == " " * 14
    assert reply.get("AE") == "Jane Doe" and reply.get("BL") == "Y" and reply.get("CQ") == "Y"
    assert reply.get("BH") == "USD" and reply.get("BV") == "2.50"


def test_patron_status_wrong_pin_says_cq_n(terminal):
    reply = ask(terminal, "23", AA=JANE, AC="", AD="9999")
    assert reply.get("BL") == "Y" and reply.get("CQ") == "N" and "PIN" in reply.get("AF")


def test_patron_status_without_ad_has_no_cq(terminal):
    reply = decode(terminal.one(b"23001" + b"20250115    093010" + b"AOMAIN|AA" + JANE.encode() + b"|\r"))
    assert reply.get("BL") == "Y" and "CQ" not in reply.fields


def test_unknown_patron(terminal):
    reply = ask(terminal, "23", AA="29999999999999", AC="", AD="1")
    assert reply.fixed["patron_status"] == "YYYY" + " " * 10
    assert reply.get("BL") == "N" and reply.get("CQ") == "N" and "AE" in reply.fields and reply.get("AE") == ""


@pytest.mark.parametrize(
    ("patron", "denied"),
    [
        (BLOCKED, {0, 1, 2, 3}),
        (EXPIRED, {0}),
        (LOST_CARD, {0, 4}),
        (FINED, {0, 10}),
        (TOO_MANY_OVERDUE, {0, 6}),
        (AT_LIMIT, {0, 5}),
    ],
)
def test_patron_status_flags_follow_the_patrons_state(terminal, patron, denied):
    status = ask(terminal, "23", AA=patron, AC="").fixed["patron_status"]
    assert len(status) == 14 and set(status) <= {"Y", " "}
    marked = {i for i, c in enumerate(status) if c == "Y"}
    assert denied <= marked, (patron, status)


# 63 -> 64 ----------------------------------------------------------------------------------------


def test_patron_information_counts_and_charged_list(terminal):
    reply = ask(terminal, "63", language="001", summary="  Y       ", AA=JANE, AC="", AD=JANE_PIN)
    f = reply.fixed
    assert reply.code == "64"
    assert f["charged_items_count"] == "0002" and f["hold_items_count"] == "0001"
    assert f["fine_items_count"] == "0001" and f["overdue_items_count"] == "0000"
    assert sorted(reply.getall("AU")) == ["31000000000001", "31000000000094"]
    assert not {"AS", "AT", "AV"} & reply.fields.keys()
    assert reply.get("BE") == "jane@example.org" and reply.get("CQ") == "Y"
    assert reply.get("CB") and len(reply.get("CB")) == 4


@pytest.mark.parametrize(
    ("summary", "field", "expected"),
    [
        ("Y         ", "AS", ["31000000000038"]),
        (" Y        ", "AT", []),
        ("   Y      ", "AV", None),
    ],
)
def test_patron_information_lists_by_summary(terminal, summary, field, expected):
    reply = ask(terminal, "63", summary=summary, AA=JANE, AC="")
    if expected is None:
        assert len(reply.getall(field)) == 1 and "2.50" in reply.get(field)
    else:
        assert reply.getall(field) == expected


def test_patron_information_range(terminal):
    reply = ask(terminal, "63", summary=" Y        ", AA=TOO_MANY_OVERDUE, AC="", BP="2", BQ="3")
    assert reply.fixed["overdue_items_count"] == "0004"
    assert len(reply.getall("AT")) == 2
    everything = ask(terminal, "63", summary=" Y        ", AA=TOO_MANY_OVERDUE, AC="").getall("AT")
    assert reply.getall("AT") == everything[1:3]
    assert ask(terminal, "63", summary=" Y        ", AA=TOO_MANY_OVERDUE, AC="", BP="9", BQ="12").getall("AT") == []


def test_patron_information_unknown_patron(terminal):
    reply = ask(terminal, "63", summary="  Y       ", AA="29999999999999", AC="")
    assert reply.fixed["patron_status"].startswith("YYYY") and reply.get("BL") == "N"
    assert reply.fixed["charged_items_count"] == "0000"


# 11 -> 12 ----------------------------------------------------------------------------------------


def test_checkout_then_checkin(terminal):
    out = checkout(terminal, JANE, FREE, JANE_PIN)
    assert out.code == "12"
    assert (out.fixed["ok"], out.fixed["renewal_ok"], out.fixed["desensitize"]) == ("1", "N", "Y")
    assert out.get("AJ") == "Dracula" and len(out.get("AH")) == 18 and out.get("CK") == "001"
    back = ask(terminal, "09", no_block=False, return_date=datetime.datetime.now(), AP="MAIN", AB=FREE, AC="")
    assert back.code == "10" and back.fixed["ok"] == "1" and back.fixed["resensitize"] == "Y"
    assert back.get("AA") == JANE and back.get("AQ") == "MAIN" and back.fixed["alert"] == "N"


@pytest.mark.parametrize("no_block", [False, True], ids=["online", "store-and-forward"])
def test_a_return_date_in_the_future_charges_no_fine(terminal, no_block):
    # Jane's 31000000000001 is due in 10 days; a terminal whose clock says next year returns it.
    owed = ask(terminal, "63", language="001", summary=" " * 10, AA=JANE, AC="", AD=JANE_PIN).get("BV")
    ahead = datetime.datetime.now() + datetime.timedelta(days=400)
    back = ask(terminal, "09", no_block=no_block, return_date=ahead, AP="MAIN", AB=JANES_ITEM, AC="")
    assert back.fixed["ok"] == "1" and back.get("AA") == JANE
    assert not any("fine" in line for line in back.getall("AF")), back.getall("AF")
    assert ask(terminal, "63", language="001", summary=" " * 10, AA=JANE, AC="", AD=JANE_PIN).get("BV") == owed


@pytest.mark.parametrize(
    ("patron", "item", "pin", "words"),
    [
        ("29999999999999", FREE, None, "not recognised"),
        (EXPIRED, FREE, None, "expired"),
        (JANE, FREE, "0000", "PIN"),
        (BLOCKED, FREE, None, "blocked"),
        (LOST_CARD, FREE, None, "lost"),
        (AT_LIMIT, FREE, None, "limit"),
        (TOO_MANY_OVERDUE, FREE, None, "overdue"),
        (FINED, FREE, None, "fines"),
        (HANA, "39999999999999", None, "not recognised"),
        (HANA, JANES_ITEM, None, "someone else"),
        (HANA, ON_SHELF_FOR_RAVI, None, "hold for another"),
        (HANA, "31000000000005", None, "cannot be borrowed"),
    ],
)
def test_checkout_refusals(terminal, patron, item, pin, words):
    reply = checkout(terminal, patron, item, pin)
    assert reply.code == "12"
    assert (reply.fixed["ok"], reply.fixed["renewal_ok"], reply.fixed["desensitize"]) == ("0", "N", "N")
    assert "AJ" in reply.fields and reply.get("AH") == ""
    assert words in reply.get("AF"), reply.get("AF")


def test_checkout_of_an_item_the_patron_has_is_a_renewal(terminal):
    reply = checkout(terminal, JANE, JANES_ITEM, JANE_PIN)
    assert reply.fixed["ok"] == "1" and reply.fixed["renewal_ok"] == "Y"


def test_checkout_fills_the_patrons_own_hold(terminal):
    reply = checkout(terminal, RAVI, ON_SHELF_FOR_RAVI)
    assert reply.fixed["ok"] == "1"
    info = ask(terminal, "63", summary="Y         ", AA=RAVI, AC="")
    assert ON_SHELF_FOR_RAVI not in info.getall("AS")


def test_checkout_with_a_fee_needs_it_acknowledged(terminal):
    refused = checkout(terminal, HANA, RENTAL_DVD)
    assert refused.fixed["ok"] == "0"
    assert (refused.get("BT"), refused.get("BV"), refused.get("BH")) == ("06", "1.50", "USD")
    accepted = checkout(terminal, HANA, RENTAL_DVD, BO="Y")
    assert accepted.fixed["ok"] == "1" and accepted.get("BV") == "1.50"
    assert accepted.fixed["magnetic_media"] == "Y"
    balance = ask(terminal, "23", AA=HANA, AC="").get("BV")
    assert balance == "1.50"


def test_store_and_forward_checkout_is_recorded_as_the_terminal_says(terminal):
    due = datetime.datetime(2031, 1, 2, 17, 0, 0)
    reply = checkout(terminal, BLOCKED, FREE, no_block=True, nb_due_date=due)
    assert reply.fixed["ok"] == "1"
    assert reply.get("AH") == format_date(due)
    item = ask(terminal, "17", AB=FREE, AC="")
    assert item.fixed["circulation_status"] == "04" and item.get("AH") == format_date(due)


# 09 -> 10 ----------------------------------------------------------------------------------------


def test_checkin_of_a_wanted_item_goes_to_the_hold_shelf(terminal):
    reply = ask(terminal, "09", return_date=datetime.datetime.now(), AP="WEST", AB=WANTED, AC="")
    assert reply.fixed["ok"] == "1" and reply.fixed["alert"] == "Y"
    assert reply.get("AA") == OVERDUE_ONE
    assert reply.get("CY") == "21000000000019" and reply.get("DA") == "Grace Kim"
    assert reply.get("CV") == "01"
    assert ask(terminal, "17", AB=WANTED, AC="").fixed["circulation_status"] == "08"


def test_checkin_at_another_branch_sends_the_item_in_transit(terminal):
    assert checkout(terminal, HANA, EAST_BOOK).fixed["ok"] == "1"  # on loan: a checkin of a shelved one is ok=0
    reply = ask(terminal, "09", return_date=datetime.datetime.now(), AP="MAIN", AB=EAST_BOOK, AC="")
    assert reply.fixed["ok"] == "1" and reply.fixed["alert"] == "Y"
    assert reply.get("CT") == "EAST" and reply.get("CV") == "04"
    assert ask(terminal, "17", AB=EAST_BOOK, AC="").fixed["circulation_status"] == "10"


@pytest.mark.parametrize(("branch", "transit"), [("EAST", False), ("", True)], ids=["branch-east", "no-branch"])
def test_a_checkin_without_ap_happens_at_the_accounts_branch(terminal, branch, transit):
    if not isinstance(terminal, Terminal):
        pytest.skip("changes the account in the running process; tests/test_upstream.py covers it relayed")
    hub = terminal.hub
    accounts = tuple(attrs.evolve(a, branch=branch) if a.login == "sco" else a for a in hub.config.accounts)
    hub.config = attrs.evolve(hub.config, accounts=accounts)
    hub.registry = Registry.from_config(hub.config, hub.lockout)
    assert checkout(terminal, HANA, EAST_BOOK).fixed["ok"] == "1"
    reply = ask(terminal, "09", return_date=datetime.datetime.now(), AB=EAST_BOOK, AC="")  # no AP
    assert reply.fixed["ok"] == "1"
    if transit:  # without a branch, the branch its location (MAIN-DESK1) stands in: MAIN
        assert reply.fixed["alert"] == "Y" and reply.get("CT") == "EAST" and reply.get("CV") == "04"
    else:
        assert reply.fixed["alert"] == "N" and not reply.get("CV") and not reply.get("CT")
        assert ask(terminal, "17", AB=EAST_BOOK, AC="").fixed["circulation_status"] == "03"


def test_late_checkin_charges_a_fine(terminal):
    reply = ask(terminal, "09", return_date=datetime.datetime.now(), AP="EAST", AB="31000000000041", AC="")
    assert reply.fixed["ok"] == "1" and "fine of 1.25" in " ".join(reply.getall("AF"))


def test_checkin_of_an_unknown_item(terminal):
    reply = ask(terminal, "09", AP="MAIN", AB="39999999999999", AC="")
    assert reply.fixed["ok"] == "0" and reply.fixed["alert"] == "Y" and "AQ" in reply.fields


# 17 -> 18, 19 -> 20 -----------------------------------------------------------------------------


def test_item_information(terminal):
    reply = ask(terminal, "17", AB=JANES_ITEM, AC="")
    assert reply.code == "18" and reply.fixed["circulation_status"] == "04"
    assert reply.fields and next(iter(reply.fields)) == "AB"
    assert reply.get("AJ") == "Pride and Prejudice" and len(reply.get("AH")) == 18 and reply.get("BG") == "MAIN"
    unknown = ask(terminal, "17", AB="39999999999999", AC="")
    assert unknown.fixed["circulation_status"] == "01" and unknown.get("AJ") == ""


def test_item_status_update_stores_properties(terminal):
    reply = ask(terminal, "19", AB=FREE, AC="", CH="damaged spine")
    assert reply.code == "20" and reply.fixed["item_properties_ok"] == "1"
    assert ask(terminal, "17", AB=FREE, AC="").get("CH") == "damaged spine"


# 01 -> 24, 25 -> 26 -----------------------------------------------------------------------------


def test_block_then_enable(terminal):
    blocked = ask(terminal, "01", card_retained=True, AL="Card retained by the machine", AA=HANA, AC="")
    assert blocked.code == "24" and blocked.fixed["patron_status"][0] == "Y"
    assert checkout(terminal, HANA, FREE).fixed["ok"] == "0"
    enabled = ask(terminal, "25", AA=HANA, AC="")
    assert enabled.code == "26" and enabled.fixed["patron_status"] == " " * 14 and enabled.get("BL") == "Y"
    assert checkout(terminal, HANA, FREE).fixed["ok"] == "1"


# 15 -> 16 ----------------------------------------------------------------------------------------


def test_hold_add_change_cancel(terminal):
    added = ask(terminal, "15", hold_mode="+", AA=FELIX, AB=JANES_ITEM, BS="EAST", AC="")
    assert added.code == "16" and added.fixed["ok"] == "1" and added.fixed["available"] == "N"
    assert added.get("BR") == "1" and added.get("BS") == "EAST"
    again = ask(terminal, "15", hold_mode="+", AA=FELIX, AB=JANES_ITEM, AC="")
    assert again.fixed["ok"] == "0" and "already" in again.get("AF")
    expires = format_date(datetime.datetime(2031, 3, 1, 0, 0, 0))
    changed = ask(terminal, "15", hold_mode="*", AA=FELIX, AB=JANES_ITEM, BS="WEST", BW=expires, AC="")
    assert changed.fixed["ok"] == "1" and changed.get("BS") == "WEST"
    cancelled = ask(terminal, "15", hold_mode="-", AA=FELIX, AB=JANES_ITEM, AC="")
    assert cancelled.fixed["ok"] == "1"
    missing = ask(terminal, "15", hold_mode="-", AA=FELIX, AB=JANES_ITEM, AC="")
    assert missing.fixed["ok"] == "0"
    # Jane's renewal is now free of Felix's hold; a renewal is refused while someone waits.
    ask(terminal, "15", hold_mode="+", AA=FELIX, AB=JANES_ITEM, AC="")
    refused = ask(terminal, "29", AA=JANE, AB=JANES_ITEM, AC="")
    assert refused.code == "30" and refused.fixed["ok"] == "0" and "waiting" in refused.get("AF")


def test_hold_on_an_available_title(terminal):
    reply = ask(terminal, "15", hold_mode="+", AA=FELIX, AJ="Dracula", AC="")
    assert reply.fixed["ok"] == "1" and reply.fixed["available"] == "Y"


# 29 -> 30, 65 -> 66 -----------------------------------------------------------------------------


def test_renew_and_renew_all(terminal):
    renewed = ask(terminal, "29", AA=JANE, AB=JANES_ITEM, AC="")
    assert renewed.code == "30" and renewed.fixed["ok"] == "1" and renewed.fixed["renewal_ok"] == "Y"
    assert len(renewed.get("AH")) == 18
    everything = ask(terminal, "65", AA=JANE, AC="")
    assert everything.code == "66" and everything.fixed["ok"] == "1"
    assert int(everything.fixed["renewed_count"]) == len(everything.getall("BM")) == 2
    assert everything.fixed["unrenewed_count"] == "0000"


def test_renew_refused_at_the_renewal_limit(terminal):
    reply = ask(terminal, "29", AA="21000000000009", AB="31000000000086", AC="")
    assert reply.fixed["ok"] in ("0", "1")  # staff may renew 5 times: 2 done, so allowed
    for _ in range(3):
        ask(terminal, "29", AA="21000000000009", AB="31000000000086", AC="")
    final = ask(terminal, "29", AA="21000000000009", AB="31000000000086", AC="")
    assert final.fixed["ok"] == "0" and "renewed again" in final.get("AF")
    everything = ask(terminal, "65", AA="21000000000009", AC="")
    assert everything.fixed["unrenewed_count"] == "0001" and everything.getall("BN") == ["31000000000086"]


# 37 -> 38, 35 -> 36 -----------------------------------------------------------------------------


def test_fee_paid_partial_then_rest(terminal):
    part = ask(
        terminal, "37", fee_type="04", payment_type="00", currency_type="USD", BV="1.00", AA=JANE, AC="", BK="T-1"
    )
    assert part.code == "38" and part.fixed["payment_accepted"] == "Y" and part.get("BK") == "T-1"
    assert ask(terminal, "23", AA=JANE, AC="").get("BV") == "1.50"
    too_much = ask(terminal, "37", fee_type="04", payment_type="00", currency_type="USD", BV="5.00", AA=JANE, AC="")
    assert too_much.fixed["payment_accepted"] == "N"
    rest = ask(terminal, "37", fee_type="04", payment_type="02", currency_type="USD", BV="1.50", AA=JANE, AC="")
    assert rest.fixed["payment_accepted"] == "Y" and rest.get("BK")
    assert "BV" not in ask(terminal, "23", AA=JANE, AC="").fields


def test_fee_paid_with_numbers_too_large_for_the_database_is_refused_and_the_acs_stays_online(terminal):
    # On PostgreSQL these were "bigint/integer out of range": the 98 then showed the ACS off-line.
    def pay(**fields):
        return ask(terminal, "37", fee_type="04", payment_type="00", currency_type="USD", AA=JANE, AC="", **fields)

    unknown, huge = pay(BV="1.00", CG="999999"), pay(BV="1.00", CG="99999999999999999999")
    assert unknown.fixed["payment_accepted"] == huge.fixed["payment_accepted"] == "N"
    assert huge.get("AF") == unknown.get("AF").replace("999999", "99999999999999999999")
    assert pay(BV="999999999.99").fixed["payment_accepted"] == "N"
    status = ask(terminal, "99", status_code="0", max_print_width=" 80", protocol_version="2.00")
    assert status.fixed["online_status"] == "Y"
    assert ask(terminal, "23", AA=JANE, AC="").get("BV") == "2.50"  # nothing was paid


def test_end_session(terminal):
    reply = ask(terminal, "35", AA=JANE, AC="", AD=JANE_PIN)
    assert reply.code == "36" and reply.fixed["end_session"] == "Y" and reply.get("AA") == JANE


# Policy, permissions and outages -------------------------------------------------------------------


def test_institution_policy_is_enforced_not_only_reported(tmp_path, backend):
    config = make_config(tmp_path)
    import attrs

    institution = config.institutions["MAIN"]
    policy = attrs.evolve(institution.policy, checkout=False, status_update=False)
    config = attrs.evolve(config, institutions={"MAIN": attrs.evolve(institution, policy=policy)})
    term = Terminal(Hub(config, backend))
    term.one(encode(make("93", CN="sco", CO="scpass")))
    term.sequence = itertools.cycle(range(10))
    status = ask(term, "99", protocol_version="2.00")
    assert status.fixed["checkout_ok"] == "N" and status.fixed["status_update_ok"] == "N"
    assert status.get("BX")[1] == "N" and status.get("BX")[3] == "N" and status.get("BX")[12] == "N"
    assert checkout(term, JANE, FREE, JANE_PIN).fixed["ok"] == "0"
    blocked = ask(term, "01", AL="lost", AA=HANA, AC="")
    assert blocked.code == "24" and "not available" in blocked.get("AF")
    assert ask(term, "23", AA=HANA, AC="").fixed["patron_status"][0] == " "
    assert ask(term, "19", AB=FREE, AC="", CH="x").fixed["item_properties_ok"] == "1"
    assert ask(term, "09", AP="MAIN", AB=JANES_ITEM, AC="").fixed["ok"] == "1"


class Outage:
    """The real backend, except that calls fail as an unreachable ILS would, or never answer."""

    def __init__(self, backend, mode):
        self._backend, self.mode = backend, mode
        self.calls: list[str] = []  # what was asked of it, health probes included

    def __getattr__(self, name):
        real = getattr(self._backend, name)
        if name in ("start", "stop"):
            return real

        def call(*args, **kwargs):
            self.calls.append(name)
            if self.mode == "down":
                return defer.fail(BackendUnavailable("connection refused"))
            if self.mode == "stall":
                return defer.Deferred()
            return real(*args, **kwargs)

        return call


def outage_terminal(tmp_path, backend):
    """A logged-in terminal whose institution's backend is the real one behind an Outage."""
    outage = Outage(backend, "ok")
    hub = Hub(make_config(tmp_path), backend)
    hub.acs.backends["embedded"] = outage
    hub.acs.health._backends = hub.acs.backends
    term = Terminal(hub)
    term.one(encode(make("93", CN="sco", CO="scpass")))
    term.sequence = itertools.cycle(range(1, 10))
    return outage, hub, term


@pytest.mark.parametrize("mode", ["down", "stall"])
def test_backend_outage_gets_a_sip_answer_and_98_says_off_line(tmp_path, backend, mode):
    outage, hub, term = outage_terminal(tmp_path, backend)
    outage.mode = mode
    term.protocol.frame_received(encode(make("11", AO="MAIN", AA=JANE, AB=FREE, AC=""), sequence="0")[:-1])
    if mode == "stall":
        assert term.out[-1].startswith(b"94")  # nothing yet: waiting on the backend
        hub.clock.advance(5)  # the institution's timeout
    reply = decode(term.out[-1])
    assert reply.code == "12" and reply.fixed["ok"] == "0" and "not available" in reply.get("AF")
    status = ask(term, "99", protocol_version="2.00")
    assert status.fixed["online_status"] == "N" and status.fixed["timeout_period"] == "000"
    outage.mode = "ok"
    hub.clock.advance(5)  # a probe started while stalled gives up first; then the next one succeeds
    hub.acs.health.probe("embedded")
    assert ask(term, "99", protocol_version="2.00").fixed["online_status"] == "Y"
    assert checkout(term, JANE, FREE, JANE_PIN).fixed["ok"] == "1"


def test_during_an_outage_requests_are_answered_at_once_and_the_backend_tried_with_backoff(tmp_path, backend):
    from sipserver.ils.backoff import JITTER, LONGEST

    outage, hub, term = outage_terminal(tmp_path, backend)
    outage.mode = "down"
    assert checkout(term, JANE, FREE, JANE_PIN).fixed["ok"] == "0"  # this one reached the backend
    assert outage.calls == ["checkout"]
    for _ in range(50):  # the others are answered from what is known, without trying it
        reply = checkout(term, JANE, FREE, JANE_PIN)
        assert reply.fixed["ok"] == "0" and "not available" in reply.get("AF")
        assert ask(term, "99", protocol_version="2.00").fixed["online_status"] == "N"
    assert outage.calls == ["checkout"]
    hub.clock.pump([0.1] * 1200)  # two minutes down: tried again soon, then less and less often
    probes = outage.calls.count("health")
    assert 5 <= probes <= 4 + 120 / (LONGEST * (1 - JITTER)), probes
    assert hub.acs.health.attempts["embedded"] == probes
    outage.mode = "ok"
    hub.clock.pump([0.1] * round(LONGEST * (1 + JITTER) * 10 + 1))  # back within the longest wait
    assert ask(term, "99", protocol_version="2.00").fixed["online_status"] == "Y"
    assert checkout(term, JANE, FREE, JANE_PIN).fixed["ok"] == "1"


def _refusing_terminal(tmp_path, backend, login, password):
    """A terminal on an institution whose language is 002, whose backend is down."""
    config = make_config(tmp_path)
    import attrs

    institution = attrs.evolve(config.institutions["MAIN"], language="002")
    config = attrs.evolve(config, institutions={"MAIN": institution})
    hub = Hub(config, backend)
    hub.acs.backends["embedded"] = Outage(backend, "down")
    term = Terminal(hub)
    assert decode(term.one(encode(make("93", CN=login, CO=password)))).fixed["ok"] == "1"
    term.sequence = itertools.cycle(range(10))
    return term


@pytest.mark.parametrize("why", ["outage", "denied"])
@pytest.mark.parametrize(
    ("code", "fields", "language"),
    [
        ("23", {"language": "001", "AA": JANE, "AC": "", "AD": JANE_PIN}, "001"),
        ("63", {"language": "001", "AA": JANE, "AC": "", "AD": JANE_PIN}, "001"),
        ("63", {"language": "   ", "AA": JANE}, "002"),
        ("25", {"AA": JANE, "AD": JANE_PIN}, "002"),
        ("01", {"AL": "lost", "AA": JANE, "AC": ""}, "002"),
    ],
)
def test_patron_refusals_carry_bl_cq_and_the_language(tmp_path, backend, why, code, fields, language):
    # A backend outage or a refused permission still answers 24/64/26 in the shape clients parse:
    # BL (tzeumer's wrapper raises KeyError without it), CQ whenever AD came in, the right language.
    login, password = ("sco", "scpass") if why == "outage" else ("sorter", "sorterpass")
    term = _refusing_terminal(tmp_path, backend, login, password)
    reply = ask(term, code, **fields)
    assert reply.code == {"23": "24", "01": "24", "63": "64", "25": "26"}[code]
    assert ("not available" if why == "outage" else "may not") in reply.get("AF")
    assert reply.get("BL") == "N" and reply.fixed["language"] == language
    assert reply.get("CQ", None) == ("N" if "AD" in fields else None)
    assert (reply.get("AO"), reply.get("AA"), reply.get("AE", None)) == ("MAIN", JANE, "")
