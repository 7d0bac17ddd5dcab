"""The console's books: fed by the same Events calls the log and metrics get, snapshot, merge, view."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock as TwistedClock

from sipserver.acs.health import BackendHealth
from sipserver.config import AccountConfig, ListenerConfig
from sipserver.connection import Connection
from sipserver.observe.console.activity import MINUTES, Activity, percentile
from sipserver.observe.console.record import MAX_NEW_ADDRESSES, ConsoleRecord
from sipserver.observe.console.snapshot import merge, snapshot
from sipserver.observe.console.view import allow_from_line, page_data
from sipserver.observe.events import Events
from sipserver.observe.exchangelog import LogWriter
from sipserver.observe.exchangelog.destinations import LogFile
from sipserver.observe.exchangelog.lines import TextLines

RAW = ListenerConfig(name="raw", transport="raw", endpoint="tcp:0")
TELNET = ListenerConfig(name="telnet", transport="telnet", endpoint="tcp:0")
SCO = AccountConfig(login="sco", password_hash="plain:x", institution="MAIN", allow_from=("10.1.0.0/16",))


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fed(tmp_path: Path, clock: Clock, refusals: int = 200) -> tuple[Events, ConsoleRecord]:
    events = Events("warn", LogWriter(LogFile(str(tmp_path / "log")), TextLines()))
    events.console = ConsoleRecord(refusals, clock=clock)
    return events, events.console


def test_a_terminal_appears_with_its_figures_and_goes_when_it_closes(tmp_path: Path) -> None:
    clock = Clock()
    events, record = fed(tmp_path, clock)
    connection = Connection(RAW, "10.1.2.3")
    events.connection_opened(connection)
    clock.now += 5
    events.login(connection, "sco", False, "wrong_password")
    connection.account, connection.login = SCO, "sco"
    events.login(connection, "sco", True, None)
    clock.now += 1
    events.exchange(connection, "patron_status", "ok", 0.0123)
    events.exchange(connection, "checkout", "refused", 0.002)
    (terminal,) = snapshot(record, worker=2)["terminals"]
    assert terminal == {
        "worker": 2, "listener": "raw", "peer": "10.1.2.3", "login": "sco", "institution": "MAIN",
        "since": 1_800_000_000.0, "last_at": 1_800_000_006.0, "last_request": "checkout", "outcome": "refused",
        "latency_ms": 2.0, "messages": 2, "refusals": 1,
    }  # fmt: skip
    events.connection_closed(connection)
    assert snapshot(record)["terminals"] == []


def test_address_not_allowed_is_kept_per_account_with_its_fix(tmp_path: Path) -> None:
    clock = Clock()
    events, record = fed(tmp_path, clock)
    for peer, listener in [("192.0.2.7", RAW), ("192.0.2.7", RAW), ("::ffff:192.0.2.7", TELNET)]:
        clock.now += 10
        connection = Connection(listener, peer)
        events.connection_opened(connection)
        events.login(connection, "sco", False, "address_not_allowed")
    seen = snapshot(record)["accounts"]["sco"]
    assert seen["refusals"] == {"address_not_allowed": 3}
    assert seen["not_allowed"] == [
        {"peer": "192.0.2.7", "listener": "raw", "count": 2, "since": 1_800_000_010.0, "last": 1_800_000_020.0},
        {"peer": "192.0.2.7", "listener": "telnet", "count": 1, "since": 1_800_000_030.0, "last": 1_800_000_030.0},
    ]
    data = page_data(snapshot(record), [SCO], datetime.date(2027, 1, 1), "x")
    (row,) = data["accounts"]
    assert row["not_allowed"][0]["fix"] == "allow_from: [10.1.0.0/16, 192.0.2.7/32]"
    assert row["last_seen"] is None  # never logged in since start


def test_refused_addresses_per_account_are_bounded(tmp_path: Path) -> None:
    events, record = fed(tmp_path, Clock())
    for n in range(MAX_NEW_ADDRESSES + 5):
        events.login(Connection(RAW, f"192.0.2.{n}"), "sco", False, "address_not_allowed")
    kept = snapshot(record)["accounts"]["sco"]["not_allowed"]
    assert len(kept) == MAX_NEW_ADDRESSES
    assert kept[-1]["peer"] == f"192.0.2.{MAX_NEW_ADDRESSES + 4}"


def test_refusals_keep_the_last_n_and_never_a_password(tmp_path: Path) -> None:
    events, record = fed(tmp_path, Clock(), refusals=3)
    events.connection_refused("raw", "10.9.9.9", "server limit of 10 connections reached")
    for n in range(4):
        events.login(Connection(RAW, "10.0.0.1"), f"9300CNsco|COsecret{n}|", False, "unknown_login")
    refusals = snapshot(record)["refusals"]
    assert len(refusals) == 3
    assert all("secret" not in json.dumps(r) for r in refusals)
    assert refusals[0]["login"] == "9300CNsco|CO***|"
    # a login that does not exist is not followed as an account (any text a peer types would be)
    assert snapshot(record)["accounts"] == {}


def test_last_seen_says_when_and_where(tmp_path: Path) -> None:
    clock = Clock()
    events, record = fed(tmp_path, clock)
    events.login(Connection(TELNET, "10.1.0.5"), "sco", True, None)
    assert snapshot(record)["accounts"]["sco"]["last_seen"] == {
        "at": 1_800_000_000.0, "peer": "10.1.0.5", "listener": "telnet"}  # fmt: skip


def test_expiry_warns_thirty_days_ahead() -> None:
    soon = AccountConfig(login="a", password_hash="plain:x", institution="M", expires=datetime.date(2027, 1, 30))
    later = AccountConfig(login="b", password_hash="plain:x", institution="M", expires=datetime.date(2027, 2, 1))
    snap = snapshot(ConsoleRecord(clock=Clock()))
    rows = page_data(snap, [soon, later], datetime.date(2026, 12, 31), "x")["accounts"]
    assert [(r["days_left"], r["expiry_warning"]) for r in rows] == [(30, True), (32, False)]


def test_allow_from_line_quotes_ipv6_as_the_config_does() -> None:
    assert allow_from_line([], "2001:db8::7") == 'allow_from: ["2001:db8::7/128"]'
    assert allow_from_line(SCO.allow_from, "10.1.0.9") == "allow_from: [10.1.0.0/16, 10.1.0.9/32]"


def test_activity_counts_per_minute_from_the_metrics(tmp_path: Path) -> None:
    clock = Clock(60 * 30_000_000)
    events, record = fed(tmp_path, clock)
    activity = Activity(events.metrics)
    connection = Connection(RAW, "10.1.2.3")
    events.exchange(connection, "sc_status", "ok", 0.0004)
    events.exchange(connection, "sc_status", "ok", 0.0004)
    activity.sample(clock.now)
    clock.now += 60
    events.exchange(connection, "checkout", "refused", 0.3)
    minutes = snapshot(record, activity)["minutes"]
    assert {k: v["messages"] for k, v in minutes.items()} == {
        "30000000": {"sc_status|ok": 2},
        "30000001": {"checkout|refused": 1},  # the running minute, not yet sampled
    }
    rows = page_data(snapshot(record, activity), [], datetime.date(2026, 1, 1), "x")["activity"]
    assert [(r["total"], r["p50"], r["p99"]) for r in rows] == [(2, 0.5, 0.5), (1, 500.0, 500.0)]
    activity.sample(clock.now)
    clock.now += 60 * MINUTES  # a day later the ring has moved past both
    activity.sample(clock.now)
    assert list(snapshot(record, activity)["minutes"]) == []


def test_percentile_is_the_bucket_bound() -> None:
    assert percentile([0] * 14, 0.5) is None
    assert percentile([1, 0, 0, 1] + [0] * 10, 0.5) == 0.0005
    assert percentile([1, 0, 0, 1] + [0] * 10, 0.99) == 0.005


def test_merge_adds_the_workers_up(tmp_path: Path) -> None:
    clock = Clock(60 * 30_000_000)
    parts = []
    for worker, peer in enumerate(["10.1.0.1", "10.1.0.2"]):
        events, record = fed(tmp_path, clock)
        activity = Activity(events.metrics)
        connection = Connection(RAW, peer)
        events.connection_opened(connection)
        events.login(connection, "sco", False, "address_not_allowed")
        events.login(Connection(RAW, "192.0.2.1"), "sco", False, "address_not_allowed")
        events.login(connection, "sco", True, None)
        events.exchange(connection, "sc_status", "ok", 0.0004)
        clock.now += 1
        parts.append(json.loads(json.dumps(snapshot(record, activity, worker=worker))))  # as over a pipe
    merged = merge(parts)
    assert merged["workers"] == [0, 1]
    assert sorted(t["peer"] for t in merged["terminals"]) == ["10.1.0.1", "10.1.0.2"]
    sco = merged["accounts"]["sco"]
    assert sco["last_seen"]["peer"] == "10.1.0.2"  # the latest
    assert sco["refusals"] == {"address_not_allowed": 4}
    addresses = sorted((e["peer"], e["count"]) for e in sco["not_allowed"])
    assert addresses == [("10.1.0.1", 1), ("10.1.0.2", 1), ("192.0.2.1", 2)]
    assert [r["peer"] for r in merged["refusals"]][:2] in (["192.0.2.1", "10.1.0.2"], ["10.1.0.2", "192.0.2.1"])
    assert len(merged["refusals"]) == 4
    assert merged["minutes"] == {"30000000": {"messages": {"sc_status|ok": 2}, "latency": [2] + [0] * 13}}
    assert merge([merged]) == merged  # merging is idempotent on one part


class SlowHealth:
    """A backend whose health check answers when the test's clock says so."""

    def __init__(self) -> None:
        self.answer: Deferred[bool] | None = None

    def health(self) -> Deferred[bool]:
        self.answer = Deferred()
        return self.answer


def test_backends_show_their_state_and_last_probe_time() -> None:
    reactor = TwistedClock()
    backend = SlowHealth()
    health = BackendHealth({"ils": backend}, reactor)
    health.probe_all()
    reactor.advance(0.25)
    assert backend.answer is not None
    backend.answer.callback(True)
    snap = snapshot(ConsoleRecord(clock=Clock()), health=health)
    assert snap["backends"] == {"ils": {"up": True, "errors": 0, "timeouts": 0, "probe_ms": 250.0}}
    other = json.loads(json.dumps(snap))
    other["backends"]["ils"] |= {"up": False, "probe_ms": 900.0, "errors": 2}
    assert merge([snap, other])["backends"]["ils"] == {"up": False, "errors": 2, "timeouts": 0, "probe_ms": 900.0}


class RelayingBackend(SlowHealth):
    """A backend that relays to another SIP2 server, reporting its pool as the sip2 backend does."""

    def __init__(self, logged_in: int, refused: bool = False) -> None:
        super().__init__()
        self.logged_in, self.refused = logged_in, refused

    def upstream_report(self) -> dict[str, object]:
        return {"endpoint_reachable": self.logged_in > 0, "logged_in": self.logged_in, "pool_size": 4,
                "login_refused": self.refused, "queue_depth": 1, "requests": 10, "errors": 1, "outcome_unknown": 0,
                "reconnects": 0, "latency_sum": 0.05, "latency_count": 10,
                "problem": "" if self.logged_in else "connection refused"}  # fmt: skip


def test_a_relaying_backend_shows_its_upstream_added_over_the_workers() -> None:
    health = BackendHealth({"ils": RelayingBackend(4), "db": SlowHealth()}, TwistedClock())
    snap = snapshot(ConsoleRecord(clock=Clock()), health=health)
    assert "upstream" not in snap["backends"]["db"]
    assert snap["backends"]["ils"]["upstream"] == {
        "logged_in": 4, "pool_size": 4, "queue": 1, "requests": 10, "errors": 1, "latency_sum": 0.05,
        "latency_count": 10, "problem": "", "latency_ms": 5.0,
    }  # fmt: skip
    refused = BackendHealth({"ils": RelayingBackend(0, refused=True)}, TwistedClock())
    other = json.loads(json.dumps(snapshot(ConsoleRecord(clock=Clock()), health=refused)))
    upstream = merge([snap, other])["backends"]["ils"]["upstream"]
    assert (upstream["logged_in"], upstream["pool_size"], upstream["requests"]) == (4, 8, 20)
    assert upstream["problem"] == "the upstream refuses this gateway's login" and upstream["latency_ms"] == 5.0
