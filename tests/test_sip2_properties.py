"""Properties of the codec over generated messages and arbitrary bytes (hypothesis)."""

from __future__ import annotations

import datetime
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipserver.sip2 import (
    MESSAGES,
    ChecksumError,
    MalformedFrame,
    Message,
    UnknownCommand,
    decode,
    encode,
)
from sipserver.sip2.checksum import byte_sum, checksum, verify
from sipserver.sip2.codes import format_date
from sipserver.sip2.messages import Kind, MessageSpec

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODE_ERRORS = (ChecksumError, UnknownCommand, MalformedFrame)
CODES = sorted(MESSAGES)
PRINTABLE = string.printable[:95]  # space to tilde


def _encodable(ch: str) -> bool:
    try:
        ch.encode("cp850")
        ch.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


SINGLE_BYTE = "".join(chr(c) for c in range(0x20, 0x100) if chr(c).isprintable() and _encodable(chr(c)))

# ---------------------------------------------------------------------------------------------
# Strategies


def _dates() -> st.SearchStrategy[str]:
    moments = st.datetimes(min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2099, 12, 31))
    return st.one_of(
        moments.map(format_date),
        moments.map(lambda when: format_date(when.replace(tzinfo=datetime.UTC))),
        st.just(" " * 18),
        st.just("0" * 18),
        st.text(alphabet="0123456789 ", min_size=18, max_size=18),
    )


def _fixed_value(spec: MessageSpec, width: int, kind: Kind) -> st.SearchStrategy[str]:
    if kind is Kind.DATE:
        return _dates()
    # Printable ASCII of the exact width, without the delimiter. 99 has no variable fields, so
    # its fixed text is the end of the frame: keep "A" out so that it cannot spell a trailer.
    alphabet = PRINTABLE.replace("|", "")
    if spec.code == "99":
        alphabet = alphabet.replace("A", "")
    return st.text(alphabet=alphabet, min_size=width, max_size=width)


def _value_text(alphabet: str | None) -> st.SearchStrategy[str]:
    if alphabet is None:
        characters = st.characters(blacklist_categories=("Cs",), blacklist_characters="|\r\n\0")
        return st.text(characters, max_size=40) | st.text(characters, min_size=200, max_size=255)
    return st.text(alphabet=alphabet.replace("|", ""), max_size=40)


@st.composite
def messages(draw, alphabet: str | None = None, codes: tuple[str, ...] = tuple(CODES)) -> Message:  # type: ignore[no-untyped-def]
    """A message from the table: every fixed field at its width, some of its variable fields."""
    spec = MESSAGES[draw(st.sampled_from(codes))]
    fixed = {f.name: draw(_fixed_value(spec, f.width, f.kind)) for f in spec.fixed}
    fields: dict[str, list[str]] = {}
    for field in spec.fields:
        if not draw(st.booleans()):
            continue
        count = draw(st.integers(1, 4)) if field.repeats else 1
        fields[field.id] = [draw(_value_text(alphabet)) for _ in range(count)]
    # Shuffle the insertion order: the encoder must not depend on it.
    order = draw(st.permutations(list(fields)))
    return Message(spec.code, fixed, {fid: fields[fid] for fid in order})


sequences = st.one_of(st.none(), st.sampled_from("0123456789"), st.sampled_from(["10", "11", "99"]))


def _expected(message: Message, sequence: str | None) -> Message:
    """What the far end reads: required fields that were left out come back empty."""
    fields = {fid: list(values) for fid, values in message.fields.items()}
    for field in MESSAGES[message.code].fields:
        if field.required and field.id not in fields:
            fields[field.id] = [""]
    return Message(message.code, dict(message.fixed), fields, sequence)


def _split(frame: bytes) -> tuple[bytes, bytes | None]:
    """The frame without terminator and trailer, and the checksum digits."""
    data = frame[:-1]
    az = data.rfind(b"AZ")
    if az >= 0 and az == len(data) - 6 and all(c in b"0123456789ABCDEF" for c in data[az + 2 :]):
        body = data[:az]
        ay = body.rfind(b"AY")
        if ay >= 0 and body[ay + 2 :].isdigit():
            body = body[:ay]
        return body, data[az + 2 :]
    return data, None


# ---------------------------------------------------------------------------------------------
# Round trips


@PROPERTY
@given(message=messages(), sequence=sequences)
def test_round_trip_utf8(message: Message, sequence: str | None) -> None:
    frame = encode(message, sequence=sequence)
    decoded = decode(frame)
    assert decoded == _expected(message, sequence)
    assert (decoded.checksum is None) == (sequence is None)
    assert encode(decoded, sequence=sequence) == frame


@PROPERTY
@given(
    data=st.data(),
    encoding=st.sampled_from(["cp850", "latin-1", "ascii"]),
    sequence=sequences,
)
def test_round_trip_legacy_encodings(data: st.DataObject, encoding: str, sequence: str | None) -> None:
    alphabet = PRINTABLE if encoding == "ascii" else SINGLE_BYTE
    message = data.draw(messages(alphabet=alphabet))
    frame = encode(message, encoding=encoding, sequence=sequence)
    if encoding == "ascii":
        assert frame.isascii()
    assert decode(frame, encoding=encoding) == _expected(message, sequence)


@PROPERTY
@given(message=messages(), sequence=sequences)
def test_round_trip_after_crlf_of_the_previous_frame(message: Message, sequence: str | None) -> None:
    frame = encode(message, sequence=sequence)
    assert decode(b"\n" + frame) == decode(frame)
    assert decode(b"\r\n\0 " + frame[:-1] + b"\r\n") == decode(frame)


@PROPERTY
@given(message=messages(codes=("96", "97")))
def test_resend_messages_with_checksum_only(message: Message) -> None:
    frame = encode(message, checksum=True)
    assert frame == message.code.encode() + b"AZ" + checksum(message.code.encode() + b"AZ").encode() + b"\r"
    decoded = decode(frame)
    assert decoded.sequence is None and decoded.checksum == frame[4:8].decode()


# ---------------------------------------------------------------------------------------------
# Encoding never breaks the framing


def _any_text() -> st.SearchStrategy[str]:
    return st.text(st.characters(blacklist_categories=("Cs",)), max_size=300) | st.sampled_from(
        ["", "|", "||", "\r", "\n", "\0", "a|b\r\nc\0", "AY1AZ0000", "x" * 400, "ß" * 255]
    )


@st.composite
def dirty_messages(draw) -> Message:  # type: ignore[no-untyped-def]
    """Valid fixed fields, but variable values with anything in them (delimiter, CR, LF, NUL, long)."""
    spec = MESSAGES[draw(st.sampled_from(CODES))]
    fixed = {f.name: draw(_fixed_value(spec, f.width, f.kind)) for f in spec.fixed}
    fields: dict[str, list[str]] = {}
    for field in spec.fields:
        if draw(st.booleans()):
            fields[field.id] = draw(st.lists(_any_text(), min_size=1, max_size=3 if field.repeats else 1))
    return Message(spec.code, fixed, fields)


@PROPERTY
@given(
    message=dirty_messages(),
    encoding=st.sampled_from(["utf-8", "cp850", "latin-1", "ascii"]),
    sequence=sequences,
)
def test_encoding_keeps_the_frame_clean(message: Message, encoding: str, sequence: str | None) -> None:
    frame = encode(message, encoding=encoding, sequence=sequence)
    assert frame.endswith(b"\r")
    inside = frame[:-1]
    assert b"\r" not in inside and b"\n" not in inside and b"\0" not in inside

    spec = MESSAGES[message.code]
    body, digits = _split(frame)
    assert (digits is not None) == (sequence is not None)
    variable = body[2 + spec.fixed_width :]
    required = [f.id for f in spec.fields if f.required]
    count = sum(len(values) for values in message.fields.values()) + sum(
        1 for fid in required if fid not in message.fields
    )
    assert variable.count(b"|") == count
    if count:
        assert variable.endswith(b"|")  # every variable field ends with the delimiter
    else:
        assert variable == b""

    decoded = decode(frame, encoding=encoding)
    for fid, values in decoded.fields.items():
        assert len(values) == len(message.fields.get(fid, [""]))
        assert all(len(value) <= 255 for value in values)  # ASCII too: spelt out ("ß" -> "ss") before the cut


@PROPERTY
@given(
    message=dirty_messages(),
    encoding=st.sampled_from(["utf-8", "cp850", "latin-1", "ascii"]),
    sequence=st.sampled_from("0123456789"),
)
def test_checksums_produced_always_verify(message: Message, encoding: str, sequence: str) -> None:
    frame = encode(message, encoding=encoding, sequence=sequence)
    data = frame[:-1]
    assert data[-6:-4] == b"AZ"
    assert verify(data[:-4], data[-4:])
    assert data[-4:].decode() == checksum(data[:-4])
    assert all(c in b"0123456789ABCDEF" for c in data[-4:])
    decoded = decode(frame, encoding=encoding)
    assert decoded.sequence == sequence
    assert decoded.checksum == data[-4:].decode()


# ---------------------------------------------------------------------------------------------
# Decoding never raises anything but the codec's three errors


def _decode_or_error(frame: bytes, encoding: str = "utf-8") -> Message | None:
    try:
        message = decode(frame, encoding=encoding)
    except DECODE_ERRORS:
        return None
    assert message.code in MESSAGES
    assert all(isinstance(v, str) for v in message.fixed.values())
    assert all(isinstance(v, str) for values in message.fields.values() for v in values)
    return message


@PROPERTY
@given(frame=st.binary(max_size=400), encoding=st.sampled_from(["utf-8", "cp850", "latin-1", "ascii"]))
@example(frame=b"", encoding="utf-8")
@example(frame=b"\n\n\r", encoding="utf-8")
@example(frame=b"99AZ", encoding="utf-8")
@example(frame=b"99AYAZ000", encoding="utf-8")
@example(frame=b"65AOMAIN|", encoding="ascii")
def test_arbitrary_bytes(frame: bytes, encoding: str) -> None:
    _decode_or_error(frame, encoding)


@PROPERTY
@given(
    code=st.sampled_from([*CODES, "00", "42", "9x"]),
    rest=st.binary(max_size=300) | st.text(PRINTABLE + "é|").map(str.encode),
    sequence=st.one_of(st.none(), st.text("0123456789", max_size=3)),
)
def test_arbitrary_bytes_behind_a_valid_code_and_checksum(code: str, rest: bytes, sequence: str | None) -> None:
    data = code.encode() + rest
    if sequence is not None:
        data += b"AY" + sequence.encode() + b"AZ"
        data += checksum(data).encode()
    _decode_or_error(data + b"\r")


@st.composite
def mutated_frames(draw) -> bytes:  # type: ignore[no-untyped-def]
    frame = encode(draw(messages()), sequence=draw(sequences))
    kind = draw(st.sampled_from(["flip", "truncate", "pipe", "lf", "drop", "duplicate"]))
    index = draw(st.integers(0, len(frame)))
    if kind == "flip" and index < len(frame):
        bit = 1 << draw(st.integers(0, 7))
        return frame[:index] + bytes([frame[index] ^ bit]) + frame[index + 1 :]
    if kind == "truncate":
        return frame[:index]
    if kind == "pipe":
        return frame[:index] + b"|" + frame[index:]
    if kind == "drop" and index < len(frame):
        return frame[:index] + frame[index + 1 :]
    if kind == "duplicate":
        return frame[:index] + frame[index:] + frame[index:]
    return b"\n" + frame


@PROPERTY
@given(frame=mutated_frames())
def test_mutated_valid_frames(frame: bytes) -> None:
    _decode_or_error(frame)


@PROPERTY
@given(message=messages(), sequence=st.sampled_from("0123456789"), data=st.data())
def test_a_flipped_bit_under_the_checksum_is_detected(message: Message, sequence: str, data: st.DataObject) -> None:
    frame = encode(message, sequence=sequence)
    body_end = len(frame) - 5  # flip before the checksum digits, keeping the frame's shape
    index = data.draw(st.integers(2, body_end - 1))
    bit = 1 << data.draw(st.integers(0, 6))
    flipped = frame[:index] + bytes([frame[index] ^ bit]) + frame[index + 1 :]
    # Any change before the digits changes the byte sum, so either the trailer is still found and
    # fails, or the flip hit the AZ itself and the frame no longer claims a checksum.
    result = _decode_or_error(flipped)
    assert result is None or result.checksum is None


@PROPERTY
@given(data=st.binary(max_size=2000) | st.integers(0, 2000).map(lambda n: b"\xff" * n))
@example(data=b"\xff" * 256)
@example(data=b"\xff" * 257)
def test_the_byte_sum_is_the_exact_sum_at_every_length(data: bytes) -> None:
    """adler32 stands in for sum() only while a slice's sum stays below its modulus."""
    assert byte_sum(data) == sum(data)
