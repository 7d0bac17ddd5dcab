"""One terminal's SIP2 connection, without I/O: frames and outcomes in, events and bytes out.

:class:`Connection` is the state machine (:mod:`.connection`), :mod:`.events` what it asks of its
driver, :mod:`.replies` how its replies are written. The Twisted protocol that drives it is
``sipserver.daemon.transport.protocol``.
"""

from .connection import MAX_LOGIN_FAILURES, MAX_PIPELINED, MAX_PIPELINED_BYTES, Connection, State
from .events import Close, Event, Login, ProtocolError, Request, Resend
from .replies import ReplyForm

__all__ = [
    "MAX_LOGIN_FAILURES",
    "MAX_PIPELINED",
    "MAX_PIPELINED_BYTES",
    "Close",
    "Connection",
    "Event",
    "Login",
    "ProtocolError",
    "ReplyForm",
    "Request",
    "Resend",
    "State",
]
