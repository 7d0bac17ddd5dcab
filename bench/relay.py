#!/usr/bin/env python3
"""The ``sip2`` backend's cost: terminals direct to an upstream SIP2 server against the same
terminals through sipserver relaying to it, in the same run.

    python bench/relay.py [--seconds 3] [--rounds 3] [--connections 50] [--many 2000] [--pool 8]

* the status mix (99 and 23 in turn) and the circulation mix (11, 29, 09) at ``--connections``
  terminals, direct to the upstream and through the relay, with PyPI pysip2 0.1.0's server and with
  this daemon (embedded backend, demo data) as the upstream: the rate through the relay over the rate
  direct, median of rounds that alternate which goes first;
* the relay's own CPU per relayed message against the upstream daemon's CPU per message, both read
  from /proc over the same circulation runs (every circulation message is relayed);
* ``--many`` terminals logged in to the relay at once over ``--pool`` upstream connections: the
  status mix's rate in a closed loop (every terminal always waiting: its p99 is the queue), its p99
  at ``--light-rate`` messages a second spread over them, and the relay's memory per terminal.

Every daemon runs at ``logging.level: info``, text to a file, as sites run it. The upstream runs on
CPU 0 and the relay with the load generator on CPU 1, as a relay and its ILS stand on separate
machines (the direct runs have the generator on CPU 1 too); ``--share`` lets every process use every
CPU instead, where the relay's work takes CPU from the upstream's.
Every phase is bounded in time, and every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from cpuidle import cpus_awake
from load import circ_cycle, demo, login_frame, machine, row, status_cycle
from loadgen import Conn, Result, close_all, closed_loop, connect, generator_name, open_loop, raise_fd_limit
from servers import LOGIN, PASSWORD, TWISTD, OurServer, Pysip2Server, Server, bench_config, free_port, workdir


class RelayServer(Server):
    """sipserver with its institution on the ``sip2`` backend, relaying to ``upstream``."""

    def __init__(
        self, work: Path, upstream: Server, *, pool: int, level: str = "info", cpus: set[int] | None = None
    ) -> None:
        port = free_port()
        self.name = f"relay>{upstream.name}"
        self.log_file = work / f"sipserver-{port}.log"
        data = bench_config(work, port, level=level)
        data["backends"] = {"ils": {
            "type": "sip2", "endpoint": f"tcp:127.0.0.1:{upstream.port}",
            "login": {"user": LOGIN, "password": PASSWORD, "location": "MAIN-DESK1"},
            "pool": {"size": pool, "queue": 20000}, "timeout": 10,
        }}  # fmt: skip
        data["institutions"]["MAIN"]["backend"] = "ils"
        path = work / f"relay-{port}.yaml"
        path.write_text(yaml.safe_dump(data))
        super().__init__([TWISTD, "-n", "--pidfile=", "--logfile=-", "sip", "-c", str(path)], port, cpus,
                         work / f"relay-{port}.out")  # fmt: skip

    def wait_logged_in(self, timeout: float = 30.0) -> RelayServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_file.exists() and "logged in" in self.log_file.read_text(errors="replace"):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: the upstream pool did not log in:\n{self.log()}")


def started(server: Server) -> Server:
    try:
        server.wait_ready(login_frame())
        if isinstance(server, RelayServer):
            server.wait_logged_in()
        return server
    except BaseException:
        server.stop()
        raise


#: CPUs of the upstream, and of the relay with the load generator: the relay and the ILS on separate
#: machines, as they are deployed, on a 2-CPU box. None (``--share``): every process on every CPU.
PINNED = {"upstream": {0}, "relay": {1}}
UNPINNED: dict[str, set[int] | None] = {"upstream": None, "relay": None}
CPUS: dict[str, set[int] | None] = dict(UNPINNED)


def upstream_of(kind: str, work: Path) -> Server:
    cpus = CPUS["upstream"]
    return started(OurServer(work, cpus=cpus) if kind == "sipserver" else Pysip2Server(work, cpus=cpus))


def rounds(
    pair: Sequence[Server], cycles: Sequence[Sequence[Any]], seconds: float, count: int,
    cpu: Callable[[Server, Result, float], None] | None = None,
) -> tuple[dict[str, Result], list[float]]:
    """Closed loops on each of ``pair`` in turn, ``count`` rounds, order alternating; the merged
    results by name and each round's ratio of the second's rate over the first's."""
    conns = {s.name: [Conn(sock, c) for sock, c in zip(
        connect("127.0.0.1", s.port, len(cycles), [login_frame()]), cycles, strict=True)] for s in pair}  # fmt: skip
    merged = {s.name: Result() for s in pair}
    ratios = []
    try:
        for r in range(count):
            rates = {}
            for server in pair if r % 2 == 0 else reversed(pair):
                began = time.monotonic()
                result = closed_loop(conns[server.name], seconds)
                if cpu is not None:
                    cpu(server, result, time.monotonic() - began)
                merged[server.name].merge(result)
                rates[server.name] = result.rate
            ratios.append(rates[pair[1].name] / rates[pair[0].name] if rates[pair[0].name] else 0.0)
    finally:
        for cs in conns.values():
            close_all(cs)
    return merged, ratios


def mix(args: argparse.Namespace, work: Path, kind: str, name: str, cycles: list, figures: dict) -> None:
    upstream = upstream_of(kind, work)
    relay = None
    try:
        relay = started(RelayServer(work, upstream, pool=args.pool, cpus=CPUS["relay"]))
        cpu_used: dict[str, float] = {}
        msgs: dict[str, int] = {}
        before = {"upstream": upstream.cpu(), "relay": relay.cpu()}

        def count_cpu(server: Server, result: Result, elapsed: float) -> None:
            if server is relay:  # the relayed runs: both processes worked for these messages
                msgs["relayed"] = msgs.get("relayed", 0) + result.messages
                now = {"upstream": upstream.cpu(), "relay": relay.cpu()}
                counted = result.seconds / max(result.seconds, elapsed)  # the warm-up's share left out
                for side in now:
                    cpu_used[side] = cpu_used.get(side, 0.0) + (now[side] - before[side]) * counted
            before.update(upstream=upstream.cpu(), relay=relay.cpu())

        merged, ratios = rounds([upstream, relay], cycles, args.seconds, args.rounds, count_cpu)
    finally:
        if relay is not None:
            relay.stop()
        upstream.stop()
    ratio = statistics.median(ratios)
    print(f"\n{name}, {len(cycles)} terminals, upstream {kind}, closed loop, {args.rounds} rounds of {args.seconds:g}s")
    print(row("direct", merged[upstream.name], width=14))
    print(row("through relay", merged[relay.name], width=14))
    print(f"  ratio through/direct {ratio:.2f}  (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    figures[(name, kind)] = ratio
    if msgs.get("relayed"):
        per = {side: cpu_used[side] / msgs["relayed"] * 1e6 for side in cpu_used}
        figures[("cpu", name, kind)] = per
        print(f"  CPU per relayed message: relay {per['relay']:.0f} us, upstream {kind} {per['upstream']:.0f} us")


def many(args: argparse.Namespace, work: Path, figures: dict) -> None:
    patrons, _ = demo()
    upstream = upstream_of("sipserver", work)
    relay = None
    try:
        relay = started(RelayServer(work, upstream, pool=args.pool, cpus=CPUS["relay"]))
        warm = [Conn(sock, status_cycle(i, patrons)) for i, sock in enumerate(
            connect("127.0.0.1", relay.port, 10, [login_frame()]))]  # fmt: skip
        closed_loop(warm, 0.5, warmup=0.0)
        close_all(warm)
        time.sleep(0.5)
        rss_before = relay.rss_kb()
        socks = connect("127.0.0.1", relay.port, args.many, [login_frame()], timeout=120)
        time.sleep(1.0)
        rss_after = relay.rss_kb()
        conns = [Conn(sock, status_cycle(i, patrons)) for i, sock in enumerate(socks)]
        result = closed_loop(conns, args.seconds)
        light = open_loop(conns, args.light_rate, args.seconds)
        close_all(conns)
    finally:
        if relay is not None:
            relay.stop()
        upstream.stop()
    per_kb = (rss_after - rss_before) / args.many
    print(f"\n{args.many:,} terminals through the relay over {args.pool} upstream connections "
          f"(status mix, upstream sipserver), closed loop {args.seconds:g}s")  # fmt: skip
    print(row("closed loop", result, width=14))
    print(row(f"{args.light_rate:g} msg/s", light, width=14))
    print(f"  relay RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MB = {per_kb:.1f} KB per terminal")
    figures["many"] = (result, light, per_kb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per round (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, order alternating (default 3)")
    parser.add_argument("--connections", type=int, default=50, help="terminals in the mixes (default 50)")
    parser.add_argument("--many", type=int, default=2000, help="terminals held through the relay (default 2000)")
    parser.add_argument("--pool", type=int, default=8, help="the relay's upstream connections (default 8)")
    parser.add_argument("--share", action="store_true",
                        help="pin nothing (default: upstream on CPU 0, relay and generator on CPU 1)")  # fmt: skip
    parser.add_argument("--light-rate", type=float, default=1000, help="msg/s of the open loop over --many")
    args = parser.parse_args(argv)
    try:
        import pysip2  # noqa: F401
    except ImportError:
        print("pysip2 is not installed: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    raise_fd_limit()
    if not args.share and (os.cpu_count() or 1) >= 2:
        CPUS.update(PINNED)
        os.sched_setaffinity(0, PINNED["relay"])
    print(f"bench/relay.py: {machine()}")
    placing = ("the upstream on CPU 0, the relay and the load generator on CPU 1" if CPUS["relay"]
               else "nothing pinned: every process on every CPU")  # fmt: skip
    print(f"load generator: {generator_name()}; every daemon at logging.level info, text to a file; {placing}")
    patrons, items = demo()
    status = [status_cycle(i, patrons) for i in range(args.connections)]
    circ = [circ_cycle(i, patrons, items) for i in range(min(args.connections, len(items)))]
    figures: dict = {}
    with workdir() as tmp, cpus_awake(True) as idle:
        print(idle)
        work = Path(tmp)
        for kind in ("pysip2", "sipserver"):
            mix(args, work, kind, "status mix (99, 23)", status, figures)
            mix(args, work, kind, "circulation mix (11, 29, 09)", circ, figures)
        many(args, work, figures)
    print("\nTargets (issue #20)")
    for name in ("status mix (99, 23)", "circulation mix (11, 29, 09)"):
        ratio = figures[(name, "pysip2")]
        print(f"  [{'met' if ratio >= 0.8 else 'MISSED'}] {name} through/direct with the pysip2 upstream >= 0.8: "
              f"{ratio:.2f}")  # fmt: skip
    per = figures.get(("cpu", "circulation mix (11, 29, 09)", "sipserver"))
    if per:
        share = per["relay"] / per["upstream"]
        print(f"  [{'met' if share <= 1.5 else 'MISSED'}] relay CPU per message <= 1.5x the upstream daemon's: "
              f"{share:.2f}x ({per['relay']:.0f} us against {per['upstream']:.0f} us)")  # fmt: skip
    result, light, per_kb = figures["many"]
    print(f"  [info] {args.many:,} terminals over {args.pool} connections: {result.rate:,.0f} msg/s at most "
          f"(closed loop: p99 {result.percentile(0.99):.0f} ms, every terminal always waiting), p99 "
          f"{light.percentile(0.99):.2f} ms at {args.light_rate:g} msg/s, {per_kb:.1f} KB per terminal, "
          f"lost {result.lost + light.lost}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
