"""Reply profiles: the patron extension fields an account receives, the fields it never receives,
and fixed fields added, named once in the configuration and shared by accounts. From the request
bytes to the reply bytes, against both embedded backends."""

from __future__ import annotations

import itertools
import textwrap
from typing import Any

import pytest
import yaml

from sipserver.config import ConfigError, load_config, parse_config
from sipserver.sip2 import Message, decode, encode, make
from tests.support import BASE_CONFIG, ROOT, Hub, Terminal, make_config

JANE, JANE_PIN = "21000000000001", "1234"  # born 1985-04-12, adult, MAIN, card to 2099-12-31, "Adult"
HANA = "21000000000021"  # no birth date, no internet privileges
EVERY_PATRON_FIELD = ["PA", "PB", "PC", "PI", "AQ", "BD", "BE", "BF"]

PROFILES = {
    "everything": {"patron_fields": EVERY_PATRON_FIELD},
    "econtent": {"patron_fields": ["PA", "PB", "PC"], "hide": ["BD", "BE", "BF"]},
    "pc_booking": {"patron_fields": ["PB", "PI"], "hide": ["BD", "BE", "BF"], "add": {"XY": "libki", "PC": "X"}},
    "discreet": {"hide": ["AE", "CS", "AM"]},
}


@pytest.fixture
def hub(tmp_path, backend):
    accounts = yaml.safe_load(textwrap.dedent(BASE_CONFIG))["accounts"]
    for name in PROFILES:
        accounts.append({"login": name, "password": f"plain:{name}", "institution": "MAIN", "profile": name})
    return Hub(make_config(tmp_path, {"profiles": PROFILES, "accounts": accounts}), backend)


def as_login(hub: Hub, login: str, password: str | None = None) -> Terminal:
    term = Terminal(hub)
    assert decode(term.one(encode(make("93", CN=login, CO=password or login)))).fixed["ok"] == "1"
    term.sequence = itertools.cycle(range(10))
    return term


def ask(term: Terminal, code: str, **fields: Any) -> Message:
    raw = term.one(encode(make(code, **fields), sequence=str(next(term.sequence))))
    return decode(raw)


def patron_info(term: Terminal, patron: str = JANE) -> Message:
    return ask(term, "63", summary=" " * 10, AO="MAIN", AA=patron, AC="", AD=JANE_PIN if patron == JANE else None)


def patron_status(term: Terminal, patron: str = JANE) -> Message:
    return ask(term, "23", AO="MAIN", AA=patron, AC="", AD=JANE_PIN if patron == JANE else None)


# -- the default ------------------------------------------------------------------------------------


def test_without_a_profile_the_replies_are_the_standard_ones(hub):
    info = patron_info(as_login(hub, "sco", "scpass"))
    assert (info.get("BD"), info.get("BE"), info.get("BF")) == (
        "12 Elm Street, Riverside",
        "jane@example.org",
        "555-0101",
    )
    assert not {"PA", "PB", "PC", "PI", "AQ", "XY"} & set(info.fields)
    assert not {"BD", "BE", "BF", "PA"} & set(patron_status(as_login(hub, "sco", "scpass")).fields)


# -- each extension field ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("PA", "20991231"),
        ("PB", "19850412"),
        ("PC", "adult"),
        ("PI", "Adult"),
        ("AQ", "MAIN"),
        ("BD", "12 Elm Street, Riverside"),
        ("BE", "jane@example.org"),
        ("BF", "555-0101"),
    ],
)
def test_each_patron_field_a_profile_turns_on_is_sent_in_24_and_64(hub, field, value):
    term = as_login(hub, "everything")
    info, status = patron_info(term), patron_status(term)
    assert info.getall(field) == [value] and status.getall(field) == [value]
    assert info.getall("AF")[-1] == "Welcome, Jane"  # screen messages stay last
    raw = encode(info)
    assert raw.index(b"|AF") > raw.index(f"|{field}".encode())


def test_a_field_the_backend_does_not_know_is_not_sent(hub):
    info = patron_info(as_login(hub, "everything"), HANA)
    assert info.get("PC") == "adult" and "PB" not in info and "PI" not in info


def test_an_unknown_patron_gets_no_extension_fields(hub):
    info = patron_info(as_login(hub, "everything"), "29999999999999")
    assert info.get("BL") == "N" and not {"PA", "PB", "PC", "PI", "AQ"} & set(info.fields)


# -- hidden and added fields ------------------------------------------------------------------------


def test_an_econtent_vendor_gets_age_and_expiry_but_no_contact_details(hub):
    term = as_login(hub, "econtent")
    for reply in (patron_info(term), patron_status(term)):
        assert (reply.get("PA"), reply.get("PB"), reply.get("PC")) == ("20991231", "19850412", "adult")
        assert not {"BD", "BE", "BF"} & set(reply.fields), reply.fields
    raw = as_login(hub, "econtent").one(
        encode(make("63", summary=" " * 10, AO="MAIN", AA=JANE, AC="", AD=JANE_PIN), sequence="0")
    )
    assert b"jane@example.org" not in raw and b"Elm Street" not in raw and b"555-0101" not in raw


def test_fixed_fields_are_added_and_replace_what_the_server_would_send(hub):
    term = as_login(hub, "pc_booking")
    info, status = patron_info(term), patron_status(term)
    for reply in (info, status):
        assert (reply.get("XY"), reply.get("PC"), reply.get("PI"), reply.get("PB")) == (
            "libki",
            "X",
            "Adult",
            "19850412",
        )
    assert "XY" not in ask(term, "99", status_code="0", max_print_width="080", protocol_version="2.00")


def test_a_hidden_field_is_hidden_from_every_reply_and_a_required_one_goes_out_empty(hub):
    term = as_login(hub, "discreet")
    raw = term.one(encode(make("63", summary=" " * 10, AO="MAIN", AA=JANE, AC="", AD=JANE_PIN), sequence="1"))
    assert b"|AE|" in raw and b"Jane Doe" not in raw  # AE is required in 64: sent, empty
    item = ask(term, "17", AO="MAIN", AB="31000000000008", AC="")
    assert item.get("AJ") == "Dracula" and "CS" not in item
    status = ask(term, "99", status_code="0", max_print_width="080", protocol_version="2.00")
    assert "AM" not in status and status.get("AO") == "MAIN"


# -- the configuration ------------------------------------------------------------------------------


def config_with(profiles: Any, profile: Any = "p") -> Any:
    account = {"login": "a", "password": "plain:x", "institution": "MAIN", "profile": profile}
    return parse_config(
        {
            "listeners": [{"name": "raw", "transport": "raw", "endpoint": "tcp:6001"}],
            "institutions": {"MAIN": {"backend": "db"}},
            "profiles": profiles,
            "accounts": [account],
            "backends": {"db": {"type": "sqlite"}},
        },
        "sip.yaml",
    )


def test_accounts_share_a_named_profile():
    cfg = parse_config(
        {
            "listeners": [{"name": "raw", "transport": "raw", "endpoint": "tcp:6001"}],
            "institutions": {"MAIN": {"backend": "db"}},
            "profiles": {"econtent": {"patron_fields": "PB", "hide": ["BE"]}},
            "accounts": [
                {"login": "overdrive", "password": "plain:x", "institution": "MAIN", "profile": "econtent"},
                {"login": "hoopla", "password": "plain:y", "institution": "MAIN", "profile": "econtent"},
            ],
            "backends": {"db": {"type": "sqlite"}},
        },
        "sip.yaml",
    )
    first, second = cfg.accounts
    assert first.profile is second.profile and first.profile.patron_fields == ("PB",)


@pytest.mark.parametrize(
    ("profiles", "profile", "message"),
    [
        (
            {"p": {"patron_fields": ["PX"]}},
            "p",
            "profiles.p.patron_fields[0]: expected one of PA, PB, PC, PI, AQ, BD, BE, BF, got 'PX'",
        ),
        (
            {"p": {"hide": ["be"]}},
            "p",
            "profiles.p.hide[0]: expected a SIP2 field id, two upper-case letters or digits",
        ),
        ({"p": {"hide": ["AZ"]}}, "p", "profiles.p.hide[0]: expected a SIP2 field id"),
        ({"p": {"add": {"XY": ["a"]}}}, "p", "profiles.p.add.XY: expected a string, got a list"),
        ({"p": {"add": {"XY": "a|b"}}}, "p", "profiles.p.add.XY: expected no '|' or control characters"),
        ({"p": {"show": ["PB"]}}, "p", "profiles.p.show: unknown key; expected one of patron_fields, hide, add"),
        (
            {"econtent": {}},
            "econtnet",
            "accounts[0].profile: expected the name of a profile defined under profiles (econtent), "
            "got 'econtnet' (did you mean 'econtent'?)",
        ),
    ],
)
def test_a_profile_mistake_stops_the_configuration_with_one_line(profiles, profile, message):
    with pytest.raises(ConfigError) as info:
        config_with(profiles, profile)
    assert str(info.value).startswith(f"sip.yaml: {message}"), str(info.value)


def test_the_shipped_config_has_profiles_for_a_self_check_an_econtent_vendor_and_pc_booking():
    cfg = load_config(str(ROOT / "etc" / "sip.yaml"))
    assert {"selfcheck", "econtent", "pc_booking"} <= set(cfg.profiles)
    assert {"BD", "BE", "BF"} <= cfg.profiles["econtent"].hide and "PB" in cfg.profiles["econtent"].patron_fields
    assert "PI" in cfg.profiles["pc_booking"].patron_fields
    logins = {a.login: a for a in cfg.accounts}
    assert logins["sip_overdrive"].profile.name == "econtent" and logins["sip_sco_main"].profile.name == "selfcheck"
