"""One terminal's SIP2 connection as a state machine, without I/O ("sans-IO", as h11 is for HTTP).

Frames go in (bytes, their terminator removed) and events come out; the driver
(``sipserver.daemon.transport.protocol``) carries each one out (a login checked by the registry, a
request answered by the ACS, a line logged, the socket closed) and hands the outcome back, getting
the bytes to write. Everything SIP2 says about a connection lives here:

* which requests may come before a login (93 and 97 always, 99 where the listener allows it; any
  other closes the connection), the delimiter of a 93 sent before a login, and three failed logins
  ending the connection, whether they came as 93s or at telnet's prompts;
* error detection mirrored per terminal, 96 for a bad checksum, 97 answered with the last reply, and
  a retransmitted request (the same frame again, AY and AZ included) answered again *without being
  run twice*; unknown codes ignored;
* requests answered strictly in order: frames that arrive while one is answered wait, up to
  :data:`MAX_PIPELINED` frames and :data:`MAX_PIPELINED_BYTES` bytes;
* each reply written the way the terminal's account asks (:mod:`.replies`).

Nothing here reads a clock or a socket or calls the registry or the ACS, so it is tested with
bytes alone. After any call that returns an event, the driver calls :meth:`Connection.next_event`
until it returns None before it feeds the next frame (an outcome may be followed by more events:
the requests that waited behind it, a close after a third failed login).
"""

from __future__ import annotations

import enum
from collections import deque

from sipserver.accounts.registry import AuthResult
from sipserver.acs import Reply
from sipserver.config import AccountConfig, ListenerConfig
from sipserver.sip2 import ChecksumError, MalformedFrame, Message, UnknownCommand, decode, make, normalize_frame

from .events import Close, Event, Login, ProtocolError, Request, Resend
from .replies import ReplyForm

__all__ = ["MAX_LOGIN_FAILURES", "MAX_PIPELINED", "MAX_PIPELINED_BYTES", "Connection", "State"]

#: Frames a terminal may send ahead of our replies before we call it abuse and hang up, and the
#: bytes they may hold in all (64 frames of the largest size would be half a megabyte).
MAX_PIPELINED = 64
MAX_PIPELINED_BYTES = 65536
#: Login failures one connection may make before it is closed (the lockout counts across connections).
MAX_LOGIN_FAILURES = 3

_RESEND_96 = make("96")


class State(enum.Enum):
    """Where a connection is in its exchange with the terminal (whether it is logged in is its
    ``account``)."""

    #: Waiting for the next frame.
    IDLE = "idle"
    #: A login is being checked: ``login_checked`` comes next; frames wait.
    LOGGING_IN = "logging_in"
    #: A request is with the ACS: ``answer`` (or ``answer_failed``) comes next; frames wait.
    ANSWERING = "answering"
    #: The server stops: what is being answered is answered; frames are no longer run.
    DRAINING = "draining"
    #: Over: nothing more is read or written.
    CLOSED = "closed"


IDLE, LOGGING_IN, ANSWERING, DRAINING, CLOSED = State  # read per frame: module globals are quick


class Connection:
    """The state of one connection; see the module docstring.

    ``other_delimiters`` are the field delimiters accounts use besides ``|`` (the registry's): a
    93 arrives before the connection knows its account, so these are the ones it may be written
    with. The driver keeps the attribute current across reloads."""

    __slots__ = (
        "_answered",
        "_ed_seen",
        "_events",
        "_form",
        "_key",
        "_last_reply",
        "_request",
        "_waiting",
        "_waiting_bytes",
        "account",
        "close_reason",
        "listener",
        "login",
        "login_failures",
        "other_delimiters",
        "peer",
        "state",
    )

    def __init__(self, listener: ListenerConfig, peer: str, other_delimiters: frozenset[bytes] = frozenset()) -> None:
        self.listener = listener
        self.peer = peer
        self.other_delimiters = other_delimiters
        self.state = IDLE
        self.account: AccountConfig | None = None
        self.login = ""  # the account's login, "" before a login (a line is written per exchange)
        self.login_failures = 0
        self.close_reason: str | None = None  # why the server hung up (None while open, or when the peer did)
        self._form = ReplyForm(None, listener)
        # Two memories, because they answer different questions. ``_last_reply`` is whatever went
        # out last (a 96 included): what a 97 asks for. ``_answered`` is the last request really
        # answered with its reply: what a retransmission of that request gets. A 96 for a garbled
        # copy must not replace the second, or every later clean copy would be "answered" with 96.
        self._last_reply: bytes | None = None
        self._answered: tuple[bytes | None, bytes] | None = None
        self._ed_seen = False  # the terminal has used error detection on this connection
        self._waiting: deque[bytes] | None = None  # made for the first frame that has to wait
        self._waiting_bytes = 0
        self._events: list[Event] = []  # what follows the event last returned (one or two)
        self._request: Message | None = None  # the request being answered (or the 93 being checked)
        self._key: bytes | None = None  # its normalised frame, when it carried error detection

    @property
    def logged_in(self) -> bool:
        return self.account is not None

    # ---------------------------------------------------------------------------------------------
    # Frames in, events out

    def receive(self, frame: bytes) -> Event | None:
        """One frame from the terminal: its event, or None when it waits its turn (or is not run,
        the server stopping). Too many frames waiting close the connection."""
        if self.state is IDLE and not self._waiting and not self._events:
            return self._frame(frame)
        if self.state is CLOSED or self.state is DRAINING:
            return None
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = deque()
        if len(waiting) >= MAX_PIPELINED or self._waiting_bytes + len(frame) > MAX_PIPELINED_BYTES:
            self._events.append(self._closing("too many pipelined requests"))
            return ProtocolError(
                f"more than {MAX_PIPELINED} requests or {MAX_PIPELINED_BYTES} bytes waiting for replies"
            )
        waiting.append(frame)
        self._waiting_bytes += len(frame)
        return self.next_event()

    def next_event(self) -> Event | None:
        """What comes next: an event that follows the last one, or the next waiting frame's once
        nothing is being answered; None when there is nothing to do until an outcome comes back."""
        if self._events:
            return self._events.pop(0)
        if self.state is IDLE and self._waiting:
            frame = self._waiting.popleft()
            self._waiting_bytes -= len(frame)
            return self._frame(frame)
        return None

    def _frame(self, frame: bytes) -> Event | None:
        form = self._form
        delimiter = form.delimiter if self.account is not None else self._login_delimiter(frame)
        try:
            request = decode(frame, form.encoding, delimiter)
        except ChecksumError:
            self._ed_seen = True
            data = self._last_reply = form.encode(_RESEND_96, None, checksum=True)
            self._events.append(Resend(data, "checksum_error", "resend_requested"))
            return ProtocolError("checksum error; answered 96")
        except UnknownCommand as exc:
            return ProtocolError(f"ignored unknown command code {exc.code!r}")
        except MalformedFrame as exc:
            self._events.append(Resend(form.encode(_RESEND_96, None, checksum=self._ed_seen), None, ""))
            return ProtocolError(f"malformed frame ({exc}); answered 96")

        if request.checksum is not None:
            self._ed_seen = True
        code = request.code
        if code == "97":
            if self._last_reply is None:
                return Resend(form.encode(_RESEND_96, None, checksum=self._ed_seen), "request_acs_resend",
                              "nothing_to_resend")  # fmt: skip
            return Resend(self._last_reply, "request_acs_resend", "resent")
        # A retransmission is the same frame again, byte for byte once the codec's lenient-in
        # normalisation is applied. Matching AY and AZ alone is not enough: AZ is a byte sum, so a
        # different request (barcode digits swapped, same AY) has the same AZ and must still run.
        key = normalize_frame(frame) if request.checksum is not None else None
        answered = self._answered
        if key is not None and answered is not None and key == answered[0]:
            # php-sip2 and others resend the identical request when a reply looked wrong: replay,
            # never run a checkout twice. The replayed reply is the one this request got, even when
            # a 96 for a garbled copy went out in between.
            self._last_reply = answered[1]
            return Resend(answered[1], request.name, "retransmission_replayed")
        if not request.spec.request:
            return ProtocolError(f"ignored a {request.name} sent by the terminal")
        self._request, self._key = request, key
        if code == "93":
            self.state = LOGGING_IN
            return Login(request.get("CN"), request.get("CO"), request)
        if self.account is None and not (code == "99" and self.listener.status_before_login):
            self._events.append(self._closing(f"{request.name} before login"))
            return ProtocolError(f"{request.name} before login; closing")
        self.state = ANSWERING
        return Request(request)

    def _login_delimiter(self, frame: bytes) -> str:
        """The delimiter of a frame sent before login: ``|``, unless it is a 93 whose CO field
        follows another delimiter some account uses (``CN...^CO...^``). The reply and everything
        after the login then use the account's own delimiter, as configured."""
        others = self.other_delimiters
        if others and frame[:2] == b"93" and b"|CO" not in frame:
            for delimiter in others:
                if delimiter + b"CO" in frame:
                    return delimiter.decode("latin-1")
        return "|"

    # ---------------------------------------------------------------------------------------------
    # Outcomes in, bytes out

    def answer(self, reply: Reply) -> bytes | None:
        """The ACS's reply to the :class:`Request` last returned: the bytes to write (None when
        the connection closed meanwhile, and nothing is written)."""
        state = self.state
        request = self._request
        if state is CLOSED or request is None:
            return None
        data = self._form.reply(reply, request)
        self._last_reply = data
        self._answered = (self._key, data)
        self._request = None
        if state is ANSWERING:
            self.state = IDLE
        return data

    def answer_failed(self, why: str) -> ProtocolError:
        """Answering the request (or checking the login) failed: only a bug gets here, since the
        ACS never fails. Said in the log, and the connection closes cleanly, with no traceback."""
        request, self._request = self._request, None
        name = request.name if request is not None else "a request"
        if self.state is not CLOSED:
            self._events.append(self._closing("internal error"))
        return ProtocolError(f"internal error answering {name}: {why}")

    def prompted_login(self, login: str, password: str) -> Login:
        """A login typed at telnet's ``login:`` and ``password:`` prompts, to check like a 93's;
        no SIP reply goes out for it."""
        if self.state is IDLE:
            self.state = LOGGING_IN
        self._request = self._key = None
        return Login(login, password, None)

    def login_checked(self, result: AuthResult) -> bytes | None:
        """The registry's verdict on the :class:`Login` last returned: the 94 to write (``b""``
        for a prompted login; None when the connection closed meanwhile). A third failure is
        followed by a :class:`Close`."""
        state = self.state
        if state is CLOSED:
            return None
        request, self._request = self._request, None
        if result.ok:
            self._use(result.account)
            self.login_failures = 0
        else:
            self._use(None)
            self.login_failures += 1
        if state is LOGGING_IN:
            self.state = IDLE
        data = b""
        if request is not None:
            data = self._form.encode(make("94", ok=result.ok), request)
            self._last_reply = data
            self._answered = (self._key, data)
        if not result.ok and self.login_failures >= MAX_LOGIN_FAILURES:
            self._events.append(self._closing(f"{self.login_failures} failed logins"))
        return data

    def use_account(self, account: AccountConfig) -> None:
        """A reload changed the account (same login, still allowed): replies follow the new one."""
        self._use(account)

    def withdraw_account(self) -> Close:
        """A reload removed the account, disabled it or moved the peer out of its allow-list."""
        self._use(None)
        return self._closing("account no longer valid")

    # ---------------------------------------------------------------------------------------------
    # The end

    def drain(self) -> None:
        """The server is stopping: the request being answered gets its reply; the frames waiting
        behind it, and any that still arrive, are never run (the terminal sends them again to
        the next server, having had no reply)."""
        if self.state is not CLOSED:
            self.state = DRAINING
            self._drop_waiting()

    def close(self, reason: str) -> None:
        """The driver hangs up (a timeout, a frame too long, the server stopping...)."""
        if self.state is not CLOSED:
            self._closing(reason)
        self._events.clear()

    def lost(self) -> None:
        """The connection is gone, whoever ended it."""
        self.state = CLOSED
        self._drop_waiting()
        self._events.clear()

    # ---------------------------------------------------------------------------------------------

    def _use(self, account: AccountConfig | None) -> None:
        self.account = account
        self.login = account.login if account is not None else ""
        self._form = ReplyForm(account, self.listener)

    def _closing(self, reason: str) -> Close:
        self.state = CLOSED
        self.close_reason = reason
        self._drop_waiting()
        return Close(reason)

    def _drop_waiting(self) -> None:
        self._waiting = None
        self._waiting_bytes = 0
