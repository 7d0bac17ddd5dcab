"""SIP2 protocol: message table, codec, checksums and code tables. No Twisted, no I/O.

``from sipserver.sip2 import decode, encode`` is the whole codec; :func:`make` builds messages by
field name.
"""

from .checksum import checksum, verify
from .codec import Message, decode, encode, make, normalize_frame, redacted_fields, split_trailer
from .errors import ChecksumError, EncodeError, MalformedFrame, SIP2Error, UnknownCommand
from .messages import BY_NAME, MESSAGES, REQUESTS, RESPONSES, MessageSpec, supported_messages

__all__ = [
    "BY_NAME",
    "MESSAGES",
    "REQUESTS",
    "RESPONSES",
    "ChecksumError",
    "EncodeError",
    "MalformedFrame",
    "Message",
    "MessageSpec",
    "SIP2Error",
    "UnknownCommand",
    "checksum",
    "decode",
    "encode",
    "make",
    "normalize_frame",
    "redacted_fields",
    "split_trailer",
    "supported_messages",
    "verify",
]
