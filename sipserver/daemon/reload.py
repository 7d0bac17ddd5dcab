"""SIGHUP reloads the configuration file, SIGUSR1 reopens the log file (logrotate sends either).

The registry is the one piece that changes while running: a reload parses the file again and, if
it is good, swaps in a new registry (accounts, institutions, policies, allow-lists, lockout limits),
server settings and log level; connections pick them up at their next message. A bad new file is
logged and the old one keeps serving; changes that need new sockets or new backends are reported
as needing a restart, and the running ones keep serving until then.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Collection
from typing import Any

from twisted.application.service import Service

from sipserver.accounts.lockout import Lockout
from sipserver.accounts.registry import Registry
from sipserver.config import Config, ConfigError, load_config, reload_plan
from sipserver.daemon.serving import Serving
from sipserver.daemon.workers import WorkerPool
from sipserver.observe.exchangelog import LogWriter
from sipserver.observe.loglevel import logger
from sipserver.observe.logsetup import LogLevels

log = logger("sipserver.daemon.reload")


class Reloader(Service):
    """See the module docstring. ``config`` is the configuration in force (the running listeners,
    backends and log destination, with everything a reload could apply live)."""

    name = "reload"  # type: ignore[assignment]  # Twisted's Service types its name as None; IService says str

    def __init__(
        self,
        config: Config,
        reactor: Any,
        serving: Serving,
        lockout: Lockout,
        levels: LogLevels,
        log_writer: LogWriter,
        backends: Collection[str],
        workers: WorkerPool | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.serving = serving
        self.lockout = lockout
        self.levels = levels
        self.log_writer = log_writer
        self.backends = frozenset(backends)
        self.workers = workers

    def startService(self) -> None:
        """From now on SIGHUP reloads (and reopens the log) and SIGUSR1 reopens the log."""
        super().startService()
        # ValueError off the main thread (tests): reload and reopen are still callable directly there.
        with contextlib.suppress(ValueError):
            if hasattr(signal, "SIGHUP"):
                signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
            if hasattr(signal, "SIGUSR1"):
                signal.signal(signal.SIGUSR1, lambda *_: self.reactor.callFromThread(self.reopen_log))

    def stopService(self) -> None:
        """Stopping: a reload or a log rotation now is ignored, rather than ending the process by
        their default action before the replies and log lines in flight are written."""
        super().stopService()
        with contextlib.suppress(ValueError):
            for name in ("SIGHUP", "SIGUSR1"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_IGN)

    def reopen_log(self) -> None:
        """Open the log file again (logrotate renamed it), here and in every worker."""
        if self.workers is not None:
            self.workers.signal_all("USR1")
        self.log_writer.reopen()

    def reload(self) -> bool:
        """Re-read the config file; swap in what can change live. False when the new file is refused.

        The log is reopened first, whatever the file says (logrotate's ``postrotate`` may send
        SIGHUP). The workers (if any) get SIGHUP and reload the same file themselves. Each outcome
        is counted (``sip_config_reloads_total``): at ``logging.level: error`` an accepted reload
        writes no line, and a monitor can still tell a reload happened."""
        self.log_writer.reopen()
        accepted = self._reload()
        self.serving.events.metrics.reloads["ok" if accepted else "refused"] += 1
        return accepted

    def _reload(self) -> bool:
        if self.workers is not None:
            self.workers.signal_all("HUP")
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, still serving the previous configuration: {error}", error=str(exc))
            return False
        # Each key declares whether a reload applies it (sipserver.config.sections): the rest keep
        # their running values until a restart, and are named.
        live, restart = reload_plan(self.config, new)
        unknown_backends = {inst.backend for inst in new.institutions.values()} - self.backends
        if unknown_backends:
            log.error(
                "reload refused: institutions use backends that are not running ({names}); restart to add them",
                names=", ".join(sorted(unknown_backends)),
            )
            return False
        # The listeners that stay open until a restart are the running ones: the registry must
        # know them by their running names, and each must still find its institution.
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
        self.serving.registry = Registry.from_config(live, self.lockout)
        self.serving.settings = live.server
        self.levels.set(new.logging.level)
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
