"""Shared test helpers: a config built in the test, the real embedded backend run synchronously, and a
terminal harness that feeds bytes to the real SIP protocol and collects the bytes out (no sockets,
the memory clock)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import attrs
import yaml
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from sipserver.accounts.lockout import Lockout
from sipserver.accounts.registry import Registry
from sipserver.acs import ACS
from sipserver.config import Config, parse_config
from sipserver.connection import Connection
from sipserver.daemon.serving import Serving
from sipserver.daemon.transport.protocol import ListenerFactory, SIPProtocol
from sipserver.ils.embedded.loader import load_file
from sipserver.ils.embedded.sqlite import SQLiteBackend
from sipserver.observe.events import Events
from sipserver.observe.exchangelog import LogFile, LogWriter, TextLines

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = ROOT / "etc" / "demo-data.yaml"

BASE_CONFIG = """
server:
  name: Test SIP server
  lockout: {failures: 5, window: 60, duration: 300}
listeners:
  - {name: raw, transport: raw, endpoint: "tcp:0:interface=127.0.0.1", status_before_login: true}
  - {name: telnet, transport: telnet, endpoint: "tcp:0:interface=127.0.0.1"}
institutions:
  MAIN:
    backend: embedded
    library_name: Test Library
    currency: USD
    policy: {checkin: true, checkout: true, renewal: true, status_update: true, offline: true, timeout: 5, retries: 3}
    branches:
      MAIN: {locations: [MAIN-DESK1, MAIN-SORTER, DESK1]}
      EAST: {}
      WEST: {}
accounts:
  - login: sco
    password: "plain:scpass"
    institution: MAIN
    location: MAIN-DESK1
    allow_from: [127.0.0.0/8, "::1/128"]
  - login: sorter
    password: "plain:sorterpass"
    institution: MAIN
    location: MAIN-SORTER
    permissions: [checkin, item_status]
  - login: patrons_only
    password: "plain:pp"
    institution: MAIN
    permissions: [patron]
  - login: remote
    password: "plain:rp"
    institution: MAIN
    allow_from: [10.0.0.0/8]
  - login: cp850
    password: "plain:cp"
    institution: MAIN
    encoding: cp850
    error_detection: always
  - login: crlf
    password: "plain:cr"
    institution: MAIN
    terminator: CRLF
    error_detection: never
backends:
  embedded: {type: sqlite, path: ":memory:"}
"""


def make_config(path: Path, changes: dict[str, Any] | None = None) -> Config:
    """The base config with top-level sections replaced by ``changes``."""
    data = yaml.safe_load(textwrap.dedent(BASE_CONFIG))
    data.update(changes or {})
    return parse_config(data, str(path / "sip.yaml"))


def sync_backend(data_file: Path = DEMO_DATA, path: str = ":memory:") -> SQLiteBackend:
    """The real embedded backend, synchronous (its Deferreds have fired on return), loaded with data."""
    backend = SQLiteBackend(name="embedded", options={"path": path}, threaded=False)
    backend.start()
    results: list[Any] = []
    load_file(backend, str(data_file)).addBoth(results.append)
    if results and not isinstance(results[0], dict):
        results[0].raiseException()
    return backend


class Hub(Serving):
    """What the connections are served with, built from a real config, registry and ACS, on the
    memory clock (``clock``); ``config`` and ``lockout`` are at hand for the tests."""

    def __init__(self, config: Config, backend: SQLiteBackend, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.config = config
        self.lockout = Lockout(
            config.server.lockout.failures, config.server.lockout.window, config.server.lockout.duration, self.clock
        )
        super().__init__(
            Registry.from_config(config, self.lockout), config.server, ACS({"embedded": backend}, self.clock),
            Events("error"),
        )  # fmt: skip


def log_to_file(hub: Hub, path: Path, level: str = "debug") -> Path:
    """Send ``hub``'s lines (at ``level``) to the text file ``path``, each written at once."""
    hub.events.log = LogWriter(LogFile(str(path)), TextLines())
    hub.events.set_level(level)
    return path


class Replies(StringTransport):
    """A transport that keeps each write apart: one reply each."""

    def __init__(self, peer: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, 40000))
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class Terminal:
    """One connection of the real SIP protocol, bytes in and replies out over a memory transport:
    ``send(b"...")`` returns the replies it caused (the listener's own framing is bypassed, as a
    device's frames arrive whole)."""

    def __init__(self, hub: Hub, listener: str = "raw", peer: str = "127.0.0.1") -> None:
        self.hub = hub
        factory = ListenerFactory(hub, hub.config.listener(listener), hub.clock)
        self.protocol: SIPProtocol = factory.buildProtocol(None)
        self.transport = Replies(peer)
        self.protocol.makeConnection(self.transport)
        self.out = self.transport.writes

    @property
    def connection(self) -> Connection:
        assert self.protocol.connection is not None
        return self.protocol.connection

    @property
    def closed(self) -> str | None:
        """Why the server hung up, None while the connection is open."""
        return self.connection.close_reason if self.transport.disconnecting else None

    def send(self, frame: bytes) -> list[bytes]:
        before = len(self.out)
        for piece in frame.replace(b"\n", b"\r").split(b"\r"):
            if piece.strip(b" \0\t"):
                self.protocol.frame_received(piece)
        return self.out[before:]

    def hang_up(self) -> None:
        """The terminal goes away."""
        self.protocol.connectionLost(None)

    def one(self, frame: bytes) -> bytes:
        replies = self.send(frame)
        assert len(replies) == 1, replies
        return replies[0]


class PendingThreads:
    """Threads that run nothing until told: what a connection does while a password check is still
    on its thread can then be seen step by step (``use_pending_threads``)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []
        self.ran: list[tuple[Any, tuple[Any, ...]]] = []

    def __call__(self, f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((f, args, d))
        return d

    def finish_all(self) -> None:
        while self.waiting:  # finishing one may start the next
            self.finish_one()

    def finish_one(self) -> Any:
        """Run the oldest started job; returns its result."""
        f, args, d = self.waiting.pop(0)
        result = f(*args)
        self.ran.append((f, args))
        d.callback(result)
        return result


def use_pending_threads(hub: Hub, threads: int = 2) -> PendingThreads:
    """Give ``hub`` a password-check queue whose threads run only when the test says so."""
    from sipserver.accounts.password_checks import PasswordChecks

    pending = PendingThreads()
    hub.password_checks = PasswordChecks(hub.lockout, pending, threads=threads)
    return pending


def hash_the_password(hub: Hub, login: str, password: str, *, cheap: bool = False) -> None:
    """Give ``login`` an scrypt hash of ``password`` (the test config has plain: ones), as a
    reload would. ``cheap``: scrypt with the smallest parameters it takes, so that a test may
    run hundreds of checks (still a real scrypt check, on the check queue's thread)."""
    from sipserver.accounts.passwords import hash_password

    stored = cheap_scrypt_hash(password) if cheap else hash_password(password)
    accounts = tuple(attrs.evolve(a, password_hash=stored) if a.login == login else a for a in hub.config.accounts)
    hub.config = attrs.evolve(hub.config, accounts=accounts)
    hub.registry = Registry.from_config(hub.config, hub.lockout)


def cheap_scrypt_hash(password: str) -> str:
    """A valid ``scrypt$`` value for ``password`` with n=2, r=1, p=1: microseconds to verify."""
    import base64
    import hashlib
    import os

    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=2, r=1, p=1, dklen=32)
    return f"scrypt$2$1$1${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def take(transport: Any) -> bytes:
    """What a StringTransport has been given since the last take."""
    data = transport.value()
    transport.clear()
    return data
