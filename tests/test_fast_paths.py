"""``server.fast_paths``: one switch that turns every speed measure off, and the daemon still answers
every request the same way with them off (``sipserver.daemon.fast_paths``).

The whole end-to-end suite runs on the plain paths with ``pytest --fast-paths off``; here a
representative part runs that way in every run: a self-check session over raw and telnet, pipelined
requests, and the PostgreSQL backend's transactions sent statement by statement.
"""

from __future__ import annotations

import gc
import itertools
import signal
import socket
from pathlib import Path

import attrs
import pytest
import yaml
from twisted.internet.testing import MemoryReactorClock

from sipserver import tap
from sipserver.client import SIPClient
from sipserver.daemon.fast_paths import FastPaths
from sipserver.sip2 import decode, encode, make
from tests import pg
from tests.daemon import Daemon, config_data, write_config
from tests.support import DEMO_DATA, Hub, Terminal, make_config

JANE, PIN = "21000000000001", "1234"
ITEM = "31000000000008"
MEASURES = [field.name for field in attrs.fields(FastPaths)]


@pytest.fixture(autouse=True)
def _process_state():
    """Starting a daemon sets signal handlers and may freeze the collector: put both back after."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGHUP, signal.SIGUSR1)}
    gc.unfreeze()
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
    gc.unfreeze()


def test_one_switch_turns_every_measure_on_or_off():
    assert FastPaths.chosen(True) == FastPaths() and FastPaths().off == []
    off = FastPaths.chosen(False)
    assert all(getattr(off, name) is False for name in MEASURES)
    assert off.off == MEASURES


def test_the_backends_own_measures_follow_the_switch():
    off, on = FastPaths.chosen(False), FastPaths.chosen(True)
    sqlite = {"type": "sqlite", "path": "x.sqlite3"}
    assert off.backend_options("sqlite", sqlite) == {
        **sqlite, "inline_reads": False, "inline_writes": False, "patron_cache": False
    }  # fmt: skip
    assert off.backend_options("postgresql", {"dsn": "x"}) == {"dsn": "x", "batch_statements": False}
    assert off.backend_options("mymodule:MyBackend", {"a": 1}) == {"a": 1}  # a third party's: its own business
    # On, a site's own choice stays: a measure one backend turns off stays off.
    assert on.backend_options("sqlite", {**sqlite, "inline_reads": False}) == {**sqlite, "inline_reads": False}


def _build(tmp_path: Path, fast_paths: bool, threaded: bool):
    data = {
        "server": {"name": "plain", "fast_paths": fast_paths},
        "listeners": [
            {"name": "raw", "transport": "raw", "endpoint": "tcp:6001:interface=127.0.0.1"},
            {"name": "telnet", "transport": "telnet", "endpoint": "tcp:6023:interface=127.0.0.1"},
        ],
        "logging": {"level": "info", "destination": "file", "file": str(tmp_path / "sip.log")},
        "institutions": {"MAIN": {"backend": "embedded"}},
        "backends": {"embedded": {"type": "sqlite", "path": str(tmp_path / "db.sqlite3"), "threaded": threaded,
                                  "seed": str(DEMO_DATA)}},
    }  # fmt: skip
    path = tmp_path / "sip.yaml"
    path.write_text(yaml.safe_dump(data))
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    return tap.makeService(options, MemoryReactorClock())


@pytest.mark.parametrize("fast_paths", [True, False])
def test_a_daemon_built_with_fast_paths_off_takes_the_plain_paths(tmp_path, fast_paths):
    daemon = _build(tmp_path, fast_paths, threaded=True)
    assert daemon.fast == FastPaths.chosen(fast_paths)
    assert {name: factory.batch_replies for name, factory in daemon.factories.items()} == {
        "raw": fast_paths, "telnet": fast_paths
    }  # fmt: skip
    backend = daemon.backends.backends["embedded"]
    assert backend.inline_reads is fast_paths and backend.inline_writes is fast_paths
    assert (backend.patron_cache is not None) is fast_paths


@pytest.mark.parametrize("fast_paths", [True, False])
def test_start_up_freezes_its_objects_only_with_fast_paths_on(tmp_path, fast_paths):
    daemon = _build(tmp_path, fast_paths, threaded=False)
    daemon.privilegedStartService()
    daemon.startService()
    try:
        assert (gc.get_freeze_count() > 0) is fast_paths
    finally:
        daemon.stopService()


@pytest.fixture
def plain_daemon(tmp_path):
    data = config_data(tmp_path)
    data["server"] = {**data["server"], "fast_paths": False}
    running = Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)
    yield running
    running.stop()


def _self_check(client: SIPClient) -> None:
    status = client.sc_status()
    assert status.code == "98" and status.fixed["online_status"] == "Y"
    patron = client.patron_information(JANE, PIN, summary="  Y       ", institution="MAIN")
    assert patron.get("BL") == "Y" and patron.get("CQ") == "Y" and patron.get("AE") == "Jane Doe"
    out = client.checkout(JANE, ITEM, PIN, institution="MAIN")
    assert out.code == "12" and out.fixed["ok"] == "1", out
    back = client.checkin(ITEM, "MAIN", institution="MAIN")
    assert back.code == "10" and back.fixed["ok"] == "1" and back.get("AA") == JANE


@pytest.mark.e2e
def test_a_self_check_session_with_fast_paths_off(plain_daemon):
    assert "fast paths off (server.fast_paths: false): " + ", ".join(MEASURES) in plain_daemon.log()
    with SIPClient("127.0.0.1", plain_daemon.port("raw"), timeout=10) as client:
        assert client.login("sco", "scpass")
        _self_check(client)
        _self_check(client)  # the second look-up of the patron is read again (no cache), and agrees
    with SIPClient("127.0.0.1", plain_daemon.port("telnet"), transport="telnet", timeout=10) as client:
        assert client.telnet_login("telnet", "telnetpass")
        _self_check(client)


@pytest.mark.e2e
def test_pipelined_requests_are_answered_in_order_with_fast_paths_off(plain_daemon):
    frames = [encode(make("93", CN="sco", CO="scpass"), sequence="0")]
    frames += [encode(make("23", AO="MAIN", AA=JANE, AD=PIN), sequence=str(n % 10)) for n in range(1, 30)]
    with socket.create_connection(("127.0.0.1", plain_daemon.port("raw")), timeout=10) as sock:
        sock.sendall(b"".join(frames))
        received = b""
        while received.count(b"\r") < len(frames):  # bounded by the socket's timeout
            chunk = sock.recv(65536)
            assert chunk, "the daemon closed the connection before every reply came"
            received += chunk
    replies = [decode(line + b"\r") for line in received.split(b"\r")[:-1]]
    assert len(replies) == len(frames)
    assert replies[0].code == "94" and replies[0].fixed["ok"] == "1"
    assert [r.code for r in replies[1:]] == ["24"] * 29
    assert [r.sequence for r in replies] == [str(n % 10) for n in range(30)]


@pytest.mark.postgresql
def test_postgresql_transactions_sent_statement_by_statement(tmp_path, pg_demo_template):
    with pg.temporary_database(pg_demo_template) as name:
        backend = pg.sync_backend(name, batch_statements=False)
        try:
            assert backend.batch_statements is False
            terminal = Terminal(Hub(make_config(tmp_path), backend))
            sequence = itertools.count()

            def ask(code, **fields):
                raw = terminal.one(encode(make(code, **fields), sequence=str(next(sequence) % 10)))
                return decode(raw)

            assert ask("93", CN="sco", CO="scpass").fixed["ok"] == "1"
            assert ask("23", AO="MAIN", AA=JANE, AD=PIN).code == "24"  # a connection is open now
            assert pg.terminate(name) >= 1  # lost before BEGIN: the write is retried on a new connection
            out = ask("11", AO="MAIN", AA=JANE, AB=ITEM, AC="", AD=PIN, sc_renewal_policy=True)
            assert out.code == "12" and out.fixed["ok"] == "1", out
            again = ask("11", AO="MAIN", AA="21000000000021", AB=ITEM, AC="", sc_renewal_policy=True)
            assert again.code == "12" and again.fixed["ok"] == "0"  # lent: the write was committed
            back = ask("09", AO="MAIN", AB=ITEM, AP="MAIN", AC="")
            assert back.code == "10" and back.fixed["ok"] == "1" and back.get("AA") == JANE
        finally:
            backend.stop()
