"""Real clients' habits (reference sections 6 and 7): what the decoder must accept, what the encoder must send."""

from __future__ import annotations

import datetime

import pytest

from sipserver.sip2 import (
    ChecksumError,
    EncodeError,
    MalformedFrame,
    Message,
    UnknownCommand,
    decode,
    encode,
    make,
)
from sipserver.sip2.checksum import checksum, verify
from sipserver.sip2.codes import PatronStatus, patron_status_string

DATE = "20250115    093010"
WHEN = datetime.datetime(2025, 1, 15, 9, 30, 10)


def with_ed(body: str | bytes, sequence: str = "0", encoding: str = "utf-8") -> bytes:
    """``body`` + ``AY<sequence>AZ<checksum>``, checksummed correctly."""
    data = body.encode(encoding) if isinstance(body, str) else body
    data += b"AY" + sequence.encode() + b"AZ"
    return data + checksum(data).encode()


# =============================================================================================
# Decoding: what real clients send.


@pytest.mark.parametrize("junk", [b"\n", b"\r\n", b"\0", b" ", b"\n\0 ", b"\t"])
def test_leading_junk_is_removed_before_the_checksum_check(junk: bytes) -> None:
    # php-sip2 ends its frames with CRLF, so every frame after the first starts with LF; its
    # checksum does not cover that LF.
    frame = with_ed("2300120250115    093010AOMAIN|AA21000000000001|AC|AD1234|", "4")
    message = decode(junk + frame + b"\r")
    assert message.code == "23"
    assert message.sequence == "4"
    assert message.get("AD") == "1234"


def test_crlf_terminated_frame() -> None:
    assert decode(b"\n9900802.00AY1AZFCA0\r\n").fixed["max_print_width"] == "080"


def test_fields_in_alphabetical_order() -> None:
    # SIP2Mediator's client sorts its fields by id.
    message = decode(b"11NN20250115    093010                  AA21000000000001|AB31000000000003|AD1234|AOMAIN|")
    assert message.fields == {"AA": ["21000000000001"], "AB": ["31000000000003"], "AD": ["1234"], "AO": ["MAIN"]}
    assert message.get("AO") == "MAIN"


@pytest.mark.parametrize(
    "frame",
    [
        b"2300120250115    093010AOMAIN|AA21000000000001|AD1234|",
        b"11NN20250115    093010                  AOMAIN|AA21000000000001|AB31000000000003|",
        b"09N20250115    09301020250115    093010APdesk|AOMAIN|AB31000000000003|",
    ],
)
def test_ac_missing_entirely(frame: bytes) -> None:
    # SIP2Mediator never sends AC, not even in 23, 11 and 09 where it is "required".
    message = decode(frame)
    assert "AC" not in message
    assert message.get("AC") == ""
    assert message.get("AO") == "MAIN"


def test_empty_ao() -> None:
    # sip2-ruby sends `AO|`.
    message = decode(with_ed("6300120250115    093010          AO|AA21000000000001|AC|AD1234|", "1"))
    assert message.fields["AO"] == [""]
    assert message.get("AO", "default") == ""
    assert message.get("AA") == "21000000000001"


def test_stray_delimiter_after_99_fixed_part() -> None:
    # jsip2 and sip2-ruby put a `|` straight after 99's fixed fields.
    plain = decode(b"9900002.00|\r")
    assert plain.fixed == {"status_code": "0", "max_print_width": "000", "protocol_version": "2.00"}
    assert plain.fields == {}
    checked = decode(with_ed("9909992.00|", "2") + b"\r")
    assert checked.fixed == {"status_code": "0", "max_print_width": "999", "protocol_version": "2.00"}
    assert checked.fields == {}
    assert checked.sequence == "2"


def test_stray_and_empty_pieces_are_skipped() -> None:
    message = decode(b"2300120250115    093010||AOMAIN|||AA1| |AC|")
    assert message.fields == {"AO": ["MAIN"], "AA": ["1"], "AC": [""]}


def _long_body(predicate) -> bytes:  # type: ignore[no-untyped-def]
    """A 23 body padded with patron-name-like fields until ``predicate(sum of the bytes through AZ)``."""
    body = b"2300120250115    093010AOMAIN|AA21000000000001|AC|AD1234|"
    filler = 0
    while True:
        data = body + b"AY1AZ"
        if predicate(sum(data)):
            return data
        body += b"XX" + b"x" * (filler % 7 + 1) + b"|"
        filler += 1


def test_unpadded_three_digit_checksum() -> None:
    # tzeumer `sip2` writes "%X" without padding: a checksum below 0x1000 has 3 digits.
    data = _long_body(lambda total: 0x100 <= (-total & 0xFFFF) < 0x1000)
    digits = "%X" % (-sum(data) & 0xFFFF)
    assert len(digits) == 3
    message = decode(data + digits.encode() + b"\r")
    assert message.sequence == "1"
    assert message.checksum == digits
    assert verify(data, digits.encode())
    assert verify(data, digits.lower().encode())
    # The reference's example: a body summing to 0xF0A2 gets F5E.
    assert "%X" % (-0xF0A2 & 0xFFFF) == "F5E"


def test_unmasked_five_digit_checksum() -> None:
    # sip2-ruby does not mask to 16 bits: a long message gets 5 hex digits.
    data = _long_body(lambda total: total > 0xFFFF)
    total = sum(data)
    digits = "%X" % ((total ^ 0xFFFF) + 1)
    assert len(digits) == 5
    message = decode(data + digits.encode() + b"\r")
    assert message.checksum == digits
    assert message.get("AA") == "21000000000001"
    masked = checksum(data)
    assert digits.endswith(masked)
    assert decode(data + masked.encode()).checksum == masked


@pytest.mark.parametrize("sequence", ["10", "11", "123", "0", "9"])
def test_multi_digit_sequence_echoed_verbatim(sequence: str) -> None:
    # sip2-ruby counts from 1 and never wraps.
    message = decode(with_ed("9900802.00", sequence))
    assert message.sequence == sequence
    reply = encode(make("94", ok=True), sequence=message.sequence)
    assert reply.startswith(b"941AY" + sequence.encode() + b"AZ")
    assert decode(reply).sequence == sequence


def test_blank_nb_due_date() -> None:
    # tzeumer and php-sip2 send 18 spaces.
    message = decode(b"11YN20250115    093020                  AOMAIN|AA1|AB2|AC|")
    assert message.fixed["nb_due_date"] == " " * 18
    assert message.get("AO") == "MAIN"


@pytest.mark.parametrize("width", [" 80", "000", "999", "080"])
def test_max_print_width_as_sent(width: str) -> None:
    # php-sip2 right-aligns with %3s; jsip2, Ruby and SIP2Mediator send 000 or 999.
    message = decode(f"990{width}2.00\r".encode())
    assert message.fixed["max_print_width"] == width
    assert message.fixed["protocol_version"] == "2.00"


@pytest.mark.parametrize(
    "frame",
    [
        b"65AOMAIN|AA21000000000001|AC|AD1234|BON|",
        with_ed("65AOMAIN|AA21000000000001|AC|AD1234|", "5"),
        # An institution id too long for its delimiter to fall inside the 18 date characters.
        b"65AOMAIN LIBRARY OF SPRINGFIELD|AA21000000000001|AC|",
    ],
)
def test_renew_all_without_its_transaction_date(frame: bytes) -> None:
    # tzeumer and php-sip2 leave 65's date out.
    message = decode(frame)
    assert message.code == "65"
    assert message.fixed == {"transaction_date": ""}
    assert message.get("AO").startswith("MAIN")
    assert message.get("AA") == "21000000000001"
    assert message.unknown_ids == ()


def test_renew_all_with_its_transaction_date() -> None:
    message = decode(b"6520250115    093010AOMAIN|AA21000000000001|")
    assert message.fixed == {"transaction_date": DATE}
    assert message.get("AO") == "MAIN"


@pytest.mark.parametrize("digits", [b"0000", b"000", b"00000"])
def test_all_zero_checksum_is_a_checksum_error(digits: bytes) -> None:
    with pytest.raises(ChecksumError):
        decode(b"9900802.00AY1AZ" + digits + b"\r")


def test_wrong_checksum_and_malformed_checksum() -> None:
    with pytest.raises(ChecksumError):
        decode(b"9900802.00AY1AZFCA1\r")
    with pytest.raises(ChecksumError):
        decode(b"9900802.00AY1AZFCAG\r")  # AY present, AZ not hex
    with pytest.raises(ChecksumError):
        decode(b"\n9900802.00AY1AZFCA0"[:-1] + b"1\r")


def test_a_last_value_that_spells_a_trailer_is_a_value() -> None:
    # Without ED, the last field ends with the delimiter, so "AY0AZ" or "AZ1234" in it is text.
    message = decode(b"2300120250115    093010AOMAIN|AA1|ADxAY0AZ|\r")
    assert message.get("AD") == "xAY0AZ"
    assert message.checksum is None
    assert decode(b"2300120250115    093010AOMAIN|AA1|ADAZ1234|").get("AD") == "AZ1234"
    # ...but a trailer with no digits, or letters for digits, is a checksum error.
    with pytest.raises(ChecksumError):
        decode(b"2300120250115    093010AOMAIN|AA1|AY0AZ\r")
    with pytest.raises(ChecksumError):
        decode(b"2300120250115    093010AOMAIN|AA1|AY0AZXYZW\r")


def test_unknown_ids_are_kept_and_listed() -> None:
    message = decode(b"2300120250115    093010AOMAIN|AA1|XXextra|AC|ZZ1|ZZ2|CSknown extension|")
    assert message.fields["XX"] == ["extra"]
    assert message.fields["ZZ"] == ["1", "2"]
    assert message.unknown_ids == ("XX", "ZZ")  # CS is a known extension
    assert message.get("AA") == "1"


@pytest.mark.parametrize("frame", [b"42foo|\r", b"00\r", b"9500\r", with_ed("88AOMAIN|")])
def test_unknown_command_code(frame: bytes) -> None:
    with pytest.raises(UnknownCommand) as info:
        decode(frame)
    assert info.value.code == frame.lstrip()[:2].decode()


@pytest.mark.parametrize("frame", [b"", b"\r", b"\n\r\n", b"X", b"9", b"AB12|", b"9\x009\r", b"\x16\x03\x01\x02\x00"])
def test_malformed_frames(frame: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode(frame)


def test_trailing_blanks_of_a_fixed_part_are_kept() -> None:
    # A 63 with nothing after its 10-blank summary: trailing spaces are data.
    plain = decode(b"6300120250115    093010          \r")
    assert plain.fixed["summary"] == " " * 10
    assert plain.fields == {}
    checked = decode(with_ed("6300120250115    093010          ", "3") + b"\r")
    assert checked.fixed["summary"] == " " * 10
    assert checked.sequence == "3"
    blank_dates = decode(b"11NN" + b" " * 36 + b"\r")
    assert blank_dates.fixed == {
        "sc_renewal_policy": "N",
        "no_block": "N",
        "transaction_date": " " * 18,
        "nb_due_date": " " * 18,
    }


def test_short_fixed_part_does_not_crash() -> None:
    message = decode(b"6300120250115")
    assert message.code == "63"
    assert message.fixed["summary"] == ""


def test_secrets_are_not_in_repr() -> None:
    message = decode(b"9300CNuser|COhunter2|CP1|")
    assert "hunter2" not in repr(message)
    assert message.get("CO") == "hunter2"


def test_other_delimiter() -> None:
    message = decode(b"2300120250115    093010AOMAIN^AA1^AC^", delimiter="^")
    assert message.fields == {"AO": ["MAIN"], "AA": ["1"], "AC": [""]}
    assert encode(message, delimiter="^") == b"2300120250115    093010AOMAIN^AA1^AC^AD^\r"


# =============================================================================================
# Encoding: exact output.


def test_ao_first() -> None:
    frame = encode(
        make("24", patron_status=" " * 14, language="001", transaction_date=WHEN, BL=True, AE="Jane", AA="1", AO="MAIN")
    )
    assert frame == b"24              00120250115    093010AOMAIN|AA1|AEJane|BLY|\r"


@pytest.mark.parametrize("code", ["18", "20"])
def test_ab_first_in_18_and_20(code: str) -> None:
    frame = encode(make(code, transaction_date=WHEN, AF="msg", AJ="Title", AB="31000000000003"))
    body = frame.split(DATE.encode(), 1)[1]
    assert body.startswith(b"AB31000000000003|AJTitle|")
    assert body.endswith(b"AFmsg|\r")


def test_spec_order_with_extensions_before_screen_messages() -> None:
    message = make(
        "10",
        ok=True,
        resensitize=True,
        magnetic_media=False,
        alert=False,
        transaction_date=WHEN,
        AF="screen",
        DA="name",
        CV="01",
        AA="1",
        AJ="t",
        AB="2",
        AQ="perm",
        AO="MAIN",
        XY="unknown",
    )
    frame = encode(message)
    assert frame == (b"101YNN20250115    093010AOMAIN|AB2|AQperm|AJt|AA1|CV01|DAname|XYunknown|AFscreen|\r")


def test_repeats_adjacent_even_when_added_out_of_order() -> None:
    message = make(
        "64", fields=[("AU", "1"), ("AF", "hello"), ("AU", "2"), ("AO", "M"), ("AU", "3"), ("AF", "bye")], AA="p", AE=""
    )
    frame = encode(message)
    assert b"|AU1|AU2|AU3|" in frame
    assert frame.endswith(b"|AFhello|AFbye|\r")
    direct = Message("66", make("66").fixed, {"BN": ["x"], "AO": ["M"], "BM": ["a"]})
    direct.add("BM", "b")
    direct.add("BN", "y")
    assert encode(direct).split(make("66").fixed["transaction_date"].encode())[1] == b"AOM|BMa|BMb|BNx|BNy|\r"


def test_required_fields_go_out_empty() -> None:
    frame = encode(
        make(
            "12",
            ok=False,
            renewal_ok=False,
            magnetic_media="U",
            desensitize=False,
            transaction_date=WHEN,
            AO="MAIN",
            AA="1",
            AB="2",
            AF="Item not found",
        )
    )
    assert frame == b"120NUN20250115    093010AOMAIN|AA1|AB2|AJ|AH|AFItem not found|\r"
    unknown = encode(
        make(
            "24",
            patron_status="YYYY" + " " * 10,
            language="000",
            transaction_date=WHEN,
            AO="MAIN",
            AA="nobody",
            BL=False,
        )
    )
    assert unknown == b"24YYYY          00020250115    093010AOMAIN|AAnobody|AE|BLN|\r"
    assert encode(make("98", date_time_sync=WHEN)).endswith(b"2.00AO|BX|\r")
    assert encode(make("30", transaction_date=WHEN, AO="M")).endswith(b"AOM|AA|AB|AJ|AH|\r")


def test_values_are_cleaned_and_cut() -> None:
    message = make(
        "24",
        patron_status=" " * 14,
        language="001",
        transaction_date=WHEN,
        AO="MAIN",
        AA="1",
        AE="Doe|Jane\r\nX\0",
        AF=["x" * 300, "line|two"],
    )
    frame = encode(message)
    assert b"AEDoeJaneX|" in frame
    assert b"AF" + b"x" * 255 + b"|AF" in frame
    assert b"AFlinetwo|" in frame
    assert b"\r" not in frame[:-1] and b"\n" not in frame and b"\0" not in frame
    assert frame.count(b"|") == 5
    assert encode(make("24", AE="a^b|c", AO="M", AA="1"), delimiter="^").count(b"^") == 3
    assert b"AEab|c^" in encode(make("24", AE="a^b|c", AO="M", AA="1"), delimiter="^")


def test_non_string_values_are_written_as_text() -> None:
    message = make("64", AO="M", AA="1", AE="", BZ=10, BL=True, CQ=False)
    assert message.fields["BZ"] == ["10"] and message.fields["BL"] == ["Y"] and message.fields["CQ"] == ["N"]
    direct = Message("36", {"end_session": "Y", "transaction_date": DATE}, {"AO": ["M"], "AA": [12345]})  # type: ignore[list-item]
    assert encode(direct) == b"36Y20250115    093010AOM|AA12345|\r"
    assert make("64", AO=None, AU=[None, "1", None]).fields == {"AU": ["1"]}


def test_patron_status_never_contains_n() -> None:
    for denied in ([], [PatronStatus.CARD_LOST], list(PatronStatus)):
        message = make("64", patron_status=patron_status_string(set(denied)), AO="M", AA="1", AE="")
        frame = encode(message)
        status = frame[2:16].decode()
        assert set(status) <= {"Y", " "}
        assert status.count("Y") == len(denied)
    for code in ("24", "26", "64"):  # the default is all spaces, not N
        assert encode(make(code, AO="M", AA="1"))[2:16] == b" " * 14


@pytest.mark.parametrize(
    ("code", "values"),
    [
        ("94", {"ok": "11"}),
        ("64", {"patron_status": "Y"}),
        ("64", {"hold_items_count": "12345"}),
        ("12", {"transaction_date": "2025-01-15"}),
        ("98", {"protocol_version": "2.0"}),
        ("94", {"ok": "\r"}),
        ("36", {"end_session": "\n"}),
        ("18", {"fee_type": "0\0"}),
    ],
)
def test_fixed_width_violation_or_control_character_is_an_encode_error(code: str, values: dict[str, str]) -> None:
    message = make(code)
    message.fixed.update(values)
    with pytest.raises(EncodeError):
        encode(message)


def test_make_rejects_what_it_cannot_encode() -> None:
    with pytest.raises(EncodeError):
        make("42")
    with pytest.raises(EncodeError):
        make("94", no_such_field=1)
    with pytest.raises(EncodeError):
        make("94", fields=[("ABC", "x")])
    with pytest.raises(EncodeError):
        encode(Message("42"))
    assert make("64", hold_items_count=123456).fixed["hold_items_count"] == "9999"
    assert make("64", hold_items_count=None).fixed["hold_items_count"] == "    "


def test_bx_is_sixteen_characters() -> None:
    from sipserver.sip2 import MESSAGES, supported_messages

    every = supported_messages({code for code, spec in MESSAGES.items() if spec.request})
    frame = encode(make("98", AO="MAIN", BX=every))
    assert b"|BXYYYYYYYYYYYYYYYY|" in frame
    assert len(every) == 16
    assert len(supported_messages({"99"})) == 16


def test_ascii_transliteration() -> None:
    frame = encode(
        make(
            "24",
            patron_status=" " * 14,
            language="001",
            transaction_date=WHEN,
            AO="MAIN",
            AA="1",
            AE="Müller",
            AF=["Ærø", "Straße", "Łódź", "café", "日本"],
        ),
        encoding="ascii",
    )
    assert frame.isascii()
    assert b"|AEMuller|" in frame
    assert b"|AFAEro|" in frame
    assert b"|AFStrasse|" in frame
    assert b"|AFLodz|" in frame
    assert b"|AFcafe|" in frame
    assert b"|AF??|" in frame


def test_cp850_and_latin1() -> None:
    message = make("24", patron_status=" " * 14, language="001", transaction_date=WHEN, AO="MAIN", AA="1", AE="é")
    assert b"|AE\x82|" in encode(message, encoding="cp850")
    assert b"|AE\xe9|" in encode(message, encoding="latin-1")
    assert b"|AE\xc3\xa9|" in encode(message, encoding="utf-8")
    assert decode(encode(message, encoding="cp850"), encoding="cp850").get("AE") == "é"
    non_latin = make("24", AO="M", AA="1", AE="Иванов 日本 Ω")
    assert b"|AE?????? ?? ?|" in encode(non_latin, encoding="latin-1")


def test_checksum_is_over_the_encoded_bytes() -> None:
    message = make("24", patron_status=" " * 14, language="001", transaction_date=WHEN, AO="MAIN", AA="1", AE="Zoë Ærø")
    sums = set()
    for encoding in ("utf-8", "cp850", "latin-1", "ascii"):
        frame = encode(message, encoding=encoding, sequence="5")
        body = frame[:-5]
        digits = frame[-5:-1]
        assert body.endswith(b"AY5AZ")
        assert digits.decode() == checksum(body)
        assert verify(body, digits)
        assert (sum(body) + int(digits, 16)) & 0xFFFF == 0
        assert decode(frame, encoding=encoding).get("AE") in ("Zoë Ærø", "Zoe AEro")
        sums.add(digits)
    assert len(sums) == 4  # each encoding's bytes give its own checksum
    utf8 = encode(message, encoding="utf-8", sequence="5")
    assert "Zoë".encode() in utf8
    # The same text re-encoded on the way (a checksum taken over characters, not bytes) fails.
    with pytest.raises(ChecksumError):
        decode(utf8.replace("ë".encode(), "ë".encode("latin-1")))


def test_trailer_comes_last_and_terminator_is_cr_only() -> None:
    frame = encode(make("36", end_session=True, transaction_date=WHEN, AO="M", AA="1", AF="bye"), sequence="3")
    assert frame.startswith(b"36Y20250115    093010AOM|AA1|AFbye|AY3AZ")
    assert frame.endswith(b"\r") and not frame.endswith(b"\r\n")
    assert len(frame) == len(b"36Y20250115    093010AOM|AA1|AFbye|AY3AZ") + 5
    assert encode(make("94", ok=True), sequence="1", terminator=b"\r\n").endswith(b"\r\n")
    assert b"AY" not in encode(make("94", ok=True))
    # AY/AZ given as fields are never written as fields.
    assert encode(Message("94", {"ok": "1"}, {"AY": ["1"], "AZ": ["FFFF"]})) == b"941\r"
