"""How ``sipclient`` shows SIP2 messages: field by field with names and meanings, as JSON, and as
the exact bytes with their secrets masked.

Everything printed goes through here, so the masking rule lives in one place: the values of CO
(login password), AC (terminal password) and AD (patron PIN) become ``***`` in every form of output.
Names and meanings come from the protocol package's own tables (``sip2.messages``, ``sip2.fields``,
``sip2.codes``), so a message or a code is described once.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from sipserver.config.profiles import PATRON_REPLIES
from sipserver.sip2 import MESSAGES, Message
from sipserver.sip2.codes import (
    AlertType,
    CirculationStatus,
    FeeType,
    HoldMode,
    HoldType,
    Language,
    MediaType,
    PatronStatus,
    PaymentType,
    SCStatus,
    SecurityMarker,
    parse_date,
)
from sipserver.sip2.fields import SECRET_FIELDS, field_name
from sipserver.sip2.messages import BX_ORDER, Kind

MASK = "***"
_SECRET_IDS = tuple(fid.encode("ascii") for fid in SECRET_FIELDS)

#: Fixed fields and variable fields whose values are codes from a table in ``sip2.codes``.
_FIXED_TABLES: dict[str, type[enum.Enum]] = {
    "circulation_status": CirculationStatus,
    "security_marker": SecurityMarker,
    "fee_type": FeeType,
    "payment_type": PaymentType,
    "hold_mode": HoldMode,
    "language": Language,
    "status_code": SCStatus,
}
_FIELD_TABLES: dict[str, type[enum.Enum]] = {"CK": MediaType, "BT": FeeType, "BY": HoldType, "CV": AlertType}
#: Variable fields that carry Y/N.
_FLAG_FIELDS = frozenset({"BL", "CQ", "BO", "BI", "CI"})
#: Variable fields that carry an 18-character SIP date (AH is often free text; shown as is then).
_DATE_FIELDS = frozenset({"AH", "BW", "CJ", "CM", "PA"})
_YES_NO = {"Y": "yes", "N": "no", "U": "unknown", "1": "yes", "0": "no"}


def _code_name(table: type[enum.Enum], value: str) -> str:
    for member in table:
        if member.value == value:
            return member.name.lower().replace("_", " ")
    return ""


def _date_meaning(value: str) -> str:
    if not value.strip():
        return "blank"
    when = parse_date(value)
    if when is None:
        return ""
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return text + " UTC" if when.tzinfo is not None else text


def patron_status_meaning(value: str) -> str:
    """The names of the positions marked ``Y`` (a ``Y`` means the privilege is denied)."""
    denied = [pos.name.lower().replace("_", " ") for pos in PatronStatus if value[pos : pos + 1] in ("Y", "y")]
    return ", ".join(denied) if denied else "nothing denied"


def supported_meaning(value: str) -> str:
    """BX as the names of the requests marked ``Y``."""
    names = [MESSAGES[code].name for code, char in zip(BX_ORDER, value, strict=False) if char in ("Y", "y")]
    return ", ".join(names) if names else "none"


def fixed_meaning(name: str, kind: Kind, value: str) -> str:
    """What a fixed value means, or "" when the value speaks for itself."""
    if name == "patron_status":
        return patron_status_meaning(value)
    if kind in (Kind.FLAG, Kind.OK):
        return _YES_NO.get(value, "")
    if kind is Kind.DATE:
        return _date_meaning(value)
    if name == "timeout_period" and value.isdigit():
        return {"000": "ACS off-line", "999": "unknown"}.get(value, f"{int(value) / 10:.1f} s")
    if name == "retries_allowed" and value == "999":
        return "unknown"
    table = _FIXED_TABLES.get(name)
    return _code_name(table, value) if table else ""


def field_meaning(field_id: str, value: str) -> str:
    if field_id == "BX":
        return supported_meaning(value)
    if field_id in _FLAG_FIELDS:
        return _YES_NO.get(value[:1], "")
    if field_id in _DATE_FIELDS and len(value) == 18:
        return _date_meaning(value)
    table = _FIELD_TABLES.get(field_id)
    return _code_name(table, value) if table else ""


def _shown(value: str) -> str:
    """Quote a value whose edges are blank, so that spaces are visible."""
    return f'"{value}"' if not value or value != value.strip() else value


def format_message(message: Message) -> list[str]:
    """``code name``, then ``  name: value (meaning)`` per fixed field, then ``  XX (name): value``
    per variable field in the order received (repeats included), then AY and AZ."""
    spec = MESSAGES.get(message.code)
    lines = [f"{message.code} {message.name}"]
    kinds = {f.name: f.kind for f in spec.fixed} if spec else {}
    for name, value in message.fixed.items():
        meaning = fixed_meaning(name, kinds.get(name, Kind.TEXT), value)
        lines.append(f"  {name}: {_shown(value)}" + (f" ({meaning})" if meaning else ""))
    for field_id, value in message.items():
        if field_id in SECRET_FIELDS and value:
            value = MASK
        meaning = field_meaning(field_id, value)
        name = "home library" if field_id == "AQ" and message.code in PATRON_REPLIES else field_name(field_id)
        lines.append(f"  {field_id} ({name}): {value}" + (f" ({meaning})" if meaning else ""))
    if message.sequence is not None:
        lines.append(f"  AY (sequence number): {message.sequence}")
    if message.checksum is not None:
        lines.append(f"  AZ (checksum): {message.checksum}")
    return lines


def message_json(message: Message) -> dict[str, Any]:
    """The message as plain data: fixed fields by name, variable fields by id (lists, repeats kept)."""
    return {
        "code": message.code,
        "name": message.name,
        "fixed": dict(message.fixed),
        "fields": {
            fid: [MASK if fid in SECRET_FIELDS and value else value for value in values]
            for fid, values in message.fields.items()
        },
        "sequence": message.sequence,
        "checksum": message.checksum,
    }


def mask_frame(data: bytes, delimiter: bytes = b"|") -> bytes:
    """``data`` with the values of CO, AC and AD replaced by ``***`` (framing and trailer kept).

    The variable part starts after the message's fixed fields; every field after that starts the
    text or follows a delimiter, so splitting there finds each field id without parsing values.
    """
    spec = MESSAGES.get(data[:2].decode("ascii", "replace"))
    start = 2 + spec.fixed_width if spec is not None else 2
    head, pieces = data[:start], data[start:].split(delimiter)
    for index, piece in enumerate(pieces):
        body = piece.rstrip(b"\r\n")
        if body[:2] in _SECRET_IDS and len(body) > 2:  # an empty value (``AC|``) is no secret: shown as sent
            pieces[index] = piece[:2] + MASK.encode() + piece[len(body) :]
    return head + delimiter.join(pieces)


def show_bytes(data: bytes) -> str:
    """The exact bytes, masked, as a Python bytes literal (control characters visible)."""
    return repr(mask_frame(data))


def negative(reply: Message) -> bool:
    """The reply says no: not ok, not accepted, an unknown patron, or an off-line ACS."""
    fixed = reply.fixed
    return (
        fixed.get("ok") == "0"
        or fixed.get("item_properties_ok", "1") != "1"
        or "N" in (fixed.get("payment_accepted"), fixed.get("end_session"), fixed.get("online_status"))
        or reply.get("BL") == "N"
    )


def show(as_json: bool, reply: Message) -> int:
    """Print a reply (text or JSON); the exit code: 1 when the reply says no, else 0."""
    if as_json:
        print(json.dumps(message_json(reply), ensure_ascii=False))
    else:
        print("\n".join(format_message(reply)))
    return 1 if negative(reply) else 0
