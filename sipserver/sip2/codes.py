"""SIP2 code tables as named constants, and SIP date formatting and tolerant parsing.

Handlers write ``CirculationStatus.AVAILABLE`` rather than ``"03"`` so that a reader can see what
is meant; every value here is the exact wire text.
"""

from __future__ import annotations

import datetime
import enum


class PatronStatus(enum.IntEnum):
    """Positions in the 14-character patron status. ``Y`` at a position means the privilege is DENIED."""

    CHARGE_DENIED = 0
    RENEWAL_DENIED = 1
    RECALL_DENIED = 2
    HOLD_DENIED = 3
    CARD_LOST = 4
    TOO_MANY_CHARGED = 5
    TOO_MANY_OVERDUE = 6
    TOO_MANY_RENEWALS = 7
    TOO_MANY_CLAIMS = 8
    TOO_MANY_LOST = 9
    EXCESSIVE_FINES = 10
    EXCESSIVE_FEES = 11
    RECALL_OVERDUE = 12
    TOO_MANY_BILLED = 13


def patron_status_string(denied: set[PatronStatus] | frozenset[PatronStatus]) -> str:
    """The 14 characters: ``Y`` where denied, a space elsewhere (never ``N``)."""
    return "".join("Y" if pos in denied else " " for pos in PatronStatus)


class Summary(enum.IntEnum):
    """Positions in 63's 10-character summary; the list that 64 should carry."""

    HOLD_ITEMS = 0
    OVERDUE_ITEMS = 1
    CHARGED_ITEMS = 2
    FINE_ITEMS = 3
    RECALL_ITEMS = 4
    UNAVAILABLE_HOLDS = 5
    FEE_ITEMS = 6  # Gossip extension: fee details as FA-FE


#: The 64 field that carries each summary list.
SUMMARY_FIELD = {
    Summary.HOLD_ITEMS: "AS",
    Summary.OVERDUE_ITEMS: "AT",
    Summary.CHARGED_ITEMS: "AU",
    Summary.FINE_ITEMS: "AV",
    Summary.RECALL_ITEMS: "BU",
    Summary.UNAVAILABLE_HOLDS: "CD",
}


def summary_requested(summary: str) -> Summary | None:
    """The first position marked (any non-blank character counts, as clients send ``Y`` or ``y``)."""
    for index, char in enumerate(summary[:7]):
        if char not in " N0n":
            return Summary(index)
    return None


class CirculationStatus(enum.StrEnum):
    OTHER = "01"
    ON_ORDER = "02"
    AVAILABLE = "03"
    CHARGED = "04"
    CHARGED_NOT_RECALLABLE = "05"
    IN_PROCESS = "06"
    RECALLED = "07"
    WAITING_ON_HOLD_SHELF = "08"
    WAITING_TO_BE_RESHELVED = "09"
    IN_TRANSIT = "10"
    CLAIMED_RETURNED = "11"
    LOST = "12"
    MISSING = "13"


class SecurityMarker(enum.StrEnum):
    OTHER = "00"
    NONE = "01"
    TATTLE_TAPE = "02"
    WHISPER_TAPE = "03"


class FeeType(enum.StrEnum):
    OTHER = "01"
    ADMINISTRATIVE = "02"
    DAMAGE = "03"
    OVERDUE = "04"
    PROCESSING = "05"
    RENTAL = "06"
    REPLACEMENT = "07"
    COMPUTER_ACCESS = "08"
    HOLD_FEE = "09"


class PaymentType(enum.StrEnum):
    CASH = "00"
    VISA = "01"
    CREDIT_CARD = "02"


class MediaType(enum.StrEnum):
    OTHER = "000"
    BOOK = "001"
    MAGAZINE = "002"
    BOUND_JOURNAL = "003"
    AUDIO_TAPE = "004"
    VIDEO_TAPE = "005"
    CD = "006"
    DISKETTE = "007"
    BOOK_WITH_DISKETTE = "008"
    BOOK_WITH_CD = "009"
    BOOK_WITH_AUDIO_TAPE = "010"


class HoldMode(enum.StrEnum):
    ADD = "+"
    DELETE = "-"
    CHANGE = "*"


class HoldType(enum.StrEnum):
    OTHER = "1"
    ANY_COPY = "2"
    SPECIFIC_COPY = "3"
    ANY_COPY_AT_BRANCH = "4"


class AlertType(enum.StrEnum):
    """CV in 10 (3M extension)."""

    UNKNOWN = "00"
    HOLD_LOCAL = "01"
    HOLD_OTHER_BRANCH = "02"
    HOLD_ILL = "03"
    TRANSIT = "04"
    OTHER = "99"


class SCStatus(enum.StrEnum):
    OK = "0"
    OUT_OF_PAPER = "1"
    SHUTTING_DOWN = "2"


class Language(enum.StrEnum):
    UNKNOWN = "000"
    ENGLISH = "001"
    FRENCH = "002"
    GERMAN = "003"
    ITALIAN = "004"
    DUTCH = "005"
    SWEDISH = "006"
    FINNISH = "007"
    SPANISH = "008"
    DANISH = "009"
    PORTUGUESE = "010"
    CANADIAN_FRENCH = "011"
    NORWEGIAN = "012"
    HEBREW = "013"
    JAPANESE = "014"
    RUSSIAN = "015"
    ARABIC = "016"
    POLISH = "017"
    GREEK = "018"
    CHINESE = "019"
    KOREAN = "020"
    NORTH_AMERICAN_SPANISH = "021"
    TAMIL = "022"
    MALAY = "023"
    UNITED_KINGDOM = "024"
    ICELANDIC = "025"
    BELGIAN = "026"
    TAIWANESE = "027"


BLANK_DATE = " " * 18
UNSUPPORTED_DATE = "0" * 18


def format_date(when: datetime.datetime | datetime.date | None) -> str:
    """``YYYYMMDDZZZZHHMMSS``: four spaces for local (naive) time, ``   Z`` for UTC.

    An aware datetime is written in UTC; ``None`` gives 18 spaces.
    """
    if when is None:
        return BLANK_DATE
    last = _last_date
    if when is last[0] or when == last[0]:  # replies within one second carry the same date
        return last[1]
    text = _format_date(when)
    _remember_date(when, text)
    return text


_last_date: tuple[object, str] = (None, BLANK_DATE)


def _remember_date(when: datetime.datetime | datetime.date, text: str) -> None:
    global _last_date
    _last_date = (when, text)  # one tuple swap: safe from any thread


def _format_date(when: datetime.datetime | datetime.date) -> str:
    if not isinstance(when, datetime.datetime):
        when = datetime.datetime(when.year, when.month, when.day)
    if when.tzinfo is not None:
        when = when.astimezone(datetime.UTC)
        zone = "   Z"
    else:
        zone = "    "
    return "%04d%02d%02d%s%02d%02d%02d" % (
        when.year, when.month, when.day, zone, when.hour, when.minute, when.second,
    )  # fmt: skip


def parse_date(text: str) -> datetime.datetime | None:
    """Read a SIP date leniently; ``None`` for blanks, zeros or anything unreadable.

    Accepts the 18-character form with a blank or lettered zone (``Z`` gives an aware UTC time;
    other military zones are read as local, as most ACSs do), an ISO date or date-time, and a bare
    ``YYYYMMDD``.
    """
    text = text.strip()
    if not text or set(text) <= {"0"}:
        return None
    if len(text) >= 14 and text[:8].isdigit():
        digits = text[:8]
        zone = text[8:12].strip() if len(text) == 18 else ""
        clock = text[-6:]
        if clock.isdigit():
            try:
                value = datetime.datetime(
                    int(digits[:4]), int(digits[4:6]), int(digits[6:8]),
                    int(clock[:2]), int(clock[2:4]), int(clock[4:6]),
                )  # fmt: skip
            except ValueError:
                return None
            if zone == "Z":
                value = value.replace(tzinfo=datetime.UTC)
            return value
    if len(text) == 8 and text.isdigit():
        try:
            return datetime.datetime(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def flag(value: str) -> bool:
    """A Y/N fixed field or variable field read leniently: only ``Y``/``y``/``1`` mean yes."""
    return value[:1] in ("Y", "y", "1")
