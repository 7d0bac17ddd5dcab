"""``server.workers: 2`` behaves as one server: one failed-login lockout, and /metrics and /health
counting every process's connections (the real daemon, its connections dealt out in turn)."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from sipserver.client import SIPClient
from tests.daemon import Daemon, config_data, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def daemon(tmp_path):
    data = config_data(tmp_path)
    data["server"]["workers"] = 2
    data["server"]["lockout"] = {"failures": 5, "window": 60, "duration": 300}
    running = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)
    try:
        running.wait_for_log("worker 1 (pid", timeout=20)
        yield running
    finally:
        running.stop()


def refusals(daemon: Daemon, peer: str) -> list[tuple[str, str]]:
    """(reason, worker) of each refused login from ``peer``, in order."""
    pattern = rf"login refused listener=raw peer={re.escape(peer)} login=\S+ reason=(\w+)"
    lines = [line for line in daemon.log().splitlines() if re.search(pattern, line)]
    return [(re.search(pattern, line).group(1), line) for line in lines]


def test_seven_wrong_passwords_over_two_workers_lock_at_five(daemon):
    for attempt in range(7):
        with SIPClient("127.0.0.1", daemon.port("raw"), source="127.0.0.5") as client:
            assert not client.login("sco", f"wrong{attempt}")
    with SIPClient("127.0.0.1", daemon.port("raw"), source="127.0.0.5") as client:
        assert not client.login("sco", "scpass"), "the address was not locked"
    with SIPClient("127.0.0.1", daemon.port("raw"), source="127.0.0.6") as client:
        assert client.login("sco", "scpass")
    reasons = [reason for reason, _ in refusals(daemon, "127.0.0.5")]
    assert reasons == ["wrong_password"] * 5 + ["locked_out"] * 3, reasons
    connections = [line for line in daemon.log().splitlines() if "connection opened" in line and "127.0.0.5" in line]
    assert any("worker=0" in line for line in connections) and any("worker=1" in line for line in connections)


def get(daemon: Daemon, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port('http')}{path}", timeout=10) as answer:
        return answer.read().decode()


def test_metrics_and_health_count_the_connections_of_both_workers(daemon):
    clients = [SIPClient("127.0.0.1", daemon.port("raw")) for _ in range(6)]
    try:
        for client in clients:
            assert client.login("sco", "scpass")
        deadline = time.monotonic() + 10
        while "worker=1" not in daemon.log():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        metrics = get(daemon, "/metrics")
        assert 'sip_connections_open{listener="raw"} 6' in metrics, metrics
        assert 'sip_connections_by_login{listener="raw",login="sco"} 6' in metrics
        assert 'sip_logins_total{result="ok",reason=""} 6' in metrics
        assert "sip_workers_answering 2" in metrics
        health = json.loads(get(daemon, "/health"))
        assert health["connections"] == 6 and health["workers"] == {"processes": 2, "answered": 2}
    finally:
        for client in clients:
            client.close()


def test_workers_read_the_proxy_header_of_the_connections_dealt_to_them(tmp_path):
    from sipserver.daemon.transport.proxy_header import v2_header

    data = config_data(tmp_path)
    data["server"]["workers"] = 2
    data["listeners"][0]["proxy_protocol"] = {"trusted": ["127.0.0.1/32"]}
    running = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)
    try:
        running.wait_for_log("worker 1 (pid", timeout=20)
        port = running.port("raw")
        for n in range(4):
            header = v2_header((f"10.7.0.{n + 1}", 5000), ("127.0.0.1", port))
            with SIPClient("127.0.0.1", port, source="127.0.0.1", proxy_header=header) as client:
                assert client.login("faraway", "farpass")  # allow_from 10.0.0.0/8: the header's address
        log = running.log()
        assert any(f"peer=10.7.0.{n} worker=1" in log for n in range(1, 5)), log[-2000:]
        assert any(f"peer=10.7.0.{n} worker=0" in log for n in range(1, 5)), log[-2000:]
    finally:
        running.stop()
