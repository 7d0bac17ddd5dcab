"""The client side of ``bench/load.py``: many SIP2 connections driven from one epoll loop.

One process, non-blocking sockets, ``select.epoll`` and precomputed request frames, so that the
generator spends as little CPU per message as it can (a few microseconds: one ``recv``, one ``send``
and a timestamp) and the server, not the generator, is what gets measured. Every loop is bounded
by a deadline.

* :func:`connect` opens connections in batches and logs each one in (93, expecting ``941``).
* :func:`closed_loop`: every connection sends its next request as soon as the previous reply
  arrives (one outstanding request per connection, like a terminal).
* :func:`open_loop`: requests at a fixed total rate, round-robin over the connections (a light
  background load, like many sorters polling).

Request frames carry AY and AZ, and AY changes on every request of a connection (the cycles below
never repeat a frame twice in a row), so no request is mistaken for a retransmission.
"""

from __future__ import annotations

import atexit
import errno
import os
import resource
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NS = 1_000_000_000


@dataclass
class Result:
    """What one run measured: messages, latencies (ns), replies of the wrong kind, lost connections."""

    seconds: float = 0.0
    latencies: list[int] = field(default_factory=list)
    wrong: int = 0
    refused: int = 0  # well-formed replies whose ok flag said no (circulation)
    lost: int = 0
    # clock ticks of all CPUs while the loop ran (warm-up included): the hypervisor's share, and all
    stolen_ticks: int = 0
    cpu_ticks: int = 0

    @property
    def messages(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency in milliseconds at quantile ``q`` (0..1)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    @property
    def steal(self) -> float:
        """The share of the CPUs' time the hypervisor gave to other guests while this ran (0..1)."""
        return self.stolen_ticks / self.cpu_ticks if self.cpu_ticks else 0.0

    def merge(self, other: Result) -> None:
        self.seconds += other.seconds
        self.stolen_ticks += other.stolen_ticks
        self.cpu_ticks += other.cpu_ticks
        self.latencies.extend(other.latencies)
        self.wrong += other.wrong
        self.refused += other.refused
        self.lost += other.lost


class Conn:
    """One terminal: its socket and the cycle of (request frame, expected reply code, ok index)."""

    __slots__ = ("buf", "busy", "cycle", "fd", "pos", "sent", "sock")

    def __init__(self, sock: socket.socket, cycle: Sequence[tuple[bytes, bytes, int]]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.cycle = cycle
        self.pos = 0
        self.sent = 0
        self.buf = b""
        self.busy = False

    def send_next(self) -> None:
        if self.fd < 0:
            return
        frame = self.cycle[self.pos][0]
        self.busy = True
        self.sent = time.perf_counter_ns()
        self.sock.send(frame)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def exchange(sock: socket.socket, frame: bytes) -> bytes:
    """Send ``frame`` on a blocking socket and return the reply, up to and including its CR."""
    sock.sendall(frame)
    reply = b""
    while not reply.endswith(b"\r"):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"the server closed the connection after {frame[:2]!r}")
        reply += data
    return reply


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def connect(
    host: str, port: int, count: int, login: Sequence[bytes], *, batch: int = 200, timeout: float = 60.0
) -> list[socket.socket]:
    """``count`` connections, each logged in with ``login[i % len(login)]`` (which must get 941)."""
    deadline = time.monotonic() + timeout
    done: list[socket.socket] = []
    ep = select.epoll()
    try:
        while len(done) < count:
            pending: dict[int, socket.socket] = {}
            for i in range(len(done), min(count, len(done) + batch)):
                sock = socket.create_connection((host, port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                sock.send(login[i % len(login)])
                pending[sock.fileno()] = sock
                ep.register(sock.fileno(), select.EPOLLIN)
            replies: dict[int, bytes] = dict.fromkeys(pending, b"")
            while pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"logins not answered within {timeout}s ({len(done)} done)")
                for fd, _ in ep.poll(1.0):
                    sock = pending[fd]
                    data = sock.recv(4096)
                    if not data:
                        raise RuntimeError(f"server closed a connection during login ({len(done)} done)")
                    replies[fd] += data
                    if replies[fd].endswith(b"\r"):
                        if not replies[fd].startswith(b"941"):
                            raise RuntimeError(f"login refused: {replies[fd]!r}")
                        ep.unregister(fd)
                        done.append(pending.pop(fd))
    except BaseException:
        for sock in done:
            sock.close()
        raise
    finally:
        ep.close()
    return done


def _receive(conn: Conn, result: Result | None, now: int) -> bool:
    """Read a reply for ``conn``; True when a whole reply arrived (False: partial, or lost)."""
    try:
        data = conn.sock.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        data = b""
    if not data:  # the server hung up: count it once and stop watching the socket
        conn.busy = False
        if result is not None:
            result.lost += 1
        if conn.fd >= 0:
            conn.sock.close()
            conn.fd = -1
        return False
    if conn.buf:
        data = conn.buf + data
    if data[-1] != 13:
        conn.buf = data
        return False
    conn.buf = b""
    conn.busy = False
    _frame, expected, ok_index = conn.cycle[conn.pos]
    conn.pos = (conn.pos + 1) % len(conn.cycle)
    if result is not None:
        result.latencies.append(now - conn.sent)
        if data[:2] != expected:
            result.wrong += 1
        elif ok_index and data[ok_index : ok_index + 1] != b"1":
            result.refused += 1
    return True


def _drain(ep: select.epoll, by_fd: dict[int, Conn], timeout: float = 10.0) -> None:
    """Wait for the replies still in flight, so the connections are clean for the next run."""
    deadline = time.monotonic() + timeout
    while any(c.busy for c in by_fd.values()) and time.monotonic() < deadline:
        for fd, _ in ep.poll(0.5):
            conn = by_fd[fd]
            if conn.busy:
                _receive(conn, None, 0)
            else:
                try:
                    conn.sock.recv(65536)
                except OSError:
                    pass


_C_SOURCE = Path(__file__).resolve().parent / "closedloop.c"
_C_BINARY: list[str | None] = []  # compiled once per run: [path] or [None]


def c_generator() -> str | None:
    """The C closed loop (``closedloop.c``), compiled on first use; None without a C compiler or
    when ``SIPSERVER_BENCH_PYTHON_LOOP`` is set (then the Python loop below runs)."""
    if not _C_BINARY:
        binary = None
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc and not os.environ.get("SIPSERVER_BENCH_PYTHON_LOOP"):
            build = tempfile.mkdtemp(prefix="sipbench-cc-")
            atexit.register(shutil.rmtree, build, True)
            out = Path(build) / "closedloop"
            built = subprocess.run(
                [cc, "-O2", "-Wall", "-o", str(out), str(_C_SOURCE)], capture_output=True, text=True, timeout=120
            )
            if built.returncode == 0:
                binary = str(out)
            else:
                print(f"closedloop.c did not compile, using the Python loop:\n{built.stderr}")
        _C_BINARY.append(binary)
    return _C_BINARY[0]


def generator_name() -> str:
    return "C closed loop (bench/closedloop.c)" if c_generator() else "Python closed loop"


def closed_loop(conns: Sequence[Conn], seconds: float, warmup: float = 0.5) -> Result:
    """Every connection keeps one request outstanding for ``warmup + seconds``; the warm-up is not counted."""
    binary = c_generator()
    before = steal_ticks()
    if binary is not None:
        result = _closed_loop_c(binary, [c for c in conns if c.fd >= 0], seconds, warmup)
    else:
        result = _closed_loop_python(conns, seconds, warmup)
    _count_steal(result, before)
    return result


def steal_ticks() -> tuple[int, int]:
    """(stolen, all) clock ticks of every CPU since boot, from the first line of ``/proc/stat``.

    On a virtual machine the host may run other guests on our CPUs; that time (steal) counts in
    no process's CPU time, yet it stops the server and the generator alike. The runs record it so
    a slow or jittery figure can be told from a slow server. (0, 0) where there is no /proc/stat.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return fields[7], sum(fields)  # user nice system idle iowait irq softirq steal


def _count_steal(result: Result, before: tuple[int, int]) -> None:
    stolen, total = steal_ticks()
    result.stolen_ticks += stolen - before[0]
    result.cpu_ticks += total - before[1]


def _closed_loop_c(binary: str, conns: Sequence[Conn], seconds: float, warmup: float) -> Result:
    """:func:`closed_loop` by the C program, on the same sockets; positions carry over both ways."""
    with tempfile.TemporaryDirectory(prefix="sipbench-loop-") as tmp:
        plan, out = Path(tmp) / "plan", Path(tmp) / "result"
        parts = [struct.pack("=I", len(conns))]
        for c in conns:
            parts.append(struct.pack("=III", c.fd, c.pos, len(c.cycle)))
            for frame, expected, ok_index in c.cycle:
                parts.append(struct.pack("=I", len(frame)) + frame + expected[:2] + struct.pack("=i", ok_index))
        plan.write_bytes(b"".join(parts))
        subprocess.run(
            [binary, str(plan), str(out), f"{seconds}", f"{warmup}"],
            pass_fds=[c.fd for c in conns],  # inherited under the same numbers
            check=True,
            timeout=seconds + warmup + 30,
        )
        data = out.read_bytes()
    measured, wrong, refused, lost, count = struct.unpack_from("=5Q", data)
    offset = 40
    positions = struct.unpack_from(f"={len(conns)}I", data, offset)
    offset += 4 * len(conns)
    result = Result(seconds=measured / NS, wrong=wrong, refused=refused, lost=lost)
    result.latencies = list(struct.unpack_from(f"={count}Q", data, offset))
    for conn, pos in zip(conns, positions, strict=True):
        if pos == 0xFFFFFFFF:  # the server hung up on it
            conn.close()
            conn.fd = -1
        else:
            conn.pos = pos
    return result


def _watch(conns: Sequence[Conn]) -> tuple[list[Conn], select.epoll, dict[int, Conn]]:
    """The connections still open, an epoll watching them for replies, and them by descriptor."""
    live = [c for c in conns if c.fd >= 0]
    ep = select.epoll()
    for c in live:
        ep.register(c.fd, select.EPOLLIN)
    return live, ep, {c.fd: c for c in live}


def _closed_loop_python(conns: Sequence[Conn], seconds: float, warmup: float = 0.5) -> Result:
    conns, ep, by_fd = _watch(conns)
    result = Result()
    clock = time.perf_counter_ns
    try:
        for c in conns:
            c.send_next()
        start = clock() + int(warmup * NS)
        end = start + int(seconds * NS)
        measuring: Result | None = None
        while True:
            events = ep.poll(1.0)
            now = clock()
            if now >= end:
                break
            if measuring is None and now >= start:
                measuring = result
                start = now
            for fd, _ in events:
                conn = by_fd[fd]
                if _receive(conn, measuring, clock()):
                    conn.send_next()
        result.seconds = (now - start) / NS
        _drain(ep, by_fd)
    finally:
        ep.close()
    return result


def open_loop(conns: Sequence[Conn], rate: float, seconds: float) -> Result:
    """``rate`` requests a second in total, each to the next idle connection in turn."""
    conns, ep, by_fd = _watch(conns)
    result = Result()
    before = steal_ticks()
    clock = time.perf_counter_ns
    interval = int(NS / rate)
    try:
        start = clock()
        end = start + int(seconds * NS)
        due = start
        turn = 0
        while True:
            now = clock()
            if now >= end:
                break
            while due <= now:
                for _ in range(len(conns)):
                    conn = conns[turn]
                    turn = (turn + 1) % len(conns)
                    if not conn.busy:
                        conn.send_next()
                        break
                due += interval
            for fd, _ in ep.poll(max(0.0, (due - clock()) / NS)):
                _receive(by_fd[fd], result, clock())
        result.seconds = (clock() - start) / NS
        _drain(ep, by_fd)
    finally:
        ep.close()
    _count_steal(result, before)
    return result


def close_all(socks: Sequence[socket.socket] | Sequence[Conn]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError as exc:  # pragma: no cover
            if exc.errno != errno.EBADF:
                raise
