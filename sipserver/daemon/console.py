"""The operator's console composed into the daemon: its books in every process, its page in the one
serving HTTP.

The console is on when ``console.admins`` names at least one administrator. Then every process
(a worker child too) keeps the books (:class:`~sipserver.observe.console.record.ConsoleRecord`,
fed by :class:`~sipserver.observe.events.Events`) and samples the metrics once a minute; its
:func:`~sipserver.observe.console.snapshot.snapshot` is registered as the ``console`` snapshot
(:mod:`sipserver.observe.snapshots`), which the parent gathers from each worker and merges with
:func:`~sipserver.observe.console.snapshot.merge`. The page is served on the HTTP listener only
when nobody else can read its basic authentication there (TLS, loopback, unix socket); otherwise
start-up says why it is off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred

from sipserver.accounts.lockout import Lockout
from sipserver.config import Config
from sipserver.observe.console.activity import Activity
from sipserver.observe.console.record import ConsoleRecord
from sipserver.observe.console.snapshot import snapshot
from sipserver.observe.events import Events
from sipserver.observe.loglevel import logger
from sipserver.observe.snapshots import Gathered

if TYPE_CHECKING:
    from twisted.web.resource import Resource

    from sipserver.acs import BackendHealth
    from sipserver.daemon.listeners import ListeningService
    from sipserver.daemon.serving import Serving
    from sipserver.observe.console.probe import Target

log = logger("sipserver.daemon.console")

#: Seconds between two samples of the metrics for the per-minute activity.
SAMPLE_INTERVAL = 60.0


@attrs.frozen
class Books:
    """One process's console books and the function that snapshots them."""

    record: ConsoleRecord
    activity: Activity
    snapshot: Callable[[], dict[str, Any]]


def console_on(config: Config) -> bool:
    return config.console is not None and bool(config.console.admins)


def keep_books(
    config: Config, events: Events, health: BackendHealth, reactor: Any, parent: MultiService, worker: int | None
) -> Books | None:
    """The books, fed by ``events`` and sampled by a timer under ``parent``; None when the console is off."""
    if not console_on(config):
        return None
    assert config.console is not None
    record = ConsoleRecord(config.console.refusals)
    activity = Activity(events.metrics)
    events.console = record
    timer = TimerService(SAMPLE_INTERVAL, lambda: activity.sample(reactor.seconds()))
    timer.clock = reactor
    timer.setName("console-sample")
    timer.setServiceParent(parent)
    return Books(record, activity, functools.partial(snapshot, record, activity, health, worker))


def console_page(
    config: Config,
    books: Books | None,
    serving: Serving,
    lockout: Lockout,
    listeners: Mapping[str, ListeningService],
    run_in_thread: Callable[..., Any],
    reactor: Any,
    gather: Callable[[], Deferred[Gathered]] | None = None,
) -> Resource | None:
    """The ``/console`` resource for the HTTP site, or None (off, or refused: said at start-up).
    ``gather`` is the daemon's snapshot of every process (with workers, the parent asks each over
    the control channel); without it the page shows this process alone."""
    if books is None:
        return None
    assert config.console is not None
    if config.http is None:
        log.warn("console: off, there is no http: block to serve it on (console.admins is set)")
        return None
    from sipserver.observe.console.guard import Admins, unsafe_endpoint
    from sipserver.observe.console.pages import Console, ConsoleSources

    why = unsafe_endpoint(config.http.endpoint)
    if why is not None:
        log.warn(
            "console: off, {why}: basic authentication would cross the network readable "
            "(use an ssl: endpoint or interface=127.0.0.1)",
            why=why,
        )
        return None
    admins = Admins({a.login: a for a in config.console.admins}, lockout, run_in_thread, reactor.seconds)
    sources = ConsoleSources(
        name=lambda: serving.settings.name,
        registry=lambda: serving.registry,
        record=books.record,
        admins=admins,
        snapshots=functools.partial(_every_process, books, gather),
        target=functools.partial(test_target, config, listeners),
        run_in_thread=run_in_thread,
    )
    log.info("console: on at /console/ for {count} administrator(s)", count=len(config.console.admins))
    return Console(sources)


def _every_process(
    books: Books, gather: Callable[[], Deferred[Gathered]] | None
) -> Sequence[dict[str, Any]] | Deferred[Sequence[dict[str, Any]]]:
    """The console's snapshots of the whole daemon: merged over the workers by the gathering (a
    worker that does not answer in time is left out), or this process's own."""
    if gather is None:
        return [books.snapshot()]

    def console_of(gathered: Gathered) -> Sequence[dict[str, Any]]:
        return [gathered.merged.get("console") or books.snapshot()]

    return gather().addCallback(console_of)


def test_target(config: Config, listeners: Mapping[str, ListeningService]) -> Target | None:
    """The first raw listener on TCP or TLS, where it is bound: what the test form connects to."""
    from sipserver.observe.console.probe import Target

    for listener in config.listeners:
        kind = listener.endpoint.split(":", 1)[0].lower()
        service = listeners.get(listener.name)
        if listener.transport != "raw" or kind not in ("tcp", "tcp6", "ssl", "tls") or service is None:
            continue
        port = getattr(service, "port", None)
        if port is None:
            continue
        host = port.getHost()
        address = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host.host, host.host)
        return Target(listener.name, address, host.port, tls=kind in ("ssl", "tls"))
    return None
