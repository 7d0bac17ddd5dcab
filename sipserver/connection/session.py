"""One terminal's SIP2 session, independent of the transport ("sans-IO").

The transport hands in frames (bytes, terminator removed) and gets bytes to write through ``send``
and a reason through ``close``. Everything the protocol says about a connection lives here: login
state, which requests are allowed before login, error detection mirrored per terminal, 96 for a bad
checksum, 97 answered with the last reply, a retransmitted request (the same frame again, AY and AZ
included) answered again *without running the transaction twice*, unknown codes ignored,
per-account encoding, delimiter and terminator (a listener's own terminator, when it has one,
wins: a telnet port people test by hand ends replies in CR LF), and the account's reply profile.
Requests are answered strictly in order: a frame that arrives while another is being answered waits
its turn.

No Twisted here: the ACS returns a reply at once or a Deferred, which this module only chains with
``addCallback``, so the session is tested with bytes in and bytes out.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sipserver.accounts.registry import AuthResult, Registry
from sipserver.acs import ACS, Reply, RequestContext, profile
from sipserver.acs.context import now_to_the_second
from sipserver.config import AccountConfig, InstitutionConfig, ListenerConfig
from sipserver.sip2 import (
    ChecksumError,
    MalformedFrame,
    Message,
    UnknownCommand,
    decode,
    encode,
    make,
    normalize_frame,
)

#: Frames a terminal may send ahead of our replies before we call it abuse and hang up, and the
#: bytes they may hold in all (64 frames of the largest size would be half a megabyte).
MAX_PIPELINED = 64
MAX_PIPELINED_BYTES = 65536
#: Login failures one connection may make before it is closed (the lockout counts across connections).
MAX_LOGIN_FAILURES = 3

_RESEND_96 = make("96")


if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class SessionEvents(Protocol):
    """Where a session reports what happens: the log and the metrics (see ``sipserver.observe.events``)."""

    in_flight: int  # requests waiting for a backend (a stopping server waits for them)

    def exchange(self, session: Session, request: str, outcome: str, elapsed: float) -> None: ...

    def login(self, session: Session, login: str, ok: bool, reason: str | None) -> None: ...

    def protocol_error(self, session: Session, what: str) -> None: ...

    def logged_out(self, session: Session) -> None: ...


class Hub(Protocol):
    """What a session needs from the running server; the registry may be swapped on reload.

    A hub may also offer ``password_checks`` (a :class:`~sipserver.accounts.password_checks.PasswordChecks`;
    the daemon does): password checks that need scrypt then wait there for a thread instead of
    running on the caller's."""

    registry: Registry
    acs: ACS
    events: SessionEvents


class Session:
    """The state of one connection; see the module docstring."""

    def __init__(
        self,
        hub: Hub,
        listener: ListenerConfig,
        peer: str,
        send: Callable[[bytes], None],
        close: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.listener = listener
        self.peer = peer
        self._send = send
        self._close = close
        self._clock = clock
        self.account: AccountConfig | None = None
        self.login_failures = 0
        self.closed = False
        self._draining = False  # the server stops: answer what runs, start nothing new
        # Two memories, because they answer different questions. ``_last_reply`` is whatever went
        # out last (a 96 included): what a 97 asks for. ``_answered`` is the last request really
        # answered with its reply: what a retransmission of that request gets. A 96 for a garbled
        # copy must not replace the second, or every later clean copy would be "answered" with 96.
        self._last_reply: bytes | None = None
        self._answered: tuple[bytes | None, bytes] | None = None
        self._ed_seen = False  # the terminal has used error detection on this connection
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._busy = False
        self._last_context: RequestContext | None = None
        self._password_check: Deferred[bool] | None = None  # a login waiting for its scrypt check
        self._context_of: tuple[Registry, AccountConfig | None] | None = None

    # ---------------------------------------------------------------------------------------------
    # What the transport calls

    @property
    def logged_in(self) -> bool:
        return self.account is not None

    @property
    def login(self) -> str:
        return self.account.login if self.account else ""

    def frame_received(self, frame: bytes) -> None:
        """One frame from the terminal. Replies go out through ``send`` in request order."""
        if self.closed or self._draining:
            return
        if self._busy:
            if len(self._queue) >= MAX_PIPELINED or self._queued_bytes + len(frame) > MAX_PIPELINED_BYTES:
                self.hub.events.protocol_error(
                    self, f"more than {MAX_PIPELINED} requests or {MAX_PIPELINED_BYTES} bytes waiting for replies"
                )
                self.shutdown("too many pipelined requests")
                return
            self._queue.append(frame)
            self._queued_bytes += len(frame)
            return
        self._process(frame)

    def connection_lost(self) -> None:
        self.closed = True
        self._queue.clear()
        self._queued_bytes = 0
        check, self._password_check = self._password_check, None
        if check is not None:
            check.cancel()  # a check still waiting for a thread leaves the queue (passwordchecks)

    def drain(self) -> None:
        """The server is stopping: the request being answered gets its reply; the frames waiting
        behind it, and any that still arrive, are never run (the terminal sends them again to
        the next server, having had no reply)."""
        self._draining = True
        self._queue.clear()
        self._queued_bytes = 0

    def shutdown(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._queue.clear()
            self._queued_bytes = 0
            self._close(reason)

    # ---------------------------------------------------------------------------------------------
    # One frame

    def _process(self, frame: bytes) -> None:
        started = self._clock()
        account = self.account
        encoding = account.encoding if account else "utf-8"
        delimiter = account.delimiter if account else self._login_delimiter(frame)
        try:
            request = decode(frame, encoding, delimiter)
        except ChecksumError:
            self._ed_seen = True
            self.hub.events.protocol_error(self, "checksum error; answered 96")
            self._reply_bytes(self._encode(_RESEND_96, None, checksum=True), remember=True)
            self.hub.events.exchange(self, "checksum_error", "resend_requested", self._clock() - started)
            self._next()
            return
        except UnknownCommand as exc:
            self.hub.events.protocol_error(self, f"ignored unknown command code {exc.code!r}")
            self._next()
            return
        except MalformedFrame as exc:
            self.hub.events.protocol_error(self, f"malformed frame ({exc}); answered 96")
            self._reply_bytes(self._encode(_RESEND_96, None, checksum=self._ed_seen), remember=False)
            self._next()
            return

        if request.checksum is not None:
            self._ed_seen = True
        if request.code == "97":
            self._resend_last(started)
            return
        # A retransmission is the same frame again, byte for byte once the codec's lenient-in
        # normalisation is applied. Matching AY and AZ alone is not enough: AZ is a byte sum, so a
        # different request (barcode digits swapped, same AY) has the same AZ and must still run.
        key = normalize_frame(frame) if request.checksum is not None else None
        answered = self._answered
        if key is not None and answered is not None and key == answered[0]:
            # php-sip2 and others resend the identical request when a reply looked wrong: replay,
            # never run a checkout twice. The replayed reply is the one this request got, even when
            # a 96 for a garbled copy went out in between.
            self._reply_bytes(answered[1], remember=True)
            self.hub.events.exchange(self, request.name, "retransmission_replayed", self._clock() - started)
            self._next()
            return
        if not request.spec.request:
            self.hub.events.protocol_error(self, f"ignored a {request.name} sent by the terminal")
            self._next()
            return
        if request.code == "93":
            self._handle_login(request, key, started)
            return
        if not self._refresh_account():
            return
        if self.account is None and not (request.code == "99" and self.listener.status_before_login):
            self.hub.events.protocol_error(self, f"{request.name} before login; closing")
            self.shutdown(f"{request.name} before login")
            return
        self._busy = True
        reply = self.hub.acs.answer(request, self._context())
        if isinstance(reply, Reply):  # answered at once: no Deferred to chain
            try:
                self._answer(reply, request, key, started)
            except Exception as exc:
                self._internal_error(str(exc), request)
            return
        self._counted_in_flight(reply)
        reply.addCallback(self._answer, request, key, started)
        reply.addErrback(lambda failure: self._internal_error(failure.getErrorMessage(), request))

    def _counted_in_flight(self, d: Any) -> Any:
        """``d``, counted in ``events.in_flight`` until it fires: a stopping server waits for it."""
        events = self.hub.events
        events.in_flight += 1

        def settled(result: Any) -> Any:
            events.in_flight -= 1
            return result

        return d.addBoth(settled)

    def _answer(self, reply: Reply, request: Message, key: bytes | None, started: float) -> None:
        self._busy = False
        if self.closed:
            return
        message = reply.message
        account = self.account
        if account is not None and not account.profile.changes_nothing:
            message = profile.shape(message, reply.patron, account.profile)
        data = self._encode(message, request)
        self._reply_bytes(data, remember=True)
        self._answered = (key, data)
        self.hub.events.exchange(self, request.name, reply.outcome, self._clock() - started)
        self._next()

    def _internal_error(self, why: str, request: Message) -> None:
        """Only a bug reaches here (the ACS never errbacks): log it, close cleanly, no traceback out."""
        self._busy = False
        self.hub.events.protocol_error(self, f"internal error answering {request.name}: {why}")
        self.shutdown("internal error")

    def _next(self) -> None:
        while self._queue and not self._busy and not self.closed:
            frame = self._queue.popleft()
            self._queued_bytes -= len(frame)
            self._process(frame)

    # ---------------------------------------------------------------------------------------------
    # Login

    def _login_delimiter(self, frame: bytes) -> str:
        """The delimiter of a frame sent before login: ``|``, unless it is a 93 whose CO field
        follows another delimiter some account uses (``CN...^CO...^``). The reply and everything
        after the login then use the account's own delimiter, as configured."""
        others = self.hub.registry.other_delimiters
        if others and frame[:2] == b"93" and b"|CO" not in frame:
            for delimiter in others:
                if delimiter + b"CO" in frame:
                    return delimiter.decode("latin-1")
        return "|"

    def _handle_login(self, request: Message, key: bytes | None, started: float) -> None:
        self._busy = True  # frames that arrive while the password is checked wait their turn
        outcome = self.authenticate(request.get("CN"), request.get("CO"))
        if isinstance(outcome, bool):
            self._login_answered(outcome, request, key, started)
            return
        outcome.addCallback(self._login_answered, request, key, started)
        outcome.addErrback(lambda failure: self._internal_error(failure.getErrorMessage(), request))

    def _login_answered(self, ok: bool, request: Message, key: bytes | None, started: float) -> None:
        self._busy = False
        if self.closed:
            return
        data = self._encode(make("94", ok=ok), request)
        self._reply_bytes(data, remember=True)
        self._answered = (key, data)
        self.hub.events.exchange(self, request.name, "ok" if ok else "refused", self._clock() - started)
        if not ok and self.login_failures >= MAX_LOGIN_FAILURES:
            self.shutdown(f"{self.login_failures} failed logins")
            return
        self._next()

    def authenticate(self, login: str, password: str) -> bool | Deferred[bool]:
        """Check a login (a 93, or the telnet prompts); a Deferred when the password needs scrypt,
        which waits its turn for a thread (``hub.password_checks``) so that the other terminals
        are not held up. The lines it logs and the counters it moves are the same either way; a
        check given up because the connection closed answers False and logs nothing."""
        checks = getattr(self.hub, "password_checks", None)
        registry = self.hub.registry
        if checks is None:
            return self._logged_in_as(login, registry.authenticate(login, password, self.peer, self.listener.name))
        result = registry.authenticate_queued(login, password, self.peer, self.listener.name, checks)
        if isinstance(result, AuthResult):
            return self._logged_in_as(login, result)
        self._password_check = self._counted_in_flight(result)
        return result.addCallback(lambda value: self._logged_in_as(login, value))

    def _logged_in_as(self, login: str, result: AuthResult) -> bool:
        self._password_check = None
        if self.closed:
            return False
        self.hub.events.login(self, login, result.ok, result.reason)
        if result.ok:
            self.account = result.account
            self.login_failures = 0
            return True
        self.account = None
        self.login_failures += 1
        return False

    def _refresh_account(self) -> bool:
        """After a reload the account may have changed or gone: pick up the new one, or hang up."""
        if self.account is None:
            return True
        registry = self.hub.registry
        current = registry.account(self.account.login)
        if current is self.account:
            return True
        if current is None or not current.enabled or not registry.allowed_from(current, self.peer):
            self.hub.events.protocol_error(self, f"account {self.account.login} no longer valid after reload")
            self.hub.events.logged_out(self)
            self.account = None
            self.shutdown("account no longer valid")
            return False
        self.account = current
        return True

    def _context(self) -> RequestContext:
        """The request's context; the last one again while the second, the registry and the account
        are the same (a terminal sends many requests a second, and the context is frozen)."""
        registry = self.hub.registry
        now = now_to_the_second()
        last = self._last_context
        if last is not None and last.now is now and self._context_of == (registry, self.account):
            return last
        institution: InstitutionConfig | None = None
        if self.account is not None:
            institution = registry.institution(self.account.institution)
        if institution is None:
            institution = registry.listener_institution(self.listener.name)
        context = RequestContext(
            institution=institution, account=self.account, listener=self.listener.name, peer=self.peer, now=now
        )
        self._last_context, self._context_of = context, (registry, self.account)
        return context

    # ---------------------------------------------------------------------------------------------
    # Output

    def _encode(self, message: Message, request: Message | None, checksum: bool = False) -> bytes:
        """Encode with the account's options, error detection mirrored (or forced by the account)."""
        account = self.account
        mode = account.error_detection if account else "auto"
        sequence = request.sequence if request is not None else None
        if mode == "never":
            sequence, checksum = None, False
        elif mode == "always":
            if message.code in ("96", "97"):
                sequence, checksum = None, True
            elif sequence is None:
                sequence = "0"
        elif request is not None and request.checksum is not None and sequence is None:
            checksum = True  # AZ without AY came in: answer the same way
        if message.code == "96":
            sequence = None  # 96 and 97 never carry AY
        return encode(
            message,
            encoding=account.encoding if account else "utf-8",
            delimiter=account.delimiter if account else "|",
            terminator=self.listener.terminator or (account.terminator if account else b"\r"),
            sequence=sequence,
            checksum=checksum,
        )

    def _reply_bytes(self, data: bytes, remember: bool) -> None:
        if remember:
            self._last_reply = data
        self._send(data)

    def _resend_last(self, started: float) -> None:
        if self._last_reply is None:
            self._reply_bytes(self._encode(_RESEND_96, None, checksum=self._ed_seen), remember=False)
            outcome = "nothing_to_resend"
        else:
            self._reply_bytes(self._last_reply, remember=False)
            outcome = "resent"
        self.hub.events.exchange(self, "request_acs_resend", outcome, self._clock() - started)
        self._next()
