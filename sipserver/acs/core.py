"""The ACS: dispatches a decoded request to its handler, with policy, permissions, timeouts and health.

Every backend call goes through :meth:`ACS.call`, which bounds it by the institution's timeout and
turns a timeout or an outage into :class:`BackendUnavailable`; the handlers answer that with their
negative response and a screen message, and 98 reports the institution off-line until the backend
answers again. A handler that raises by mistake is logged here and the terminal still gets a proper
negative response, never silence and never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, TypeVarTuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sipserver.ils.backoff import Backoff
from sipserver.ils.interface import Answer, BackendRequest, BackendUnavailable, ILSBackend
from sipserver.observe.loglevel import logger
from sipserver.sip2 import Message

from . import handlers, screen_texts
from .context import Reply, RequestContext, permitted
from .place import UnknownLocations

log = logger("sipserver.acs")

R = TypeVar("R")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class BackendHealth:
    """What the ACS believes about each backend: on-line until a call fails; then off-line until an
    attempt, made with backoff (:mod:`sipserver.ils.backoff`), finds it answering again.

    98 must not wait on a database round trip (sorters poll it and time out after a second), so it
    reads this belief; a failed call sets it at once. While a backend is off-line its requests are
    answered at once as unavailable (:meth:`ACS.call`) instead of each trying to reach it: with
    the database down, every request used to try to connect. An attempt is a probe (the backend's
    ``health``), or, for a backend that never started, a start (``starter``, set by the service).
    """

    def __init__(self, backends: Mapping[str, ILSBackend], reactor: IReactorTime) -> None:
        self._backends = backends
        self._reactor = reactor
        self._online: dict[str, bool] = dict.fromkeys(backends, True)
        self._probing: set[str] = set()
        self._backoff: dict[str, Backoff] = {name: Backoff() for name in backends}
        self._retry: dict[str, Any] = {}  # backend -> the DelayedCall of its next attempt
        self._stopped = False
        self.unstarted: set[str] = set()  # backends whose start failed: an attempt starts them
        self.starter: Callable[[str], defer.Deferred[Any]] | None = None
        self.errors: dict[str, int] = dict.fromkeys(backends, 0)
        self.timeouts: dict[str, int] = dict.fromkeys(backends, 0)
        self.attempts: dict[str, int] = dict.fromkeys(backends, 0)  # attempts to reach it while off-line

    def online(self, name: str) -> bool:
        return self._online.get(name, False)

    def mark(self, name: str, up: bool) -> None:
        previous = self._online.get(name)
        self._online[name] = up
        if up:
            self._backoff[name].reset()
            retry = self._retry.pop(name, None)
            if retry is not None and retry.active():
                retry.cancel()
        else:
            self._schedule(name)
        if previous is not None and previous != up:
            if up:
                log.info("backend {backend} is answering again", backend=name)
            else:
                log.error("backend {backend} is unavailable; terminals are told it is off-line", backend=name)

    def stop(self) -> None:
        """The server stops: no more attempts."""
        self._stopped = True
        for retry in self._retry.values():
            if retry.active():
                retry.cancel()
        self._retry.clear()

    def _schedule(self, name: str) -> None:
        """The next attempt on an off-line backend, after the backoff's next delay."""
        retry = self._retry.get(name)
        if (retry is not None and retry.active()) or name not in self._backoff or self._stopped:
            return
        self._retry[name] = self._reactor.callLater(self._backoff[name].delay(), self._attempt, name)

    def _attempt(self, name: str) -> None:
        self._retry.pop(name, None)
        if self._online.get(name, False):
            return
        self.attempts[name] = self.attempts.get(name, 0) + 1
        self.probe(name).addBoth(lambda up: None if up is True else self._schedule(name))

    def probe(self, name: str) -> defer.Deferred[bool]:
        """Ask the backend now (at most one probe at a time per backend); start it instead when
        it never started."""
        backend = self._backends.get(name)
        if backend is None:
            return defer.succeed(False)
        if name in self._probing:
            return defer.succeed(self._online.get(name, False))
        self._probing.add(name)
        if name in self.unstarted and self.starter is not None:
            d = self.starter(name)  # marks the backend on-line or off-line itself
            d.addBoth(lambda _: self._online.get(name, False))
        else:
            d = defer.maybeDeferred(backend.health)
            d.addTimeout(5, self._reactor)
            d.addBoth(lambda result: self._probed(name, result is True))

        def done(up: Any) -> bool:
            self._probing.discard(name)
            return up is True

        d.addBoth(done)
        return d

    def _probed(self, name: str, up: bool) -> bool:
        if up or self._online.get(name, False):
            self.mark(name, up)
        else:
            self._online[name] = False  # still off-line: the caller schedules the next attempt
        return up

    def probe_all(self) -> defer.Deferred[list[Any]]:
        """Probe the backends believed on-line (the off-line ones are tried on their own backoff)."""
        return defer.DeferredList(
            [self.probe(name) for name in self._backends if self._online.get(name, False)], consumeErrors=True
        )

    def retry_in(self, name: str) -> float | None:
        """Seconds until the next attempt on an off-line backend (None when none is scheduled)."""
        retry = self._retry.get(name)
        if retry is None or not retry.active():
            return None
        return max(0.0, retry.getTime() - self._reactor.seconds())

    def snapshot(self) -> dict[str, bool]:
        return dict(self._online)


class ACS:
    """Answers every SIP2 request that reaches it after the session's checks (login, ED, replay)."""

    def __init__(
        self,
        backends: Mapping[str, ILSBackend],
        reactor: IReactorTime,
        server_name: str = "sipserver",
    ) -> None:
        self.backends = dict(backends)
        self.reactor = reactor
        self.server_name = server_name
        self.health = BackendHealth(self.backends, reactor)
        self.unknown_locations = UnknownLocations()

    def backend_for(self, ctx: RequestContext) -> ILSBackend:
        return self.backends[ctx.institution.backend]

    def online(self, ctx: RequestContext) -> bool:
        return self.health.online(ctx.institution.backend)

    def call(
        self, ctx: RequestContext, request: BackendRequest[R], then: Callable[[R, *Ts], T], *args: *Ts
    ) -> Answer[T]:
        """Ask the institution's backend ``request``, bounded by the institution's timeout, and
        answer with ``then(result, *args)``.

        ``then`` runs at once when the backend answered at once (no timer, no Deferred: the
        requests sent by the thousand cost no more than their answer), else when the result comes.
        A timeout or a backend fault errbacks with BackendUnavailable and marks the backend
        off-line; any result marks it on-line. A backend already off-line is not asked: the
        BackendUnavailable comes at once (see :class:`BackendHealth`).
        """
        name = ctx.institution.backend
        backend = self.backends[name]
        if not self.health.online(name):  # known to be down: answered now, tried again on its backoff
            return defer.fail(BackendUnavailable(f"{name} is off-line"))
        try:
            answer = request.ask(backend)
        except Exception:
            answer = defer.fail()
        if not isinstance(answer, defer.Deferred):
            self.health.mark(name, True)
            return then(answer, *args)
        if not answer.called:  # a Deferred that fired already (an inline failure) needs no timer
            answer.addTimeout(ctx.institution.policy.timeout, self.reactor)
        operation = request.operation

        def ok(result: R) -> R:
            self.health.mark(name, True)
            return result

        def failed(failure: Failure) -> Failure:
            if failure.check(defer.TimeoutError, defer.CancelledError):
                self.health.timeouts[name] = self.health.timeouts.get(name, 0) + 1
                log.error(
                    "backend {backend} did not answer {method} within {timeout}s",
                    backend=name,
                    method=operation,
                    timeout=ctx.institution.policy.timeout,
                )
                self.health.mark(name, False)
                return Failure(BackendUnavailable(f"{name}: {operation} timed out"))
            if failure.check(BackendUnavailable):
                self.health.errors[name] = self.health.errors.get(name, 0) + 1
                log.error(
                    "backend {backend} unavailable during {method}: {why}",
                    backend=name,
                    method=operation,
                    why=failure.getErrorMessage(),
                )
                self.health.mark(name, False)
            return failure

        return answer.addCallbacks(ok, failed).addCallback(then, *args)

    def handle(self, request: Message, ctx: RequestContext) -> defer.Deferred[Reply]:
        """The reply to ``request``; never errbacks."""
        return defer.maybeDeferred(self.answer, request, ctx)

    def answer(self, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
        """The reply to ``request``: a Reply when the answer is at hand (99, refusals, and any
        handler whose backend answered at once), else a Deferred that never errbacks.

        The session calls this rather than :meth:`handle`, so that a request answered at once
        costs no Deferred at all.
        """
        handler = handlers.HANDLERS.get(request.code)
        if handler is None:  # a response code sent to us, or 93/97 which the session answers itself
            return Reply(handlers.refuse(request, ctx, screen_texts.NOT_PERMITTED), "unsupported")
        if not permitted(ctx.account, request.code):
            return Reply(handlers.refuse(request, ctx, screen_texts.NOT_PERMITTED), "denied")
        try:
            result = handler(self, request, ctx)
        except Exception:
            return self._failed(Failure(), request, ctx)
        if isinstance(result, Reply):
            return result
        return result.addErrback(self._failed, request, ctx)

    def _failed(self, failure: Failure, request: Message, ctx: RequestContext) -> Reply:
        if failure.check(BackendUnavailable):
            return Reply(handlers.refuse(request, ctx, screen_texts.UNAVAILABLE), "unavailable")
        log.failure(
            "handler for {name} failed (login {login}, peer {peer})",
            failure,
            name=request.name,
            login=ctx.login,
            peer=ctx.peer,
        )
        return Reply(handlers.refuse(request, ctx, screen_texts.SYSTEM_ERROR), "error")
