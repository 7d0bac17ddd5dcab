"""The control channel between the parent of a worker pool and each worker: one lockout, one view.

The workers of one daemon (``server.workers``) must behave as one server: a terminal guessing
passwords is locked after ``server.lockout.failures`` wrong ones wherever its connections land, and
``/metrics`` and ``/health`` (served by the parent) count every process's connections and
exchanges. Each worker gets a second unix socket pair at spawn, beside the one connections come
through, and speaks Twisted's AMP over it:

* **The lockout.** The parent's table is the daemon's; every process keeps a replica of it, so that
  a login is judged without a round trip. A worker *reports* each failure and success it records;
  the parent records it, hands it on to every other worker, and acknowledges once they all have
  it. The parent hands its own outcomes on the same way. A refused login's reply waits for that
  acknowledgement (:meth:`~sipserver.accounts.lockout.Lockout.settled`), so the terminal's next
  attempt, on whichever process, is judged with this failure counted. A worker started again after
  a crash starts with the locks the parent sends it. What is not shared: the room a running
  password check holds (``Lockout.reserve``), so parallel guesses from one address may have up to
  ``(workers - 1) * 2`` more checks running at the moment of the lock than one process allows.
* **Snapshots.** The parent asks every worker for its named snapshots
  (:mod:`sipserver.observe.snapshots`) and merges them with its own; a worker that does not answer
  within :data:`CALL_TIMEOUT` is left out, and the pages say how many answered.

Only public Twisted API: ``amp.AMP``, ``reactor.adoptStreamConnection``.
"""

from __future__ import annotations

import json
import socket
import zlib
from typing import Any, ClassVar

from twisted.internet import defer
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from sipserver.accounts.lockout import Lockout
from sipserver.observe.loglevel import logger
from sipserver.observe.snapshots import Gathered, Snapshots

log = logger("sipserver.daemon.workers")

#: Seconds a process waits for another's answer on the channel before it goes on without it.
CALL_TIMEOUT = 2.0
#: The descriptor number of the child's end of its control socket pair.
CONTROL_FD = 4


class Report(amp.Command):
    """A lockout outcome: ``event`` is ``failure`` or ``success``, ``peer`` the address."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"event", amp.Unicode()), (b"peer", amp.Unicode())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []


class Locks(amp.Command):
    """The parent's running locks, to a worker just started: ``peers`` with seconds left."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"locks", amp.Unicode())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []


class TakeSnapshot(amp.Command):
    """A worker's snapshots, as compressed JSON (an AMP value holds at most 64 KB)."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"data", amp.String())]


def _apply(lockout: Lockout, event: str, peer: str) -> None:
    if event == "failure":
        lockout.record_failure(peer, shared=True)
    elif event == "success":
        lockout.record_success(peer, shared=True)


def _quietly(d: defer.Deferred[Any], reactor: Any) -> defer.Deferred[Any]:
    """``d`` bounded by :data:`CALL_TIMEOUT`, its failure (a worker gone, or slow) swallowed."""
    d.addTimeout(CALL_TIMEOUT, reactor)
    return d.addErrback(lambda _: None)


class _Channel(amp.AMP):
    """AMP without its two log lines per connection (a worker's channel lives as long as it does)."""

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)


def _quiet_factory(link: amp.AMP) -> Factory[amp.AMP]:
    """A factory for the one protocol of an adopted channel, without connection lines in the log."""
    factory = Factory.forProtocol(lambda: link)
    factory.noisy = False
    return factory


# -------------------------------------------------------------------------------------------------
# The parent


class _WorkerLink(_Channel):
    """The parent's end of one worker's channel."""

    def __init__(self, hub: Hub, index: int) -> None:
        super().__init__()
        self.hub = hub
        self.index = index

    @Report.responder
    def report(self, event: str, peer: str) -> defer.Deferred[dict[str, Any]]:
        return self.hub.reported(self, event, peer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.hub.detach(self)


class Hub:
    """The parent's side: the links to the workers, the daemon's lockout, and the gathering."""

    def __init__(self, reactor: Any, lockout: Lockout | None, snapshots: Snapshots, processes: int) -> None:
        """``lockout`` None: the processes share it otherwise (a database, ``server.lockout.shared``)."""
        self.reactor = reactor
        self.lockout = lockout
        self.snapshots = snapshots
        self.processes = processes
        self.links: dict[int, _WorkerLink] = {}
        if lockout is not None:
            lockout.share = self.share

    def attach(self, index: int, sock: socket.socket) -> None:
        """Speak AMP on the parent's end of a new worker's control pair, and send it the locks."""
        link = _WorkerLink(self, index)
        self.reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, _quiet_factory(link))
        sock.close()  # adopted as a copy
        self.links[index] = link
        locks = self.lockout.running_locks() if self.lockout is not None else None
        if locks:
            _quietly(link.callRemote(Locks, locks=json.dumps(locks)), self.reactor)

    def detach(self, link: _WorkerLink) -> None:
        if self.links.get(link.index) is link:
            del self.links[link.index]

    def share(self, event: str, peer: str, origin: _WorkerLink | None = None) -> defer.Deferred[Any] | None:
        """Hand an outcome on to every worker but ``origin``; fires once they have it."""
        calls = [
            _quietly(link.callRemote(Report, event=event, peer=peer), self.reactor)
            for link in list(self.links.values())
            if link is not origin
        ]
        if not calls:
            return None
        return defer.gatherResults(calls)

    def reported(self, origin: _WorkerLink, event: str, peer: str) -> defer.Deferred[dict[str, Any]]:
        if self.lockout is None:
            return defer.succeed({})
        _apply(self.lockout, event, peer)
        handed = self.share(event, peer, origin)
        if handed is None:
            return defer.succeed({})
        return handed.addCallback(lambda _: {})

    def gather(self) -> defer.Deferred[Gathered]:
        """Every process's snapshots, merged; those of workers that do not answer in time are left out."""
        own = self.snapshots.take()
        links = list(self.links.values())
        calls = [_quietly(link.callRemote(TakeSnapshot), self.reactor) for link in links]

        def merged(answers: list[Any]) -> Gathered:
            parts = [own]
            for answer in answers:
                if answer is None:
                    continue
                try:
                    parts.append(json.loads(zlib.decompress(answer["data"])))
                except (ValueError, zlib.error, KeyError):
                    continue
            return Gathered(self.snapshots.merged(parts), processes=self.processes, answered=len(parts))

        return defer.gatherResults(calls).addCallback(merged)


# -------------------------------------------------------------------------------------------------
# A worker


class ParentLink(_Channel):
    """A worker's end of its channel: reports its lockout outcomes, applies the others', and
    answers the parent's requests for snapshots."""

    def __init__(self, reactor: Any, lockout: Lockout | None, snapshots: Snapshots) -> None:
        super().__init__()
        self.reactor = reactor
        self.lockout = lockout
        self.snapshots = snapshots
        self.lost = False

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        super().connectionLost(reason)

    def report(self, event: str, peer: str) -> defer.Deferred[Any] | None:
        """``Lockout.share`` in a worker: to the parent, which hands it on and then acknowledges."""
        if self.transport is None or self.lost:
            return None
        return _quietly(self.callRemote(Report, event=event, peer=peer), self.reactor)

    @Report.responder
    def applied(self, event: str, peer: str) -> dict[str, Any]:
        if self.lockout is not None:
            _apply(self.lockout, event, peer)
        return {}

    @Locks.responder
    def locks(self, locks: str) -> dict[str, Any]:
        if self.lockout is not None:
            self.lockout.adopt_locks(json.loads(locks))
        return {}

    @TakeSnapshot.responder
    def take_snapshot(self) -> dict[str, Any]:
        return {"data": zlib.compress(json.dumps(self.snapshots.take()).encode())}


def connect_worker(reactor: Any, fd: int, lockout: Lockout | None, snapshots: Snapshots) -> ParentLink:
    """A worker's side of the channel on descriptor ``fd`` (closed here: adopted as a copy);
    ``lockout`` None: the processes share it otherwise (a database)."""
    link = ParentLink(reactor, lockout, snapshots)
    reactor.adoptStreamConnection(fd, socket.AF_UNIX, _quiet_factory(link))
    socket.socket(fileno=fd).close()
    if lockout is not None:
        lockout.share = link.report
    return link
