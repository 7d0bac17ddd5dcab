#!/usr/bin/env python3
"""Instructions per status-mix message, counted by callgrind: ours against pysip2's server.

    python bench/instructions.py [--messages 3000] [--tree DIR] [--console] [--relay pysip2|sipserver]

The development machine's speed drifts by up to 3x between hours and by ±10 % between runs a minute
apart, which hides any change to the hot path smaller than that from ``bench/load.py``. Counted
instructions do not drift: each server runs under ``valgrind --tool=callgrind`` twice, once
answering ``--messages`` requests of the status mix (99 and 23 with PIN in turn, as ``load.py``
sends them) on one logged-in connection and once answering none; the difference divided by the
messages is what one message costs in user space (the kernel's share is not counted). pysip2's
server is the baseline, in the same run, as in ``load.py``.

``--tree DIR`` measures our daemon from another checkout (``git worktree add /tmp/before HEAD~3``)
with this tree's benchmark code: an A/B of two versions without the machine's noise. It takes about
two minutes a run on the 2-CPU machine; valgrind must be installed. ``--console`` counts our
daemon with the operator's console off and on instead (its books on the request path), and prints
the ratio. ``--relay UPSTREAM`` counts our daemon relaying instead (the ``sip2`` backend, as
``bench/relay.py`` runs it): the circulation mix (11, 29, 09 in turn, every one relayed) on one
connection, with pysip2's server or our daemon (embedded backend) started normally as the upstream;
only the relay runs under callgrind.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import yaml  # noqa: E402
from load import circ_cycle, demo, login_frame, status_cycle  # noqa: E402
from loadgen import exchange  # noqa: E402
from servers import (  # noqa: E402
    LOGIN,
    PASSWORD,
    ROOT,
    TWISTD,
    OurServer,
    Pysip2Server,
    Server,
    bench_config,
    free_port,
)

#: The requests counted: the status mix, or the circulation mix (``--relay``).
MIXES = {"status": lambda: status_cycle(0, demo()[0]), "circulation": lambda: circ_cycle(0, *demo())}
mix = "status"


def count(argv: list[str], port: int, messages: int, cwd: Path, env: dict[str, str], work: Path) -> int:
    """Instructions callgrind counts in the server run by ``argv`` while it answers ``messages``."""
    out = work / f"callgrind-{port}.out"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]
    server = Server(valgrind, port, None, work / f"server-{port}.log", cwd, env)
    try:
        sock = _connect(server)
        try:
            assert exchange(sock, login_frame()).startswith(b"941"), "login refused"
            _wait_upstream(work / f"sipserver-{port}.log")
            cycle = MIXES[mix]()
            for i in range(messages):
                frame, expected, _ = cycle[i % len(cycle)]
                reply = exchange(sock, frame)
                assert reply.startswith(expected), f"{frame!r} answered {reply!r}"
        finally:
            sock.close()
        time.sleep(0.5)  # the server notices the close
    finally:
        server.stop(timeout=300)  # callgrind writes its counts on the way out of SIGTERM
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}:\n{server.log()}")


def _connect(server: Server, timeout: float = 300.0) -> socket.socket:
    """A connection to the server once it listens (no probe request: it would be counted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=120)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing listening on port {server.port} after {timeout}s")


def _wait_upstream(log: Path, timeout: float = 300.0) -> None:
    """For a relay: wait until its upstream pool has logged in, so that every run counts the same
    start-up (the status mix is answered by our daemon itself: nothing to wait for)."""
    if mix == "status":
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and "logged in" in log.read_text(errors="replace"):
            time.sleep(1.0)  # the other pool connections log in too
            return
        time.sleep(0.2)
    raise RuntimeError(f"the relay's upstream pool did not log in within {timeout}s")


Argv = Callable[[int, Path], list[str]]  # the server's command line for a port and a work folder


def per_message(name: str, argv_for_port: Argv, messages: int, cwd: Path, env: dict[str, str], work: Path) -> float:
    counted: dict[int, int] = {}
    for n in (0, messages):
        port = free_port()
        counted[n] = count(argv_for_port(port, work), port, n, cwd, env, work)
    cost = (counted[messages] - counted[0]) / messages
    print(f"  {name:<11} {cost:>10,.0f} instructions a message   (runs of 0 and {messages}:"
          f" {counted[0]:,} and {counted[messages]:,})")  # fmt: skip
    return cost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="status-mix requests counted (default 3000)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose daemon is measured")
    parser.add_argument("--no-baseline", action="store_true", help="skip pysip2's server")
    parser.add_argument("--console", action="store_true",
                        help="count our daemon with the operator's console off and on (no pysip2)")  # fmt: skip
    parser.add_argument(
        "--relay",
        choices=["pysip2", "sipserver"],
        help="count our daemon relaying the circulation mix to this upstream (the sip2 backend)",
    )
    parser.add_argument("--level", choices=["warn", "info"], default="warn",
                        help="our daemon's logging.level (default warn, as the figures in bench/README.md; info"
                        " writes a line per message to a file)")  # fmt: skip
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("bench/instructions.py: valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    tree = args.tree.resolve()
    # The same hash seed in every run: dict and set layouts, hence instruction counts, repeat.
    env = {"PYTHONHASHSEED": "0"}
    ours_env = dict(env, PYTHONPATH=str(tree))

    def ours(port: int, work: Path, console: bool = False) -> list[str]:
        config = work / f"sip-{port}.yaml"
        data = bench_config(work, port, level=args.level)
        if args.level == "warn":
            # As every figure in bench/README.md was counted, and in a form that checkouts from
            # before the exchange log (no logging.file) read too.
            data["logging"] = {"level": "warn"}
        if console:
            from sipserver.accounts.passwords import hash_password

            data["http"] = {"endpoint": f"tcp:{free_port()}:interface=127.0.0.1"}
            data["console"] = {"admins": [{"login": "bench", "password": hash_password("bench")}]}
        config.write_text(yaml.safe_dump(data, allow_unicode=True))
        return [sys.executable, TWISTD, "-n", "--pidfile=", "--logfile=-", "sip", "-c", str(config)]

    def pysip2(port: int, work: Path) -> list[str]:
        return [sys.executable, str(BENCH / "pysip2_baseline.py"), "--port", str(port)]

    if args.relay:
        return relay(args, tree, ours_env, env)
    print(f"status mix (99 + 23 with PIN), one connection, {args.messages} messages, user-space instructions"
          f" (valgrind --tool=callgrind); ours from {tree}, logging.level {args.level}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sipbench-") as folder:
        work = Path(folder)
        if args.console:
            off = per_message("console off", ours, args.messages, tree, ours_env, work)
            on = per_message("console on", lambda port, work: ours(port, work, True), args.messages, tree, ours_env,
                             work)  # fmt: skip
            print(f"  ratio      the console on costs {on / off:.2%} of the instructions a message with it off"
                  f" ({on - off:+,.0f})")  # fmt: skip
            return 0
        mine = per_message("sipserver", ours, args.messages, tree, ours_env, work)
        if args.no_baseline:
            return 0
        theirs = per_message("pysip2", pysip2, args.messages, ROOT, env, work)
    print(f"  ratio      {theirs / mine:.2f}x fewer instructions a message for sipserver")
    return 0


def relay(args: argparse.Namespace, tree: Path, ours_env: dict[str, str], env: dict[str, str]) -> int:
    """Our daemon relaying the circulation mix to an upstream that runs normally (not counted)."""
    global mix
    mix = "circulation"
    print(f"circulation mix (11, 29, 09) relayed to {args.relay}, one connection, {args.messages} messages,"
          f" user-space instructions of the relay (valgrind --tool=callgrind); relay from {tree},"
          f" logging.level {args.level}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sipbench-") as folder:
        work = Path(folder)
        upstream_dir = work / "upstream"
        upstream_dir.mkdir()
        upstream: Server = (OurServer(upstream_dir, cpus=None, level="warn") if args.relay == "sipserver"
                            else Pysip2Server(upstream_dir, cpus=None))  # fmt: skip
        try:
            upstream.wait_ready(login_frame())

            def relaying(port: int, work: Path) -> list[str]:
                config = work / f"relay-{port}.yaml"
                data = bench_config(work, port, level=args.level)
                data["backends"] = {"ils": {
                    "type": "sip2", "endpoint": f"tcp:127.0.0.1:{upstream.port}",
                    "login": {"user": LOGIN, "password": PASSWORD, "location": "MAIN-DESK1"},
                    # keepalives would fire more often in the longer run: none within it
                    "pool": {"size": 8, "queue": 20000}, "timeout": 30, "keepalive": 3600,
                }}  # fmt: skip
                data["institutions"]["MAIN"]["backend"] = "ils"
                config.write_text(yaml.safe_dump(data, allow_unicode=True))
                return [sys.executable, TWISTD, "-n", "--pidfile=", "--logfile=-", "sip", "-c", str(config)]

            per_message("relay", relaying, args.messages, tree, ours_env, work)
        finally:
            upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
