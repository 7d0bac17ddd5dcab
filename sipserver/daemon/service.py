"""The running server: listeners, backends, the registry, health probes and reload, as one MultiService.

Built from a :class:`~sipserver.config.Config` by :func:`SIPServer.from_config_file`. The registry
is the one piece that changes while running: SIGHUP parses the file again and, if it is good, swaps
in a new registry (accounts, institutions, policies, allow-lists, lockout limits) and log level;
sessions pick it up on their next message. A bad new file is logged and the old one keeps serving;
changes that need new sockets or new backends are reported as needing a restart.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from typing import Any

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer, threads

from sipserver.accounts.lockout import Lockout
from sipserver.accounts.password_checks import PasswordChecks
from sipserver.accounts.registry import Registry
from sipserver.acs import ACS
from sipserver.config import Config, ConfigError, load_config
from sipserver.daemon import sdnotify
from sipserver.daemon.serving import Serving
from sipserver.daemon.transport.base import CLOSE_GRACE
from sipserver.daemon.transport.protocol import ListenerFactory
from sipserver.daemon.transport.telnet import TelnetListenerFactory
from sipserver.daemon.workers import WorkerPool
from sipserver.ils.factory import create_backend
from sipserver.ils.interface import BackendConfigError, ILSBackend
from sipserver.observe import exchangelog, loglevel
from sipserver.observe.events import LEVELS, Events
from sipserver.observe.loglevel import logger

log = logger("sipserver.daemon.service")

#: Password checks that may run scrypt at the same time (``sipserver.accounts.password_checks``).
PASSWORD_THREADS = 2

#: Seconds between backend health probes (98's on-line flag and /health read the result).
HEALTH_INTERVAL = 5.0
#: Seconds a stopping server waits at least for requests in flight (a checkout in the database) to
#: be answered; longer when an institution's policy.timeout is (``SIPServer.drain_timeout``).
DRAIN_TIMEOUT = 10.0


class SIPServer(MultiService):
    """The whole daemon. Also the sessions' hub: ``registry``, ``acs``, ``events``, ``config``."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        backends: dict[str, ILSBackend] | None = None,
        *,
        listen: bool = True,
        worker: int | None = None,
        logfile: str | None = None,
    ) -> None:
        """``listen=False`` builds the factories without binding anything: a worker child adopts
        the parent's sockets instead (``sipserver.daemon.workers``), whose index is ``worker``.
        ``logfile`` is twistd's ``--logfile`` when it names a file (``sipserver.tap``)."""
        super().__init__()
        self.reactor = reactor
        self.listens = listen  # the process systemd started (a worker child tells systemd nothing)
        self.config = config
        self.logfile = logfile
        self.log = _open_log(config, reactor, logfile)
        self.events = Events(config.logging.level, self.log)
        loglevel.set_level(LEVELS[config.logging.level])
        if worker is None and config.server.workers > 1:
            worker = 0  # the parent of a pool
        self.events.worker = worker
        self.adopted: list[Any] = []  # listening ports adopted by a worker child
        self.workers: WorkerPool | None = None
        self.lockout = Lockout(
            config.server.lockout.failures,
            config.server.lockout.window,
            config.server.lockout.duration,
            clock=reactor,
        )
        self.registry = Registry.from_config(config, self.lockout)
        self.password_checks = PasswordChecks(self.lockout, self.run_in_thread, threads=PASSWORD_THREADS)
        if backends is None:
            backends = {
                name: create_backend(name, {"type": backend.type, **backend.options}, reactor=reactor)
                for name, backend in config.backends.items()
            }
        self.backends = backends
        self.acs = ACS(backends, reactor, server_name=config.server.name)
        self.acs.health.starter = self._start_backend
        self.serving = Serving(self.registry, config.server, self.acs, self.events, self.password_checks)
        self._attempted: set[str] = set()  # backends whose first start has come back
        self.factories: dict[str, ListenerFactory] = {}
        self.status_site: Any = None  # the HTTP status listener's factory, when there is one
        for index, listener in enumerate(config.listeners):
            factory = self._factory_for(listener)
            self.factories[listener.name] = factory
            if not listen:
                continue
            service = endpoint_service(f"listeners[{index}].endpoint", listener.endpoint, factory, reactor)
            service.setName(f"listener:{listener.name}")
            service.setServiceParent(self)
        if listen and config.server.workers > 1:
            self.workers = WorkerPool(self, config.server.workers)
            self.workers.setServiceParent(self)
        if listen and config.http is not None:
            from sipserver.observe.http import site

            self.status_site = site(self)
            http = endpoint_service("http.endpoint", config.http.endpoint, self.status_site, reactor)
            http.setName("http")
            http.setServiceParent(self)
        timer = TimerService(HEALTH_INTERVAL, self._probe)
        timer.clock = reactor
        timer.setName("health-probe")
        timer.setServiceParent(self)
        for warning in config.warnings:
            log.warn("{warning}", warning=warning)  # each warning already names the file

    def run_in_thread(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        """``f(*args)`` on the reactor's thread pool: scrypt (about 50 ms and 16 MB each, the GIL
        released) must not stall the reactor. ``password_checks`` runs at most PASSWORD_THREADS
        at once, so that a burst of wrong logins cannot take every core and all that memory."""
        pool = getattr(self.reactor, "getThreadPool", None)
        if pool is None:  # a test's fake reactor has no threads
            return defer.maybeDeferred(f, *args)
        return threads.deferToThreadPool(self.reactor, pool(), f, *args)

    def setServiceParent(self, parent: Any) -> Any:
        """twistd makes the application our parent before it starts logging: every line goes to
        the exchange log's destination (see ``sipserver.observe.logsetup``)."""
        from sipserver.observe import logsetup

        self._log_predicate = logsetup.install(parent, self.log, self.config.logging)
        return super().setServiceParent(parent)

    @classmethod
    def from_config_file(cls, path: str, reactor: Any) -> SIPServer:
        return cls(load_config(path), reactor)

    @property
    def connection_count(self) -> int:
        return self.serving.connections

    def _factory_for(self, listener: Any) -> ListenerFactory:
        kind = TelnetListenerFactory if listener.transport == "telnet" else ListenerFactory
        return kind(self.serving, listener, self.reactor, lambda: self.events.log.flush())

    # ---------------------------------------------------------------------------------------------
    # Lifecycle

    def privilegedStartService(self) -> None:
        """Bind every listener; a port that cannot be bound ends start-up with one clear line.

        ``strports.service`` raises CannotListenError here (rather than logging it and running on
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
        self._install_signals()
        self.reactor.callWhenRunning(self._install_sigterm)  # after the reactor's own handlers
        _raise_fd_limit()
        for name in self.backends:
            self._start_backend(name)
        super().startService()
        bound: list[defer.Deferred[tuple[str, Any]]] = []
        for service in self:
            waiting = getattr(service, "_waitingForPort", None)  # set by strports' endpoint service
            if waiting is not None:
                waiting.addCallback(self._report_listening, service.name)
                bound.append(_when_bound(waiting, service.name))
        if self.workers is not None:
            prefix = "listener:"
            defer.gatherResults(bound).addCallback(
                lambda ports: self.workers.spawn_all({n[len(prefix) :]: p for n, p in ports if n.startswith(prefix)})
            )
        if self.listens:
            defer.gatherResults(bound).addCallback(lambda _: sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}"))
        log.info(
            "{name} serving {listeners} listener(s) for {institutions} institution(s), {accounts} account(s)",
            name=self.config.server.name,
            listeners=len(self.config.listeners),
            institutions=len(self.config.institutions),
            accounts=len(self.config.accounts),
        )
        # What start-up built (modules, config, Twisted) lives as long as the process: move it out
        # of the cyclic collector's reach, so that a full collection walks only what requests
        # create, instead of stalling every terminal for ~10 ms (docs/performance.md).
        gc.collect()
        gc.freeze()

    @staticmethod
    def _report_listening(port: Any, name: str) -> Any:
        """One line per bound socket with its real address (``tcp:0`` picks a free port)."""
        where = port.getHost() if hasattr(port, "getHost") else port
        host = getattr(where, "host", None)
        address = f"{host}:{where.port}" if host is not None else str(getattr(where, "name", where))
        log.info("{name} listening on {address}", name=name, address=address)
        return port

    def _start_backend(self, name: str) -> defer.Deferred[Any]:
        d = defer.maybeDeferred(self.backends[name].start)
        d.addCallbacks(self._backend_started, self._backend_failed, callbackArgs=(name,), errbackArgs=(name,))
        return d

    def _backend_started(self, _: Any, name: str) -> None:
        self._attempted.add(name)
        self.acs.health.unstarted.discard(name)
        log.info("backend {backend} ready", backend=name)
        self.acs.health.mark(name, True)

    def _backend_failed(self, failure: Any, name: str) -> None:
        # An unreachable backend must not stop the daemon: report it off-line and start it again
        # with backoff (BackendHealth), so service resumes without a restart once it can start.
        first = name not in self._attempted
        self._attempted.add(name)
        if first and failure.check(BackendConfigError):
            # Reachable but unusable as configured (schema behind or ahead of the code, bad seed
            # data): no retry will fix it, so refuse to start, like a bad config file.
            self._refuse_to_start(f"sipserver: backend {name}: {failure.getErrorMessage()}")
            return
        health = self.acs.health
        if name not in health.unstarted:
            log.error(
                "BACKEND {backend} FAILED TO START: {why}; serving with it off-line and retrying",
                backend=name,
                why=failure.getErrorMessage(),
            )
        health.unstarted.add(name)
        health.mark(name, False)

    def _refuse_to_start(self, message: str) -> None:
        log.critical("{message}", message=message)
        print(message, file=sys.__stderr__ or sys.stderr, flush=True)  # twistd has replaced sys.stderr

        def exit_1() -> None:
            sys.stdout.flush()
            os._exit(1)  # after the services have stopped; twistd itself would exit 0

        self.reactor.addSystemEventTrigger("after", "shutdown", exit_1)
        self.reactor.callWhenRunning(self.reactor.stop)

    def _probe(self) -> defer.Deferred[Any]:
        return self.acs.health.probe_all()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """The drain: stop reading every connection and accepting new ones, answer the requests in
        flight, send those replies and close, then stop the backends.

        Reading stops first: a connection still read keeps bringing requests, so those in flight
        never reach none, and replies made after the last flush were never sent. Requests already
        read but not started are not run (their terminal had no reply and sends them again)."""
        if self.listens:
            sdnotify.notify("STOPPING=1")
        self._remove_signals()
        for factory in self.factories.values():
            factory.stop_reading()
        self.password_checks.stop()
        for port in self.adopted:
            yield port.stopListening()
        yield super().stopService()
        yield self._drain()
        yield self._close_connections()
        self.acs.health.stop()
        for name, backend in self.backends.items():
            try:
                yield backend.stop()
            except Exception as exc:  # stopping must go on for the other backends
                log.warn("backend {backend} did not stop cleanly: {why}", backend=name, why=exc)
        self.log.close()  # every line of every answered exchange is written before the process exits

    def drain_timeout(self) -> float:
        """Seconds the drain waits for requests in flight: every backend call ends within its
        institution's timeout (answered, or cancelled, rolled back and answered unavailable)."""
        timeouts = [inst.policy.timeout for inst in self.config.institutions.values()]
        return max([DRAIN_TIMEOUT, *timeouts]) + 2.0

    def _drain(self) -> defer.Deferred[None]:
        """Fires when no request is waiting for its backend (bounded by :meth:`drain_timeout`) and
        the replies waiting for a turn's end are sent: the reactor drops every connection before
        that turn would end."""
        waited = self._wait_until(lambda: self.events.in_flight <= 0, self.drain_timeout(), self._drain_timed_out)
        return waited.addCallback(lambda _: self._flush_replies())

    def _flush_replies(self) -> None:
        for factory in self.factories.values():
            factory.flush_replies()

    def _drain_timed_out(self) -> None:
        log.warn("stopping with {count} request(s) unanswered", count=self.events.in_flight)

    def _close_connections(self) -> defer.Deferred[None]:
        """Send every reply still waiting, then close each connection once its peer has read them
        (``sipserver.daemon.transport.base.wind_down``); fires when all are closed."""
        for factory in self.factories.values():
            factory.wind_down()
        return self._wait_until(lambda: self.connection_count <= 0, CLOSE_GRACE + 1.0, lambda: None)

    def _wait_until(self, done: Any, timeout: float, timed_out: Any) -> defer.Deferred[None]:
        fired: defer.Deferred[None] = defer.Deferred()
        deadline = self.reactor.seconds() + timeout

        def check() -> None:
            if done():
                fired.callback(None)
            elif self.reactor.seconds() >= deadline:
                timed_out()
                fired.callback(None)
            else:
                self.reactor.callLater(0.02, check)

        check()
        return fired

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

    # ---------------------------------------------------------------------------------------------
    # Reload

    def _install_signals(self) -> None:
        """SIGHUP reloads (and reopens the log), SIGUSR1 reopens the log: logrotate sends either
        after it renames the file."""
        # ValueError off the main thread (tests): reload and reopen are still callable directly there.
        with contextlib.suppress(ValueError):
            if hasattr(signal, "SIGHUP"):
                signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
            if hasattr(signal, "SIGUSR1"):
                signal.signal(signal.SIGUSR1, lambda *_: self.reactor.callFromThread(self.reopen_log))

    def _remove_signals(self) -> None:
        """Stopping: a reload or a log rotation now is ignored, rather than ending the process by
        their default action before the replies and log lines in flight are written."""
        with contextlib.suppress(ValueError):
            for name in ("SIGHUP", "SIGUSR1"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_IGN)

    def reopen_log(self) -> None:
        """Open the log file again (logrotate renamed it), here and in every worker."""
        if self.workers is not None:
            self.workers.signal_all("USR1")
        self.log.reopen()

    def reload(self) -> bool:
        """Re-read the config file; swap in what can change live. False when the new file is refused.

        The log is reopened first, whatever the file says (logrotate's ``postrotate`` may send
        SIGHUP). The workers (if any) get SIGHUP and reload the same file themselves. Each outcome
        is counted (``sip_config_reloads_total``): at ``logging.level: error`` an accepted reload
        writes no line, and a monitor can still tell a reload happened."""
        self.log.reopen()
        accepted = self._reload()
        self.events.metrics.reloads["ok" if accepted else "refused"] += 1
        return accepted

    def _reload(self) -> bool:
        if self.workers is not None:
            self.workers.signal_all("HUP")
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, still serving the previous configuration: {error}", error=str(exc))
            return False
        restart = []
        if new.listeners != self.config.listeners:
            restart.append("listeners")
        if new.backends != self.config.backends:
            restart.append("backends")
        if new.http != self.config.http:
            restart.append("http")
        if new.server.workers != self.config.server.workers:
            restart.append("server.workers")
        if _log_target(new) != _log_target(self.config):
            restart.append("logging destination/format")
        unknown_backends = {inst.backend for inst in new.institutions.values()} - set(self.backends)
        if unknown_backends:
            log.error(
                "reload refused: institutions use backends that are not running ({names}); restart to add them",
                names=", ".join(sorted(unknown_backends)),
            )
            return False
        # The listeners that stay open until a restart are the running ones: the registry must
        # know them by their running names, and each must still find its institution.
        live = new if not restart else _merge_live(self.config, new)
        orphans = [ln for ln in live.listeners if ln.institution and ln.institution not in live.institutions]
        if orphans:
            log.error(
                "reload refused: listener {listener} serves institution {institution}, which the new file"
                " removes; restart to apply it",
                listener=orphans[0].name,
                institution=orphans[0].institution,
            )
            return False
        lockout = new.server.lockout
        self.lockout.reconfigure(lockout.failures, lockout.window, lockout.duration)
        self.registry = self.serving.registry = Registry.from_config(live, self.lockout)
        self.serving.settings = live.server
        self.events.set_level(new.logging.level)
        loglevel.set_level(LEVELS[new.logging.level])
        predicate = getattr(self, "_log_predicate", None)
        if predicate is not None:
            loglevel.set_level(LEVELS[new.logging.level], predicate)
        self.config = live
        for warning in new.warnings:
            log.warn("{warning}", warning=warning)
        log.info(
            "configuration reloaded: {accounts} account(s), {institutions} institution(s)",
            accounts=len(new.accounts),
            institutions=len(new.institutions),
        )
        if restart:
            log.warn("changes to {parts} need a restart to take effect", parts=", ".join(restart))
        return True


def _merge_live(old: Config, new: Config) -> Config:
    """The new config for everything that changes live, the old one for what needs a restart."""
    import attrs

    server = attrs.evolve(new.server, workers=old.server.workers)
    logging = attrs.evolve(old.logging, level=new.logging.level)
    return attrs.evolve(
        new, listeners=old.listeners, backends=old.backends, http=old.http, server=server, logging=logging
    )


def _log_target(config: Config) -> tuple[str, ...]:
    """Where and how lines are written: what needs a restart to change (everything but the level)."""
    logging = config.logging
    return (logging.destination, logging.format, logging.file or "", logging.syslog_facility, logging.syslog_socket)


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


def endpoint_service(key: str, endpoint: str, factory: Any, reactor: Any) -> Any:
    """``strports.service`` for the endpoint at config *key*; a ValueError naming the key when
    Twisted cannot use it (an unknown option, a missing certificate, systemd: without passed
    sockets). Nothing is bound yet, so ``--check`` runs it too."""
    try:
        return strports.service(endpoint, factory, reactor=reactor)
    except Exception as exc:
        raise ValueError(f"{key}: cannot use endpoint {endpoint!r}: {exc or type(exc).__name__}") from exc


def _when_bound(waiting: defer.Deferred[Any], name: str) -> defer.Deferred[tuple[str, Any]]:
    """(name, port) once the listener is bound, without touching ``waiting``'s own result: strports'
    service stops listening through that result on SIGTERM, so it must stay the port."""
    bound: defer.Deferred[tuple[str, Any]] = defer.Deferred()

    def forward(port: Any) -> Any:
        bound.callback((name, port))
        return port

    waiting.addCallback(forward)
    return bound


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
