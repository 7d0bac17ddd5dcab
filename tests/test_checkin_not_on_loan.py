"""A checkin of an item that was not on loan: ok=0 and a screen message saying so (as Evergreen and
Koha answer), the item's fields as usual, still routed to a hold or in transit (then alert Y); an
account option answers ok=1 for sorters that need it. Run against both embedded backends."""

from __future__ import annotations

import datetime

import attrs
import pytest

from sipserver.accounts.registry import Registry
from tests.test_acs import FELIX, HANA, ask, checkout, terminal  # noqa: F401 (terminal is a fixture)

MAIN_BOOK = "31000000000008"  # Dracula, home MAIN, on the shelf
EAST_BOOK = "31000000000010"  # home EAST, on the shelf
NOT_ON_LOAN = "This item was not checked out."


@pytest.fixture(params=[False, True], ids=["ok0", "ok1"])
def accepts(request, terminal):  # noqa: F811 (the fixture imported above)
    """The terminal's account with ``checkin_not_on_loan_ok`` as the parameter says."""
    if not hasattr(terminal, "hub"):  # through a relay the upstream's ok is passed on (docs/upstream.md)
        pytest.skip("changes the account in the running process")
    hub = terminal.hub
    accounts = tuple(
        attrs.evolve(a, checkin_not_on_loan_ok=request.param) if a.login == "sco" else a for a in hub.config.accounts
    )
    hub.config = attrs.evolve(hub.config, accounts=accounts)
    hub.registry = Registry.from_config(hub.config, hub.lockout)
    return request.param


def checkin(terminal, item, ap="MAIN"):  # noqa: F811
    return ask(terminal, "09", return_date=datetime.datetime.now(), AP=ap, AB=item, AC="")


def test_a_shelved_item_checked_in_says_it_was_not_checked_out(terminal, accepts):  # noqa: F811
    reply = checkin(terminal, MAIN_BOOK)
    assert reply.fixed["ok"] == ("1" if accepts else "0")
    assert (reply.fixed["alert"], reply.fixed["resensitize"], reply.fixed["magnetic_media"]) == ("N", "Y", "N")
    assert reply.getall("AF") == [NOT_ON_LOAN]
    assert (reply.get("AB"), reply.get("AQ"), reply.get("AJ"), reply.get("CK")) == (MAIN_BOOK, "MAIN", "Dracula", "001")
    assert "AA" not in reply and "CV" not in reply and "CT" not in reply
    assert ask(terminal, "17", AB=MAIN_BOOK, AC="").fixed["circulation_status"] == "03"


def test_a_shelved_item_of_another_branch_still_travels_home(terminal, accepts):  # noqa: F811
    reply = checkin(terminal, EAST_BOOK)
    assert reply.fixed["ok"] == ("1" if accepts else "0") and reply.fixed["alert"] == "Y"
    assert (reply.get("CT"), reply.get("CV")) == ("EAST", "04")
    assert reply.getall("AF") == [NOT_ON_LOAN, "Send to EAST."]
    assert ask(terminal, "17", AB=EAST_BOOK, AC="").fixed["circulation_status"] == "10"


def test_a_shelved_item_someone_holds_still_goes_to_the_hold(terminal, accepts):  # noqa: F811
    held = ask(terminal, "15", hold_mode="+", AA=FELIX, AB=MAIN_BOOK, AC="", BS="EAST")
    assert held.fixed["ok"] == "1"
    reply = checkin(terminal, MAIN_BOOK)
    assert reply.fixed["ok"] == ("1" if accepts else "0") and reply.fixed["alert"] == "Y"
    assert (reply.get("CY"), reply.get("CT"), reply.get("CV")) == (FELIX, "EAST", "02")
    assert reply.getall("AF") == [NOT_ON_LOAN, "Hold for another branch."]


def test_an_item_on_loan_is_checked_in_with_ok_1_either_way(terminal, accepts):  # noqa: F811
    assert checkout(terminal, HANA, MAIN_BOOK).fixed["ok"] == "1"
    reply = checkin(terminal, MAIN_BOOK)
    assert (reply.fixed["ok"], reply.fixed["alert"]) == ("1", "N") and reply.get("AA") == HANA
    assert reply.getall("AF") == ["Checked in."]


def test_the_option_is_an_account_key_read_as_a_boolean():
    from sipserver.config import ConfigError, load_config, parse_config
    from tests.support import ROOT

    shipped = {a.login: a for a in load_config(str(ROOT / "etc" / "sip.yaml")).accounts}
    assert not shipped["sip_sorter_main"].checkin_not_on_loan_ok
    data = {
        "listeners": [{"name": "raw", "transport": "raw", "endpoint": "tcp:6001"}],
        "institutions": {"MAIN": {"backend": "db"}},
        "accounts": [{"login": "s", "password": "plain:x", "institution": "MAIN", "checkin_not_on_loan_ok": True}],
        "backends": {"db": {"type": "sqlite"}},
    }
    assert parse_config(data, "sip.yaml").accounts[0].checkin_not_on_loan_ok
    data["accounts"][0]["checkin_not_on_loan_ok"] = "yes"
    with pytest.raises(ConfigError, match=r"^sip.yaml: accounts\[0\].checkin_not_on_loan_ok: expected true or false"):
        parse_config(data, "sip.yaml")
