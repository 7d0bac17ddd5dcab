"""The code tables: dates, the 63 summary, the 64 patron status, BX."""

from __future__ import annotations

import datetime

import pytest

from sipserver.sip2 import make, supported_messages
from sipserver.sip2.codes import (
    BLANK_DATE,
    SUMMARY_FIELD,
    UNSUPPORTED_DATE,
    CirculationStatus,
    PatronStatus,
    Summary,
    flag,
    format_date,
    parse_date,
    patron_status_string,
    summary_requested,
)
from sipserver.sip2.messages import BX_ORDER, REQUESTS

# ---------------------------------------------------------------------------------------------
# format_date


def test_format_date_local_has_four_blank_zone_characters() -> None:
    assert format_date(datetime.datetime(2025, 1, 15, 9, 30, 10)) == "20250115    093010"


def test_format_date_aware_is_written_in_utc_with_z() -> None:
    assert format_date(datetime.datetime(2025, 1, 15, 9, 30, 10, tzinfo=datetime.UTC)) == "20250115   Z093010"
    paris = datetime.timezone(datetime.timedelta(hours=1))
    assert format_date(datetime.datetime(2025, 1, 15, 0, 30, 0, tzinfo=paris)) == "20250114   Z233000"


def test_format_date_date_and_none() -> None:
    assert format_date(datetime.date(2025, 2, 5)) == "20250205    000000"
    assert format_date(None) == BLANK_DATE == " " * 18
    assert len(UNSUPPORTED_DATE) == 18


@pytest.mark.parametrize(
    "when",
    [datetime.datetime(1999, 12, 31, 23, 59, 59), datetime.datetime(2030, 1, 1), datetime.datetime(2024, 2, 29, 12)],
)
def test_format_then_parse_is_identity(when: datetime.datetime) -> None:
    text = format_date(when)
    assert len(text) == 18
    assert parse_date(text) == when
    aware = when.replace(tzinfo=datetime.UTC)
    assert parse_date(format_date(aware)) == aware


# ---------------------------------------------------------------------------------------------
# parse_date


def test_parse_date_local_and_utc() -> None:
    local = parse_date("20250115    093010")
    assert local == datetime.datetime(2025, 1, 15, 9, 30, 10)
    assert local is not None and local.tzinfo is None
    utc = parse_date("20250115   Z093010")
    assert utc == datetime.datetime(2025, 1, 15, 9, 30, 10, tzinfo=datetime.UTC)
    assert utc is not None and utc.tzinfo is datetime.UTC
    # Another military zone letter is read as local time, like most ACSs do.
    assert parse_date("20250115   Q093010") == datetime.datetime(2025, 1, 15, 9, 30, 10)


@pytest.mark.parametrize("text", ["", " " * 18, "0" * 18, "00000000", "   ", "0"])
def test_parse_date_blank_or_zero_is_none(text: str) -> None:
    assert parse_date(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2011-10-28 23:59:59", datetime.datetime(2011, 10, 28, 23, 59, 59)),
        ("2011-10-28T23:59:59", datetime.datetime(2011, 10, 28, 23, 59, 59)),
        ("2011-10-28", datetime.datetime(2011, 10, 28)),
        ("20111028", datetime.datetime(2011, 10, 28)),
        ("20111028235959", datetime.datetime(2011, 10, 28, 23, 59, 59)),
        ("2011-10-28T23:59:59+00:00", datetime.datetime(2011, 10, 28, 23, 59, 59, tzinfo=datetime.UTC)),
    ],
)
def test_parse_date_iso_forms(text: str, expected: datetime.datetime) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "5/23/2008,23:59",
        "garbage",
        "20251399    093010",
        "20250115    996010",
        "2025011x    093010",
        "YYYYMMDD",
        "20250230",
        "\x00\x01",
        "é" * 18,
    ],
)
def test_parse_date_garbage_is_none(text: str) -> None:
    assert parse_date(text) is None


# ---------------------------------------------------------------------------------------------
# summary_requested


def test_summary_requested_positions() -> None:
    assert summary_requested(" " * 10) is None
    assert summary_requested("") is None
    assert summary_requested("Y         ") is Summary.HOLD_ITEMS
    assert summary_requested("  Y       ") is Summary.CHARGED_ITEMS
    assert summary_requested("     Y    ") is Summary.UNAVAILABLE_HOLDS
    assert summary_requested("      Y   ") is Summary.FEE_ITEMS
    assert summary_requested("  y       ") is Summary.CHARGED_ITEMS  # lower case counts
    assert summary_requested("N Y       ") is Summary.CHARGED_ITEMS  # N is not a request
    assert summary_requested(" YY       ") is Summary.OVERDUE_ITEMS  # the first Y wins
    assert summary_requested("       YYY") is None  # positions 7-9 are undefined


def test_summary_fields() -> None:
    assert [SUMMARY_FIELD[s] for s in sorted(SUMMARY_FIELD)] == ["AS", "AT", "AU", "AV", "BU", "CD"]


# ---------------------------------------------------------------------------------------------
# patron_status_string


def test_patron_status_string_is_y_or_space() -> None:
    assert patron_status_string(set()) == " " * 14
    assert patron_status_string(set(PatronStatus)) == "Y" * 14
    unknown = {
        PatronStatus.CHARGE_DENIED,
        PatronStatus.RENEWAL_DENIED,
        PatronStatus.RECALL_DENIED,
        PatronStatus.HOLD_DENIED,
    }
    assert patron_status_string(unknown) == "YYYY" + " " * 10
    assert patron_status_string(frozenset({PatronStatus.CARD_LOST, PatronStatus.TOO_MANY_BILLED})) == ("    Y        Y")
    for status in PatronStatus:
        text = patron_status_string({status})
        assert len(text) == 14 and "N" not in text and text.index("Y") == status


def test_patron_status_string_in_a_64() -> None:
    message = make("64", patron_status=patron_status_string({PatronStatus.EXCESSIVE_FINES}), AO="M", AA="1", AE="")
    assert message.fixed["patron_status"] == "          Y   "


# ---------------------------------------------------------------------------------------------
# BX, flags, enumerations


def test_supported_messages() -> None:
    assert supported_messages({spec.code for spec in REQUESTS}) == "Y" * 16
    assert supported_messages(set()) == "N" * 16
    assert supported_messages({"23", "65"}) == "Y" + "N" * 14 + "Y"
    assert supported_messages({"99", "97"}) == "NNNNYYNNNNNNNNNN"
    assert len(BX_ORDER) == 16 and set(BX_ORDER) == {spec.code for spec in REQUESTS}


def test_flag_and_enums() -> None:
    assert flag("Y") and flag("y") and flag("1")
    assert not flag("N") and not flag("") and not flag(" ") and not flag("U")
    assert CirculationStatus.AVAILABLE == "03"
    assert len({c.value for c in CirculationStatus}) == 13
