"""The one Twisted protocol of every SIP listener, driving a sans-IO :class:`Connection`.

A raw (TCP, TLS or unix socket) listener runs it on the socket; a telnet listener runs it behind
its login prelude (:mod:`.telnet`), which hands it the bytes once the terminal has logged in. What
the connection cannot do, this does, once for both:

* the connection's life: counted against the listener's and the server's caps (refused past
  them), the login deadline (frames before a login do not move it), then the idle timeout once
  logged in (reset by each frame), the drain when the server stops, the lines that say it opened,
  closed and why;
* the socket: frames cut at CR or LF and bounded in size, replies written through the listener's
  :class:`~.reply_batches.ReplyChannel`, and no reading while the replies wait unread
  (:class:`~.backpressure.ReadGate`);
* what the connection's events ask: a login checked by the registry (the scrypt ones wait their
  turn on the password-check queue), a request answered by the ACS, a line in the log; each
  outcome goes back to the connection, which says what to write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from sipserver.accounts import passwords
from sipserver.accounts.registry import AuthResult, Registry
from sipserver.acs import Reply, RequestContext
from sipserver.acs.context import now_to_the_second
from sipserver.config import AccountConfig, ListenerConfig
from sipserver.connection import Connection, Event, Login, ProtocolError, Request, Resend, State
from sipserver.daemon.serving import Serving
from sipserver.sip2 import Message

from .backpressure import STOPPING, ReadGate
from .base import CLOSE_GRACE, TLS_CLIENT_HELLO, FrameSplitter, peer_host, wind_down
from .reply_batches import ReplyChannel, TurnWriter

CLOSED = State.CLOSED
#: A login whose connection closed while its address's shared lockout entry was read: not checked.
WITHDRAWN = AuthResult(None, "withdrawn")
_now = time.monotonic  # an exchange's milliseconds


class SIPProtocol(Protocol, TimeoutMixin):
    """One terminal's connection; see the module docstring."""

    factory: ListenerFactory
    # Set by makeConnection before any other call: a TCP (or TLS) transport, or the telnet prelude,
    # which offers the same methods this protocol uses (abortConnection included).
    transport: ITCPTransport
    connection: Connection | None = None  # None: refused at the cap
    _first = False  # the first bytes are still to come (a TLS hello on a plain raw listener is refused)
    _password_check: Deferred[Any] | None = None  # a login waiting for its scrypt check
    _account_registry: Registry | None = None  # the registry the account was last found valid in
    _last_context: RequestContext | None = None
    _context_of: tuple[Registry, Any] | None = None

    @property
    def closed(self) -> bool:
        """True once the connection is over (or was refused at the cap)."""
        connection = self.connection
        return connection is None or connection.state is CLOSED

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> Any:  # TimeoutMixin's clock
        return self.factory.reactor.callLater(delay, f, *args)

    # ---------------------------------------------------------------------------------------------
    # The connection's life

    def connectionMade(self) -> None:
        factory = self.factory
        serving = factory.serving
        peer = peer_host(self.transport)
        refusal = factory.over_limit()
        if refusal:
            serving.events.connection_refused(factory.listener.name, peer, refusal)
            self.transport.abortConnection()
            return
        factory.opened(self)
        self.serving = serving
        self.splitter = FrameSplitter(serving.settings.max_frame_bytes)
        self.channel = factory.reply_channel(self.transport)
        self.connection = Connection(factory.listener, peer, serving.registry.other_delimiters)
        # On the socket itself, under TLS and telnet (telnet's negotiation answers are held too).
        self.gate = ReadGate(self.transport, self, self._hand_on, self.close)
        self._first = factory.refuses_tls_hello
        serving.events.connection_opened(self.connection)
        self.setTimeout(serving.settings.login_timeout)

    def dataReceived(self, data: bytes) -> None:
        connection = self.connection
        if connection is None or connection.state is CLOSED:
            return
        if self._first:
            self._first = False
            if data.startswith(TLS_CLIENT_HELLO):
                # tzeumer's client tries TLS first and falls back to plain TCP only when we hang up.
                self.close("TLS handshake on a plain listener")
                return
        frames, overflow = self.splitter.feed(data)
        if frames:
            # Before a login nothing moves a timer: login_timeout is a deadline from the start, so a
            # client that never logs in cannot keep the connection by dripping 99s or junk.
            if connection.account is not None:
                self.resetTimeout()
            gate = self.gate
            if gate.kept:
                gate.kept.extend(frames)
                self._hand_on()
            else:
                for index, frame in enumerate(frames):
                    if not gate.open:  # the peer stopped reading its replies: these wait in the gate
                        gate.kept.extend(frames[index:])
                        break
                    self.frame_received(frame)
                    if connection.state is CLOSED:
                        return
        if overflow:
            self.close(f"frame longer than {self.splitter.limit} bytes")

    def _hand_on(self) -> None:
        """Reading resumed: the frames kept meanwhile go to the connection, while it stays so."""
        connection = self.connection
        gate = self.gate
        kept = gate.kept
        while kept and gate.open and connection is not None and connection.state is not CLOSED:
            self.frame_received(kept.popleft())

    def timeoutConnection(self) -> None:
        connection = self.connection
        self.close("idle timeout" if connection is not None and connection.account is not None else "login timeout")

    def close(self, reason: str) -> None:
        """Hang up, saying why (a timeout, a frame too long, replies left unread, the telnet
        prelude's own reasons); the last reply goes out first."""
        connection = self.connection
        if connection is None or connection.state is CLOSED:
            return
        connection.close(reason)
        self._hang_up(reason)

    def _hang_up(self, reason: str) -> None:
        assert self.connection is not None
        self.serving.events.closing(self.connection, reason)
        self.channel.flush()  # the last reply (a 96, a refused 94) goes out before the close
        self.gate.detach()
        self.setTimeout(None)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.setTimeout(None)
        connection = self.connection
        if connection is None:
            return
        self.channel.discard()
        self.factory.closed(self)
        connection.lost()
        check, self._password_check = self._password_check, None
        if check is not None:
            check.cancel()  # a check still waiting for a thread leaves the queue (password_checks)
        self.serving.events.connection_closed(connection)

    # The server's drain: first no more reading, then, once the requests are answered, the close.

    def stop_reading(self) -> None:
        """No more reading, no new request; the one in flight is answered."""
        connection = self.connection
        if connection is not None and connection.state is not CLOSED:
            connection.drain()
            self.gate.hold(STOPPING)

    def wind_down(self) -> None:
        """Send what waits and close once the peer has read it (see :func:`.base.wind_down`)."""
        connection = self.connection
        if connection is None or connection.state is CLOSED:
            return
        connection.close("server stopping")
        self.channel.flush()
        self.gate.detach()
        self.setTimeout(None)
        wind_down(self.transport, CLOSE_GRACE, self)

    # ---------------------------------------------------------------------------------------------
    # Frames in, events carried out

    def frame_received(self, frame: bytes) -> None:
        """One frame from the terminal (its terminator cut off)."""
        connection = self.connection
        assert connection is not None
        if connection.account is None:  # a 93 may come with the delimiter of any account
            connection.other_delimiters = self.serving.registry.other_delimiters
        self._run(connection.receive(frame), _now())

    def _go_on(self) -> None:
        """An outcome came back later (a Deferred): what waited behind it, in turn."""
        if self.connection is not None:
            self._run(self.connection.next_event(), _now())

    def _run(self, event: Event | None, started: float) -> None:
        """Carry out ``event`` and those after it until one waits for an outcome."""
        connection = self.connection
        assert connection is not None
        while event is not None:
            if isinstance(event, Request):  # the most of them, answered at once
                if not self._ask(event.message, started):
                    return
            elif not self._carry_out(event, started):
                return
            following = connection.next_event()
            if following is not None and not isinstance(event, ProtocolError):  # an error precedes its answer
                started = _now()
            event = following

    def _carry_out(self, event: Event, started: float) -> bool:
        """True when the next event may follow at once."""
        if isinstance(event, Request):
            return self._ask(event.message, started)
        connection = self.connection
        assert connection is not None
        events = self.serving.events
        if isinstance(event, Resend):
            self.channel.write(event.data)
            if event.request is not None:
                events.exchange(connection, event.request, event.outcome, _now() - started)
            return True
        if isinstance(event, ProtocolError):
            events.protocol_error(connection, event.what)
            return True
        if isinstance(event, Login):
            return self._check_login(event, started)
        self._hang_up(event.reason)
        return False

    # Requests ------------------------------------------------------------------------------------

    def _ask(self, request: Message, started: float) -> bool:
        serving = self.serving
        registry = serving.registry
        connection = self.connection
        assert connection is not None
        if (
            connection.account is not None
            and registry is not self._account_registry
            and not self._account_still_valid(registry)
        ):
            return False
        reply = serving.acs.answer(request, self._context(registry))
        if isinstance(reply, Reply):  # answered at once: no Deferred to chain
            return self._answered(reply, request, started)
        self._counted_in_flight(reply)
        reply.addCallback(self._answered_later, request, started)
        reply.addErrback(self._failed)
        return False

    def _answered(self, reply: Reply, request: Message, started: float) -> bool:
        connection = self.connection
        assert connection is not None
        try:
            data = connection.answer(reply)
            if data is None:  # the connection closed meanwhile
                return False
            self.channel.write(data)
            self.serving.events.exchange(connection, request.name, reply.outcome, _now() - started)
        except Exception as exc:
            self.serving.events.protocol_error(connection, connection.answer_failed(str(exc)).what)
        return True

    def _answered_later(self, reply: Reply, request: Message, started: float) -> None:
        self._answered(reply, request, started)
        self._go_on()

    def _failed(self, failure: Failure) -> None:
        """Only a bug reaches here (the ACS and the password checks never errback)."""
        connection = self.connection
        if connection is None:
            return
        self.serving.events.protocol_error(connection, connection.answer_failed(failure.getErrorMessage()).what)
        self._go_on()

    def _counted_in_flight(self, d: Deferred[Any]) -> Deferred[Any]:
        """``d``, counted in ``events.in_flight`` until it fires: a stopping server waits for it."""
        events = self.serving.events
        events.in_flight += 1

        def settled(result: Any) -> Any:
            events.in_flight -= 1
            return result

        return d.addBoth(settled)

    def _account_still_valid(self, registry: Registry) -> bool:
        """After a reload the account may have changed or gone: pick up the new one, or hang up."""
        connection = self.connection
        assert connection is not None and connection.account is not None
        account = connection.account
        current = registry.account(account.login)
        self._account_registry = registry
        if current is account:
            return True
        if current is None or not current.enabled or not registry.allowed_from(current, connection.peer):
            events = self.serving.events
            events.protocol_error(connection, f"account {account.login} no longer valid after reload")
            events.logged_out(connection)
            self._hang_up(connection.withdraw_account().reason)
            return False
        connection.use_account(current)
        return True

    def _context(self, registry: Registry) -> RequestContext:
        """The request's context; the last one again while the second, the registry and the account
        are the same (a terminal sends many requests a second, and the context is frozen)."""
        connection = self.connection
        assert connection is not None
        account = connection.account
        now = now_to_the_second()
        last = self._last_context
        if last is not None and last.now is now and self._context_of == (registry, account):
            return last
        institution = registry.institution(account.institution) if account is not None else None
        if institution is None:
            institution = registry.listener_institution(connection.listener.name)
        context = RequestContext(
            institution=institution, account=account, listener=connection.listener.name, peer=connection.peer, now=now
        )
        self._last_context, self._context_of = context, (registry, account)
        return context

    # Logins --------------------------------------------------------------------------------------

    def _check_login(self, event: Login, started: float) -> bool:
        registry = self.serving.registry
        outcome = self._authenticate(event, registry)
        if isinstance(outcome, AuthResult):
            self._login_checked(outcome, event, registry, started)
            return True
        outcome.addCallback(self._login_checked, event, registry, started)
        outcome.addCallback(lambda _: self._go_on())
        outcome.addErrback(self._failed)
        return False

    def log_in(self, login: str, password: str) -> bool | Deferred[bool]:
        """A login typed at telnet's prompts: True once it is in, False when refused (a third
        refusal has closed the connection); a Deferred while the password waits for its check."""
        connection = self.connection
        assert connection is not None
        event = connection.prompted_login(login, password)
        registry = self.serving.registry
        started = _now()
        outcome = self._authenticate(event, registry)
        if isinstance(outcome, AuthResult):
            return self._prompted_login_checked(outcome, event, registry, started)
        return outcome.addCallback(self._prompted_login_checked, event, registry, started)

    def _prompted_login_checked(self, result: AuthResult, event: Login, registry: Registry, started: float) -> bool:
        self._login_checked(result, event, registry, started)
        self._go_on()  # a third refusal's close
        connection = self.connection
        return result.ok and connection is not None and connection.state is not CLOSED

    def _authenticate(self, event: Login, registry: Registry) -> AuthResult | Deferred[AuthResult]:
        """The registry's verdict; a Deferred when the password needs scrypt, which waits its turn
        for a thread on the password-check queue so that the other terminals are not held up, or
        when the lockout is shared by daemons on one database and the address's entry is read first."""
        connection = self.connection
        assert connection is not None
        consult = registry.lockout.consult
        asked = consult(connection.peer) if consult is not None else None
        if asked is not None:
            waiting: Deferred[None] = Deferred(lambda d: d.callback(None))  # a close does not cancel the read
            asked.addBoth(lambda _: None if waiting.called else waiting.callback(None))
            result = waiting.addCallback(lambda _: WITHDRAWN if self.closed else self._verdict(event, registry))
            self._password_check = self._counted_in_flight(result)
            return result
        return self._verdict(event, registry)

    def _verdict(self, event: Login, registry: Registry) -> AuthResult | Deferred[AuthResult]:
        connection = self.connection
        assert connection is not None
        account = registry.account(event.login)
        if account is not None and account.password_hash == passwords.UPSTREAM:
            return self._forwarded(event, registry, account)
        checks = self.serving.password_checks
        listener = connection.listener.name
        result: AuthResult | Deferred[AuthResult]
        if checks is None:
            result = registry.authenticate(event.login, event.password, connection.peer, listener)
        else:
            result = registry.authenticate_queued(event.login, event.password, connection.peer, listener, checks)
        if isinstance(result, AuthResult):
            result = _once_shared(result, registry)
        else:
            result.addCallback(_once_shared, registry)
        if not isinstance(result, AuthResult):
            self._password_check = self._counted_in_flight(result)
        return result

    def _forwarded(
        self, event: Login, registry: Registry, account: AccountConfig
    ) -> AuthResult | Deferred[AuthResult]:
        """A login the upstream SIP2 server judges (``password: upstream``): handed to the
        institution's backend, which logs the terminal in upstream on a connection of its own."""
        connection = self.connection
        assert connection is not None
        institution = registry.institution(account.institution)
        backend = self.serving.acs.backends.get(institution.backend) if institution is not None else None
        forward = getattr(backend, "forward_login", None)
        location = event.request.get("CP") if event.request is not None else ""
        result = registry.authenticate_forwarded(event.login, event.password, connection.peer, forward, location)
        if not isinstance(result, AuthResult):
            self._password_check = self._counted_in_flight(result)
        return result

    def _login_checked(self, result: AuthResult, event: Login, registry: Registry, started: float) -> None:
        """The verdict, logged and handed to the connection; a check given up because the
        connection closed logs nothing."""
        self._password_check = None
        connection = self.connection
        if connection is None or connection.state is CLOSED:
            return
        serving = self.serving
        serving.events.login(connection, event.login, result.ok, result.reason)  # before the account changes
        data = connection.login_checked(result)
        if result.ok:
            self._account_registry = registry
            self.setTimeout(serving.settings.idle_timeout)  # logged in: the idle timeout from now on
        if data:
            assert event.request is not None
            self.channel.write(data)
            serving.events.exchange(connection, event.request.name, "ok" if result.ok else "refused", _now() - started)


def _once_shared(result: AuthResult, registry: Registry) -> AuthResult | Deferred[AuthResult]:
    """``result`` once the processes sharing the lockout know of it (workers, or daemons on one
    PostgreSQL): a refused terminal that tries again at once, wherever it lands, is judged with
    this failure counted."""
    settled = registry.lockout.settled()
    if settled is None:
        return result
    return settled.addCallback(lambda _: result)


class ListenerFactory(Factory):
    """One per listener: builds its protocols, counts its connections against the listener's and
    the server's caps, and gives each its way out for replies.

    ``before_replies`` runs before a turn's replies leave (the exchange log's flush, so that a
    terminal never holds a reply whose line is still only in memory)."""

    noisy = False
    #: A TLS hello as a connection's first bytes closes it (the telnet prelude checks its own).
    refuses_tls_hello = True

    def __init__(
        self,
        serving: Serving,
        listener: ListenerConfig,
        reactor: Any,
        before_replies: Callable[[], None] | None = None,
        *,
        batch_replies: bool = True,
    ) -> None:
        self.serving = serving
        self.batch_replies = batch_replies  # a fast path (sipserver.daemon.fast_paths)
        self.listener = listener
        self.reactor = reactor  # the clock of the connections' timers
        self.connections = 0
        self.protocols: set[SIPProtocol] = set()  # the open connections, for the server's drain
        self._before_replies = before_replies
        self._turn: TurnWriter | None = None

    def buildProtocol(self, addr: Any) -> Any:
        protocol = SIPProtocol()
        protocol.factory = self
        return protocol

    def reply_channel(self, transport: Any) -> ReplyChannel:
        """The way out for a new connection's replies (see :mod:`.reply_batches`); behind the
        PROXY header's reader, the socket's own (the reader passes written bytes on unchanged)."""
        while getattr(type(transport), "passes_writes_through", False):  # its own, not forwarded from below
            transport = transport.transport
        reactor = getattr(transport, "reactor", None) if self.batch_replies else None
        if reactor is not None and (self._turn is None or self._turn.reactor is not reactor):
            self._turn = TurnWriter(reactor, self._before_replies)
        return ReplyChannel(transport, self._turn if reactor is not None else None)

    def flush_replies(self) -> None:
        """Send every reply still waiting for the end of the turn (at shutdown, before the reactor
        drops the connections)."""
        if self._turn is not None:
            self._turn.flush()

    def over_limit(self) -> str | None:
        """Why a new connection must be refused now, or None."""
        cap = self.listener.max_connections
        if cap is not None and self.connections >= cap:
            return f"listener limit of {cap} connections reached"
        total = self.serving.settings.max_connections
        if self.serving.connections >= total:
            return f"server limit of {total} connections reached"
        return None

    def opened(self, protocol: SIPProtocol) -> None:
        self.connections += 1
        self.serving.connections += 1
        self.protocols.add(protocol)

    def closed(self, protocol: SIPProtocol) -> None:
        self.connections -= 1
        self.serving.connections -= 1
        self.protocols.discard(protocol)

    def stop_reading(self) -> None:
        """The server stops: read no connection again, start no request (those running finish)."""
        for protocol in list(self.protocols):
            protocol.stop_reading()

    def wind_down(self) -> None:
        """The requests in flight are answered: send what waits, then close every connection once
        its peer has read it (see :func:`.base.wind_down`)."""
        self.flush_replies()
        for protocol in list(self.protocols):
            protocol.wind_down()
