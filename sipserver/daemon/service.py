"""The daemon, composed of small services by :func:`build` (what ``twistd sip``'s makeService returns).

::

    SIPDaemon
      reload            SIGHUP reloads the file, SIGUSR1 reopens the log      (sipserver.daemon.reload)
      backends          each ILS backend started, again while it cannot be    (sipserver.daemon.backends)
      health-probe      every backend's health each few seconds, for 98 and /health
      listener:NAME     one per listener: its endpoint's listen(), the SIP protocol (sipserver.daemon.listeners)
      workers           server.workers > 1: the children and the dealing    (sipserver.daemon.workers)
                        and one lockout and one view over them              (sipserver.daemon.control)
      http              the status site, when there is an http: block        (sipserver.observe.http)

Each is handed the few things it needs: the listeners' connections what every connection is served
with (:class:`~sipserver.daemon.serving.Serving`), the status site what it shows, the reload the
parts a reload swaps. The daemon itself does what concerns the whole: a port that cannot be bound
ends start-up with one line and exit status 1, ``READY=1`` goes to systemd once every listener is
bound, and at SIGTERM the drain runs in its order (stop reading, answer what runs, close the
connections, stop the backends, close the log).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer, threads
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

from sipserver.accounts.lockout import Lockout
from sipserver.accounts.password_checks import PasswordChecks
from sipserver.accounts.registry import Registry
from sipserver.acs import ACS
from sipserver.config import Config, ListenerConfig
from sipserver.daemon import sdnotify
from sipserver.daemon.backends import BackendsService
from sipserver.daemon.control import Hub
from sipserver.daemon.drain import Drain
from sipserver.daemon.listeners import ListeningService, endpoint_for
from sipserver.daemon.reload import Reloader
from sipserver.daemon.serving import Serving
from sipserver.daemon.shared_lockout import DatabaseLockout
from sipserver.daemon.transport.protocol import ListenerFactory
from sipserver.daemon.transport.proxied import ProxyHeaderFactory
from sipserver.daemon.transport.telnet import TelnetListenerFactory
from sipserver.daemon.workers import WorkerPool
from sipserver.ils.factory import create_backend
from sipserver.ils.interface import ILSBackend
from sipserver.observe import exchangelog, logsetup
from sipserver.observe.events import Events
from sipserver.observe.loglevel import logger
from sipserver.observe.snapshots import Gathered, Snapshots

log = logger("sipserver.daemon.service")

#: Password checks that may run scrypt at the same time (``sipserver.accounts.password_checks``).
PASSWORD_THREADS = 2
#: Seconds between backend health probes (98's on-line flag and /health read the result).
HEALTH_INTERVAL = 5.0


def build(
    config: Config,
    reactor: Any,
    *,
    backends: Mapping[str, ILSBackend] | None = None,
    listen: bool = True,
    worker: int | None = None,
    logfile: str | None = None,
) -> SIPDaemon:
    """The daemon ``config`` describes, ready for twistd to start. Nothing is bound yet.

    ``backends`` replaces those the config names (tests). ``listen=False`` builds the listeners'
    factories without binding anything: a worker child adopts connections the parent deals it
    (``sipserver.daemon.workers``), ``worker`` being its index. ``logfile`` is twistd's
    ``--logfile`` when it names a file (``sipserver.tap``). An endpoint Twisted cannot use or a
    log file that cannot be opened is a ValueError naming its key."""
    writer = _open_log(config, reactor, logfile)
    events = Events(config.logging.level, writer)
    levels = logsetup.LogLevels(events)
    levels.set(config.logging.level)
    if worker is None and config.server.workers > 1:
        worker = 0  # the parent of a pool
    events.worker = worker
    lockout = Lockout(
        config.server.lockout.failures, config.server.lockout.window, config.server.lockout.duration, clock=reactor
    )
    if backends is None:
        backends = {
            name: create_backend(name, {"type": backend.type, **backend.options}, reactor=reactor)
            for name, backend in config.backends.items()
        }
    shared = config.server.lockout.shared
    if shared is not None:  # every process of every daemon on that database: one table
        DatabaseLockout(lockout, backends[shared])
    acs = ACS(backends, reactor, server_name=config.server.name)
    checks = PasswordChecks(lockout, functools.partial(run_in_thread, reactor), threads=PASSWORD_THREADS)
    serving = Serving(Registry.from_config(config, lockout), config.server, acs, events, checks)
    factories = {listener.name: listener_factory(listener, serving, reactor, writer) for listener in config.listeners}
    fronts = {
        listener.name: front_factory(listener, factories[listener.name], serving, reactor)
        for listener in config.listeners
    }
    daemon = SIPDaemon(config, reactor, writer, levels, serving, factories, notify=listen)
    daemon.fronts = fronts
    daemon.lockout = lockout
    daemon.snapshots = snapshots = Snapshots()
    snapshots.register("metrics", events.metrics.snapshot)
    snapshots.register("connections", functools.partial(_connections, serving, factories))
    gather: Any = lambda: defer.succeed(Gathered(snapshots.take()))  # noqa: E731

    reload = Reloader(config, reactor, serving, lockout, levels, writer, backends)
    reload.setServiceParent(daemon)
    daemon.backends = BackendsService(backends, acs.health, reactor)
    daemon.backends.setServiceParent(daemon)
    timer = TimerService(HEALTH_INTERVAL, acs.health.probe_all)
    timer.clock = reactor
    timer.setName("health-probe")
    timer.setServiceParent(daemon)
    if listen:
        listeners: dict[str, ListeningService] = {}
        for index, listener in enumerate(config.listeners):
            endpoint = endpoint_for(f"listeners[{index}].endpoint", listener.endpoint, reactor)
            front, shareable = fronts[listener.name], None
            if listener.proxy_protocol is not None and isinstance(endpoint, SSL4ServerEndpoint):
                endpoint, front = tls_behind_proxy(endpoint, reactor, factories[listener.name], front)
                shareable = False  # TLS: each connection is decrypted where it was accepted
            service = ListeningService(
                f"listener:{listener.name}", endpoint, front, counted=factories[listener.name], shareable=shareable
            )
            service.setServiceParent(daemon)
            listeners[listener.name] = service
        if config.server.workers > 1:
            hub = Hub(reactor, lockout if shared is None else None, snapshots, config.server.workers)
            gather = hub.gather
            pool = WorkerPool(reactor, fronts, listeners, config.server.workers, config.path, logfile, hub)
            pool.setServiceParent(daemon)
            reload.workers = pool
        if config.http is not None:
            from sipserver.observe import http  # twisted.web: imported only by a daemon that serves it

            sources = http.StatusSources(
                name=lambda: serving.settings.name,
                listeners=listeners,
                connections=lambda: serving.connections,
                metrics=events.metrics,
                health=acs.health,
                lockout=lockout,
                log=writer,
                gather=gather,
            )
            endpoint = endpoint_for("http.endpoint", config.http.endpoint, reactor)
            ListeningService("http", endpoint, http.site(config.http, sources)).setServiceParent(daemon)
    for warning in config.warnings:
        log.warn("{warning}", warning=warning)  # each warning already names the file
    return daemon


def listener_factory(
    listener: ListenerConfig, serving: Serving, reactor: Any, writer: exchangelog.LogWriter
) -> ListenerFactory:
    """The factory of one SIP listener: the SIP protocol, behind telnet's login prelude on telnet."""
    kind = TelnetListenerFactory if listener.transport == "telnet" else ListenerFactory
    return kind(serving, listener, reactor, writer.flush)


def _connections(serving: Serving, factories: Mapping[str, ListenerFactory]) -> dict[str, Any]:
    """The "connections" snapshot: open SIP connections, in all and by listener."""
    return {"total": serving.connections, "listeners": {name: f.connections for name, f in factories.items()}}


def front_factory(listener: ListenerConfig, factory: ListenerFactory, serving: Serving, reactor: Any) -> Any:
    """The factory a listener's sockets are accepted (or adopted, in a worker) with: the SIP one,
    behind the PROXY header's reader when the listener sits behind a balancer."""
    proxy = listener.proxy_protocol
    if proxy is None:
        return factory
    return ProxyHeaderFactory(
        factory,
        listener.name,
        proxy.trusted,
        proxy.required,
        serving.events,
        reactor,
        lambda: serving.settings.login_timeout,
    )


def tls_behind_proxy(endpoint: SSL4ServerEndpoint, reactor: Any, factory: Any, front: Any) -> tuple[Any, Any]:
    """A TLS listener behind a balancer: the balancer sends the PROXY header before the TLS
    handshake, so the header is read on the plain socket and TLS runs inside it. Twisted's ``ssl:``
    endpoint does TLS in the port itself; its port, certificate options and interface are taken
    from it (attributes pinned in tests/test_twisted_internals.py)."""
    from twisted.protocols.tls import TLSMemoryBIOFactory

    tcp = TCP4ServerEndpoint(reactor, endpoint._port, endpoint._backlog, endpoint._interface)
    tls = TLSMemoryBIOFactory(endpoint._sslContextFactory, False, factory)
    front.wrappedFactory = tls
    return tcp, front


def run_in_thread(reactor: Any, f: Any, *args: Any) -> defer.Deferred[Any]:
    """``f(*args)`` on the reactor's thread pool: scrypt (about 50 ms and 16 MB each, the GIL
    released) must not stall the reactor. The password checks run at most PASSWORD_THREADS at
    once, so that a burst of wrong logins cannot take every core and all that memory."""
    pool = getattr(reactor, "getThreadPool", None)
    if pool is None:  # a test's fake reactor has no threads
        return defer.maybeDeferred(f, *args)
    return threads.deferToThreadPool(reactor, pool(), f, *args)


class SIPDaemon(MultiService):
    """The whole daemon (see the module docstring); ``notify``: the process systemd started (a
    worker child tells systemd nothing)."""

    backends: BackendsService
    #: What each listener's sockets are accepted with, by name (see :func:`front_factory`).
    fronts: Mapping[str, Any]
    #: The failed-login lockout, one for the process's life (a reload reconfigures it).
    lockout: Lockout
    #: What this process shows of itself, merged over the workers for /metrics and /health.
    snapshots: Snapshots

    def __init__(
        self,
        config: Config,
        reactor: Any,
        log: exchangelog.LogWriter,
        levels: logsetup.LogLevels,
        serving: Serving,
        factories: Mapping[str, ListenerFactory],
        *,
        notify: bool,
    ) -> None:
        super().__init__()
        self.config = config  # as started (a reload's live changes are in ``serving``)
        self.reactor = reactor
        self.log = log
        self.levels = levels
        self.serving = serving
        self.factories = factories
        self.notify = notify
        self.drain = Drain(list(factories.values()), serving, reactor)

    @property
    def listeners(self) -> list[ListeningService]:
        """The listening services, SIP and HTTP."""
        return [service for service in self if isinstance(service, ListeningService)]

    @property
    def reload(self) -> Reloader:
        service = self.getServiceNamed("reload")
        assert isinstance(service, Reloader)
        return service

    def setServiceParent(self, parent: Any) -> Any:
        """twistd makes the application our parent before it starts logging: every line goes to
        the exchange log's destination (see ``sipserver.observe.logsetup``)."""
        predicate = logsetup.install(parent, self.log, self.config.logging)
        if predicate is not None:
            self.levels.follow(predicate)
        return super().setServiceParent(parent)

    # ---------------------------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener; a port that cannot be bound ends start-up with one clear line.

        The listening services raise CannotListenError here (rather than logging it and running on
        without the port); twistd would print a traceback, so say it in one line and exit 1.
        """
        from twisted.internet.error import CannotListenError

        try:
            super().privilegedStartService()
        except CannotListenError as exc:
            message = f"sipserver: cannot listen on {exc.interface or '*'}:{exc.port}: {exc.socketError}"
            print(message, file=sys.stderr)
            raise SystemExit(1) from None
        except OSError as exc:  # a unix socket's directory missing or not writable (its lock file)
            names = [os.fsdecode(n) for n in (exc.filename2, exc.filename) if n]  # the lock is symlink()'s second
            where = next((n.removesuffix(".lock") for n in names if n.endswith(".lock")), names[0] if names else "?")
            print(f"sipserver: cannot listen on unix:{where}: {exc.strerror or exc}", file=sys.stderr)
            raise SystemExit(1) from None

    def startService(self) -> None:
        self.reactor.callWhenRunning(self._install_sigterm)  # after the reactor's own handlers
        _raise_fd_limit()
        super().startService()
        if self.notify:
            bound = [listener.when_bound() for listener in self.listeners]
            defer.gatherResults(bound).addCallback(lambda _: sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}"))
        config = self.config
        log.info(
            "{name} serving {listeners} listener(s) for {institutions} institution(s), {accounts} account(s)",
            name=config.server.name,
            listeners=len(config.listeners),
            institutions=len(config.institutions),
            accounts=len(config.accounts),
        )
        # What start-up built (modules, config, Twisted) lives as long as the process: move it out
        # of the cyclic collector's reach, so that a full collection walks only what requests
        # create, instead of stalling every terminal (docs/performance.md).
        gc.collect()
        gc.freeze()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """The drain (:mod:`sipserver.daemon.drain`): stop reading every connection and accepting
        new ones, answer the requests in flight, send those replies and close, then stop the
        backends, and write the last log lines."""
        Service.stopService(self)  # the children stop one after the other below, not all at once
        if self.notify:
            sdnotify.notify("STOPPING=1")
        self.reload.stopService()
        self.drain.stop_reading()
        if self.serving.password_checks is not None:
            self.serving.password_checks.stop()
        front = [s for s in reversed(list(self)) if s.running and s is not self.backends]
        yield defer.DeferredList([defer.maybeDeferred(service.stopService) for service in front])
        yield self.drain.answer_in_flight()
        yield self.drain.close_connections()
        yield self.backends.stopService()
        self.log.close()  # every line of every answered exchange is written before the process exits

    def _install_sigterm(self) -> None:
        """SIGTERM (systemd's stop) stops the reactor, whose shutdown runs the drain, and the
        process then exits 0: twistd's own handler makes it re-raise the signal (status 143)
        once the drain is done, as if it had been killed."""
        if hasattr(signal, "SIGTERM"):
            with contextlib.suppress(ValueError):  # off the main thread (tests)
                signal.signal(signal.SIGTERM, lambda *_: self.reactor.callFromThread(self._terminate))

    def _terminate(self) -> None:
        log.info("received SIGTERM: draining (answering the requests in flight, then closing)")
        if self.reactor.running:
            self.reactor.stop()


def _open_log(config: Config, reactor: Any, logfile: str | None) -> exchangelog.LogWriter:
    """The exchange log's writer; a log file that cannot be opened is a ValueError naming the key."""
    try:
        return exchangelog.open_log(config.logging, reactor, logfile)
    except OSError as exc:
        if config.logging.destination == "file":
            where = f"logging.file: cannot open {config.logging.file}"
        else:
            where = f"twistd --logfile: cannot open {logfile}"
        raise ValueError(f"{where}: {exc.strerror or exc}") from None


def _raise_fd_limit() -> None:
    """Raise the open-files limit to its hard maximum: each terminal holds a socket, and a default
    soft limit of 1024 would refuse connections long before ``server.max_connections``."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warn("could not raise the open files limit from {soft}: {why}", soft=soft, why=exc)
            return
        log.info("open files limit raised from {soft} to {hard}", soft=soft, hard=hard)
