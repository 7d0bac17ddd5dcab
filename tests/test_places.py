"""Places: branches and the location codes that stand in them, from the configuration to a checkin.

A terminal sends its whereabouts in AP as a branch code, a desk code or free text; a MAIN item
checked in at a MAIN terminal must stay at MAIN whichever it sends, and only another branch the
institution knows may receive an item in transit. Run against both embedded backends."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from sipserver.config import ConfigError, parse_config
from sipserver.config.places import UNDECLARED, Places
from sipserver.ils.embedded.loader import load_file
from sipserver.sip2 import decode, encode, make
from tests.support import Hub, Terminal, make_config
from tests.test_acs import ask, checkout
from tests.test_backend_support import result_of

HANA = "21000000000021"
MAIN_BOOK = "31000000000008"  # home MAIN, available
EAST_BOOK = "31000000000010"  # home EAST, available
NORTH_BOOK = "39000000000001"  # home NORTH: a branch the configuration does not list
NOMAD = "29000000000001"  # a patron without a home library
AP_FORMS = ["MAIN-DESK1", "DESK1", "Under the bed"]

EXTRA = """
patrons:
  - {barcode: "29000000000001", pin: "1111", name: Nomad Reader}
items:
  - {barcode: "39000000000001", title: Northern Lights, owner: NORTH}
  - {barcode: "39000000000002", title: Only Copy, owner: MAIN}
"""


@pytest.fixture
def hub(tmp_path, backend):
    extra = tmp_path / "extra.yaml"
    extra.write_text(EXTRA)
    result_of(load_file(backend, str(extra)))
    return Hub(make_config(tmp_path), backend)


def logged_in(hub: Hub, login: str = "sco", password: str = "scpass") -> Terminal:
    term = Terminal(hub)
    assert decode(term.one(encode(make("93", CN=login, CO=password)))).fixed["ok"] == "1"
    term.sequence = itertools.cycle(range(10))
    return term


@pytest.fixture
def terminal(hub):
    return logged_in(hub)


def checkin(terminal: Terminal, item: str, **fields: Any):
    return ask(terminal, "09", return_date=datetime.datetime.now(), AB=item, AC="", **fields)


@pytest.fixture
def info_lines():
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "sipserver.acs" and "current location" in event.get("log_format", ""):
            from twisted.logger import formatEvent

            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


# -- the model --------------------------------------------------------------------------------------


def test_a_code_stands_in_its_branch_whatever_its_case():
    places = Places.of({"MAIN": ["MAIN-DESK1", "DESK1"], "EAST": []})
    assert [places.branch_of(c) for c in ("MAIN", "main", " MAIN-DESK1 ", "desk1", "EAST")] == ["MAIN"] * 4 + ["EAST"]
    assert places.branch_of("Under the bed") == "" and places.branch_of("") == ""
    assert places.same_branch("DESK1", "MAIN") and not places.same_branch("DESK1", "EAST")
    assert not places.same_branch("nowhere", "nowhere")  # two unknowns are no branch at all


def test_undeclared_places_take_every_code_as_sent():
    assert UNDECLARED.branch_of(" MAIN-DESK1 ") == "MAIN-DESK1" and not UNDECLARED.declared


# -- the configuration ------------------------------------------------------------------------------


def config(branches: Any = None, **account: Any):
    institution: dict[str, Any] = {"backend": "db"}
    if branches is not None:
        institution["branches"] = branches
    acct = {"login": "sco", "password": "plain:x", "institution": "MAIN", **account}
    return parse_config(
        {
            "listeners": [{"name": "raw", "transport": "raw", "endpoint": "tcp:6001"}],
            "institutions": {"MAIN": institution},
            "accounts": [acct],
            "backends": {"db": {"type": "sqlite", "path": ":memory:"}},
        },
        "/etc/sip.yaml",
    )


def test_the_shipped_config_knows_where_its_terminals_stand():
    from sipserver.config import load_config
    from tests.support import ROOT

    cfg = load_config(str(ROOT / "etc" / "sip.yaml"))
    places = cfg.institutions["MAIN"].places
    assert [places.branch_of(ap) for ap in AP_FORMS] == ["MAIN", "MAIN", ""]
    assert set(places.names) == {"MAIN", "EAST", "WEST"}  # every branch of the demo data
    assert not [w for w in cfg.warnings if "branch" in w]


def test_branches_read_naturally_in_yaml_and_accounts_add_their_locations():
    cfg = config({"MAIN": {"locations": ["DESK1"]}, "EAST": None}, location="MAIN-SORTER", branch="main")
    places = cfg.institutions["MAIN"].places
    assert places.names == ("MAIN", "EAST")
    assert places.branch_of("MAIN-SORTER") == "MAIN" and places.branch_of("DESK1") == "MAIN"
    assert cfg.accounts[0].branch == "MAIN"  # spelt as the branches spell it


def test_an_account_branch_alone_declares_the_branch():
    places = config(location="MAIN-DESK1", branch="MAIN").institutions["MAIN"].places
    assert places.declared and places.branch_of("MAIN-DESK1") == "MAIN" and places.branch_of("EAST") == ""


@pytest.mark.parametrize(
    ("branches", "account", "message"),
    [
        (
            {"MAIN": {"locations": ["DESK1"]}, "EAST": {"locations": ["desk1"]}},
            {},
            "/etc/sip.yaml: institutions.MAIN.branches.EAST.locations[0]: 'desk1' is already used at "
            "institutions.MAIN.branches.MAIN.locations[0]; a code stands in one branch only",
        ),
        (
            {"MAIN": {}},
            {"branch": "MIAN"},
            "/etc/sip.yaml: accounts[0].branch: expected a branch of institution MAIN (MAIN), got 'MIAN' "
            "(did you mean 'MAIN'?)",
        ),
        (
            {"MAIN": {}, "EAST": {"locations": ["EAST-DESK1"]}},
            {"branch": "MAIN", "location": "EAST-DESK1"},
            "/etc/sip.yaml: accounts[0].location: 'EAST-DESK1' stands in branch EAST "
            "(institutions.MAIN.branches), not in this account's branch MAIN",
        ),
        (
            {"MAIN": {"locations": "DESK|1"}},
            {},
            "/etc/sip.yaml: institutions.MAIN.branches.MAIN.locations[0]: expected no '|' or control characters, "
            "got 'DESK|1'",
        ),
        (
            ["MAIN"],
            {},
            "/etc/sip.yaml: institutions.MAIN.branches: expected a mapping of branch codes to their location "
            "codes, like MAIN: {locations: [MAIN-DESK1]}, got a list",
        ),
        (
            {"MAIN": {"location": ["DESK1"]}},
            {},
            "/etc/sip.yaml: institutions.MAIN.branches.MAIN.location: unknown key (did you mean 'locations'?); "
            "expected one of locations",
        ),
    ],
    ids=["code-twice", "unknown-branch", "location-of-another-branch", "bar", "a-list", "typo"],
)
def test_a_branch_mistake_stops_the_configuration_with_one_line(branches, account, message):
    with pytest.raises(ConfigError) as info:
        config(branches, **account)
    assert str(info.value) == message


def place_warnings(branches: Any = None, **account: Any) -> list[str]:
    return [w for w in config(branches, **account).warnings if "password" not in w]


def test_a_terminal_location_that_is_no_place_is_warned_about():
    [undeclared] = place_warnings(location="MAIN-DESK1")
    assert undeclared.startswith("/etc/sip.yaml: accounts[0].location: institution MAIN lists no branches")
    [unlisted] = place_warnings({"MAIN": {}}, location="MAIN-DESKI")
    assert "accounts[0].location: 'MAIN-DESKI' is not a location code of any branch" in unlisted
    assert place_warnings({"MAIN": {"locations": ["MAIN-DESK1"]}}, location="MAIN-DESK1") == []
    assert place_warnings(location="MAIN-DESK1", permissions=["patron"]) == []  # it checks nothing in


# -- checkin ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ap", AP_FORMS)
def test_a_main_item_checked_in_at_a_main_terminal_stays_at_main(terminal, ap):
    assert checkout(terminal, HANA, MAIN_BOOK).fixed["ok"] == "1"
    raw = terminal.one(
        encode(make("09", return_date=datetime.datetime.now(), AP=ap, AO="MAIN", AB=MAIN_BOOK, AC=""), sequence="5")
    )
    assert raw.startswith(b"101YNN"), raw  # ok, resensitize, not magnetic, no alert
    reply = decode(raw)
    assert "CT" not in reply and "CV" not in reply and reply.getall("AF") == ["Checked in."]
    item = ask(terminal, "17", AB=MAIN_BOOK, AC="")
    assert item.fixed["circulation_status"] == "03" and item.get("AP") == "MAIN"


@pytest.mark.parametrize("ap", ["", "MAIN", "main"])
def test_no_ap_or_the_branch_itself_is_a_checkin_at_main(terminal, ap):
    checkout(terminal, HANA, MAIN_BOOK)
    reply = checkin(terminal, MAIN_BOOK, AP=ap)
    assert (reply.fixed["ok"], reply.fixed["alert"]) == ("1", "N") and "CT" not in reply


@pytest.mark.parametrize("ap", ["EAST", "east"])
def test_an_ap_naming_another_branch_sends_the_item_home(terminal, ap):
    checkout(terminal, HANA, MAIN_BOOK)
    reply = checkin(terminal, MAIN_BOOK, AP=ap)
    assert reply.fixed["alert"] == "Y" and reply.get("CT") == "MAIN" and reply.get("CV") == "04"
    assert ask(terminal, "17", AB=MAIN_BOOK, AC="").fixed["circulation_status"] == "10"


@pytest.mark.parametrize("ap", AP_FORMS)
def test_an_item_of_another_branch_checked_in_at_a_main_terminal_goes_home(terminal, ap):
    checkout(terminal, HANA, EAST_BOOK)
    reply = checkin(terminal, EAST_BOOK, AP=ap)
    assert reply.fixed["alert"] == "Y" and reply.get("CT") == "EAST" and reply.get("CV") == "04"


def test_an_item_whose_home_is_no_known_branch_is_not_sent_in_transit(terminal):
    checkout(terminal, HANA, NORTH_BOOK)
    reply = checkin(terminal, NORTH_BOOK, AP="MAIN-DESK1")
    assert (reply.fixed["ok"], reply.fixed["alert"]) == ("1", "N") and "CT" not in reply
    assert ask(terminal, "17", AB=NORTH_BOOK, AC="").fixed["circulation_status"] == "03"


def test_a_sorter_with_a_desk_location_checks_in_at_its_branch(hub):
    sorter = logged_in(hub, "sorter", "sorterpass")
    sco = logged_in(hub)
    checkout(sco, HANA, MAIN_BOOK)
    reply = checkin(sorter, MAIN_BOOK)  # no AP: the sorter's location MAIN-SORTER stands in MAIN
    assert (reply.fixed["ok"], reply.fixed["alert"]) == ("1", "N") and "CT" not in reply


def test_an_unknown_ap_is_logged_once_per_terminal(hub, info_lines):
    sco = logged_in(hub)
    for _ in range(3):
        checkout(sco, HANA, MAIN_BOOK)
        checkin(sco, MAIN_BOOK, AP="Under the bed")
    checkin(sco, MAIN_BOOK, AP="DESK1")  # known: not logged
    assert len(info_lines) == 1, info_lines
    assert "login sco checks in at current location 'Under the bed'" in info_lines[0]
    assert "taken as the terminal's branch MAIN" in info_lines[0]
    sorter = logged_in(hub, "sorter", "sorterpass")
    checkin(sorter, MAIN_BOOK, AP="under the bed")
    assert len(info_lines) == 2 and "login sorter" in info_lines[1]


# -- holds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bs", "pickup"), [(None, "MAIN"), ("DESK1", "MAIN"), ("EAST", "EAST"), ("Attic", "MAIN")])
def test_a_hold_is_picked_up_at_a_branch(terminal, bs, pickup):
    reply = ask(terminal, "15", hold_mode="+", AA=NOMAD, AD="1111", AB="39000000000002", AC="", BS=bs)
    assert reply.fixed["ok"] == "1" and reply.get("BS") == pickup  # never MAIN-DESK1, never "Attic"


def test_a_copy_for_a_hold_placed_at_a_main_terminal_waits_on_the_main_hold_shelf(terminal):
    only_copy = "39000000000002"
    assert checkout(terminal, HANA, only_copy).fixed["ok"] == "1"
    assert ask(terminal, "15", hold_mode="+", AA=NOMAD, AD="1111", AB=only_copy, AC="").fixed["ok"] == "1"
    reply = checkin(terminal, only_copy, AP="Under the bed")
    assert reply.get("CV") == "01" and "CT" not in reply and reply.get("CY") == NOMAD
    assert ask(terminal, "17", AB=only_copy, AC="").fixed["circulation_status"] == "08"


def test_an_institution_that_declares_no_branch_takes_codes_as_sent(tmp_path, backend):
    """Upgraded configs without branches keep the behaviour from before places (and are warned)."""
    institutions = {"MAIN": {"backend": "embedded", "library_name": "Test Library"}}
    cfg = make_config(tmp_path, {"institutions": institutions})
    assert not cfg.institutions["MAIN"].places.declared
    assert any("lists no branches" in warning for warning in cfg.warnings)
    term = logged_in(Hub(cfg, backend))
    checkout(term, HANA, MAIN_BOOK)
    reply = checkin(term, MAIN_BOOK, AP="EAST")
    assert reply.get("CT") == "MAIN" and reply.get("CV") == "04"
    checkout(term, HANA, EAST_BOOK)
    reply = checkin(term, EAST_BOOK)  # no AP: the terminal's location, MAIN-DESK1, taken as a branch
    assert reply.get("CT") == "EAST" and reply.get("CV") == "04"
