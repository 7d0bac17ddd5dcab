"""The pool of upstream connections: a few links, each logged in once, and a bounded queue of
requests waiting for a free one.

Requests go out one at a time per link, the first free link taking the oldest request. A change
(see :class:`sipserver.ils.interface.ChangeRequest`) is written upstream once at most: when its
link breaks after it was sent, or its answer is late, it fails with
:class:`~sipserver.ils.interface.OutcomeUnknown` and is not sent again; a read may be sent once
more on another link. A request that waits ``timeout`` seconds for a link, or that finds the queue
full or no link up, fails with :class:`~sipserver.ils.interface.BackendUnavailable`, having not
been sent. Links that break are connected again with backoff; idle ones are kept open with 99,
which also refreshes what the upstream last said about itself (its 98).

Every request's deadline is watched by one timer per pool, set for the oldest deadline still open,
rather than by a timer per request: a relayed message pays for no ``callLater`` and no cancel, and
the refusal still comes at its deadline. So the pool answers every request within ``timeout``
seconds, which :attr:`SIP2Backend.answers_within` tells the ACS (it then sets no timer of its own).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from sipserver.ils.backoff import Backoff
from sipserver.ils.interface import BackendError, BackendUnavailable, OutcomeUnknown
from sipserver.observe.loglevel import logger
from sipserver.sip2 import Message, make

from .link import LinkBroken, LoginRefused, UpstreamLink
from .options import UpstreamSettings

log = logger("sipserver.ils.upstream")


@attrs.define(eq=False)
class Job:
    """One request on its way: waiting in the queue, or in hand on a link."""

    message: Message
    change: bool
    what: object  # for log lines and errors, as str(): the operation and the terminal
    done: defer.Deferred[Message]
    #: When the request gets its refusal if no reply came (the reactor's clock).
    deadline: float
    link: UpstreamLink | None = None
    tries: int = 0
    started: float = 0.0  # when it was last written upstream (perf_counter), for the latency figure


@attrs.define
class PoolFigures:
    """What /metrics and /health show of one pool."""

    requests: int = 0
    errors: int = 0
    outcome_unknown: int = 0
    refused_queue_full: int = 0
    reconnects: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    login_refused: bool = False


class UpstreamPool:
    """See the module docstring."""

    def __init__(self, name: str, settings: UpstreamSettings, reactor: Any, *, loud: bool = True) -> None:
        """``loud``: a refused login is the gateway's own, reported as an alarm (a terminal's
        forwarded login refused is that terminal's business, logged by its login line)."""
        self.name = name
        self.loud = loud
        self.settings = settings
        self.reactor = reactor
        self.figures = PoolFigures()
        self.status: Message | None = None  # the upstream's last 98
        self.last_problem = "not connected yet"
        self._endpoint = clientFromString(reactor, settings.endpoint)
        self._ready: list[UpstreamLink] = []  # logged in, each idle or busy
        self._slots = 0  # links connecting, logging in or ready
        self._queue: collections.deque[Job] = collections.deque()
        self._backoff = Backoff()
        self._reconnect: Any = None
        self._waiting_ready: list[defer.Deferred[None]] = []
        self._last_used: dict[UpstreamLink, float] = {}
        self._keepalive = LoopingCall(self._keep_alive)
        self._keepalive.clock = reactor
        self._stopped = False
        self._attempting = 0  # connection attempts under way
        #: Requests not answered yet, oldest first, and the one timer set for the oldest deadline.
        self._open: dict[Job, None] = {}
        self._watch: Any = None

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopped = False
        self._fill()
        if not self._keepalive.running:
            self._keepalive.start(max(0.05, self.settings.keepalive / 2), now=False)

    def ready(self, timeout: float) -> defer.Deferred[None]:
        """Fires once a link is logged in; BackendUnavailable after ``timeout`` seconds without."""
        if self._ready:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting_ready.append(d)

        def late() -> None:
            if d in self._waiting_ready:
                self._waiting_ready.remove(d)
                d.errback(BackendUnavailable(f"{self.name}: upstream not ready: {self.last_problem}"))

        call = self.reactor.callLater(timeout, late)
        d.addBoth(lambda result: (call.cancel() if call.active() else None, result)[1])
        return d

    def stop(self) -> defer.Deferred[None]:
        self._stopped = True
        if self._keepalive.running:
            self._keepalive.stop()
        if self._reconnect is not None and self._reconnect.active():
            self._reconnect.cancel()
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = None
        while self._queue:
            self._fail(self._queue.popleft(), BackendUnavailable(f"{self.name}: stopping"))
        for link in list(self._ready):
            link.abandon("the daemon is stopping")
        return defer.succeed(None)

    @property
    def logged_in(self) -> int:
        return len(self._ready)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- connections ------------------------------------------------------------------------------

    def _fill(self) -> None:
        """Connect links until the pool has ``size`` of them (connecting or up)."""
        while not self._stopped and self._slots < self.settings.pool_size:
            self._slots += 1
            self._connect_one()

    def _connect_one(self) -> None:
        links: list[UpstreamLink] = []

        def build() -> UpstreamLink:
            link = UpstreamLink(self.settings, self._lost)
            links.append(link)
            return link

        factory = Factory.forProtocol(build)
        self._attempting += 1
        d = self._endpoint.connect(factory)
        d.addCallback(lambda link: link.login().addCallback(lambda _: link))
        d.addCallback(self._status_of)
        # Connecting, logging in and the first 99 within the timeout: an upstream that accepts and
        # then says nothing must not hold the slot for ever.
        d.addTimeout(self.settings.timeout, self.reactor)
        d.addCallbacks(self._logged_in, self._not_up, errbackArgs=(links,))

    def _status_of(self, link: UpstreamLink) -> defer.Deferred[UpstreamLink]:
        return link.exchange(_status_request()).addCallback(self._note_status).addCallback(lambda _: link)

    def _note_status(self, reply: Message) -> Message:
        if reply.code == "98":
            self.status = reply
        return reply

    def _logged_in(self, link: UpstreamLink) -> None:
        self._attempting -= 1
        if self._stopped:
            link.abandon("the daemon is stopping")
            return
        if self.figures.login_refused:
            log.info("upstream {backend}: the login of {user} is accepted again", backend=self.name,
                     user=self.settings.user)  # fmt: skip
        self.figures.login_refused = False
        self._backoff.reset()
        self._ready.append(link)
        self._last_used[link] = self.reactor.seconds()
        log.info("upstream {backend}: connection {count} of {size} logged in", backend=self.name,
                 count=len(self._ready), size=self.settings.pool_size)  # fmt: skip
        waiting, self._waiting_ready = self._waiting_ready, []
        for d in waiting:
            d.callback(None)
        self._dispatch()

    def _not_up(self, failure: Failure, links: list[UpstreamLink]) -> None:
        self._attempting -= 1
        self._slots -= 1
        for link in links:
            if link.transport is not None:
                link.on_lost = lambda *_: None  # already counted
                link.abandon("not logged in")
        if failure.check(LoginRefused):
            why = failure.getErrorMessage()
            if not self.figures.login_refused and self.loud:
                log.critical(
                    "UPSTREAM {backend} REFUSED THE GATEWAY'S LOGIN (user {user}): check login.user and its "
                    "password on both sides; trying again with backoff",
                    backend=self.name,
                    user=self.settings.user,
                )
            self.figures.login_refused = True
        else:
            why = _why(failure) if not failure.check(defer.TimeoutError) else "no answer to the login in time"
            if why != self.last_problem:
                log.error("upstream {backend} unreachable: {why}", backend=self.name, why=why)
        self.last_problem = why
        if not self._ready and not self._attempting:
            self._fail_queue(BackendUnavailable(f"{self.name}: upstream unreachable: {why}"))
        self._schedule_reconnect()

    def _lost(self, link: UpstreamLink, why: str) -> None:
        if link not in self._ready:
            return  # before login: _not_up counts it
        self._ready.remove(link)
        self._last_used.pop(link, None)
        self._slots -= 1
        self.figures.reconnects += 1
        self.last_problem = why
        if not self._stopped:
            log.warn("upstream {backend}: a connection ended ({why}); connecting again", backend=self.name, why=why)
        if not self._ready and not self._attempting:
            self._fail_queue(BackendUnavailable(f"{self.name}: upstream unreachable: {why}"))
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._stopped or (self._reconnect is not None and self._reconnect.active()):
            return

        def again() -> None:
            self._reconnect = None
            self._fill()

        self._reconnect = self.reactor.callLater(self._backoff.delay(), again)

    # -- requests ---------------------------------------------------------------------------------

    def submit(self, message: Message, *, change: bool, what: object) -> defer.Deferred[Message]:
        """The upstream's reply to ``message`` (see the module docstring for the failures)."""
        done: defer.Deferred[Message] = defer.Deferred(lambda d: self._cancelled(job))
        job = Job(message, change, what, done, self.reactor.seconds() + self.settings.timeout)
        self.figures.requests += 1
        if not self._ready and not self._attempting and self._reconnect is not None:
            self.figures.errors += 1
            return defer.fail(BackendUnavailable(f"{self.name}: upstream unreachable: {self.last_problem}"))
        if len(self._queue) >= self.settings.queue_limit:
            self.figures.refused_queue_full += 1
            self.figures.errors += 1
            return defer.fail(BackendUnavailable(f"{self.name}: the upstream queue is full"))
        self._open[job] = None
        watch = self._watch
        if watch is None:
            self._watch = self.reactor.callLater(self.settings.timeout, self._sweep)
        elif job.deadline < watch.getTime():  # the clock went back: this one is due first
            watch.reset(self.settings.timeout)
        self._queue.append(job)
        self._dispatch()
        return done

    def _sweep(self) -> None:
        """The oldest deadline came: every request past its deadline gets its refusal (see
        :meth:`_late`), and the timer is set again for the oldest one left."""
        self._watch = None
        now = self.reactor.seconds() + _SLACK
        due = [job for job in self._open if job.deadline <= now]
        for job in due:
            self._late(job)
        if self._open and self._watch is None and not self._stopped:
            first = min(job.deadline for job in self._open)
            self._watch = self.reactor.callLater(max(0.0, first - self.reactor.seconds()), self._sweep)

    def _close(self, job: Job) -> None:
        """The request is answered or refused: its deadline is no longer watched."""
        self._open.pop(job, None)

    def _dispatch(self) -> None:
        for link in self._ready:
            if not self._queue:
                return
            if not link.busy and link.usable:
                self._send(link, self._queue.popleft())

    def _send(self, link: UpstreamLink, job: Job) -> None:
        link.busy = True
        job.link = link
        job.tries += 1
        job.started = time.perf_counter()
        try:
            link.ask(job.message, self._answered, self._broken, job)
        except Exception as exc:  # the request could not be written (never sent): this request's fault
            job.link, link.busy = None, False
            self._fail(job, BackendError(f"{self.name}: {job.what} could not be sent: {exc}"))

    def _free(self, link: UpstreamLink) -> None:
        link.busy = False
        self._last_used[link] = self.reactor.seconds()
        if link in self._ready:
            self._dispatch()

    def _answered(self, link: UpstreamLink, job: Job, reply: Message) -> None:
        figures = self.figures
        figures.latency_sum += time.perf_counter() - job.started
        figures.latency_count += 1
        job.link = None
        self._free(link)
        self._open.pop(job, None)
        if not job.done.called:
            job.done.callback(reply)

    def _broken(self, link: UpstreamLink, job: Job, broken: LinkBroken) -> None:
        job.link = None
        link.busy = False
        if job.done.called:
            return
        sent = broken.sent
        why = str(broken)
        if job.change and sent:
            self._outcome_unknown(job, why)
            return
        if not sent and broken.resend_refused:
            # The upstream could not read it, again and again: a fault of this request, not an outage.
            self._fail(job, BackendError(f"{self.name}: {job.what}: {why}"))
            self._free(link)
            return
        if job.tries < 2 and not self._stopped:  # a read, or a change never written: once more
            log.info("upstream {backend}: {what} is asked again on another connection ({why})",
                     backend=self.name, what=str(job.what), why=why)  # fmt: skip
            self._queue.appendleft(job)
            self._dispatch()
            return
        self._fail(job, BackendUnavailable(f"{self.name}: {why}"))

    def _outcome_unknown(self, job: Job, why: str) -> None:
        self.figures.outcome_unknown += 1
        log.error(
            "upstream {backend}: OUTCOME UNKNOWN for {what}: it was sent and {why}; it is not sent again, "
            "the terminal is told to check and try again",
            backend=self.name,
            what=str(job.what),
            why=why,
        )
        self._fail(job, OutcomeUnknown(f"{self.name}: {job.what}: {why}"))

    def _late(self, job: Job) -> None:
        self._close(job)
        if job.done.called:
            return
        if job.link is None:
            if job in self._queue:
                self._queue.remove(job)
            self._fail(job, BackendUnavailable(f"{self.name}: no upstream connection free within the timeout"))
            return
        link, job.link = job.link, None
        # The late answer would come to the next request on this link: the link is given up.
        if job.change:
            self._outcome_unknown(job, f"no answer came within {self.settings.timeout:g}s")
        else:
            self._fail(job, BackendUnavailable(f"{self.name}: no answer within {self.settings.timeout:g}s"))
        link.abandon(f"the upstream did not answer within {self.settings.timeout:g}s")

    def _cancelled(self, job: Job) -> None:
        """The caller gave up (the ACS's own timeout): out of the queue, or its link given up."""
        self._close(job)
        if job in self._queue:
            self._queue.remove(job)
        elif job.link is not None:
            link, job.link = job.link, None
            if job.change:
                self.figures.outcome_unknown += 1
                log.error("upstream {backend}: OUTCOME UNKNOWN for {what}: it was sent and the answer was too late",
                          backend=self.name, what=str(job.what))  # fmt: skip
            link.abandon("the answer was too late for the terminal")

    def _fail(self, job: Job, error: Exception) -> None:
        self.figures.errors += 1
        self._close(job)
        if not job.done.called:
            job.done.errback(error)

    def _fail_queue(self, error: Exception) -> None:
        while self._queue:
            self._fail(self._queue.popleft(), error)

    # -- keepalive --------------------------------------------------------------------------------

    def _keep_alive(self) -> None:
        now = self.reactor.seconds()
        for link in list(self._ready):
            if link.busy or not link.usable or now - self._last_used.get(link, now) < self.settings.keepalive:
                continue
            link.busy = True
            timer = self.reactor.callLater(
                self.settings.timeout, link.abandon, "the upstream did not answer a keepalive 99 in time"
            )
            d = link.exchange(_status_request()).addCallback(self._note_status)
            d.addBoth(_after_keepalive, timer, link, self._free)


#: Seconds early a deadline may be met: the timer's clock and the deadline's are one, but a sum of
#: floats may land just short of it.
_SLACK = 1e-6


def _after_keepalive(result: Any, timer: Any, link: UpstreamLink, free: Callable[[UpstreamLink], None]) -> None:
    if timer.active():
        timer.cancel()
    if not isinstance(result, Failure):
        free(link)


def _status_request() -> Message:
    return make("99", status_code="0", max_print_width="080", protocol_version="2.00")


def _why(failure: Failure) -> str:
    """A connection failure in a few words (never a traceback, never what was sent)."""
    value = failure.value
    text = failure.getErrorMessage() or type(value).__name__
    return text.splitlines()[0][:200]

