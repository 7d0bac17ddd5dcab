#!/usr/bin/env python3
"""What the operator's console costs, measured in-process: per exchange, per snapshot, in memory.

    python bench/console.py [--exchanges 300000] [--terminals 10000]

* the request path: :meth:`Events.exchange` with the console's books off and on, interleaved in
  rounds, and the difference per call (what the books add to each SIP exchange);
* a snapshot with ``--terminals`` connections open and the page's view of it (what each poll of
  the page costs the daemon);
* memory: the books with ``--terminals`` terminals, and the per-minute ring filled for 24 hours
  with every message type and outcome, measured with tracemalloc.

The end-to-end figure (the status mix with the console on and off) is ``bench/load.py --console``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipserver.config import AccountConfig, ListenerConfig
from sipserver.connection import Connection
from sipserver.observe.console.activity import MINUTES, Activity
from sipserver.observe.console.record import ConsoleRecord
from sipserver.observe.console.snapshot import snapshot
from sipserver.observe.console.view import page_data
from sipserver.observe.events import Events
from sipserver.observe.exchangelog import LogWriter
from sipserver.observe.exchangelog.destinations import LogFile
from sipserver.observe.exchangelog.lines import TextLines
from sipserver.sip2 import MESSAGES

RAW = ListenerConfig(name="raw", transport="raw", endpoint="tcp:0")
OUTCOMES = ("ok", "refused", "unavailable", "unknown_patron")


def per_exchange(exchanges: int, rounds: int = 7) -> tuple[float, float]:
    """Microseconds per Events.exchange (level warn: no log line), books off and on."""
    events = Events("warn", LogWriter(LogFile("/dev/null"), TextLines()))
    connection = Connection(RAW, "10.1.2.3")
    record = ConsoleRecord()
    off, on = [], []
    for _ in range(rounds):
        for books, into in ((None, off), (record, on)):
            events.console = books
            if books is not None:
                events.connection_opened(connection)
            exchange = events.exchange
            started = time.perf_counter()
            for _ in range(exchanges):
                exchange(connection, "sc_status", "ok", 0.0004)
            into.append((time.perf_counter() - started) / exchanges * 1e6)
    return statistics.median(off), statistics.median(on)


def snapshot_cost(terminals: int) -> tuple[float, float, int]:
    """Milliseconds for a snapshot and the page's view with ``terminals`` open; the books' bytes."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    events = Events("warn", LogWriter(LogFile("/dev/null"), TextLines()))
    record = events.console = ConsoleRecord()
    connections = []
    for n in range(terminals):
        connection = Connection(RAW, f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
        connections.append(connection)
        events.connection_opened(connection)
        events.exchange(connection, "sc_status", "ok", 0.0004)
    for n in range(record.refusals.maxlen or 0):
        events.login(Connection(RAW, f"192.0.2.{n % 256}"), "sco", False, "address_not_allowed")
    held = tracemalloc.get_traced_memory()[0] - before - sum(sys.getsizeof(c) for c in connections)
    tracemalloc.stop()
    accounts = [AccountConfig(login="sco", password_hash="plain:x", institution="MAIN")]
    started = time.perf_counter()
    snap = snapshot(record)
    taken = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    page_data(snap, accounts, datetime.date.today(), "bench")
    viewed = (time.perf_counter() - started) * 1000
    return taken, viewed, held


def ring_bytes() -> tuple[int, int]:
    """The per-minute ring's bytes when full (24 h, every message type with each outcome), and its keys."""
    events = Events("warn", LogWriter(LogFile("/dev/null"), TextLines()))
    connection = Connection(RAW, "10.1.2.3")
    names = sorted({spec.name for spec in MESSAGES.values()})
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    activity = Activity(events.metrics)
    for minute in range(MINUTES):
        for name in names:
            for outcome in OUTCOMES:
                events.exchange(connection, name, outcome, 0.001 * (minute % 7))
        activity.sample(minute * 60.0)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held, len(names) * len(OUTCOMES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=300_000, help="calls per round (default 300,000)")
    parser.add_argument("--terminals", type=int, default=10_000, help="open connections (default 10,000)")
    args = parser.parse_args(argv)
    off, on = per_exchange(args.exchanges)
    print(f"Events.exchange, level warn: books off {off:.3f} us, on {on:.3f} us: the console adds "
          f"{on - off:.3f} us an exchange ({on / off:.2f}x of the call; medians of 7 rounds)")  # fmt: skip
    taken, viewed, held = snapshot_cost(args.terminals)
    print(f"{args.terminals:,} terminals open: books {held / 1e6:.1f} MB ({held / args.terminals:.0f} bytes a terminal,"
          f" the connections themselves not counted); snapshot {taken:.1f} ms, page view {viewed:.1f} ms")  # fmt: skip
    ring, keys = ring_bytes()
    print(f"per-minute ring full (24 h x {keys} message|outcome keys): {ring / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
