"""The console on a real daemon's HTTP listener, over HTTP: who gets in, what it shows, the test form."""

from __future__ import annotations

import json
import re
import time

import pytest

from sipserver.client import SIPClient
from sipserver.observe.console.guard import basic_credentials, unsafe_endpoint
from tests.console_daemon import ADMIN_PASSWORD, get, start, state
from tests.daemon import Daemon, config_data, write_config
from tests.support import cheap_scrypt_hash


@pytest.fixture
def daemon(tmp_path):
    running = start(tmp_path)
    yield running
    running.stop()


def until(check, within: float = 10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("not seen in time")


def csrf(daemon: Daemon) -> str:
    status, _, page = get(daemon)
    assert status == 200
    return re.search(rb'name="csrf-token" content="([0-9a-f]+)"', page).group(1).decode()


def test_the_page_needs_an_administrator_and_carries_a_strict_policy(daemon):
    status, headers, _ = get(daemon, password=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert get(daemon, password="wrong")[0] == 401
    status, headers, page = get(daemon)
    assert status == 200
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert not re.search(rb"<script(?![^>]*\bsrc=)", page)  # no inline script
    assert not re.search(rb"\son[a-z]+=", page)  # no inline event handler
    for name in ("console.js", "console.css"):
        assert get(daemon, f"/console/static/{name}")[0] == 200
    assert get(daemon, "/console/static/../pages.py")[0] == 404
    # /health and /metrics work as before, without a login
    assert get(daemon, "/health", password=None)[0] == 200
    assert get(daemon, "/metrics", password=None)[0] == 200


def test_failed_console_logins_lock_the_address_out_of_sip_logins_too(daemon):
    for _ in range(4):  # the e2e config locks after 4 failures
        assert get(daemon, password="guess")[0] == 401
    status, _, body = get(daemon)  # the right password, from a locked address
    assert status == 401 and b"Too many failed logins" in body
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert not client.login("sco", "scpass")
    assert "console login refused" in daemon.log()
    assert ADMIN_PASSWORD not in daemon.log() and "guess" not in daemon.log()


def test_terminals_refusals_and_the_allow_from_fix(daemon):
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert client.login("sco", "scpass")
        client.sc_status()
        shown = until(lambda: [t for t in state(daemon)["terminals"] if t["login"] == "sco"])
        assert shown[0]["listener"] == "raw" and shown[0]["institution"] == "MAIN"
        assert shown[0]["last_request"] == "sc_status" and shown[0]["messages"] == 2
    until(lambda: not state(daemon)["terminals"])
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert not client.login("faraway", "farpass")  # allowed from 10.0.0.0/8 only
    data = state(daemon)
    refusal = data["refusals"][0]
    assert (refusal["peer"], refusal["login"], refusal["listener"]) == ("127.0.0.1", "faraway", "raw")
    assert refusal["reason"] == "address_not_allowed"
    faraway = next(a for a in data["accounts"] if a["login"] == "faraway")
    (entry,) = faraway["not_allowed"]
    assert entry["fix"] == "allow_from: [10.0.0.0/8, 127.0.0.1/32]" and entry["count"] == 1
    telnet = next(a for a in data["accounts"] if a["login"] == "telnet")
    assert telnet["last_seen"] is None
    text = json.dumps(data)
    assert "farpass" not in text and "scpass" not in text and "scrypt" not in text


def test_the_test_form_runs_sipclient_check_and_masks_the_password(daemon):
    token = csrf(daemon)
    form = json.dumps({"login": "sco", "password": "scpass", "patron": ""}).encode()
    json_type = {"Content-Type": "application/json"}
    assert get(daemon, "/console/api/test", data=form, headers=json_type)[0] == 403  # no token
    status, _, body = get(daemon, "/console/api/test", data=form, headers={**json_type, "X-CSRF-Token": token})
    assert status == 200, body
    outcome = json.loads(body)
    assert outcome["ok"] and outcome["line"].startswith("OK: 127.0.0.1:")
    assert [f["decoded"][0] for f in outcome["frames"]] == ["93 login", "94 login_response", "99 sc_status",
                                                             "98 acs_status"]  # fmt: skip
    assert b"scpass" not in body and "CO***" in outcome["frames"][0]["bytes"]
    wrong = json.dumps({"login": "sco", "password": "nope"}).encode()
    status, _, body = get(daemon, "/console/api/test", data=wrong, headers={**json_type, "X-CSRF-Token": token})
    assert status == 200 and json.loads(body)["line"].startswith("FAIL: login refused")


def test_no_console_without_an_administrator(tmp_path):
    running = Daemon(write_config(tmp_path, config_data(tmp_path)), tmp_path / "d.log").wait_ready(2)
    try:
        assert get(running)[0] == 404
    finally:
        running.stop()


def test_a_plain_console_password_stops_start_up(tmp_path):
    from sipserver.config import ConfigError, parse_config

    data = config_data(tmp_path, console={"admins": [{"login": "a", "password": "plain:letmein"}]})
    with pytest.raises(ConfigError, match=r"console\.admins\[0\]\.password.*hash-password") as error:
        parse_config(data, "sip.yaml")
    assert "letmein" not in str(error.value)


def test_basic_auth_is_served_only_over_tls_or_loopback():
    assert unsafe_endpoint("tcp:6080:interface=127.0.0.1") is None
    assert unsafe_endpoint(r"tcp6:6080:interface=\:\:1") is None
    assert unsafe_endpoint("ssl:6443:privateKey=k:certKey=c") is None
    assert unsafe_endpoint("unix:/run/sip/http.sock") is None
    assert unsafe_endpoint("tcp:6080") is not None
    assert unsafe_endpoint("tcp:6080:interface=0.0.0.0") is not None
    assert basic_credentials(b"Basic YWRtaW46YTpi") == ("admin", "a:b")
    assert basic_credentials(b"Basic !!!") is None and basic_credentials(b"Bearer x") is None


def test_the_console_stays_off_on_an_endpoint_anyone_can_reach(tmp_path):
    """Built, not bound (tests bind loopback only): the page is not made, and start-up says why."""
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher

    from sipserver.accounts.lockout import Lockout
    from sipserver.config import parse_config
    from sipserver.daemon.console import console_page

    admins = {"admins": [{"login": "a", "password": cheap_scrypt_hash("x")}]}
    data = config_data(tmp_path, console=admins, http={"endpoint": "tcp:6080"})
    config = parse_config(data, str(tmp_path / "sip.yaml"))
    said: list[str] = []
    observer = lambda event: said.append(str(event.get("log_format", "")).format(**event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        page = console_page(config, object(), None, Lockout(4, 60, 300, clock=Clock()), {}, None, Clock())
    finally:
        globalLogPublisher.removeObserver(observer)
    assert page is None
    assert any("console: off, the HTTP endpoint is neither TLS" in line for line in said), said


def test_with_two_workers_the_page_shows_the_terminals_of_both(tmp_path):
    """The parent gathers each worker's books over the control channel and merges them: six
    terminals dealt out over two processes are all on the page, and gone once they leave."""
    data = config_data(
        tmp_path, console={"admins": [{"login": "admin", "password": cheap_scrypt_hash(ADMIN_PASSWORD)}]}
    )
    data["server"]["workers"] = 2
    running = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)
    clients = []
    try:
        running.wait_for_log("worker 1 (pid", timeout=20)
        for _ in range(6):
            client = SIPClient("127.0.0.1", running.port("raw"))
            assert client.login("sco", "scpass")
            client.sc_status()
            clients.append(client)
        shown = until(lambda: [t for t in state(running)["terminals"] if t["login"] == "sco"][5:] and state(running))
        terminals = [t for t in shown["terminals"] if t["login"] == "sco"]
        assert len(terminals) == 6
        opened = [line for line in running.log().splitlines() if "connection opened" in line]
        assert any("worker=0" in line for line in opened) and any("worker=1" in line for line in opened)
        for client in clients:
            client.close()
        clients = []
        until(lambda: not state(running)["terminals"])
    finally:
        for client in clients:
            client.close()
        running.stop()
