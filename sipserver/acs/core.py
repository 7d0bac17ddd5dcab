"""The ACS: what each request code needs, and the dispatch of a decoded request to its handler.

Every request code the ACS answers is declared once, where its handler is defined, by
:func:`handles`: the permissions an account needs to send it, the institution policy switch that
turns it off, and its negative reply. From that one row come the permission check, the policy
refusal, BX (which requests 98 offers to an account) and the answer to an outage or a fault.

Every backend call goes through :meth:`ACS.call`, which bounds it by the institution's timeout and
turns a timeout or an outage into :class:`BackendUnavailable`; the ACS answers that with the
request's negative reply and a screen message, and 98 reports the institution off-line until the
backend answers again. A handler that raises by mistake is logged here and the terminal still gets
a proper negative response, never silence and never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, NamedTuple, TypeVar, TypeVarTuple, get_args

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sipserver.config import PERMISSIONS, AccountConfig, PolicyConfig
from sipserver.ils.interface import (
    Answer,
    BackendError,
    BackendRequest,
    BackendUnavailable,
    ILSBackend,
    OutcomeUnknown,
    Patron,
    Relayed,
    answers_within,
)
from sipserver.observe.loglevel import logger
from sipserver.sip2 import MESSAGES, Message, make, supported_messages

from . import relayed, screen_texts
from .context import Reply, RequestContext
from .health import BackendHealth
from .place import UnknownLocations

log = logger("sipserver.acs")

R = TypeVar("R")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# --------------------------------------------------------------------------------------------------
# What each request code needs

#: What answers a request: the reply itself, or a Deferred of it when a backend answers later.
Handler = Callable[["ACS", Message, RequestContext], "Reply | defer.Deferred[Reply]"]
#: The negative reply to a request, with a screen message: the shape its terminal waits for.
RefusalReply = Callable[[Message, RequestContext, str], Message]
#: The institution policy switches (``PolicyConfig``) that turn requests off.
PolicySwitch = Literal["checkout", "checkin", "renewal", "status_update"]

#: Requests the connection answers itself (login, resend); 98 always offers them.
CONNECTION_REQUESTS = frozenset({"93", "97"})


@attrs.frozen
class Handling:
    """How the ACS answers one request code (see :func:`handles`)."""

    code: str
    handler: Handler
    #: An account needs one of these permissions to send it; empty: any terminal may.
    needs: frozenset[str]
    #: The policy switch that turns it off (it is then refused, and 98 does not offer it).
    policy: PolicySwitch | None
    refusal: RefusalReply


#: Every request code the ACS answers, filled by :func:`handles` when ``sipserver.acs.handlers``
#: is imported (``sipserver.acs`` imports it).
HANDLING: dict[str, Handling] = {}


def handles(
    code: str, *, needs: Iterable[str] = (), policy: PolicySwitch | None = None, refusal: RefusalReply
) -> Callable[[Handler], Handler]:
    """Declare the handler of request ``code``: the permissions an account needs (any one of
    them), the policy switch that turns it off, and its negative reply. A permission or switch
    this server does not know stops the import, so a typo cannot quietly lock terminals out."""
    needed = frozenset(needs)
    unknown = needed - PERMISSIONS
    if unknown:
        raise ValueError(f"request {code}: unknown permission {', '.join(sorted(unknown))}")
    if policy is not None and policy not in get_args(PolicySwitch):
        raise ValueError(f"request {code}: unknown policy switch {policy!r}")
    spec = MESSAGES.get(code)
    if spec is None or not spec.request:
        raise ValueError(f"request {code}: not a request in the message table (sipserver.sip2.messages)")
    if code in HANDLING:
        raise ValueError(f"request {code} is handled twice")

    def register(handler: Handler) -> Handler:
        HANDLING[code] = Handling(code, handler, needed, policy, refusal)
        return handler

    return register


def permitted(account: AccountConfig | None, code: str) -> bool:
    """True when the account may send this request (a request that needs no permission always is)."""
    handling = HANDLING.get(code)
    if handling is None or not handling.needs:
        return True
    return account is not None and not account.permissions.isdisjoint(handling.needs)


def _allowed_by(policy: PolicyConfig, switch: PolicySwitch | None) -> bool:
    return switch is None or bool(getattr(policy, switch))


@functools.lru_cache(maxsize=256)
def offered(policy: PolicyConfig, permissions: frozenset[str] | None) -> str:
    """BX: the requests answered here that an account with ``permissions`` may send (None: before
    login, every one) and ``policy`` allows. Both are frozen config values, so every 98 of a
    terminal reuses one string."""
    codes = set(CONNECTION_REQUESTS)
    for code, handling in HANDLING.items():
        if not _allowed_by(policy, handling.policy):
            continue
        if permissions is None or not handling.needs or not permissions.isdisjoint(handling.needs):
            codes.add(code)
    return supported_messages(codes)


def offered_to(ctx: RequestContext) -> str:
    """BX for the request's account and institution."""
    account = ctx.account
    return offered(ctx.institution.policy, account.permissions if account is not None else None)


def refuse(request: Message, ctx: RequestContext, text: str) -> Message:
    """The proper negative response to ``request`` with ``text`` as its screen message (96 for a
    code the ACS does not answer)."""
    handling = HANDLING.get(request.code)
    if handling is None:
        return make("96")
    return handling.refusal(request, ctx, text)


# --------------------------------------------------------------------------------------------------
# The ACS


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
        #: Backends that bound their own time (``BoundsItsTime``): seconds, else None.
        self._bounds = {name: answers_within(backend) for name, backend in self.backends.items()}
        self.unknown_locations = UnknownLocations()

    def online(self, ctx: RequestContext) -> bool:
        return self.health.online(ctx.institution.backend)

    def call(
        self, ctx: RequestContext, request: BackendRequest[R], reply: Callable[[R, *Ts], T], *args: *Ts
    ) -> Answer[T]:
        """Ask the institution's backend ``request``, bounded by the institution's timeout, and
        answer with ``reply(result, *args)``.

        ``reply`` runs at once when the backend answered at once (no timer, no Deferred: the
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
            return _answered(answer, reply, *args)
        if not answer.called:  # a Deferred that fired already (an inline failure) needs no timer
            bound = self._bounds.get(name)
            timeout = ctx.institution.policy.timeout
            if bound is None or bound > timeout:  # else the backend refuses in time by itself
                answer.addTimeout(timeout, self.reactor)
        operation = request.operation

        def ok(result: R | Relayed[R]) -> T:
            self.health.mark(name, True)
            return _answered(result, reply, *args)

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
                if getattr(failure.value, "whole_backend", True):
                    self.health.mark(name, False)
            return failure

        return answer.addCallbacks(ok, failed)

    def answer(self, request: Message, ctx: RequestContext) -> Reply | defer.Deferred[Reply]:
        """The reply to ``request``: a Reply when the answer is at hand (99, refusals, and any
        handler whose backend answered at once, so that it costs no Deferred at all), else a
        Deferred that never errbacks."""
        handling = HANDLING.get(request.code)
        if handling is None:  # a response code sent to us, or 93/97 which the session answers itself
            return Reply(refuse(request, ctx, screen_texts.NOT_PERMITTED), "unsupported")
        needs = handling.needs
        if needs and (ctx.account is None or ctx.account.permissions.isdisjoint(needs)):
            return Reply(handling.refusal(request, ctx, screen_texts.NOT_PERMITTED), "denied")
        if handling.policy is not None and not getattr(ctx.institution.policy, handling.policy):
            return Reply(handling.refusal(request, ctx, screen_texts.DISABLED_BY_POLICY), "policy")
        try:
            result = handling.handler(self, request, ctx)
        except Exception:
            return self._failed(Failure(), request, ctx)
        if isinstance(result, Reply):
            return result
        return result.addErrback(self._failed, request, ctx)

    def _failed(self, failure: Failure, request: Message, ctx: RequestContext) -> Reply:
        if failure.check(OutcomeUnknown):
            return Reply(refuse(request, ctx, screen_texts.OUTCOME_UNKNOWN), "outcome_unknown")
        if failure.check(BackendUnavailable):
            return Reply(refuse(request, ctx, screen_texts.UNAVAILABLE), "unavailable")
        if failure.check(BackendError):  # a fault the backend describes itself: its words, no traceback
            log.error(
                "backend fault answering {name} (login {login}, peer {peer}): {why}",
                name=request.name,
                login=ctx.login,
                peer=ctx.peer,
                why=failure.getErrorMessage(),
            )
            return Reply(refuse(request, ctx, screen_texts.SYSTEM_ERROR), "error")
        log.failure(
            "handler for {name} failed (login {login}, peer {peer})",
            failure,
            name=request.name,
            login=ctx.login,
            peer=ctx.peer,
        )
        return Reply(refuse(request, ctx, screen_texts.SYSTEM_ERROR), "error")


class Outline(NamedTuple):
    """What a relayed answer's Reply needs besides the upstream's message: the reply code the
    terminal waits for, the institution id it sent (AO), the exchange log's outcome and the
    patron described (see :func:`outline_when_relayed`)."""

    code: str
    institution: str
    outcome: str
    patron: Patron | None = None


#: Reply functions' outlines for a relayed answer, by reply function.
_OUTLINES: dict[Callable[..., Any], Callable[..., Outline]] = {}

F = TypeVar("F", bound=Callable[..., Any])


def outline_when_relayed(outline: Callable[..., Outline]) -> Callable[[F], F]:
    """Give a handler's reply function (``reply(result, *args)`` of :meth:`ACS.call`) a cheap
    twin, ``outline(result, *args)``, for answers a backend relayed from another SIP2 server (it
    is given :attr:`Relayed.glance`, so it reads no more than how the request went: ``ok``,
    ``refusal``, and a checkin's ``was_on_loan``, which a relayed reply does not tell): when
    the upstream's reply is complete (every fixed field and required field there), the terminal
    gets it as :func:`relayed.faithful` would give it, without the ACS building a reply of its
    own only to take its AO, outcome and patron from it."""

    def register(reply: F) -> F:
        _OUTLINES[reply] = outline
        return reply

    return register


def _answered(result: R | Relayed[R], reply: Callable[[R, *Ts], T], *args: *Ts) -> T:
    """``reply(result, *args)``; when a backend relayed the request to another SIP2 server, the
    Reply carries that server's reply as the terminal's (``sipserver.acs.relayed``)."""
    if not isinstance(result, Relayed):
        return reply(result, *args)
    outline = _OUTLINES.get(reply)
    if outline is not None:
        drawn = outline(result.glance, *args)
        message = relayed.passed_on(result.reply, drawn.code, drawn.institution)
        if message is not None:
            return Reply(message, drawn.outcome, drawn.patron)  # type: ignore[return-value]
    built = reply(result.result, *args)
    if isinstance(built, Reply):
        return attrs.evolve(built, message=relayed.faithful(built.message, result.reply))
    return built
