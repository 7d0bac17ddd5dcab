"""Decode SIP2 frames leniently and encode them exactly.

Lenient in: real self-check clients send CRLF (so a frame starts with LF), unpadded or unmasked
checksums, sequence numbers past 9, fields in any order, stray and empty pieces, blank fixed values
and "required" fields left out; each is read here rather than refused (reference, sections 6 and 7).
Exact out: fixed widths checked, the table's field order, repeats adjacent, every variable field
ended by the delimiter, AY and AZ last, the checksum over the bytes actually sent.
"""

from __future__ import annotations

import datetime
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .checksum import checksum as _checksum
from .checksum import verify as _verify
from .codes import format_date
from .errors import ChecksumError, EncodeError, MalformedFrame, UnknownCommand
from .fields import FIELDS, SECRET_FIELDS
from .messages import BY_NAME, MESSAGES, Kind, MessageSpec
from .text import encode_text, transliterate

_LEADING_JUNK = b"\n\r\0 \t"
_HEX_DIGITS = b"0123456789ABCDEFabcdef"
_MAX_VALUE = 255
_TRAILER_IDS = ("AY", "AZ")


class Message:
    """One SIP2 message: its code, fixed fields by name, variable fields by id.

    ``fields`` maps an id to the list of its values in the order received, so a repeated field
    (AF, AU, ...) keeps every copy. ``sequence`` is AY exactly as received (``"10"`` included) and
    ``checksum`` the AZ digits, both None when the frame had no trailer. A plain class with slots
    rather than attrs: it is built and read on every request, and this is the hot path.
    """

    __slots__ = ("checksum", "code", "fields", "fixed", "sequence")

    def __init__(
        self,
        code: str,
        fixed: dict[str, str] | None = None,
        fields: dict[str, list[str]] | None = None,
        sequence: str | None = None,
        checksum: str | None = None,
    ) -> None:
        self.code = code
        self.fixed = fixed if fixed is not None else {}
        self.fields = fields if fields is not None else {}
        self.sequence = sequence
        self.checksum = checksum

    @property
    def spec(self) -> MessageSpec:
        return MESSAGES[self.code]

    @property
    def name(self) -> str:
        spec = MESSAGES.get(self.code)
        return spec.name if spec else f"unknown_{self.code}"

    def get(self, field_id: str, default: str = "") -> str:
        """The first value of a field, or ``default`` when it is absent (missing means empty)."""
        values = self.fields.get(field_id)
        return values[0] if values else default

    def getall(self, field_id: str) -> list[str]:
        return list(self.fields.get(field_id, ()))

    def __contains__(self, field_id: object) -> bool:
        return field_id in self.fields

    def add(self, field_id: str, value: str) -> None:
        self.fields.setdefault(field_id, []).append(value)

    def items(self) -> Iterator[tuple[str, str]]:
        """Every (id, value) pair, repeats included."""
        for field_id, values in self.fields.items():
            for value in values:
                yield field_id, value

    @property
    def unknown_ids(self) -> tuple[str, ...]:
        """Ids received that neither SIP2 2.00 nor a known extension defines (kept, and marked here)."""
        return tuple(fid for fid in self.fields if fid not in FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.code, self.fixed, self.fields, self.sequence) == (
            other.code,
            other.fixed,
            other.fields,
            other.sequence,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Message({self.code} {self.name}, {self.fixed!r}, {redacted_fields(self)!r}, AY={self.sequence})"


def redacted_fields(message: Message) -> dict[str, list[str]]:
    """The fields with terminal and patron passwords masked, for logs and errors."""
    return {
        fid: (["***"] * len(values) if fid in SECRET_FIELDS else list(values)) for fid, values in message.fields.items()
    }


# ---------------------------------------------------------------------------------------------
# Decoding


def _fixed_reader(spec: MessageSpec) -> tuple[tuple[str, ...], Callable[[str], Any] | None]:
    """The fixed fields' names and one C-level getter that slices them all out of the text."""
    slices, pos = [], 2
    for field in spec.fixed:
        slices.append(slice(pos, pos + field.width))
        pos += field.width
    names = tuple(f.name for f in spec.fixed)
    if not slices:
        return names, None
    getter = operator.itemgetter(*slices)
    if len(slices) == 1:
        return names, lambda text: (getter(text),)
    return names, getter


_FIXED_READERS = {code: _fixed_reader(spec) for code, spec in MESSAGES.items()}
# Messages whose fixed part starts with a date: a letter where the date should begin means the
# fixed part was left out, even when the first field is too long to put a delimiter inside it.
_DATE_FIRST = frozenset(code for code, spec in MESSAGES.items() if spec.fixed and spec.fixed[0].kind is Kind.DATE)


def split_trailer(data: bytes) -> tuple[bytes, str | None, str | None]:
    """Split off and verify an ``AY<n>AZ<xxxx>`` trailer: (body, sequence, checksum digits).

    AZ is recognised when 3 to 5 hex digits end the frame; AY is the digits between the last AY
    and AZ. Raises ChecksumError when the trailer does not verify, or when AY is present but the
    AZ digits are not hex.
    """
    size = len(data)
    az = data.rfind(b"AZ", max(0, size - 7))
    if az < 0:
        return data, None, None
    digits = data[az + 2 :]
    if not 3 <= len(digits) <= 5 or not digits.isalnum() or digits.strip(_HEX_DIGITS):
        ay = data.rfind(b"AY", 0, az)
        # A tail with punctuation (``AY1AZ|``) ends a field whose value spells AY/AZ, not a trailer.
        if ay >= 0 and data[ay + 2 : az].isdigit() and (not digits or digits.strip().isalnum()):
            raise ChecksumError("malformed AZ checksum")
        return data, None, None
    if not _verify(data[: az + 2], digits):
        raise ChecksumError("checksum does not verify")
    ay = data.rfind(b"AY", 0, az)
    if ay >= 0 and az - ay > 2 and data[ay + 2 : az].isdigit():
        return data[:ay], data[ay + 2 : az].decode("ascii"), digits.decode("ascii")
    return data[:az], None, digits.decode("ascii")


def normalize_frame(frame: bytes) -> bytes:
    """The bytes of ``frame`` that :func:`decode` reads: a leading LF, CR, NUL or blank and the
    terminator taken off. Two frames that normalise alike are the same request (a retransmission)."""
    return frame.lstrip(_LEADING_JUNK).rstrip(b"\r\n")


def decode(frame: bytes, encoding: str = "utf-8", delimiter: str = "|") -> Message:
    """Read one frame (with or without its terminator) into a :class:`Message`.

    Raises only :class:`ChecksumError` (answer 96), :class:`UnknownCommand` (no answer) and
    :class:`MalformedFrame`, whatever the bytes.
    """
    data = normalize_frame(frame)
    if not data:
        raise MalformedFrame("empty frame")
    if b"\0" in data:
        raise MalformedFrame("NUL byte inside the frame")
    data, sequence, digits = split_trailer(data)
    code_bytes = data[:2]
    if len(code_bytes) < 2 or not code_bytes.isdigit():
        raise MalformedFrame("frame does not start with a two-digit command code")
    code = code_bytes.decode("ascii")
    spec = MESSAGES.get(code)
    if spec is None:
        raise UnknownCommand(code)
    text = data.decode(encoding, "replace")

    start = 2 + spec.fixed_width
    names, reader = _FIXED_READERS[code]
    if reader is None:
        fixed: dict[str, str] = {}
    elif (delimiter in text[2:start] or code in _DATE_FIRST) and text[2:4].isalpha() and text[2:4].isupper():
        # The fixed part was left out altogether (65 without its date, as tzeumer and php-sip2 send).
        fixed = dict.fromkeys(names, "")
        start = 2
    else:
        fixed = dict(zip(names, reader(text), strict=True))

    fields: dict[str, list[str]] = {}
    if len(text) > start:
        for piece in text[start:].split(delimiter):
            if len(piece) < 2 or piece.isspace():
                continue  # stray or empty pieces, such as the `|` jsip2 puts after 99's fixed part
            fid = piece[:2]
            values = fields.get(fid)
            if values is None:
                fields[fid] = [piece[2:]]
            else:
                values.append(piece[2:])
    return Message(code, fixed, fields, sequence, digits)


# ---------------------------------------------------------------------------------------------
# Encoding

_CLEAN_TABLES: dict[str, dict[int, None]] = {}


def _clean_table(delimiter: str) -> dict[int, None]:
    table = _CLEAN_TABLES.get(delimiter)
    if table is None:
        table = _CLEAN_TABLES[delimiter] = {ord(c): None for c in (delimiter, "\r", "\n", "\0")}
    return table


class _Layout:
    """Per-message encoding plan, computed once from the table."""

    __slots__ = ("body", "fixed_names", "fixed_widths", "orders", "rank", "required", "screen")

    def __init__(self, spec: MessageSpec) -> None:
        self.fixed_names = tuple(f.name for f in spec.fixed)
        self.fixed_widths = [f.width for f in spec.fixed]
        self.body = tuple(fid for fid in spec.field_ids if fid not in ("AF", "AG"))
        self.screen = tuple(fid for fid in spec.field_ids if fid in ("AF", "AG"))
        self.required = frozenset(f.id for f in spec.fields if f.required)
        # Sort rank for every id this message may carry: the table's order, known extensions that
        # are not in the table after the body, AF and AG last. Unknown ids take the slow path.
        rank = {fid: index for index, fid in enumerate(self.body)}
        for index, fid in enumerate(FIELDS):
            rank.setdefault(fid, len(self.body) + index)
        for index, fid in enumerate(self.screen):
            rank[fid] = len(self.body) + len(FIELDS) + index
        for fid in _TRAILER_IDS:
            del rank[fid]
        self.rank = rank
        self.orders: dict[tuple[str, ...], list[str]] = {}

    def order(self, present: tuple[str, ...]) -> list[str]:
        """The ids to write, in wire order, for a message carrying ``present`` (memoized: handlers
        send the same few shapes again and again). KeyError for an id outside the table."""
        ids = self.orders.get(present)
        if ids is None:
            ids = sorted({*present} | (self.required - {*present}), key=self.rank.__getitem__)
            if len(self.orders) < 4096:
                self.orders[present] = ids
        return ids


_LAYOUTS = {code: _Layout(spec) for code, spec in MESSAGES.items()}


def encode(
    message: Message,
    *,
    encoding: str = "utf-8",
    delimiter: str = "|",
    terminator: bytes = b"\r",
    sequence: str | None = None,
    checksum: bool | None = None,
    leave_out: frozenset[str] = frozenset(),
) -> bytes:
    """The bytes to send for ``message``.

    ``sequence`` (the AY string, echoed verbatim) turns on error detection: ``AY<sequence>AZ<xxxx>``
    ends the frame. ``checksum=True`` without a sequence writes ``AZ<xxxx>`` alone, as 96 and 97
    carry it. Required fields that are missing go out empty (``AJ|``), except those named in
    ``leave_out`` (a client that has no PIN sends no AD rather than an empty one); values lose the
    delimiter, CR, LF and NUL and are cut to 255 characters.
    """
    layout = _LAYOUTS.get(message.code)
    if layout is None:
        raise EncodeError(f"unknown message code {message.code!r}")
    if encoding == "ascii":
        message = _transliterated(message)  # before cleaning: "ß" -> "ss" lengthens a value
    required = layout.required - leave_out if leave_out else layout.required
    text = _fast_text(message, layout, delimiter, required)
    if text is None:
        text = _careful_text(message, layout, delimiter, required)
    data = encode_text(text, encoding)
    if sequence is not None:
        data += b"AY" + sequence.encode("ascii") + b"AZ"
        data += _checksum(data).encode("ascii")
    elif checksum:
        data += b"AZ"
        data += _checksum(data).encode("ascii")
    return data + terminator


def _transliterated(message: Message) -> Message:
    """The message with every variable value spelt in ASCII, so the 255-character cut applies to
    what is sent (fixed fields are codes, dates and digits: ASCII already)."""
    fields = message.fields
    if all(type(v) is str and v.isascii() for values in fields.values() for v in values):
        return message
    spelt = {fid: [transliterate(str(v)) for v in values] for fid, values in fields.items()}
    return Message(message.code, message.fixed, spelt, message.sequence, message.checksum)


def _fast_text(message: Message, layout: _Layout, delimiter: str, required: frozenset[str]) -> str | None:
    """The common case in one pass: every fixed field given at its width, string values that need
    no cleaning, known ids. Returns None to hand anything unusual to :func:`_careful_text`.
    ``required``: the ids written empty when absent (the table's, less any left out)."""
    fixed = message.fixed
    fields = message.fields
    try:
        fixed_values = [fixed[name] for name in layout.fixed_names]
        ids = layout.order(tuple(fields))
        parts = [message.code, *fixed_values]
        count = 0
        for fid in ids:
            values = fields.get(fid)
            if not values:
                if fid in required:
                    parts.append(fid + delimiter)
                    count += 1
                continue
            for value in values:
                parts.append(fid + value + delimiter)
                count += 1
    except (KeyError, TypeError):
        return None
    if list(map(len, fixed_values)) != layout.fixed_widths:
        return None
    text = "".join(parts)
    if (
        text.count(delimiter) != count
        or "\r" in text
        or "\n" in text
        or "\0" in text
        or (len(text) > _MAX_VALUE and any(len(v) > _MAX_VALUE for vs in fields.values() for v in vs))
    ):
        return None
    return text


def _careful_text(message: Message, layout: _Layout, delimiter: str, required: frozenset[str]) -> str:
    spec = MESSAGES[message.code]
    parts = [message.code]
    fixed = message.fixed
    for field in spec.fixed:
        value = fixed.get(field.name)
        if value is None:
            value = _fixed_default(field.name, field.width, field.kind)
        elif len(value) != field.width:
            raise EncodeError(f"{spec.name}.{field.name} must be {field.width} characters, got {len(value)}: {value!r}")
        elif "\r" in value or "\n" in value or "\0" in value:
            raise EncodeError(f"{spec.name}.{field.name} contains CR, LF or NUL: {value!r}")
        parts.append(value)
    fields = message.fields
    table = _clean_table(delimiter)
    for fid in layout.body:
        values = fields.get(fid)
        if values:
            for value in values:
                parts.append(fid + _clean(value, delimiter, table) + delimiter)
        elif fid in required:
            parts.append(fid + delimiter)
    extensions = [fid for fid in fields if fid not in layout.body and fid not in layout.screen]
    extensions.sort(key=lambda fid: layout.rank.get(fid, len(layout.rank)))
    for fid in extensions:
        if fid in _TRAILER_IDS:
            continue  # extensions go after the body, before AF and AG; AY and AZ are never fields
        values = fields[fid]
        for value in values:
            parts.append(fid + _clean(value, delimiter, table) + delimiter)
    for fid in layout.screen:
        for value in fields.get(fid, ()):
            parts.append(fid + _clean(value, delimiter, table) + delimiter)
    return "".join(parts)


def _clean(value: Any, delimiter: str, table: dict[int, None]) -> str:
    text = value if isinstance(value, str) else str(value)
    if delimiter in text or "\r" in text or "\n" in text or "\0" in text:
        text = text.translate(table)
    if len(text) > _MAX_VALUE:
        text = text[:_MAX_VALUE]
    return text


_TEXT_DEFAULTS = {"language": "000", "protocol_version": "2.00", "uid_algorithm": "0", "pwd_algorithm": "0",
                  "status_code": "0", "max_print_width": "000", "fee_type": "01", "payment_type": "00",
                  "circulation_status": "01", "security_marker": "01", "hold_mode": "+"}  # fmt: skip


def _fixed_default(name: str, width: int, kind: Kind) -> str:
    if kind is Kind.DATE:
        return format_date(datetime.datetime.now()) if name == "transaction_date" else " " * width
    if kind is Kind.FLAG:
        return "N"
    if kind is Kind.OK:
        return "0"
    if kind is Kind.NUMBER:
        return "0" * width
    return _TEXT_DEFAULTS.get(name, " " * width)


# ---------------------------------------------------------------------------------------------
# Constructors


def make(code: str, fields: Iterable[tuple[str, Any]] | Mapping[str, Any] | None = None, **values: Any) -> Message:
    """Build a message by names, not offsets.

    ``code`` is a two-digit code or a message name (``"checkout_response"``). Lower-case keywords
    are fixed fields, converted by kind: a bool becomes Y/N (or 1/0 for ``ok``), a datetime an
    18-character date, an int a zero-padded number (``None`` gives blanks: a count the ACS cannot
    supply). Upper-case two-letter keywords, or the ``fields`` pairs, are variable fields: a list
    repeats the field, ``None`` leaves it out, a bool becomes Y/N. Missing fixed fields get
    defaults (the transaction date is now).
    """
    spec = MESSAGES.get(code) or BY_NAME.get(code)
    if spec is None:
        raise EncodeError(f"unknown message {code!r}")
    known = _FIXED_BY_NAME[spec.code]
    fixed: dict[str, str] = {}
    out_fields: dict[str, list[str]] = {}
    variable: list[tuple[str, Any]] = []
    if fields is not None:
        variable.extend(fields.items() if isinstance(fields, Mapping) else fields)
    for key, value in values.items():
        if key.islower():
            field = known.get(key)
            if field is None:
                raise EncodeError(f"{spec.name} has no fixed field {key!r}")
            fixed[key] = value if type(value) is str else _fixed_value(field.width, field.kind, value)
        else:
            variable.append((key, value))
    if len(fixed) < len(known):
        for field in spec.fixed:
            if field.name not in fixed:
                fixed[field.name] = _fixed_default(field.name, field.width, field.kind)
    for key, value in variable:
        if len(key) != 2:
            raise EncodeError(f"field ids have two characters, got {key!r}")
        if value is None:
            continue
        if type(value) is str and key not in out_fields:  # the common case: one plain value
            out_fields[key] = [value]
            continue
        items = value if isinstance(value, list | tuple) else [value]
        bucket = out_fields.setdefault(key, [])
        for item in items:
            if item is None:
                continue
            bucket.append(("Y" if item else "N") if isinstance(item, bool) else str(item))
        if not bucket:
            del out_fields[key]
    return Message(spec.code, fixed, out_fields)


_FIXED_BY_NAME = {code: {f.name: f for f in spec.fixed} for code, spec in MESSAGES.items()}


def _fixed_value(width: int, kind: Kind, value: Any) -> str:
    if isinstance(value, bool):
        if kind is Kind.OK:
            return "1" if value else "0"
        return "Y" if value else "N"
    if kind is Kind.DATE and (value is None or isinstance(value, datetime.date)):
        return format_date(value)
    if kind is Kind.NUMBER and (value is None or isinstance(value, int)):
        if value is None:
            return " " * width
        return str(max(0, min(value, 10**width - 1))).zfill(width)
    return str(value)
