"""The one declarative table of every SIP2 2.00 message.

Decoding, encoding, the response constructors, the BX supported-messages string and the client all
read this table, so a message is described once. Fixed fields are listed in wire order with their
width; variable fields in the order this server *sends* them: AO first (AB first in 18 and 20, which
have no AO), then the spec's order, extensions before AF and AG, AF and AG last.
"""

from __future__ import annotations

import enum

import attrs


class Kind(enum.Enum):
    """How a fixed field's Python value is written; the decoder keeps every fixed value as text."""

    TEXT = "text"  # a string of exactly the width
    FLAG = "flag"  # True/False -> Y/N
    OK = "ok"  # True/False -> 1/0
    DATE = "date"  # datetime -> YYYYMMDDZZZZHHMMSS
    NUMBER = "number"  # int -> zero-padded to the width


@attrs.frozen
class FixedField:
    name: str
    width: int
    kind: Kind = Kind.TEXT


@attrs.frozen
class VariableField:
    id: str
    required: bool = False
    repeats: bool = False


@attrs.frozen
class MessageSpec:
    code: str
    name: str
    request: bool
    fixed: tuple[FixedField, ...]
    fields: tuple[VariableField, ...]
    answers: tuple[str, ...] = ()  # for a response: the request codes it answers
    fixed_width: int = attrs.field(init=False)
    field_ids: tuple[str, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "fixed_width", sum(f.width for f in self.fixed))
        object.__setattr__(self, "field_ids", tuple(f.id for f in self.fields))


def _f(name: str, width: int, kind: Kind = Kind.TEXT) -> FixedField:
    return FixedField(name, width, kind)


def _v(spec: str) -> tuple[VariableField, ...]:
    """Variable fields from a compact string: ``AO! AA! AU* AF*`` (! required, * repeats)."""
    out = []
    for token in spec.split():
        out.append(VariableField(token[:2], required="!" in token, repeats="*" in token))
    return tuple(out)


DATE = _f("transaction_date", 18, Kind.DATE)
LANGUAGE = _f("language", 3)
PATRON_STATUS = _f("patron_status", 14)
SCREEN = "AF* AG*"

_SPECS = (
    # Requests (SC -> ACS).
    MessageSpec("93", "login", True, (_f("uid_algorithm", 1), _f("pwd_algorithm", 1)), _v("CN! CO! CP")),
    MessageSpec(
        "99",
        "sc_status",
        True,
        (_f("status_code", 1), _f("max_print_width", 3), _f("protocol_version", 4)),
        (),
    ),
    MessageSpec("97", "request_acs_resend", True, (), ()),
    MessageSpec("23", "patron_status", True, (LANGUAGE, DATE), _v("AO! AA! AC! AD!")),
    MessageSpec(
        "63",
        "patron_information",
        True,
        (LANGUAGE, DATE, _f("summary", 10)),
        _v("AO! AA! AC AD BP BQ"),
    ),
    MessageSpec(
        "11",
        "checkout",
        True,
        (_f("sc_renewal_policy", 1, Kind.FLAG), _f("no_block", 1, Kind.FLAG), DATE, _f("nb_due_date", 18, Kind.DATE)),
        _v("AO! AA! AB! AC! CH AD BO BI"),
    ),
    MessageSpec(
        "09",
        "checkin",
        True,
        (_f("no_block", 1, Kind.FLAG), DATE, _f("return_date", 18, Kind.DATE)),
        _v("AP! AO! AB! AC! CH BI"),
    ),
    MessageSpec("01", "block_patron", True, (_f("card_retained", 1, Kind.FLAG), DATE), _v("AO! AL! AA! AC!")),
    MessageSpec("35", "end_patron_session", True, (DATE,), _v("AO! AA! AC AD")),
    MessageSpec(
        "37",
        "fee_paid",
        True,
        (DATE, _f("fee_type", 2), _f("payment_type", 2), _f("currency_type", 3)),
        _v("BV! AO! AA! AC AD CG BK"),
    ),
    MessageSpec("17", "item_information", True, (DATE,), _v("AO! AB! AC")),
    MessageSpec("19", "item_status_update", True, (DATE,), _v("AO! AB! AC CH!")),
    MessageSpec("25", "patron_enable", True, (DATE,), _v("AO! AA! AC AD")),
    MessageSpec("15", "hold", True, (_f("hold_mode", 1), DATE), _v("BW BS BY AO! AA! AD AB AJ AC BO")),
    MessageSpec(
        "29",
        "renew",
        True,
        (
            _f("third_party_allowed", 1, Kind.FLAG),
            _f("no_block", 1, Kind.FLAG),
            DATE,
            _f("nb_due_date", 18, Kind.DATE),
        ),
        _v("AO! AA! AD AB AJ AC CH BO"),
    ),
    MessageSpec("65", "renew_all", True, (DATE,), _v("AO! AA! AD AC BO")),
    # Responses (ACS -> SC).
    MessageSpec("94", "login_response", False, (_f("ok", 1, Kind.OK),), (), ("93",)),
    MessageSpec(
        "98",
        "acs_status",
        False,
        (
            _f("online_status", 1, Kind.FLAG),
            _f("checkin_ok", 1, Kind.FLAG),
            _f("checkout_ok", 1, Kind.FLAG),
            _f("acs_renewal_policy", 1, Kind.FLAG),
            _f("status_update_ok", 1, Kind.FLAG),
            _f("offline_ok", 1, Kind.FLAG),
            _f("timeout_period", 3, Kind.NUMBER),
            _f("retries_allowed", 3, Kind.NUMBER),
            _f("date_time_sync", 18, Kind.DATE),
            _f("protocol_version", 4),
        ),
        _v("AO! AM BX! AN " + SCREEN),
        ("99",),
    ),
    MessageSpec("96", "request_sc_resend", False, (), (), ()),
    MessageSpec(
        "24",
        "patron_status_response",
        False,
        (PATRON_STATUS, LANGUAGE, DATE),
        _v("AO! AA! AE! BL CQ BH BV " + SCREEN),
        ("23", "01"),
    ),
    MessageSpec(
        "64",
        "patron_information_response",
        False,
        (
            PATRON_STATUS,
            LANGUAGE,
            DATE,
            _f("hold_items_count", 4, Kind.NUMBER),
            _f("overdue_items_count", 4, Kind.NUMBER),
            _f("charged_items_count", 4, Kind.NUMBER),
            _f("fine_items_count", 4, Kind.NUMBER),
            _f("recall_items_count", 4, Kind.NUMBER),
            _f("unavailable_holds_count", 4, Kind.NUMBER),
        ),
        _v(
            "AO! AA! AE! BZ CA CB BL CQ BH BV CC AS* AT* AU* AV* BU* CD* FA* FB* FC* FD* FE* "
            "BD BE BF AQ PA PB PC ZY XI " + SCREEN
        ),
        ("63",),
    ),
    MessageSpec(
        "12",
        "checkout_response",
        False,
        (
            _f("ok", 1, Kind.OK),
            _f("renewal_ok", 1, Kind.FLAG),
            _f("magnetic_media", 1, Kind.FLAG),
            _f("desensitize", 1, Kind.FLAG),
            DATE,
        ),
        _v("AO! AA! AB! AJ! AH! BT CI BH BV CK CH BK " + SCREEN),
        ("11",),
    ),
    MessageSpec(
        "10",
        "checkin_response",
        False,
        (
            _f("ok", 1, Kind.OK),
            _f("resensitize", 1, Kind.FLAG),
            _f("magnetic_media", 1, Kind.FLAG),
            _f("alert", 1, Kind.FLAG),
            DATE,
        ),
        _v("AO! AB! AQ! AJ CL AA CK CH CR CS CT CV CY DA CM " + SCREEN),
        ("09",),
    ),
    MessageSpec(
        "36",
        "end_session_response",
        False,
        (_f("end_session", 1, Kind.FLAG), DATE),
        _v("AO! AA! " + SCREEN),
        ("35",),
    ),
    MessageSpec(
        "38",
        "fee_paid_response",
        False,
        (_f("payment_accepted", 1, Kind.FLAG), DATE),
        _v("AO! AA! BK " + SCREEN),
        ("37",),
    ),
    MessageSpec(
        "18",
        "item_information_response",
        False,
        (_f("circulation_status", 2), _f("security_marker", 2), _f("fee_type", 2), DATE),
        _v("AB! AJ! CF AH CJ CM BG BH BV CK AQ AP CH CS CT " + SCREEN),
        ("17",),
    ),
    MessageSpec(
        "20",
        "item_status_update_response",
        False,
        (_f("item_properties_ok", 1, Kind.OK), DATE),
        _v("AB! AJ CH " + SCREEN),
        ("19",),
    ),
    MessageSpec(
        "26",
        "patron_enable_response",
        False,
        (PATRON_STATUS, LANGUAGE, DATE),
        _v("AO! AA! AE! BL CQ " + SCREEN),
        ("25",),
    ),
    MessageSpec(
        "16",
        "hold_response",
        False,
        (_f("ok", 1, Kind.OK), _f("available", 1, Kind.FLAG), DATE),
        _v("AO! AA! BW BR BS AB AJ " + SCREEN),
        ("15",),
    ),
    MessageSpec(
        "30",
        "renew_response",
        False,
        (
            _f("ok", 1, Kind.OK),
            _f("renewal_ok", 1, Kind.FLAG),
            _f("magnetic_media", 1, Kind.FLAG),
            _f("desensitize", 1, Kind.FLAG),
            DATE,
        ),
        _v("AO! AA! AB! AJ! AH! BT CI BH BV CK CH BK " + SCREEN),
        ("29",),
    ),
    MessageSpec(
        "66",
        "renew_all_response",
        False,
        (
            _f("ok", 1, Kind.OK),
            _f("renewed_count", 4, Kind.NUMBER),
            _f("unrenewed_count", 4, Kind.NUMBER),
            DATE,
        ),
        _v("AO! BM* BN* " + SCREEN),
        ("65",),
    ),
)

#: Every message by its two-digit code.
MESSAGES: dict[str, MessageSpec] = {spec.code: spec for spec in _SPECS}
#: Every message by its name (``"checkout"``, ``"checkout_response"``...).
BY_NAME: dict[str, MessageSpec] = {spec.name: spec for spec in _SPECS}
REQUESTS = tuple(s for s in _SPECS if s.request)
RESPONSES = tuple(s for s in _SPECS if not s.request)

#: The request pairs in BX order (98's supported-messages field, 16 positions).
BX_ORDER: tuple[str, ...] = (
    "23", "11", "09", "01", "99", "97", "93", "63", "35", "37", "17", "19", "25", "15", "29", "65",
)  # fmt: skip


def supported_messages(codes: set[str] | frozenset[str]) -> str:
    """The 16-character BX value: ``Y`` for each request code in ``codes``."""
    return "".join("Y" if code in codes else "N" for code in BX_ORDER)
