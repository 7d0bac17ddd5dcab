"""A worker child process (``server.workers`` above 1): ``python -m sipserver.daemon.child``.

The parent (``sipserver.daemon.workers``) starts it with the config file, its index and the
descriptor of its end of a socket pair. It builds the same daemon from the same file without
listening sockets of its own, and adopts the connections the parent deals it over the pair.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

from sipserver.observe.loglevel import logger

log = logger("sipserver.daemon.workers")  # the workers' own lines, whichever process writes them


def main(argv: list[str] | None = None) -> int:
    """``python -m sipserver.daemon.child --config PATH --index N --channel FD``."""
    parser = argparse.ArgumentParser(prog="sipserver.daemon.child", description="one sipserver worker process")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--channel", type=int, required=True, help="descriptor of the socket pair to the parent")
    parser.add_argument("--control", type=int, help="descriptor of the control socket pair to the parent")
    parser.add_argument("--logfile", help="the parent's log file when twistd's --logfile named one")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from sipserver.config import ConfigError, load_config
    from sipserver.daemon.service import build
    from sipserver.daemon.workers import Inbox
    from sipserver.observe import exchangelog
    from sipserver.observe.events import LEVELS

    try:
        config = load_config(args.config)
        daemon = build(config, reactor, listen=False, worker=args.index, logfile=args.logfile)
    except (ConfigError, ValueError) as exc:
        print(f"sipserver worker {args.index}: {exc}", file=sys.stderr)
        return 1
    observer, predicate = exchangelog.observer(daemon.log, LEVELS[config.logging.level])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    daemon.levels.follow(predicate)
    channel = socket.socket(fileno=args.channel)
    channel.setblocking(False)

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    if args.control is not None:
        from sipserver.daemon.control import connect_worker

        own_lockout = daemon.lockout if config.server.lockout.shared is None else None  # else: the database's
        connect_worker(reactor, args.control, own_lockout, daemon.snapshots)
    inbox = Inbox(reactor, daemon.fronts, lambda: bool(daemon.running), channel, stop)
    reactor.addReader(inbox.reader)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C in a terminal reaches the parent, which stops us
    for name in ("SIGHUP", "SIGUSR1"):  # forwarded by the parent; handled once started (reload, reopen)
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    reactor.callWhenRunning(daemon.startService)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: reactor.removeReader(inbox.reader))
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stopService)
    log.info("worker {index} (pid {pid}) ready", index=args.index, pid=os.getpid())
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
