"""The ``sip2`` backend against real upstream servers over loopback: this project's daemon on the
embedded backend, and PyPI pysip2 0.1.0's server (bench/pysip2_baseline.py). Faults are made on the
wire by a relay between the two daemons (``tests.tcpproxy``): the upstream lost after a checkout
was sent, stalled, answering 96, sending garbage, closing idle connections, refusing the login.
The behaviour suite itself runs through the relay in tests/test_acs.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from sipserver.client import SIPClient
from sipserver.sip2 import checksum
from tests.daemon import Daemon, config_data, write_config
from tests.relay import GATEWAY_PASSWORD, relay_backend, start_relay, start_upstream
from tests.support import DEMO_DATA, ROOT
from tests.tcpproxy import CuttableRelay

pytestmark = pytest.mark.e2e

JANE, PIN = "21000000000001", "1234"
ITEM = "31000000000008"
OUTCOME_UNKNOWN_TEXT = "may or may not have been done"


def count(log: str, text: str) -> int:
    return log.count(text)


def wait_until(check, timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not true within {timeout}s")


def terminal(daemon: Daemon, login: str = "sco", password: str = "scpass", timeout: float = 10.0) -> SIPClient:
    client = SIPClient("127.0.0.1", daemon.port("raw"), timeout=timeout)
    assert client.login(login, password)
    return client


def health(daemon: Daemon) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port('http')}/health", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def metrics(daemon: Daemon) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port('http')}/metrics", timeout=10) as answer:
        return answer.read().decode()


@pytest.fixture
def wired(tmp_path):
    """An upstream daemon, a cuttable wire, and a relay daemon (one pool connection) behind it."""
    upstream = start_upstream(tmp_path)
    wire = CuttableRelay("127.0.0.1", upstream.port("raw"))
    relays: list[Daemon] = []

    def relay(**options) -> Daemon:
        options.setdefault("pool", {"size": 1})
        options.setdefault("timeout", 1.5)
        started = start_relay(tmp_path, wire.port, name=f"relay{len(relays)}", **options)
        relays.append(started)
        return started

    yield upstream, wire, relay
    for started in relays:
        started.stop()
        assert GATEWAY_PASSWORD not in started.log() + started.output()
    wire.close()
    upstream.stop()


def test_a_checkout_whose_answer_is_lost_is_refused_as_unknown_and_never_sent_twice(wired):
    upstream, wire, relay = wired
    relay = relay()
    sent = threading.Event()

    def lose_the_answer(to_server: bool, data: bytes, _sender):
        if to_server and data.startswith(b"11"):
            sent.set()
            return data
        return None if (not to_server and sent.is_set()) else data  # the upstream is gone after it

    wire.tamper = lose_the_answer
    with terminal(relay) as client:
        reply = client.checkout(JANE, ITEM, PIN, institution="MAIN")
        assert reply.code == "12" and reply.fixed["ok"] == "0"
        assert OUTCOME_UNKNOWN_TEXT in " ".join(reply.getall("AF"))
        assert "OUTCOME UNKNOWN for checkout (11)" in relay.log()
        wire.tamper = None
        # The pool connects again; the upstream did the checkout once, and only once.
        item = wait_until(lambda: _answered(client.send("17", AO="MAIN", AB=ITEM, AC="")))
        assert item.fixed["circulation_status"] == "04"
    assert count(upstream.log(), "login=gateway checkout ") == 1


def _answered(reply):
    return reply if reply.code == "18" and reply.get("AJ") else None


def test_a_96_from_the_upstream_sends_the_request_again_and_it_is_done_once(wired):
    upstream, wire, relay = wired
    relay = relay()
    refused_once = threading.Event()

    def unreadable_once(to_server: bool, data: bytes, sender):
        if to_server and data.startswith(b"11") and not refused_once.is_set():
            refused_once.set()
            sender.sendall(b"96AZ" + checksum(b"96AZ").encode() + b"\r")  # the upstream could not read it
            return b""
        return data

    wire.tamper = unreadable_once
    with terminal(relay) as client:
        reply = client.checkout(JANE, ITEM, PIN, institution="MAIN")
    assert refused_once.is_set()
    assert reply.fixed["ok"] == "1", reply
    assert count(upstream.log(), "login=gateway checkout ok") == 1


def test_garbage_from_the_upstream_drops_the_connection_and_a_read_is_asked_again(wired):
    upstream, wire, relay = wired
    relay = relay(pool={"size": 2})
    relay.wait_for_log("connection 2 of 2 logged in")
    spoiled = threading.Event()

    def garbage_once(to_server: bool, data: bytes, _sender):
        if not to_server and data.startswith(b"24") and not spoiled.is_set():
            spoiled.set()
            return b"\x00\xffNOT SIP AT ALL\r"
        return data

    wire.tamper = garbage_once
    with terminal(relay) as client:
        reply = client.patron_status(JANE, PIN, institution="MAIN")
    assert spoiled.is_set()
    assert reply.code == "24" and reply.get("BL") == "Y" and reply.get("AE") == "Jane Doe"
    assert count(upstream.log(), "login=gateway patron_status ") == 2
    assert "not a SIP2 reply" in relay.log()


def test_a_stalled_upstream_gets_a_timely_refusal_and_other_institutions_and_status_go_on(wired, tmp_path):
    upstream, wire, _ = wired
    directory = tmp_path / "two"
    directory.mkdir()
    data = config_data(directory)
    data["backends"] = {
        "stalling": relay_backend(wire.port, pool={"size": 1}, timeout=1.0, institution="MAIN"),
        "direct": relay_backend(upstream.port("raw"), pool={"size": 1}, timeout=1.0, institution={"OTHER": "MAIN"}),
    }
    data["institutions"] = {
        "MAIN": {"backend": "stalling", "library_name": "Main", "policy": {"timeout": 5}},
        "OTHER": {"backend": "direct", "library_name": "Other", "policy": {"timeout": 5}},
    }
    data["accounts"].append({"login": "other", "password": "plain:otherpass", "institution": "OTHER",
                             "allow_from": ["127.0.0.0/8"]})  # fmt: skip
    relay = Daemon(write_config(directory, data), directory / "daemon.log").wait_ready(2)
    try:
        relay.wait_for_log("connection 1 of 1 logged in")
        wait_until(lambda: relay.log().count("logged in") >= 2)
        stalled = threading.Event()
        stalled.set()
        wire.tamper = lambda to_server, data, _s: b"" if (not to_server and stalled.is_set()) else data
        with terminal(relay) as main, terminal(relay, "other", "otherpass") as other:
            answers: dict[str, object] = {}
            waiting = threading.Thread(target=lambda: answers.update(main=main.patron_status(JANE, PIN, "MAIN")))
            waiting.start()
            # While MAIN's upstream stalls, OTHER's terminal is answered, with its own institution id.
            reply = other.patron_status(JANE, PIN, institution="OTHER")
            assert reply.get("AE") == "Jane Doe" and reply.get("AO") == "OTHER"
            assert other.sc_status().fixed["online_status"] == "Y"
            waiting.join(10)
            refused = answers["main"]
            assert refused.code == "24" and "not available" in " ".join(refused.getall("AF"))
            assert main.sc_status().fixed["online_status"] == "N"  # off-line within one timeout
            stalled.clear()
            # It comes back by itself.
            wait_until(lambda: main.sc_status().fixed["online_status"] == "Y", timeout=20)
            assert main.patron_status(JANE, PIN, "MAIN").get("AE") == "Jane Doe"
    finally:
        relay.stop()


def test_idle_connections_are_kept_alive_and_connected_again_after_the_upstream_closes_them(wired):
    upstream, wire, relay = wired
    relay = relay(pool={"size": 2}, keepalive=0.3)
    relay.wait_for_log("connection 2 of 2 logged in")
    logins = count(relay.log(), "logged in")
    # Idle connections send 99 now and then (beyond the one after each login).
    wait_until(lambda: count(upstream.log(), "login=gateway sc_status ok") >= 6)
    wire.cut()  # the upstream closes every connection
    wire.restore()
    wait_until(lambda: count(relay.log(), "logged in") >= logins + 2)
    with terminal(relay) as client:
        assert client.patron_status(JANE, PIN, "MAIN").get("AE") == "Jane Doe"
    assert 'sip_upstream_reconnects_total{backend="ils"} 2' in metrics(relay)


def test_an_upstream_that_goes_away_makes_the_institution_off_line_until_it_is_back(wired):
    _upstream, wire, relay = wired
    relay = relay(pool={"size": 1})
    with terminal(relay) as client:
        assert client.sc_status().fixed["online_status"] == "Y"
        wire.cut()
        refused = client.patron_status(JANE, PIN, "MAIN")
        assert "not available" in " ".join(refused.getall("AF"))
        assert client.sc_status().fixed["online_status"] == "N"
        status, body = health(relay)
        assert status == 503 and body["upstreams"]["ils"]["reachable"] is False
        wire.restore()
        wait_until(lambda: client.sc_status().fixed["online_status"] == "Y", timeout=20)
    status, body = health(relay)
    assert status == 200 and body["upstreams"]["ils"] == {
        "reachable": True, "logged_in": "1/1", "login_refused": False, "queue": 0, "problem": ""
    }  # fmt: skip


def test_a_refused_gateway_login_is_reported_loudly_once_and_never_shows_the_password(wired, tmp_path):
    upstream, wire, _ = wired
    wrong = "wrong-gw-password-77"
    relay = start_relay(tmp_path, wire.port, name="refused", wait=False, timeout=1.0, pool={"size": 1},
                        login={"user": "gateway", "password": wrong})  # fmt: skip
    try:
        relay.wait_for_log("REFUSED THE GATEWAY'S LOGIN")
        wait_until(lambda: count(upstream.log(), "login refused") + count(upstream.log(), "login failed") >= 2
                   or count(upstream.log(), "gateway") >= 3)  # fmt: skip
        assert count(relay.log(), "REFUSED THE GATEWAY'S LOGIN") == 1
        status, body = health(relay)
        assert status == 503 and body["upstreams"]["ils"]["login_refused"] is True
        assert 'sip_upstream_login_refused{backend="ils"} 1' in metrics(relay)
        with terminal(relay) as client:
            status_reply = client.sc_status()
            assert status_reply.fixed["online_status"] == "N"
            assert "refuses this gateway's login" in " ".join(status_reply.getall("AF"))
        checked = subprocess.run(
            [str(Path(sys.executable).parent / "sipclient"), "-p", str(relay.port("raw")), "-u", "sco", "-P", "scpass",
             "check"], capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert checked.returncode != 0 and "refuses this gateway's login" in checked.stdout + checked.stderr
        everything = relay.log() + relay.output() + json.dumps(body) + metrics(relay)
        assert wrong not in everything
    finally:
        relay.stop()


def test_the_upstreams_flags_and_bx_are_combined_with_the_accounts_permissions(tmp_path):
    upstream = start_upstream(
        tmp_path, institutions={"MAIN": {"backend": "embedded", "library_name": "Up",
                                         "policy": {"timeout": 5, "checkout": False}}},
    )  # fmt: skip
    relay = start_relay(tmp_path, upstream.port("raw"))
    try:
        with terminal(relay) as client:
            status = client.sc_status()
        assert status.fixed["online_status"] == "Y" and status.fixed["checkout_ok"] == "N"
        assert status.get("BX")[1] == "N" and status.get("BX")[0] == "Y"  # 11 is off upstream; 23 is not
    finally:
        relay.stop()
        upstream.stop()


def test_each_side_has_its_own_encoding(tmp_path):
    upstream = start_upstream(tmp_path, gateway={"encoding": "cp850"})
    relay = start_relay(tmp_path, upstream.port("raw"), encoding="cp850")
    try:
        with terminal(relay) as client:  # the terminal speaks UTF-8, the upstream link cp850
            reply = client.patron_status("21000000000010", "0010", institution="MAIN")
        assert reply.get("AE") == "José Álvarez"
    finally:
        relay.stop()
        upstream.stop()


# -- pysip2 0.1.0's server as a second, independent upstream -----------------------------------------


@pytest.fixture
def pysip2_upstream():
    pytest.importorskip("pysip2", reason="install the bench extra: pip install -e '.[bench]'")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "pysip2_baseline.py"), "--port", "0", "--data", str(DEMO_DATA)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(ROOT),
    )  # fmt: skip
    try:
        line = b""
        deadline = time.monotonic() + 30
        while not line.startswith(b"ready") and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise AssertionError("pysip2 server exited")
        yield int(line.split()[1])
    finally:
        process.kill()
        process.wait(10)


def test_through_the_pysip2_server_the_terminal_gets_what_it_said(tmp_path, pysip2_upstream):
    relay = start_relay(tmp_path, pysip2_upstream, login={"user": "bench", "password": "benchpass"})
    try:
        with SIPClient("127.0.0.1", pysip2_upstream) as direct:
            assert direct.login("bench", "benchpass")
            straight = direct.patron_status(JANE, PIN, institution="MAIN")
        with terminal(relay) as client:
            assert client.sc_status().fixed["online_status"] == "Y"
            relayed = client.patron_status(JANE, PIN, institution="MAIN")
            for field_id in ("AE", "AF", "BL", "CQ", "BH", "AA"):
                assert relayed.getall(field_id) == straight.getall(field_id), field_id
            assert relayed.fixed["patron_status"] == straight.fixed["patron_status"]
            out = client.checkout(JANE, ITEM, PIN, institution="MAIN")
            assert out.fixed["ok"] == "1", out
            assert out.get("AH").endswith("    235900")  # pysip2 due date, as it wrote it
            back = client.checkin(ITEM, "MAIN", institution="MAIN")
            assert back.fixed["ok"] == "1" and back.get("AA") == JANE
            unknown = client.patron_status("29999999999999", "", institution="MAIN")
            assert unknown.get("BL") == "N" and unknown.getall("AF") == ["Unknown patron"]
    finally:
        relay.stop()


# -- the demo: etc/relay.yaml in front of etc/sip.yaml ---------------------------------------------


def _on_free_ports(path: Path, directory: Path) -> dict:
    """A shipped config with every listener on a free loopback port and files under ``directory``."""
    data = yaml.safe_load(path.read_text())
    for listener in data["listeners"]:
        listener["endpoint"] = "tcp:0:interface=127.0.0.1"
    data["http"]["endpoint"] = "tcp:0:interface=127.0.0.1"
    for backend in data["backends"].values():
        if backend["type"] == "sqlite":
            backend.update(path=str(directory / "demo.sqlite3"), seed=str(ROOT / "etc" / "demo-data.yaml"))
    return data


def test_the_demo_relay_config_fronts_the_demo_daemon(tmp_path):
    demo = Daemon(write_config(tmp_path, _on_free_ports(ROOT / "etc" / "sip.yaml", tmp_path)), tmp_path / "demo.log")
    demo.wait_ready(2)
    try:
        relay_dir = tmp_path / "relay"
        relay_dir.mkdir()
        data = _on_free_ports(ROOT / "etc" / "relay.yaml", relay_dir)
        data["backends"]["ils"]["endpoint"] = f"tcp:127.0.0.1:{demo.port('raw')}"
        relay = Daemon(write_config(relay_dir, data), relay_dir / "relay.log",
                       env={"SIP_GATEWAY_PASSWORD": "gatewaypass"}).wait_ready(2)  # fmt: skip
        try:
            relay.wait_for_log("logged in")
            with terminal(relay, "sip_sco_main", "scpass") as client:
                assert client.sc_status().fixed["online_status"] == "Y"
                out = client.checkout(JANE, ITEM, PIN, institution="MAIN")
                assert out.fixed["ok"] == "1" and out.get("AH")
                assert client.checkin(ITEM, "MAIN-DESK1", institution="MAIN").fixed["ok"] == "1"
            assert "login=sip_gateway checkout ok" in demo.log()
        finally:
            relay.stop()
    finally:
        demo.stop()


# -- terminals with their own upstream connection --------------------------------------------------


def _relay_with_accounts(tmp_path, port: int, accounts: list[dict]) -> Daemon:
    directory = tmp_path / "own"
    directory.mkdir()
    data = config_data(directory)
    data["backends"] = {"ils": relay_backend(port, pool={"size": 1})}
    data["institutions"]["MAIN"]["backend"] = "ils"
    data["accounts"] = [*data["accounts"], *accounts]
    relay = Daemon(write_config(directory, data), directory / "daemon.log").wait_ready(2)
    relay.wait_for_log("logged in")
    return relay


def test_a_terminal_with_an_upstream_login_of_its_own_uses_its_own_connection(tmp_path):
    own_secret = "own-upstream-pw-31"
    upstream = start_upstream(tmp_path, extra_accounts=[
        {"login": "desk_up", "password": f"plain:{own_secret}", "institution": "MAIN", "allow_from": ["127.0.0.0/8"]}
    ])  # fmt: skip
    secret = tmp_path / "desk.secret"
    secret.write_text(own_secret + "\n")
    desk = {"login": "desk", "password": "plain:deskpass", "institution": "MAIN", "allow_from": ["127.0.0.0/8"],
            "upstream_login": {"user": "desk_up", "password_file": str(secret)}}  # fmt: skip
    relay = _relay_with_accounts(tmp_path, upstream.port("raw"), [desk])
    try:
        with terminal(relay, "desk", "deskpass") as client:
            assert client.checkout(JANE, ITEM, PIN, institution="MAIN").fixed["ok"] == "1"
        with terminal(relay) as client:  # sco: no upstream login of its own, the shared pool
            assert client.checkin(ITEM, "MAIN", institution="MAIN").fixed["ok"] == "1"
        log = upstream.log()
        assert "login=desk_up checkout ok" in log and "login=gateway checkin ok" in log
        assert own_secret not in relay.log() + relay.output()
    finally:
        relay.stop()
        upstream.stop()


def test_a_forwarded_login_is_judged_by_the_upstream_and_its_requests_go_as_that_login(tmp_path):
    upstream = start_upstream(tmp_path, extra_accounts=[
        {"login": "legacy", "password": "plain:legacypass", "institution": "MAIN", "allow_from": ["127.0.0.0/8"]}
    ])  # fmt: skip
    legacy = {"login": "legacy", "password": "upstream", "institution": "MAIN", "allow_from": ["127.0.0.0/8"]}
    far = {"login": "faraway2", "password": "upstream", "institution": "MAIN", "allow_from": ["10.0.0.0/8"]}
    relay = _relay_with_accounts(tmp_path, upstream.port("raw"), [legacy, far])
    try:
        with SIPClient("127.0.0.1", relay.port("raw")) as client:
            assert not client.login("legacy", "not-the-password")  # the upstream's 94 says no
        with SIPClient("127.0.0.1", relay.port("raw")) as client:
            assert not client.login("faraway2", "whatever-9")  # refused here: never sent upstream
        with terminal(relay, "legacy", "legacypass") as client:
            assert client.checkout(JANE, ITEM, PIN, institution="MAIN").fixed["ok"] == "1"
            assert client.sc_status().fixed["online_status"] == "Y"
        log = upstream.log()
        assert "login=legacy checkout ok" in log and "faraway2" not in log
        assert "login refused" in relay.log() or "wrong_password" in relay.log()
        everything = relay.log() + relay.output()
        assert "legacypass" not in everything and "not-the-password" not in everything
    finally:
        relay.stop()
        upstream.stop()


def test_a_terminals_own_connection_failing_does_not_take_the_institution_off_line(tmp_path):
    upstream = start_upstream(tmp_path)
    desk = {"login": "desk", "password": "plain:deskpass", "institution": "MAIN", "allow_from": ["127.0.0.0/8"],
            "upstream_login": {"user": "no_such_login", "password": "nope-12"}}  # fmt: skip
    relay = _relay_with_accounts(tmp_path, upstream.port("raw"), [desk])
    try:
        with terminal(relay, "desk", "deskpass") as client:
            refused = client.patron_status(JANE, PIN, institution="MAIN")
            assert "not available" in " ".join(refused.getall("AF"))
        with terminal(relay) as client:  # the shared pool's terminals go on
            assert client.sc_status().fixed["online_status"] == "Y"
            assert client.patron_status(JANE, PIN, institution="MAIN").get("AE") == "Jane Doe"
        assert "REFUSED THE GATEWAY'S LOGIN (user no_such_login)" in relay.log()
    finally:
        relay.stop()
        upstream.stop()


def test_an_upstream_silent_at_login_is_tried_again_and_used_once_it_answers(wired):
    _upstream, wire, relay = wired
    silent = threading.Event()
    silent.set()
    wire.tamper = lambda to_server, data, _s: b"" if (not to_server and silent.is_set()) else data
    relay = relay(wait=False, timeout=1.0)
    relay.wait_for_log("no answer to the login in time", timeout=15)
    with terminal(relay) as client:
        assert client.sc_status().fixed["online_status"] == "N"
        silent.clear()
        wait_until(lambda: client.sc_status().fixed["online_status"] == "Y", timeout=30)
        assert client.patron_status(JANE, PIN, "MAIN").get("AE") == "Jane Doe"
