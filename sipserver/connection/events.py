"""What a :class:`~sipserver.connection.Connection` asks of its driver, one event at a time.

The driver carries out each event in the order given: it checks a :class:`Login` with the
registry and hands the outcome back (``login_checked``), asks the ACS to answer a :class:`Request`
and hands the reply back (``answer``), writes a :class:`Resend`'s bytes, logs a
:class:`ProtocolError`, and ends the connection on :class:`Close`.
"""

from __future__ import annotations

import attrs

from sipserver.sip2 import Message

__all__ = ["Close", "Event", "Login", "ProtocolError", "Request", "Resend"]


@attrs.frozen(slots=True)
class Request:
    """A request for the ACS to answer; ``Connection.answer`` takes its reply."""

    message: Message


@attrs.frozen(slots=True)
class Login:
    """A login to check against the registry; ``Connection.login_checked`` takes the outcome.
    ``request`` is the 93 it came in (answered with a 94), or None for telnet's prompts."""

    login: str
    password: str = attrs.field(repr=False)  # never in a log line, whatever logs the event
    request: Message | None


@attrs.frozen(slots=True)
class Resend:
    """Bytes the connection answered by itself: a 96 asking the terminal to send again, the last
    reply again for a 97, the recorded reply for a retransmitted request. ``request`` and
    ``outcome`` make the exchange line; None for a 96 that is no exchange (a malformed frame)."""

    data: bytes
    request: str | None
    outcome: str


@attrs.frozen(slots=True)
class ProtocolError:
    """Something the terminal did wrong, for the log; what follows (a 96, a close) comes as its
    own event."""

    what: str


@attrs.frozen(slots=True)
class Close:
    """The connection is over: hang up, saying why."""

    reason: str


Event = Request | Login | Resend | ProtocolError | Close
