"""``twistd sip``: command-line options and the service maker.

``twistd -n sip -c /etc/sipserver/sip.yaml`` runs the server; ``--check`` validates the file (and
the backends' seed data files) and exits 0 or 1. A bad config or seed file stops start-up with one
line naming the file, the key and what was expected, before any port is open; a listener that
cannot bind stops it with one line too (see ``sipserver.daemon.service``).

``makeService(options, reactor)`` builds the daemon from small services
(:func:`sipserver.daemon.service.build`); the reactor is a parameter so that tests build it on a
memory reactor, without sockets.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.python import usage

DEFAULT_CONFIG = "/etc/sipserver/sip.yaml"


class Options(usage.Options):
    synopsis = "[-c CONFIG] [--check]"
    longdesc = "Run the SIP2 server described by a YAML configuration file."
    optParameters = [["config", "c", DEFAULT_CONFIG, "YAML configuration file"]]
    optFlags = [["check", None, "validate the configuration and exit (0: good, 1: bad)"]]

    def postOptions(self) -> None:
        from sipserver.config import ConfigError, load_config

        try:
            self.loaded = load_config(self["config"])
        except ConfigError as exc:
            _fail(str(exc))
        if not self["check"]:
            # Until startService installs the reload and reopen handlers, a SIGHUP (systemd's
            # reload) or a SIGUSR1 (logrotate) would end the process (their default action), and
            # systemd counts that as a clean exit that needs no restart.
            for name in ("SIGHUP", "SIGUSR1"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_IGN)
        if self["check"]:
            from sipserver.ils.factory import create_backend
            from sipserver.ils.interface import BackendConfigError

            built = {}
            for backend in self.loaded.backends.values():
                try:  # constructing a backend checks its type and options; it connects only on start
                    built[backend.name] = create_backend(backend.name, {"type": backend.type, **backend.options})
                except BackendConfigError as exc:
                    _fail(f"{self['config']}: backends.{backend.name}: {exc}")
            _check_seeds(built)
            _check_endpoints(self.loaded)
            _check_log_file(self.loaded)
            for warning in self.loaded.warnings:
                print(f"warning: {warning}", file=sys.stderr)  # each warning already names the file
            print(f"{self['config']}: configuration OK")
            raise SystemExit(0)


def _check_endpoints(config: Any) -> None:
    """Parse every endpoint as start-up will (certificates included), binding nothing. A
    ``systemd:`` endpoint needs the sockets systemd passes, so only start-up can check it."""
    from twisted.internet import reactor

    from sipserver.daemon.listeners import endpoint_for

    endpoints = [(f"listeners[{i}].endpoint", listener.endpoint) for i, listener in enumerate(config.listeners)]
    if config.http is not None:
        endpoints.append(("http.endpoint", config.http.endpoint))
    for key, endpoint in endpoints:
        if endpoint.startswith("systemd:"):
            continue
        try:
            endpoint_for(key, endpoint, reactor)
        except ValueError as exc:
            _fail(f"{config.path}: {exc}")


def _check_seeds(backends: Any) -> None:
    """A seed data file a backend would refuse stops start-up here, before any port is open (see
    ``sipserver.ils.embedded.seedcheck``), with the line start-up would otherwise print later."""
    from sipserver.ils.interface import BackendConfigError

    for name, backend in backends.items():
        check = getattr(backend, "check_seed", None)  # an optional part of a backend
        if check is None:
            continue
        try:
            check()
        except BackendConfigError as exc:
            _fail(f"backend {name}: {exc}")


def _check_log_file(config: Any) -> None:
    """A ``logging.file`` that start-up could not open fails the check with start-up's line; the
    file itself is not created."""
    path = config.logging.file
    if config.logging.destination != "file" or path is None:
        return
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        _fail(f"{config.path}: logging.file: cannot open {path}: No such file or directory")
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        _fail(f"{config.path}: logging.file: cannot open {path}: Permission denied")


def _fail(line: str) -> None:
    print(f"sipserver: {line}", file=sys.stderr)
    raise SystemExit(1)


def twistd_logfile(options: Options) -> str | None:
    """The file twistd's own observer would have written to (``--logfile=FILE``, or ``twistd.log``
    for a daemon started without it); None for stdout (``--logfile=-``, or ``-n`` without it). The
    exchange log writes there when the config says ``destination: stdout``."""
    parent = getattr(options, "parent", None)
    if parent is None:  # not started by twistd
        return None
    logfile = parent.get("logfile")
    if logfile == "-" or (not logfile and (parent.get("nodaemon") or parent.get("debug"))):
        return None
    return logfile or "twistd.log"


def makeService(options: Options, reactor: Any = None) -> Any:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    from sipserver.daemon.service import build
    from sipserver.ils.interface import BackendConfigError

    config = getattr(options, "loaded", None)
    if config is None:
        from sipserver.config import load_config

        config = load_config(options["config"])
    try:
        daemon = build(config, reactor, logfile=twistd_logfile(options))
    except BackendConfigError as exc:
        _fail(f"{config.path}: backends: {exc}")
    except ValueError as exc:  # an endpoint Twisted cannot use; the message names its key
        _fail(f"{config.path}: {exc}")
    _check_seeds(daemon.backends.backends)  # nothing is bound until twistd starts the service
    return daemon
