"""``sipclient`` against the real daemon: every output form, interactive on a pipe, and ``check``'s
diagnosis of the usual faults taken from what actually happens on the wire."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import select
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sipserver.client import cli
from sipserver.client.show import format_message, mask_frame
from sipserver.sip2 import decode
from tests.daemon import Daemon, config_data, write_config

pytestmark = pytest.mark.e2e

JANE, PIN = "21000000000001", "1234"
ITEM = "31000000000008"
SECRETS = ("scpass", "telnetpass", "AD1234", "CO" + "scpass")
DATE = re.compile(r"\d{8}(    |   Z)\d{6}|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clientcli")
    running = Daemon(write_config(tmp, config_data(tmp)), tmp / "daemon.log").wait_ready(2)
    yield running
    running.stop()


def run(capsys, *argv):
    """``sipclient ARGV`` in-process: (exit code, stdout, stderr), checked for leaked secrets."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert_no_secrets(out + err)
    return code, out, err


def assert_no_secrets(text):
    for secret in SECRETS:
        assert secret not in text
    assert PIN not in DATE.sub("", text)  # 1234 may be a time of day inside a date, never anywhere else


def raw(daemon, *rest, login="sco", password="scpass"):
    return ["-p", daemon.port("raw"), "-u", login, "-P", password, *rest]


def test_status(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "status"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "98 acs_status"
    assert "  online_status: Y (yes)" in lines
    assert "  timeout_period: 050 (5.0 s)" in lines
    assert "  AO (institution id): MAIN" in lines
    assert "  BX (supported messages): YYYYYYYYYYYYYYYY (patron_status, checkout, checkin, block_patron," in out


def test_patron_info_with_charged_items(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "patron-info", JANE, "--pin", PIN, "--summary", "charged"))
    assert code == 0
    assert out.startswith("64 patron_information_response\n")
    assert '  patron_status: "              " (nothing denied)' in out
    assert "  AE (personal name): Jane Doe" in out
    assert "  BL (valid patron): Y (yes)" in out and "  CQ (valid patron password): Y (yes)" in out
    charged = re.search(r"charged_items_count: (\d{4})", out).group(1)
    items = re.findall(r"^  AU \(charged items\): (\d+)$", out, re.M)
    assert len(items) == int(charged) >= 1


def test_checkout_then_checkin(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "checkout", JANE, ITEM, "--pin", PIN))
    assert code == 0, out
    assert out.startswith("12 checkout_response\n") and "  ok: 1 (yes)" in out
    assert re.search(r"^  AH \(due date\): \d{8} {4}\d{6} \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)$", out, re.M)
    code, out, _ = run(capsys, *raw(daemon, "checkin", ITEM, "--location", "MAIN"))
    assert code == 0, out
    assert out.startswith("10 checkin_response\n") and "  ok: 1 (yes)" in out
    assert f"  AA (patron identifier): {JANE}" in out


def test_send_by_code_with_json(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "send", "17", f"AB={ITEM}"))
    assert code == 0
    assert out.startswith("18 item_information_response\n")
    assert re.search(r"^  circulation_status: \d\d \([a-z ]+\)$", out, re.M)
    code, out, _ = run(capsys, *raw(daemon, "--json", "send", "item_information", f"AB={ITEM}"))
    reply = json.loads(out)
    assert reply["code"] == "18" and reply["fields"]["AB"] == [ITEM]


def test_send_refuses_what_it_cannot_build(capsys):
    assert cli.main(["--no-login", "send", "17", "transaction_date=now"]) == cli.USAGE
    assert "must be 18 characters" in capsys.readouterr().err
    assert cli.main(["--no-login", "send", "98"]) == cli.USAGE
    assert "is a response" in capsys.readouterr().err


def test_raw_masks_password_and_pin(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "--raw", "patron-status", JANE, "--pin", PIN))
    assert code == 0
    sent = [line for line in out.splitlines() if line.startswith(">> ")]
    assert sent[0].startswith(">> b'9300CNsco|CO***|") and "|AC|AD***|" in sent[1]
    assert any(line.startswith("<< b'24") for line in out.splitlines())


def test_interactive_reads_piped_stdin_on_one_connection(daemon, capsys, monkeypatch):
    opened = daemon.log().count("connection opened listener=raw")
    script = f"status\n\n# a comment\npatron-status {JANE} --pin {PIN}\nnonsense\nitem-info {ITEM}\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code, out, err = run(capsys, *raw(daemon, "interactive"))
    assert code == 0
    heads = [line for line in out.splitlines() if not line.startswith(" ")]
    assert heads == ["98 acs_status", "24 patron_status_response", "18 item_information_response"]
    assert "invalid choice: 'nonsense'" in err
    daemon.wait_for_log("item_information ok")
    assert daemon.log().count("connection opened listener=raw") == opened + 1


def test_console_script_interactive_with_password_from_the_environment(daemon):
    script = Path(sys.executable).parent / "sipclient"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sipserver.client.cli"]
    result = subprocess.run(
        [*command, "-p", str(daemon.port("raw")), "-u", "sco", "interactive"],
        input=f"help\npatron-status {JANE} --pin {PIN}\nquit\nstatus\n",
        env=dict(os.environ, SIPCLIENT_PASSWORD="scpass"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert "end-session" in result.stdout  # help lists the commands
    assert "24 patron_status_response" in result.stdout and "98 acs_status" not in result.stdout  # quit stops
    assert_no_secrets(result.stdout + result.stderr)


def test_password_prompt_when_not_given(daemon, capsys, monkeypatch):
    asked = []
    monkeypatch.delenv("SIPCLIENT_PASSWORD", raising=False)
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: asked.append(prompt) or "scpass")
    code, out, _ = run(capsys, "-p", daemon.port("raw"), "-u", "sco", "-P", "-", "check")
    assert code == 0 and out.startswith("OK: ")
    assert asked == ["SIP password for sco: "]


def test_no_terminal_to_ask_on_is_a_usage_error_not_a_read_of_stdin():
    env = {k: v for k, v in os.environ.items() if k != "SIPCLIENT_PASSWORD"}
    result = subprocess.run(
        [sys.executable, "-m", "sipserver.client.cli", "-p", "1", "-u", "sco", "interactive"],
        input="status\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        start_new_session=True,  # no controlling terminal: getpass would fall back to reading stdin
    )
    assert result.returncode == cli.USAGE
    assert "no terminal to ask on: set SIPCLIENT_PASSWORD" in result.stderr


def test_telnet_transport(daemon, capsys):
    argv = ["-p", daemon.port("telnet"), "-t", "telnet", "-u", "telnet", "-P", "telnetpass", "--raw", "status"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert ">> telnet login: 'telnet', password: '***'" in out
    assert "98 acs_status" in out and "  AN (terminal location): MAIN-TELNET" in out


def test_check_ok(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "check", "--patron", JANE, "--pin", PIN))
    assert code == 0
    assert len(out.splitlines()) == 1
    assert re.match(
        rf"OK: 127\.0\.0\.1:{daemon.port('raw')} \(raw\) connected in [\d.]+ ms; login sco accepted; "
        rf"SC status round trip [\d.]+ ms; ACS on-line: Y; patron {JANE} valid \([\d.]+ ms\)$",
        out,
    )


def test_check_with_a_patron_and_no_pin_sends_no_ad_and_is_no_wrong_pin(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "--raw", "check", "--patron", "21000000000021"))
    assert code == 0 and re.search(r"; patron 21000000000021 valid \([\d.]+ ms\)$", out.splitlines()[-1])
    [sent] = [line for line in out.splitlines() if line.startswith(">> b'23")]
    assert "AD" not in decode(ast.literal_eval(sent[3:])).fields  # the field, not two hex digits of AZ
    daemon.wait_for_log("login=sco patron_status ok")
    assert "wrong_pin" not in daemon.log()


def test_check_closed_port(capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]  # bound, never listening: a connection is refused
        code, out, _ = run(capsys, "-p", port, "-u", "sco", "-P", "scpass", "check")
    assert code == 3
    assert out == "FAIL: connection refused (is the server running? is the port right?)\n"


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs when the accept queue is full")
def test_check_connect_timeout(capsys):
    # A port that never completes a handshake, as behind a firewall that drops packets: a listener
    # that never accepts, its queue filled first.
    with socket.socket() as listener, contextlib.ExitStack() as stack:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        # The accept queue is full once a connection waits in it (its length is the backlog + 1).
        assert select.select([listener], [], [], 5)[0], "no connection reached the listener's queue"
        code, out, _ = run(capsys, "-p", port, "-u", "sco", "-P", "scpass", "--timeout", "1", "check")
    assert code == 3
    assert out == "FAIL: timed out connecting (firewall or wrong host/address?)\n"


def test_check_wrong_password(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "check", password="not-the-password"))
    assert code == 1
    assert out.startswith("FAIL: login refused (wrong login or password, account disabled/expired, or this address")
    assert "not-the-password" not in out
    daemon.wait_for_log("login=sco reason=wrong_password")
    assert "not-the-password" not in daemon.log()


def test_check_raw_transport_on_the_telnet_port(daemon, capsys):
    argv = ["-p", daemon.port("telnet"), "-u", "sco", "-P", "scpass", "--timeout", "1", "check"]
    code, out, _ = run(capsys, *argv)
    # The telnet listener prompts first; a raw client's 93 is taken as the user name and then the
    # listener waits for a password line that never comes, so no CR-terminated reply arrives.
    assert code == 3
    assert out.startswith("FAIL: connected but no reply within 1s: the server sent a telnet prompt b'login: ")
    assert out.rstrip().endswith("this is a telnet port, use -t telnet")
    assert "scpass" not in daemon.log()


def test_check_telnet_transport_on_the_raw_port(daemon, capsys):
    argv = ["-p", daemon.port("raw"), "-t", "telnet", "-u", "telnet", "-P", "telnetpass", "--timeout", "1", "check"]
    code, out, _ = run(capsys, *argv)
    assert code == 3
    assert out.startswith("FAIL: connected but no login: prompt within 1s (a raw SIP port? use -t raw;")


def test_check_tls_on_a_plain_port(daemon, capsys):
    code, out, _ = run(capsys, *raw(daemon, "--tls", "check"))
    assert code == 3
    assert out == "FAIL: TLS handshake failed (the server closed the connection): is this a plain (non-TLS) port?\n"


def test_check_off_line_acs(tmp_path, capsys):
    data = config_data(tmp_path)
    data["backends"]["embedded"]["path"] = str(tmp_path / "missing-dir" / "db.sqlite3")
    running = Daemon(write_config(tmp_path, data), tmp_path / "d.log").wait_ready(2)
    try:
        code, out, _ = run(capsys, *raw(running, "check"))
    finally:
        running.stop()
    assert code == 1
    assert out.startswith("FAIL: the ACS reports itself off-line (online_status 'N'; backend down: check /health)")


def test_format_names_patron_status_and_masks_secrets():
    reply = decode(b"24Y    Y        00120240101    120000AOMAIN|AAP1|AEX|BLY|CQN|AC|ADsecret|")
    lines = format_message(reply)
    assert '  patron_status: "Y    Y        " (charge denied, too many charged)' in lines
    assert "  CQ (valid patron password): N (no)" in lines
    assert "  AD (patron password): ***" in lines and "  AC (terminal password): " in lines
    assert mask_frame(b"9300CNdesk|COsecret|CPMAIN|AY0AZFFFF\r") == b"9300CNdesk|CO***|CPMAIN|AY0AZFFFF\r"
