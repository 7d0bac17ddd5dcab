"""The optional HTTP status listener: ``/health`` for monitors and ``/metrics`` for Prometheus.

"Is the server up, and can it reach the ILS?" is the first question when a self-check stops
working, so ``/health`` answers it in one request: 200 when every listener is bound and every
backend answers, 503 otherwise, with a small JSON body saying which part is down.

The status port has its own budget (``http.max_connections``), apart from the SIP terminals': past
it a new connection is closed at once, and a connection idle or with its request unfinished for
``http.timeout`` seconds is closed. 20,000 idle, unfinished ``GET /health`` requests used to take
every file descriptor the daemon had, and the SIP terminals' logins with them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.protocols import policies
from twisted.web import resource, server

from sipserver.config import HttpConfig
from sipserver.observe.events import LATENCY_BUCKETS, Metrics
from sipserver.observe.exchangelog import LogWriter
from sipserver.observe.snapshots import Gathered

if TYPE_CHECKING:
    from sipserver.accounts.lockout import Lockout
    from sipserver.acs import BackendHealth


class ListenerStatus(Protocol):
    """What the pages read of one SIP listener."""

    @property
    def bound(self) -> bool: ...  # its socket listens (a port that cannot be bound stops the daemon)

    @property
    def connections(self) -> int: ...  # its open connections


@attrs.frozen
class StatusSources:
    """Everything the status pages read, each a narrow part of the running daemon."""

    name: Callable[[], str]  # server.name (a reload may change it)
    listeners: Mapping[str, ListenerStatus]  # by listener name
    connections: Callable[[], int]  # open SIP connections on every listener
    metrics: Metrics
    health: BackendHealth
    lockout: Lockout
    log: LogWriter
    #: Every process's snapshots merged (``sipserver.observe.snapshots``): with workers, the
    #: connections and counters of the whole daemon. None: this process's own.
    gather: Callable[[], Deferred[Gathered]] | None = None

    def gathered(self) -> Deferred[Gathered]:
        if self.gather is not None:
            return self.gather()
        own = {"metrics": self.metrics.snapshot(), "connections": {"total": self.connections(), "listeners": {
            name: listener.connections for name, listener in self.listeners.items()}}}  # fmt: skip
        return succeed(Gathered(own))


class Health(resource.Resource):
    isLeaf = True

    def __init__(self, sources: StatusSources) -> None:
        super().__init__()
        self.sources = sources

    def render_GET(self, request: Any) -> Any:
        sources = self.sources
        gathered: list[Gathered] = []
        d = sources.health.probe_all()
        d.addBoth(lambda _: sources.gathered()).addCallback(gathered.append)
        gone = _watch(request)

        def answer(_: Any) -> None:
            if gone:
                return
            listeners = {name: listener.bound for name, listener in sources.listeners.items()}
            backends = sources.health.snapshot()
            healthy = all(listeners.values()) and all(backends.values())
            body: dict[str, Any] = {
                "status": "ok" if healthy else "unavailable",
                "listeners": {name: "up" if up else "down" for name, up in listeners.items()},
                "backends": {name: "up" if up else "down" for name, up in backends.items()},
                "connections": _total(gathered, sources),
                "name": sources.name(),
                # the log's own trouble (syslog unreachable, lines dropped): shown, but SIP still works
                "log": sources.log.problem or "ok",
            }
            upstreams = sources.health.upstreams()
            if upstreams:  # backends relaying to another SIP2 server: is it reachable, are we logged in
                body["upstreams"] = {
                    name: {
                        "reachable": report["endpoint_reachable"],
                        "logged_in": f"{report['logged_in']}/{report['pool_size']}",
                        "login_refused": report["login_refused"],
                        "queue": report["queue_depth"],
                        "problem": report["problem"],
                    }
                    for name, report in upstreams.items()
                }
            if gathered and gathered[0].processes > 1:
                body["workers"] = {"processes": gathered[0].processes, "answered": gathered[0].answered}
            request.setResponseCode(200 if healthy else 503)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            request.write(json.dumps(body, sort_keys=True).encode() + b"\n")
            request.finish()

        d.addBoth(answer)
        return server.NOT_DONE_YET


class MetricsPage(resource.Resource):
    isLeaf = True

    def __init__(self, sources: StatusSources) -> None:
        super().__init__()
        self.sources = sources
        self.site: CappedFactory | None = None  # the status site itself, for its own refusals

    def render_GET(self, request: Any) -> Any:
        gone = _watch(request)

        def answer(gathered: Gathered) -> None:
            if gone:
                return
            request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
            request.write(render_metrics(self.sources, self.site, gathered).encode("utf-8"))
            request.finish()

        self.sources.gathered().addCallback(answer)
        return server.NOT_DONE_YET


def _watch(request: Any) -> list[bool]:
    """A list that holds True once the client has gone (nothing may be written then)."""
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))
    return gone


def _total(gathered: list[Gathered], sources: StatusSources) -> int:
    if gathered:
        return int(gathered[0].merged.get("connections", {}).get("total", 0))
    return sources.connections()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(
    sources: StatusSources, status_site: CappedFactory | None = None, gathered: Gathered | None = None
) -> str:
    """The Prometheus text exposition format (0.0.4) of the server's counters: of every worker's
    together when ``gathered`` holds their snapshots."""
    m = Metrics.from_snapshot(gathered.merged["metrics"]) if gathered is not None else sources.metrics
    open_by_listener = gathered.merged.get("connections", {}).get("listeners", {}) if gathered is not None else {}
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("sip_connections_open", "gauge", "Open SIP connections by listener.")
    for name in sorted(sources.listeners):
        count = open_by_listener.get(name, sources.listeners[name].connections)
        out.append(f'sip_connections_open{{listener="{_label(name)}"}} {count}')
    family("sip_connections_by_login", "gauge", "Open logged-in SIP connections by listener and login.")
    for (listener, login), count in sorted(m.open_by_login.items()):
        if count > 0:
            out.append(f'sip_connections_by_login{{listener="{_label(listener)}",login="{_label(login)}"}} {count}')
    family("sip_connections_opened_total", "counter", "Connections accepted by listener.")
    for name, count in sorted(m.connections_opened.items()):
        out.append(f'sip_connections_opened_total{{listener="{_label(name)}"}} {count}')
    family("sip_connections_refused_total", "counter", "Connections refused by listener and reason.")
    for (name, reason), count in sorted(m.connections_refused.items()):
        out.append(f'sip_connections_refused_total{{listener="{_label(name)}",reason="{_label(reason)}"}} {count}')
    family("sip_messages_total", "counter", "SIP requests answered, by message and outcome.")
    for (message, outcome), count in sorted(m.messages.items()):
        out.append(f'sip_messages_total{{message="{_label(message)}",outcome="{_label(outcome)}"}} {count}')
    family("sip_request_duration_seconds", "histogram", "Time from request frame to reply.")
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, m.latency_buckets, strict=True):
        cumulative += count
        out.append(f'sip_request_duration_seconds_bucket{{le="{bound}"}} {cumulative}')
    out.append(f'sip_request_duration_seconds_bucket{{le="+Inf"}} {m.latency_count}')
    out.append(f"sip_request_duration_seconds_sum {m.latency_sum:.6f}")
    out.append(f"sip_request_duration_seconds_count {m.latency_count}")
    family("sip_logins_total", "counter", "Login attempts by result and refusal reason.")
    for (result, reason), count in sorted(m.logins.items()):
        out.append(f'sip_logins_total{{result="{result}",reason="{_label(reason)}"}} {count}')
    family("sip_lockouts_active", "gauge", "Peer addresses locked out now after repeated failed logins.")
    out.append(f"sip_lockouts_active {sources.lockout.locked_count()}")
    if status_site is not None:
        family("sip_http_connections_refused_total", "counter", "Status connections closed over http.max_connections.")
        out.append(f"sip_http_connections_refused_total {status_site.refused}")
    if gathered is not None and gathered.processes > 1:
        family("sip_workers_answering", "gauge", "Worker processes counted in this page (of server.workers).")
        out.append(f"sip_workers_answering {gathered.answered}")
    family("sip_protocol_errors_total", "counter", "Frames refused or ignored (bad checksum, unknown code, ...).")
    out.append(f"sip_protocol_errors_total {m.protocol_errors}")
    family("sip_config_reloads_total", "counter", "Configuration reloads (SIGHUP) by result: ok or refused.")
    for result in ("ok", "refused"):
        out.append(f'sip_config_reloads_total{{result="{result}"}} {m.reloads[result]}')
    family("sip_log_lines_dropped_total", "counter", "Log lines not written: the destination failed or lagged.")
    out.append(f"sip_log_lines_dropped_total {sources.log.dropped}")
    family("sip_log_destination_up", "gauge", "1 when log lines reach their destination (0: failing, or on stderr).")
    out.append(f"sip_log_destination_up {int(sources.log.problem is None)}")
    health = sources.health
    family("sip_backend_up", "gauge", "1 when the backend answered its last call or probe.")
    for name, up in sorted(health.snapshot().items()):
        out.append(f'sip_backend_up{{backend="{_label(name)}"}} {int(up)}')
    family("sip_backend_errors_total", "counter", "Backend calls that failed as unavailable.")
    for name, count in sorted(health.errors.items()):
        out.append(f'sip_backend_errors_total{{backend="{_label(name)}"}} {count}')
    family("sip_backend_attempts_total", "counter", "Attempts to reach an off-line backend again (with backoff).")
    for name, count in sorted(health.attempts.items()):
        out.append(f'sip_backend_attempts_total{{backend="{_label(name)}"}} {count}')
    family("sip_backend_timeouts_total", "counter", "Backend calls that exceeded the institution's timeout.")
    for name, count in sorted(health.timeouts.items()):
        out.append(f'sip_backend_timeouts_total{{backend="{_label(name)}"}} {count}')
    upstreams = health.upstreams()
    if upstreams:
        _upstream_metrics(upstreams, family, out)
    return "\n".join(out) + "\n"


#: The upstream pool figures in /metrics: (family, kind, help, the report's key).
_UPSTREAM_FAMILIES = (
    ("sip_upstream_connections_logged_in", "gauge", "Pool connections logged in upstream.", "logged_in"),
    ("sip_upstream_login_refused", "gauge", "1 while the upstream refuses the gateway's login.", "login_refused"),
    ("sip_upstream_queue_depth", "gauge", "Requests waiting for a free upstream connection.", "queue_depth"),
    ("sip_upstream_requests_total", "counter", "Requests relayed upstream.", "requests"),
    ("sip_upstream_errors_total", "counter", "Relayed requests that failed.", "errors"),
    ("sip_upstream_outcome_unknown_total", "counter", "Changes sent whose answer was lost.", "outcome_unknown"),
    ("sip_upstream_reconnects_total", "counter", "Upstream connections lost after login.", "reconnects"),
    ("sip_upstream_latency_seconds_sum", "counter", "Time spent waiting on upstream answers.", "latency_sum"),
    ("sip_upstream_latency_seconds_count", "counter", "Upstream answers timed.", "latency_count"),
)


def _upstream_metrics(upstreams: Mapping[str, Mapping[str, Any]], family: Callable[[str, str, str], None],
                      out: list[str]) -> None:  # fmt: skip
    for metric, kind, help_text, key in _UPSTREAM_FAMILIES:
        family(metric, kind, help_text)
        for name, report in sorted(upstreams.items()):
            value = report[key]
            shown = f"{value:.6f}" if isinstance(value, float) else str(int(value))
            out.append(f'{metric}{{backend="{_label(name)}"}} {shown}')


class _UnloggedSite(server.Site):
    """No access-log line per request: a monitor polling /health every few seconds would fill the
    journal with them at every ``logging.level``; the probes' outcomes are in /metrics."""

    def log(self, request: Any) -> None:
        pass


class CappedFactory(policies.WrappingFactory):
    """At most ``cap`` connections at once; past that, a new one is closed as soon as accepted."""

    noisy = False

    def __init__(self, wrapped: Any, cap: int) -> None:
        super().__init__(wrapped)
        self.cap = cap
        self.refused = 0

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.protocols) >= self.cap:
            self.refused += 1
            return None
        return super().buildProtocol(addr)


def site(http: HttpConfig, sources: StatusSources, console: resource.Resource | None = None) -> CappedFactory:
    """The status listener's factory: ``/health`` and ``/metrics`` over ``sources``, and the
    operator's ``console`` when it is on (:mod:`sipserver.observe.console`), within the ``http:``
    block's budget."""
    root = resource.Resource()
    if console is not None:
        root.putChild(b"console", console)
    root.putChild(b"health", Health(sources))
    metrics = MetricsPage(sources)
    root.putChild(b"metrics", metrics)
    factory = _UnloggedSite(root, timeout=http.timeout)
    factory.noisy = False
    factory.displayTracebacks = False
    metrics.site = CappedFactory(factory, http.max_connections)
    return metrics.site
