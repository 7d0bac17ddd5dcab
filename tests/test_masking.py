"""No password or PIN in a log line, whatever delimiter the frame or the typed login uses.

A 93 written with a delimiter no account uses (``*``, ``_``, a tab, or none at all) is read with
``|``, so its whole ``CN...CO...`` string becomes the login name of the refused login; the same
happens to a SIP frame sent to the telnet port. The property tests build such strings with random
delimiters and secrets; the end-to-end test reads the daemon's own text and JSON logs, raw and
telnet, for wrong-password and locked-out refusals.
"""

from __future__ import annotations

import functools
import json
import socket
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sipserver.observe.events import Events
from sipserver.observe.exchangelog import JsonLines, LogFile, LogWriter, TextLines
from sipserver.sip2.masking import mask_secrets
from tests.daemon import Daemon, config_data, write_config
from tests.support import Hub, Terminal, make_config, sync_backend

SECRET_IDS = ("CO", "AC", "AD")

# Delimiters: the usual ones, the ones the attacker used (*, _, tab), letters and digits (no
# delimiter a parser could see), any other character, and none at all.
delimiters = st.one_of(
    st.sampled_from(["|", "^", "*", "_", "\t", " ", ",", "~", "", "x", "7", "\x00", "\x1f"]),
    st.characters(blacklist_categories=("Cs",)),
)
# Secrets of the kind terminals and patrons choose, punctuation included.
secrets_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("!$%&()*+-./:;<=>?@[]^_{}~|"),
    min_size=4,
    max_size=20,
)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.-0123456789", min_size=1, max_size=16)


@st.composite
def frame_with_secret(draw: st.DrawFn) -> tuple[str, str]:
    """A login-like string: fields in a random order with a random delimiter, one a secret."""
    delimiter = draw(delimiters)
    secret = draw(secrets_text)
    assume(delimiter == "" or delimiter not in secret)
    secret_id = draw(st.sampled_from(SECRET_IDS))
    fields = [f"CN{draw(names)}", f"{secret_id}{secret}", f"CP{draw(names).upper()}"]
    order = draw(st.permutations(fields))
    prefix = draw(st.sampled_from(["9300", "93", "", "9300  ", "63001"]))
    text = prefix + delimiter.join(order) + draw(st.sampled_from([delimiter, "", "AY1AZF0F0"]))
    assume(text.count(secret) == 1)  # so that finding it anywhere means it leaked
    return text, secret


@given(frame_with_secret())
def test_no_secret_survives_masking_whatever_the_delimiter(case):
    text, secret = case
    masked = mask_secrets(text)
    assert secret not in masked
    assert "***" in masked


@given(names, names)
def test_text_without_secret_ids_is_left_alone(login, place):
    text = f"9300CN{login}|CP{place}|"
    assume(not any(fid in text for fid in SECRET_IDS))
    assert mask_secrets(text) == text


def test_what_follows_a_secret_is_kept_up_to_the_same_delimiter():
    assert mask_secrets("9300CNsco|COscpass|CPDESK1|AY0AZF588") == "9300CNsco|CO***|CPDESK1|AY0AZF588"
    assert mask_secrets("CNsip_sco_main*COsecret*CPDESK*") == "CNsip_sco_main*CO****CPDESK*"
    # After a fixed part (blank algorithm flags), a space is no delimiter: the rest goes.
    assert mask_secrets("93  COpa ss|CNsco|") == "93  CO***"
    # No delimiter before the id: where the value ends cannot be known, so everything goes.
    assert mask_secrets("9300CNsip_sco_mainCOsecretCPDESK") == "9300CNsip_sco_mainCO***"
    # An id inside another field's value (a location code "_CO") starts a span of its own that
    # ends where the real CO begins: the real password is hidden all the same.
    assert mask_secrets("9300CN0|CP_CO|CO_000|") == "9300CN0|CP_CO***|"


@given(frame_with_secret())
def test_the_login_refused_line_never_carries_the_secret(case):
    text, secret = case
    terminal = _terminal()
    for lines in (TextLines(), JsonLines()):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "sip.log"
            events = Events("info", LogWriter(LogFile(str(path)), lines))
            events.login(terminal.connection, text, False, "locked_out")
            events.login(terminal.connection, text, False, "wrong_password")
            events.log.close()
            written = path.read_text(encoding="utf-8").splitlines()
        assert len(written) == 2 and all("login refused" in line for line in written)
        # From the message on: a short digit secret may well be part of the line's timestamp.
        assert not any(secret in line[line.index("login refused") :] for line in written)
        if isinstance(lines, JsonLines):  # what a log shipper reads, once the JSON is decoded
            records = [json.loads(line) for line in written]
            assert not any(secret in r["message"] or secret in r["login"] for r in records)


@functools.cache
def _terminal() -> Terminal:
    """One session for every example (a property test runs its body many times)."""
    return Terminal(Hub(make_config(Path(tempfile.mkdtemp())), sync_backend()))


# -------------------------------------------------------------------------------------------------
# The daemon's own log, text and JSON, raw and telnet


SECRET = "Zq8!secret"
TYPED = [
    f"9300CNsco*CO{SECRET}*CPDESK*",  # a delimiter no account uses
    f"9300CNsco_CO{SECRET}_CPDESK_",
    f"9300CNsco\tCO{SECRET}\tCPDESK\t",
    f"9300CNscoCO{SECRET}CPDESK",  # no delimiter at all
    f"9300CNsco|CO{SECRET}|CPDESK|",
]


def _send_raw(port: int, frame: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(frame.encode() + b"\r")
        _read_until_close_or(sock, b"\r")


def _send_telnet(port: int, line: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        _read_until_close_or(sock, b"login: ")
        sock.sendall(line.encode() + b"\r\n")
        _read_until_close_or(sock, b"password: ")
        sock.sendall(b"whatever\r\n")
        _read_until_close_or(sock, b"login: ")


def _read_until_close_or(sock: socket.socket, marker: bytes) -> None:
    data = b""
    deadline = time.monotonic() + 5
    while marker not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return
        if not chunk:
            return
        data += chunk


@pytest.mark.e2e
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_daemon_logs_no_secret_for_any_delimiter_raw_or_telnet_even_when_locked_out(tmp_path, log_format):
    data = config_data(tmp_path, logging={"format": log_format, "level": "info"})
    data["server"]["lockout"] = {"failures": 3, "window": 60, "duration": 300}
    daemon = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)
    try:
        for typed in TYPED:  # the first three lock the address; the rest are refused locked_out
            _send_raw(daemon.port("raw"), typed)
            _send_telnet(daemon.port("telnet"), typed)
        deadline = time.monotonic() + 10
        while daemon.log().count("login refused listener=") < 2 * len(TYPED) and time.monotonic() < deadline:
            time.sleep(0.05)
        log = daemon.log()
    finally:
        daemon.stop()
    assert log.count("login refused listener=") == 2 * len(TYPED), log[-3000:]
    assert "reason=locked_out" in log or '"reason": "locked_out"' in log, log[-3000:]
    assert SECRET not in log and SECRET[:4] not in log, log[-3000:]
    if log_format == "json":
        records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        refused = [r for r in records if r.get("message", "").startswith("login refused listener=")]
        assert len(refused) == 2 * len(TYPED)
        assert all("CO***" in r["login"] for r in refused if "CO" in r["login"]), [r["login"] for r in refused]
