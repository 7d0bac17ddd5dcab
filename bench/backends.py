#!/usr/bin/env python3
"""Backend throughput: checkout+checkin pairs per second through the real daemon, sqlite vs PostgreSQL.

    python bench/backends.py [--seconds N] [--connections 1,50] [--procs N] [--backends sqlite,postgresql]

For each backend it starts the real daemon (``twistd -n sip``) on free loopback ports: first on the
embedded sqlite backend (a file in a temporary folder), then on PostgreSQL (a temporary database it
creates on ``$SIPSERVER_BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432/postgres``, and
drops afterwards). Both get the same data: the demo data plus 100 bench patrons and items, loaded
with ``sipserver migrate``/``sipserver load`` before the daemon starts, and the same configuration.

Then, for each number of connections, every connection logs in and runs a closed loop for
``--seconds``: check out its own item to its own patron, check it in, again. A pair counts when both
answers say ok. The load comes from ``--procs`` processes (threads inside each, raw sockets and
pre-encoded frames), so the generator costs little next to the server it measures.

It prints one table (pairs/s per backend and connection count, the PostgreSQL/sqlite ratio) and
whether PostgreSQL at 50 connections reaches 1,000 pairs/s. Exit status 0 either way; 2 when
PostgreSQL cannot be reached.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from sipserver.sip2 import encode, make  # noqa: E402
from tests.daemon import Daemon, write_config  # noqa: E402

ADMIN_DSN = os.environ.get("SIPSERVER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DEMO = ROOT / "etc" / "demo-data.yaml"
SIPSERVER = str(Path(sys.executable).parent / "sipserver")
TARGET = 1000.0
BENCH_PATRONS = 100


def bench_data(path: Path) -> None:
    patrons = [
        {"barcode": f"2900000000{i:04d}", "name": f"Bench Patron {i}", "home_library": "MAIN", "expires": "2099-12-31"}
        for i in range(BENCH_PATRONS)
    ]
    items = [
        {"barcode": f"3900000000{i:04d}", "title": f"Bench Title {i}", "owner": "MAIN"} for i in range(BENCH_PATRONS)
    ]
    path.write_text(yaml.safe_dump({"patrons": patrons, "items": items}))


def config(folder: Path, backend: dict[str, Any], pool_max: int) -> Path:
    data = {
        "server": {"name": "bench", "login_timeout": 30, "idle_timeout": 600, "max_connections": 500},
        "logging": {"level": "warn"},
        "listeners": [{"name": "raw", "transport": "raw", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "institutions": {"MAIN": {"backend": "ils", "library_name": "Bench", "policy": {"timeout": 10}}},
        "accounts": [{"login": "bench", "password": "plain:bench", "institution": "MAIN", "location": "MAIN-BENCH"}],
        "backends": {"ils": backend},
    }
    if backend["type"] == "postgresql":
        backend.setdefault("pool", {"min": 2, "max": pool_max})
    return write_config(folder, data)


def sipserver(*args: str) -> None:
    result = subprocess.run([SIPSERVER, *args], capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    if result.returncode != 0:
        raise SystemExit(f"sipserver {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


# -- the load generator ----------------------------------------------------------------------------


def _frames(index: int) -> tuple[bytes, bytes]:
    patron, item = f"2900000000{index:04d}", f"3900000000{index:04d}"
    out = make("11", sc_renewal_policy=True, no_block=False, nb_due_date=None, AO="MAIN", AA=patron, AB=item, AC="")
    back = make("09", no_block=False, AP="MAIN", AO="MAIN", AB=item, AC="")
    return encode(out, sequence="1"), encode(back, sequence="2")


def _exchange(sock: socket.socket, frame: bytes, buffer: bytearray) -> bytes:
    sock.sendall(frame)
    while b"\r" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    end = buffer.index(b"\r")
    reply = bytes(buffer[:end])
    del buffer[: end + 1]
    return reply


def _connection(
    ports: list[int], index: int, start_at: float, stop_at: float, counts: list[int], errors: list[str]
) -> None:
    try:
        sock = socket.create_connection(("127.0.0.1", ports[index % len(ports)]), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        if not _exchange(sock, encode(make("93", CN="bench", CO="bench"), sequence="0"), buffer).startswith(b"941"):
            raise RuntimeError("login refused")
        checkout, checkin = _frames(index)
        _exchange(sock, checkin, buffer)  # in case an earlier run left the item out
        time.sleep(max(0.0, start_at - time.time()))
        pairs = 0
        while time.time() < stop_at:
            out = _exchange(sock, checkout, buffer)
            back = _exchange(sock, checkin, buffer)
            if out.startswith(b"121") and back.startswith(b"101"):
                pairs += 1
            elif len(errors) < 5:
                errors.append(f"{out[:40]!r} / {back[:40]!r}")
        counts.append(pairs)
        sock.close()
    except Exception as exc:  # reported by the parent
        errors.append(f"connection {index}: {exc}")


def _generator(ports: list[int], indexes: list[int], start_at: float, stop_at: float, queue: Any) -> None:
    counts: list[int] = []
    errors: list[str] = []
    args = (start_at, stop_at, counts, errors)
    threads = [threading.Thread(target=_connection, args=(ports, i, *args)) for i in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(stop_at - time.time() + 60)
    queue.put((sum(counts), errors))


def run_load(ports: list[int], connections: int, seconds: float, procs: int) -> tuple[float, list[str]]:
    """Pairs per second over ``connections`` connections (spread over the daemons at ``ports``)."""
    procs = max(1, min(procs, connections))
    start_at = time.time() + 1.0 + connections * 0.02
    stop_at = start_at + seconds
    queue: Any = multiprocessing.get_context("fork").Queue()
    workers = [
        multiprocessing.get_context("fork").Process(
            target=_generator, args=(ports, list(range(p, connections, procs)), start_at, stop_at, queue)
        )
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    total, errors = 0, []
    for _ in workers:
        pairs, errs = queue.get(timeout=seconds + 120)
        total += pairs
        errors += errs
    for w in workers:
        w.join(30)
    return total / seconds, errors


# -- the two backends ------------------------------------------------------------------------------


def measure(
    label: str, backend: dict[str, Any], args: argparse.Namespace, folder: Path, daemons: int = 1
) -> dict[int, float]:
    cfg = config(folder, backend, args.pool)
    if backend["type"] == "postgresql":
        sipserver("migrate", "--config", str(cfg))
    sipserver("load", "--config", str(cfg), str(DEMO))
    data = folder / "bench-data.yaml"
    bench_data(data)
    sipserver("load", "--config", str(cfg), str(data))
    running = [Daemon(cfg, folder / f"daemon{i}.log") for i in range(daemons)]
    results: dict[int, float] = {}
    try:
        for daemon in running:
            daemon.wait_ready(1, timeout=60)
            daemon.wait_for_log("backend ils ready", timeout=60)
        ports = [daemon.port("raw") for daemon in running]
        run_load(ports, min(args.connections), 1.0, 1)  # warm up
        for n in args.connections:
            rate, errors = run_load(ports, n, args.seconds, args.procs)
            results[n] = rate
            print(f"  {label:<15} {n:>3} connection(s): {rate:8.0f} pairs/s", flush=True)
            for error in errors[:3]:
                print(f"    problem: {error}", flush=True)
    finally:
        for daemon in running:
            code = daemon.stop()
            if code not in (0, -15, 143):
                print(f"  a {label} daemon exited with {code}; its log:\n{daemon.log()[-3000:]}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run (default 6)")
    parser.add_argument(
        "--connections", default="1,50", help="comma-separated connection counts (default 1,50; at most 100)"
    )
    parser.add_argument("--procs", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="which backends (default both)")
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL pool.max (default 10, the default)")
    parser.add_argument(
        "--daemons",
        type=int,
        default=1,
        help="PostgreSQL: daemons sharing one database and the connections (default 1)",
    )
    args = parser.parse_args()
    args.connections = sorted({min(BENCH_PATRONS, max(1, int(n))) for n in args.connections.split(",")})
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    table: dict[str, dict[int, float]] = {}
    pg_label = "postgresql" if args.daemons <= 1 else f"postgresql x{args.daemons}"
    print(f"checkout+checkin pairs per second, {args.seconds:g} s per run, {os.cpu_count()} CPU(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="sipserver-bench-") as tmp:
        folder = Path(tmp)
        if "sqlite" in wanted:
            (folder / "sqlite").mkdir()
            table["sqlite"] = measure(
                "sqlite", {"type": "sqlite", "path": str(folder / "sqlite" / "ils.sqlite3")}, args, folder / "sqlite"
            )
        if "postgresql" in wanted:
            try:
                import psycopg2
                import psycopg2.extensions

                admin = psycopg2.connect(ADMIN_DSN, connect_timeout=5)
            except Exception as exc:
                print(f"PostgreSQL not reachable at {ADMIN_DSN}: {exc}")
                return 2
            admin.autocommit = True
            dbname = f"sipserver_bench_{os.getpid()}"
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{dbname}"')
            try:
                parts = psycopg2.extensions.parse_dsn(ADMIN_DSN)
                parts["dbname"] = dbname
                (folder / "postgresql").mkdir()
                table["postgresql"] = measure(
                    pg_label,
                    {"type": "postgresql", "dsn": psycopg2.extensions.make_dsn(**parts)},
                    args,
                    folder / "postgresql",
                    daemons=max(1, args.daemons),
                )
            finally:
                with admin.cursor() as cur:
                    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
                    cur.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
                admin.close()
    print()
    print(f"{'connections':>11} | {'sqlite':>10} | {pg_label:>13} | {'pg/sqlite':>9}")
    print(f"{'-' * 11}-+-{'-' * 10}-+-{'-' * 13}-+-{'-' * 9}")
    for n in args.connections:
        lite = table.get("sqlite", {}).get(n)
        pgs = table.get("postgresql", {}).get(n)
        ratio = f"{pgs / lite:9.2f}" if lite and pgs else f"{'-':>9}"
        cells = [f"{v:10.0f}" if v is not None else f"{'-':>10}" for v in (lite,)]
        cells.append(f"{pgs:13.0f}" if pgs is not None else f"{'-':>13}")
        print(f"{n:>11} | {cells[0]} | {cells[1]} | {ratio}")
    pg50 = table.get("postgresql", {}).get(50)
    if pg50 is not None:
        verdict = "meets" if pg50 >= TARGET else "does NOT meet"
        daemons = "one daemon" if args.daemons <= 1 else f"{args.daemons} daemons"
        print(
            f"\nPostgreSQL at 50 connections ({daemons}): {pg50:.0f} pairs/s,"
            f" {verdict} the {TARGET:,.0f} pairs/s target"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
