"""``server.workers: N``: N processes answering on the same listeners.

One Python process uses one core; a site with more terminals than one core can answer runs several
processes. The design, in the order things happen:

* The **parent** (the ``twistd sip`` process) binds every listener itself, so a port in use still
  stops start-up with one line, exactly as with one process.
* It starts N-1 **children** with ``python -m sipserver.daemon.child``. Each runs its own
  daemon built from the same file (``sipserver.daemon.service.build`` with ``listen=False``): its own backend
  connection (sqlite in WAL mode serves several processes; writes wait for each other up to
  ``busy_timeout``), its own registry and lockout table, its own health probe.
* The parent accepts every new connection and deals them out in turn, itself included: a child's
  share is passed over a unix socket pair (``SCM_RIGHTS``) and adopted there with
  ``reactor.adoptStreamConnection``. A connection then stays with its process for its life.
  Why not let every process accept from the shared listening socket? Twisted accepts as many
  queued connections as it can per wake-up, so one process takes a whole burst (50 terminals
  connecting after a network outage) and the others sit idle; dealing them out is exact. The
  parent's dealer accepts on its own copy of the listening socket (the port's ``fileno()``
  duplicated), once the reactor no longer reads the port itself (``removeReader``).
* Signals go to the parent: SIGHUP reloads the parent and is forwarded to every child, and so is
  SIGUSR1, which reopens the log file (each process writes its own lines to it); SIGTERM
  stops the parent accepting, is forwarded, and the parent waits (bounded) for the children to
  answer their requests in flight and exit. A child whose parent dies sees its socket pair close
  and stops. A child that dies while the parent runs is started again after a pause.
* Shared: TCP and unix-socket listeners (also when systemd passes them). Served by the parent
  alone: TLS listeners and the HTTP status page. A second socket pair per child carries the
  control channel (:mod:`sipserver.daemon.control`): one failed-login lockout for the daemon, and
  ``/health`` and ``/metrics`` merged from every process. Connection caps stay per process.

Log lines of every process go to the same destination (stdout, the log file or syslog), each line
written whole; connection lines carry ``worker=<index>`` (0 is the parent) when there is more than
one worker, which is how the end-to-end test sees both answer.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import address, defer, error, protocol
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from sipserver.daemon.control import CONTROL_FD, Hub
from sipserver.daemon.listeners import ListeningService
from sipserver.observe.loglevel import logger

log = logger("sipserver.daemon.workers")

#: Seconds the parent waits for a child to exit after SIGTERM before it kills it.
STOP_GRACE = 15.0
#: Seconds before a child that died on its own is started again.
RESTART_DELAY = 1.0
#: The descriptor number of the child's end of its socket pair.
CHILD_FD = 3


def family_of(port: Any) -> int | None:
    """The socket family of a listening port, or None when it cannot be shared."""
    host = port.getHost()
    if isinstance(host, address.IPv4Address):
        return socket.AF_INET
    if isinstance(host, address.IPv6Address):
        return socket.AF_INET6
    if isinstance(host, address.UNIXAddress):
        return socket.AF_UNIX
    return None


@implementer(IReadDescriptor)
class _Reader:
    """A bare readable descriptor for the reactor: calls ``on_read`` when readable and
    ``on_lost`` once when it is removed by an error or end of file."""

    def __init__(self, sock: socket.socket, on_read: Any, on_lost: Any = None) -> None:
        self.sock = sock
        self.on_read = on_read
        self.on_lost = on_lost

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> Any:
        return self.on_read()

    def connectionLost(self, reason: Any) -> None:
        if self.on_lost is not None:
            self.on_lost()

    def logPrefix(self) -> str:
        return "sipserver-workers"


class _Child(protocol.ProcessProtocol):
    def __init__(self, pool: WorkerPool, index: int, channel: socket.socket) -> None:
        self.pool = pool
        self.index = index
        self.channel = channel  # the parent's end of the socket pair
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.channel.close()
        self.pool._ended(self)
        self.ended.callback(None)


class _Dealer:
    """Accepts on one listening socket and deals the connections out to the processes in turn."""

    def __init__(self, pool: WorkerPool, name: str, port: Any, family: int) -> None:
        self.pool = pool
        self.name = name
        self.family = family
        self.socket = socket.socket(fileno=os.dup(port.fileno()))  # closed by close(); the port keeps its own
        self.socket.setblocking(False)
        self.reader = _Reader(self.socket, self.accept)

    def accept(self) -> None:
        for _ in range(64):  # bounded, so one busy listener cannot monopolise the reactor
            try:
                conn, _addr = self.socket.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR):
                    log.warn("accept on {name} failed: {why}", name=self.name, why=exc)
                return
            with conn:
                self.pool.deal(self, conn)

    def close(self) -> None:
        self.socket.close()


class WorkerPool(Service):
    """The parent's side: children started once the listeners are bound, stopped with the server.

    ``factories`` are the SIP listeners' factories by listener name (the parent's share of the
    connections is adopted with them); ``listeners`` their listening services, by the same names."""

    name = "workers"

    def __init__(
        self,
        reactor: Any,
        factories: Mapping[str, Any],
        listeners: Mapping[str, ListeningService],
        count: int,
        config_path: str,
        logfile: str | None = None,
        hub: Hub | None = None,
    ) -> None:
        self.reactor = reactor
        self.hub = hub  # the control channel's parent side (sipserver.daemon.control)
        self.factories = factories
        self.listeners = listeners
        self.count = count
        self.config_path = config_path
        self.logfile = logfile
        self.children: dict[int, _Child] = {}
        self.dealers: list[_Dealer] = []
        self._turn = 0
        self._stopping = False

    def startService(self) -> None:
        """Once every SIP listener is bound: the children, and the dealing."""
        super().startService()
        bound = [listener.when_bound() for listener in self.listeners.values()]
        defer.gatherResults(bound).addCallback(lambda _: self.spawn_all())

    def spawn_all(self) -> None:
        """Start the children and deal out the connections of every listener that can be shared."""
        parent_only = []
        for name, listener in self.listeners.items():
            port = listener.port
            family = family_of(port) if port is not None else None
            if family is None or not listener.shareable:
                parent_only.append(name)  # TLS: each connection is decrypted where it was accepted
                continue
            dealer = _Dealer(self, name, port, family)
            self.reactor.removeReader(port)  # the dealer accepts instead of Twisted's own loop
            self.reactor.addReader(dealer.reader)
            self.dealers.append(dealer)
        if parent_only:
            log.warn(
                "listeners {names} are served by the parent process only (TLS is not shared with workers)",
                names=", ".join(parent_only),
            )
        for index in range(1, self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        if self._stopping:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        control, their_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "sipserver.daemon.child", "--config", self.config_path,
                "--index", str(index), "--channel", str(CHILD_FD)]  # fmt: skip
        if self.hub is not None:
            argv += ["--control", str(CONTROL_FD)]
        if self.logfile is not None:
            argv += ["--logfile", self.logfile]
        child = _Child(self, index, ours)
        try:
            fds = {0: 0, 1: 1, 2: 2, CHILD_FD: theirs.fileno(), CONTROL_FD: their_control.fileno()}
            self.reactor.spawnProcess(child, sys.executable, argv, env=_child_environment(), childFDs=fds)
        finally:
            theirs.close()
            their_control.close()
        if self.hub is not None:
            self.hub.attach(index, control)
        else:
            control.close()
        self.children[index] = child
        log.info("worker {index} started (pid {pid})", index=index, pid=child.transport.pid)

    def deal(self, dealer: _Dealer, conn: socket.socket) -> None:
        """Hand ``conn`` to the next process in turn; the parent keeps it when that child cannot
        take it (not running, or its socket pair is full)."""
        self._turn = (self._turn + 1) % self.count
        child = self.children.get(self._turn)
        if child is not None:
            try:
                socket.send_fds(child.channel, [dealer.name.encode() + b"\n"], [conn.fileno()])
                return
            except OSError:
                pass
        self.reactor.adoptStreamConnection(conn.fileno(), dealer.family, self.factories[dealer.name])

    def _ended(self, child: _Child) -> None:
        if self.children.get(child.index) is child:
            del self.children[child.index]
        if not self._stopping:
            log.error("worker {index} exited unexpectedly; starting it again", index=child.index)
            self.reactor.callLater(RESTART_DELAY, self._spawn, child.index)

    def signal_all(self, name: str) -> None:
        for child in list(self.children.values()):
            try:
                child.transport.signalProcess(name)
            except error.ProcessExitedAlready:
                pass

    def pids(self) -> list[int]:
        return [c.transport.pid for c in self.children.values() if c.transport.pid]

    def stopService(self) -> defer.Deferred[Any]:
        """Stop dealing, SIGTERM every child and wait for them (KILL after STOP_GRACE seconds)."""
        super().stopService()
        self._stopping = True
        for dealer in self.dealers:
            self.reactor.removeReader(dealer.reader)
            dealer.close()
        self.dealers = []
        waiting = [child.ended for child in self.children.values()]
        if not waiting:
            return defer.succeed(None)
        self.signal_all("TERM")
        killer = self.reactor.callLater(STOP_GRACE, self.signal_all, "KILL")

        def finished(result: Any) -> Any:
            if killer.active():
                killer.cancel()
            return result

        return defer.DeferredList(waiting).addBoth(finished)


# -------------------------------------------------------------------------------------------------
# The child


class Inbox:
    """The child's end of its socket pair: each message is a listener name and one connection,
    adopted with that listener's factory while ``accepting()`` says so."""

    def __init__(
        self,
        reactor: Any,
        factories: Mapping[str, Any],
        accepting: Callable[[], bool],
        channel: socket.socket,
        on_lost: Callable[[], None],
    ) -> None:
        self.reactor = reactor
        self.factories = factories
        self.accepting = accepting
        self.channel = channel
        self.reader = _Reader(channel, self.receive, on_lost)

    def receive(self) -> Any:
        for _ in range(64):
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.channel, 1024, 16)
            except BlockingIOError:
                return None
            except OSError:
                return error.ConnectionLost()
            if not data and not fds:
                return error.ConnectionDone()  # the parent is gone
            names = data.decode(errors="replace").split("\n")
            for fd, name in zip(fds, names, strict=False):
                self.adopt(name, fd)
        return None

    def adopt(self, name: str, fd: int) -> None:
        try:
            factory = self.factories.get(name)
            if factory is None or not self.accepting():
                return  # stopping: the connection closes, and the terminal connects again
            self.reactor.adoptStreamConnection(fd, _family(fd), factory)
        except Exception:
            log.failure("could not adopt a connection for {name}", name=name)
        finally:
            os.close(fd)


def _family(fd: int) -> int:
    with socket.socket(fileno=os.dup(fd)) as sock:
        return sock.family


def _child_environment() -> dict[str, str]:
    """The parent's environment without ``NOTIFY_SOCKET``: only the process systemd started
    reports readiness (``NotifyAccess=main`` would log every child's message as refused)."""
    return {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
