"""Backend facts -> SIP2 codes: patron status, circulation status, media type, fee type, money."""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation

from sipserver.ils.interface import CirculationStatus as ItemState
from sipserver.ils.interface import Item, PatronStatusFlags
from sipserver.sip2.codes import CirculationStatus, FeeType, MediaType, PatronStatus, SecurityMarker

UNKNOWN_PATRON_STATUS = "YYYY" + " " * 10  # what Evergreen and Koha send for a patron they do not know

_FLAG_POSITIONS = (
    ("charge_denied", PatronStatus.CHARGE_DENIED),
    ("renewal_denied", PatronStatus.RENEWAL_DENIED),
    ("recall_denied", PatronStatus.RECALL_DENIED),
    ("hold_denied", PatronStatus.HOLD_DENIED),
    ("card_lost", PatronStatus.CARD_LOST),
    ("too_many_charged", PatronStatus.TOO_MANY_CHARGED),
    ("too_many_overdue", PatronStatus.TOO_MANY_OVERDUE),
    ("too_many_renewals", PatronStatus.TOO_MANY_RENEWALS),
    ("too_many_claims", PatronStatus.TOO_MANY_CLAIMS),
    ("too_many_lost", PatronStatus.TOO_MANY_LOST),
    ("excessive_fines", PatronStatus.EXCESSIVE_FINES),
    ("excessive_fees", PatronStatus.EXCESSIVE_FEES),
    ("recall_overdue", PatronStatus.RECALL_OVERDUE),
    ("too_many_billed", PatronStatus.TOO_MANY_BILLED),
)


@functools.lru_cache(maxsize=512)
def patron_status(flags: PatronStatusFlags) -> str:
    """The 14-character status: ``Y`` where the privilege is denied, a space elsewhere.

    Memoized: the flags are a frozen value and a library has few distinct combinations."""
    return "".join("Y" if getattr(flags, name) else " " for name, _ in _FLAG_POSITIONS)


CIRCULATION_CODE = {
    ItemState.OTHER: CirculationStatus.OTHER,
    ItemState.ON_ORDER: CirculationStatus.ON_ORDER,
    ItemState.AVAILABLE: CirculationStatus.AVAILABLE,
    ItemState.CHARGED: CirculationStatus.CHARGED,
    ItemState.IN_PROCESS: CirculationStatus.IN_PROCESS,
    ItemState.RECALLED: CirculationStatus.RECALLED,
    ItemState.ON_HOLD_SHELF: CirculationStatus.WAITING_ON_HOLD_SHELF,
    ItemState.RESHELVING: CirculationStatus.WAITING_TO_BE_RESHELVED,
    ItemState.IN_TRANSIT: CirculationStatus.IN_TRANSIT,
    ItemState.CLAIMED_RETURNED: CirculationStatus.CLAIMED_RETURNED,
    ItemState.LOST: CirculationStatus.LOST,
    ItemState.MISSING: CirculationStatus.MISSING,
}

MEDIA_CODE = {
    "book": MediaType.BOOK,
    "magazine": MediaType.MAGAZINE,
    "journal": MediaType.BOUND_JOURNAL,
    "audio": MediaType.AUDIO_TAPE,
    "audiobook": MediaType.AUDIO_TAPE,
    "video": MediaType.VIDEO_TAPE,
    "dvd": MediaType.VIDEO_TAPE,
    "cd": MediaType.CD,
    "cd-rom": MediaType.CD,
    "diskette": MediaType.DISKETTE,
    "book_with_cd": MediaType.BOOK_WITH_CD,
    "book_with_diskette": MediaType.BOOK_WITH_DISKETTE,
    "book_with_audio": MediaType.BOOK_WITH_AUDIO_TAPE,
}

#: Media a self-check must handle as magnetic (no desensitising pad, no strong fields).
MAGNETIC_MEDIA = frozenset({"audio", "audiobook", "video", "dvd", "cd", "cd-rom", "diskette"})

FEE_CODE = {
    "other": FeeType.OTHER,
    "administrative": FeeType.ADMINISTRATIVE,
    "damage": FeeType.DAMAGE,
    "overdue": FeeType.OVERDUE,
    "processing": FeeType.PROCESSING,
    "rental": FeeType.RENTAL,
    "replacement": FeeType.REPLACEMENT,
    "computer_access": FeeType.COMPUTER_ACCESS,
    "hold": FeeType.HOLD_FEE,
    "hold_fee": FeeType.HOLD_FEE,
}
FEE_NAME = {code.value: name for name, code in FEE_CODE.items()}

SECURITY_CODE = {
    "other": SecurityMarker.OTHER,
    "none": SecurityMarker.NONE,
    "tattle_tape": SecurityMarker.TATTLE_TAPE,
    "whisper_tape": SecurityMarker.WHISPER_TAPE,
}

PAYMENT_NAME = {"00": "cash", "01": "visa", "02": "credit_card"}


def media_code(item: Item | None) -> str:
    if item is None:
        return MediaType.OTHER.value
    return MEDIA_CODE.get(item.media_type.lower(), MediaType.OTHER).value


def magnetic(item: Item | None) -> str:
    """12/10's magnetic media flag: U when the item is unknown."""
    if item is None:
        return "U"
    return "Y" if item.media_type.lower() in MAGNETIC_MEDIA else "N"


def fee_code(name: str) -> str:
    return FEE_CODE.get(name.lower(), FeeType.OTHER).value if name else FeeType.OTHER.value


def money(amount: str | None) -> str:
    """A money string as SIP clients expect it (``2.50``); empty for nothing."""
    if not amount:
        return ""
    try:
        return f"{Decimal(amount):.2f}"
    except InvalidOperation:
        return amount


def nonzero(amount: str | None) -> bool:
    if not amount or amount == "0.00":  # what the backends send for nothing owed: no Decimal
        return False
    try:
        return bool(amount) and Decimal(amount) != 0
    except InvalidOperation:
        return False
