#!/usr/bin/env python3
"""Backend throughput: checkout+checkin pairs per second through the real daemon, sqlite vs PostgreSQL.

    python bench/backends.py [--seconds N] [--connections 1,50] [--backends sqlite,postgresql]
                             [--pool N] [--workers N] [--daemons N] [--no-ceiling]

For each backend it starts the real daemon (``twistd -n sip``) on free loopback ports: first on the
embedded sqlite backend (a file in a temporary folder), then on PostgreSQL (a temporary database it
creates on ``$SIPSERVER_BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432/postgres``, and
drops afterwards). Both get the same data: the demo data plus 100 bench patrons and items, loaded
with ``sipserver migrate``/``sipserver load`` before the daemon starts, and the same configuration.

Then, for each number of connections, every connection logs in and runs a closed loop for
``--seconds``: check out its own item to its own patron, check it in, again. A pair counts when both
answers say ok. The loop is ``bench/loadgen.py``'s, as in ``bench/load.py``: the C closed loop
(``bench/closedloop.c``, compiled on first use) on pre-encoded frames, so the generator costs little
next to the servers it shares the machine with; the Python loop without a C compiler.

Each line also says where the CPU went, per pair: the daemon (with its worker processes),
PostgreSQL's processes (all of the cluster's, background writers included) and the generator.

It prints one table (pairs/s per backend and connection count, the PostgreSQL/sqlite ratio) and
whether PostgreSQL at 50 connections reaches 1,000 pairs/s. Exit status 0 either way; 2 when
PostgreSQL cannot be reached.

The baseline for PostgreSQL is PostgreSQL itself: in the same run, ``pgbench`` (PostgreSQL's own
load generator, in C) runs its built-in TPC-B-like transaction (three updates, one select, one
insert, then COMMIT) at as many clients as the daemon's pool has connections, on a scratch database
of scale 10 (so the clients do not queue on one row). A checkout+checkin pair is two such write
transactions, so half of pgbench's transactions per second is about the most pairs per second the
database server alone manages on this machine with nothing else running: the ceiling the daemon's
figure is compared with. pgbench runs just before the daemon's PostgreSQL run and just after it,
and the ceiling is the mean of the two, because the machine's speed drifts within minutes.
``--no-ceiling`` skips it; it is skipped, with a line saying so, when no ``pgbench`` binary is found.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from cpuidle import cpus_awake  # noqa: E402
from loadgen import Conn, close_all, closed_loop, connect, exchange  # noqa: E402

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


def config(folder: Path, backend: dict[str, Any], pool_max: int, workers: int = 1) -> Path:
    data = {
        "server": {
            "name": "bench",
            "login_timeout": 30,
            "idle_timeout": 600,
            "max_connections": 500,
            "workers": workers,
        },
        "logging": {"level": "warn"},
        "listeners": [{"name": "raw", "transport": "raw", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "institutions": {"MAIN": {"backend": "ils", "library_name": "Bench", "policy": {"timeout": 10}}},
        "accounts": [{"login": "bench", "password": "plain:bench", "institution": "MAIN", "location": "MAIN-BENCH"}],
        "backends": {"ils": backend},
    }
    if backend["type"] == "postgresql":
        backend.setdefault("pool", {"min": min(2, pool_max), "max": pool_max})
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


def _check_in_first(sock: socket.socket, frame: bytes) -> None:
    """Check the connection's item in before the loop, in case an earlier run left it out."""
    sock.settimeout(30)
    exchange(sock, frame)
    sock.setblocking(False)


# -- where the CPU goes ----------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU ticks used) for every process (Linux /proc; else empty)."""
    found: dict[int, tuple[int, str, int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        found[int(entry)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return found


def cpu_snapshot(daemon_pids: list[int]) -> dict[str, float]:
    """CPU seconds used so far by the daemons (with their worker processes), by PostgreSQL's
    processes, and by the load generator (this script and its reaped children: the C loop)."""
    table = _processes()
    family = set(daemon_pids)
    grew = True
    while grew:
        grew = False
        for pid, (parent, _, _) in table.items():
            if parent in family and pid not in family:
                family.add(pid)
                grew = True
    children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return {
        "daemon": sum(table[p][2] for p in family if p in table) / TICKS,
        "postgresql": sum(t for _, name, t in table.values() if name.startswith("postgres")) / TICKS,
        "generator": children.ru_utime + children.ru_stime + own.ru_utime + own.ru_stime,
    }


def run_load(
    ports: list[int], connections: int, seconds: float, cpu: dict[str, float] | None = None
) -> tuple[float, list[str]]:
    """Pairs per second over ``connections`` connections (spread over the daemons at ``ports``).

    Every connection logs in, checks its item in once, then keeps one request outstanding:
    checkout, checkin, again (``loadgen.closed_loop``: the C loop when a compiler is at hand). With
    ``cpu`` (the daemons' pids under the key ``pids``), it is filled with the CPU seconds each
    party used per pair during the measured window."""
    login = encode(make("93", CN="bench", CO="bench"), sequence="0")
    conns: list[Conn] = []
    try:
        for index in range(connections):
            (sock,) = connect("127.0.0.1", ports[index % len(ports)], 1, [login])
            checkout, checkin = _frames(index)
            conns.append(Conn(sock, [(checkout, b"12", 2), (checkin, b"10", 2)]))
            _check_in_first(sock, checkin)
        daemon_pids = [int(p) for p in (cpu or {}).get("pids", [])]
        before, began = cpu_snapshot(daemon_pids), time.monotonic()
        result = closed_loop(conns, seconds)
        after, ended = cpu_snapshot(daemon_pids), time.monotonic()
    finally:
        close_all(conns)
    errors = []
    if result.wrong or result.refused or result.lost:
        errors.append(f"{result.wrong} wrong replies, {result.refused} refused, {result.lost} connections lost")
    pairs = (result.messages - result.wrong - result.refused) / 2
    if cpu is not None and pairs:
        counted = result.seconds / max(result.seconds, ended - began)  # CPU is read around the warm-up too
        for party in ("daemon", "postgresql", "generator"):
            cpu[party] = (after[party] - before[party]) * counted / pairs
        cpu["steal"] = result.steal
    return pairs / result.seconds if result.seconds else 0.0, errors


# -- the two backends ------------------------------------------------------------------------------


def measure(
    label: str, backend: dict[str, Any], args: argparse.Namespace, folder: Path, daemons: int = 1
) -> dict[int, float]:
    cfg = config(folder, backend, args.pool, args.workers)
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
        run_load(ports, min(args.connections), 1.0)  # warm up
        for n in args.connections:
            cpu: dict[str, Any] = {"pids": [daemon.process.pid for daemon in running]}
            rate, errors = run_load(ports, n, args.seconds, cpu)
            results[n] = rate
            spent = ""
            if "daemon" in cpu:
                parts = [("daemon", cpu["daemon"]), ("generator", cpu["generator"])]
                if backend["type"] == "postgresql":
                    parts.insert(1, ("PostgreSQL", cpu["postgresql"]))
                spent = "   CPU per pair: " + ", ".join(f"{who} {ms * 1000:.2f} ms" for who, ms in parts)
                spent += f"   steal {cpu['steal']:.0%}"
            print(f"  {label:<15} {n:>3} connection(s): {rate:8.0f} pairs/s{spent}", flush=True)
            for error in errors[:3]:
                print(f"    problem: {error}", flush=True)
    finally:
        for daemon in running:
            code = daemon.stop()
            if code not in (0, -15, 143):
                print(f"  a {label} daemon exited with {code}; its log:\n{daemon.log()[-3000:]}")
    return results


# -- the ceiling: PostgreSQL alone, driven by pgbench ----------------------------------------------


def pgbench_binary() -> str | None:
    """``pgbench`` on PATH, or in Debian's versioned folder (which is not on PATH)."""
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    return candidates[-1] if candidates else None


class Pgbench:
    """pgbench's TPC-B-like load on a scratch database (scale 10), run before and after the daemon's.

    The machine's speed drifts within minutes, so the ceiling is the mean of a run just before
    the daemon is measured and one just after."""

    def __init__(self, admin: Any, clients: int, seconds: float) -> None:
        import psycopg2.extensions

        self.admin = admin
        self.clients = clients
        self.seconds = max(1, round(seconds))
        self.threads = max(1, min(clients, os.cpu_count() or 1))
        self.binary = pgbench_binary()
        self.dbname = f"sipserver_bench_pgbench_{os.getpid()}"
        parts = psycopg2.extensions.parse_dsn(ADMIN_DSN)
        parts["dbname"] = self.dbname
        self.conninfo = psycopg2.extensions.make_dsn(**parts)
        self.problem = "" if self.binary else "no pgbench binary (Debian: postgresql-client or the server package)"
        self.created = False
        self.runs: list[float] = []

    def describe(self) -> str:
        return f"pgbench TPC-B-like, {self.clients} clients, {self.threads} threads, prepared statements"

    def prepare(self) -> None:
        if self.problem:
            return
        with self.admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.dbname}"')
        self.created = True
        init = subprocess.run(
            [str(self.binary), "-i", "-q", "-s", "10", self.conninfo], capture_output=True, text=True, timeout=300
        )
        if init.returncode != 0:
            self.problem = f"pgbench -i failed: {init.stderr.strip()[-300:]}"

    def run(self) -> None:
        """One timed run; its transactions per second join :attr:`runs`."""
        if self.problem:
            return
        argv = [str(self.binary), "-n", "-M", "prepared", "-c", str(self.clients), "-j", str(self.threads)]
        done = subprocess.run(
            [*argv, "-T", str(self.seconds), self.conninfo], capture_output=True, text=True, timeout=self.seconds + 120
        )
        found = re.search(r"tps = ([0-9.]+)", done.stdout)
        if done.returncode != 0 or not found:
            self.problem = f"pgbench failed: {(done.stderr or done.stdout).strip()[-300:]}"
            return
        self.runs.append(float(found.group(1)))

    def drop(self) -> None:
        if not self.created:
            return
        with self.admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.dbname,))
            cur.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run (default 6)")
    parser.add_argument(
        "--connections", default="1,50", help="comma-separated connection counts (default 1,50; at most 100)"
    )
    parser.add_argument("--backends", default="sqlite,postgresql", help="which backends (default both)")
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL pool.max (default 10, the default)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the pgbench run that measures PostgreSQL alone")
    parser.add_argument(
        "--workers", type=int, default=1, help="the daemon's server.workers, for both backends (default 1)"
    )
    parser.add_argument(
        "--daemons",
        type=int,
        default=1,
        help="PostgreSQL: daemons sharing one database and the connections (default 1)",
    )
    parser.add_argument(
        "--allow-idle", action="store_true", help="let idle CPUs halt (default: held awake, cpuidle.py)"
    )
    args = parser.parse_args()
    args.connections = sorted({min(BENCH_PATRONS, max(1, int(n))) for n in args.connections.split(",")})
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    table: dict[str, dict[int, float]] = {}
    ceiling: float | None = None
    pg_label = "postgresql" if args.daemons <= 1 else f"postgresql x{args.daemons}"
    print(f"checkout+checkin pairs per second, {args.seconds:g} s per run, {os.cpu_count()} CPU(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="sipserver-bench-") as tmp, cpus_awake(not args.allow_idle) as idle:
        print(idle, flush=True)
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
            # as many clients as the daemons can hold connections: pool.max in every worker of every daemon
            clients = args.pool * max(1, args.workers) * max(1, args.daemons)
            pgbench = Pgbench(admin, clients, args.seconds) if not args.no_ceiling else None
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{dbname}"')
            try:
                if pgbench is not None:
                    pgbench.prepare()
                    pgbench.run()
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
                if pgbench is not None:
                    pgbench.run()
            finally:
                with admin.cursor() as cur:
                    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
                    cur.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
                if pgbench is not None:
                    pgbench.drop()
                admin.close()
            if pgbench is not None and pgbench.problem:
                print(f"  PostgreSQL alone: skipped ({pgbench.problem})", flush=True)
            elif pgbench is not None and pgbench.runs:
                tps = sum(pgbench.runs) / len(pgbench.runs)
                ceiling = tps / 2
                each = " and ".join(f"{r:.0f}" for r in pgbench.runs)
                print(
                    f"  PostgreSQL alone: {tps:8.0f} transactions/s ({pgbench.describe()}; before and after: {each})",
                    flush=True,
                )
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
        daemons += f", {args.workers} workers each" if args.workers > 1 else ""
        daemons += f", pool.max {args.pool}"
        print(
            f"\nPostgreSQL at 50 connections ({daemons}): {pg50:.0f} pairs/s,"
            f" {verdict} the {TARGET:,.0f} pairs/s target"
        )
        if ceiling is not None:
            print(
                f"PostgreSQL alone (pgbench, two write transactions per pair): {ceiling:,.0f} pairs/s;"
                f" the daemon reaches {pg50 / ceiling:.2f}x of that ceiling"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
