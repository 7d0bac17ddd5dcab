"""How replies are written for one terminal: the account's encoding, delimiter, terminator, error
detection and reply profile, with a listener's own terminator winning.

Worked out once per login rather than per reply, since a terminal sends thousands of requests
under one account.
"""

from __future__ import annotations

from sipserver.acs import Reply, profile
from sipserver.config import AccountConfig, ListenerConfig
from sipserver.config.profiles import ReplyProfile
from sipserver.sip2 import Message, encode


class ReplyForm:
    """The settings every reply of one login is encoded with (``account`` None: before a login)."""

    __slots__ = ("delimiter", "encoding", "error_detection", "profile", "terminator")

    def __init__(self, account: AccountConfig | None, listener: ListenerConfig) -> None:
        self.encoding = account.encoding if account else "utf-8"
        self.delimiter = account.delimiter if account else "|"
        # A telnet port people test by hand ends replies in CR LF whatever the account says.
        self.terminator = listener.terminator or (account.terminator if account else b"\r")
        self.error_detection = account.error_detection if account else "auto"
        shaping = account.profile if account else None
        self.profile: ReplyProfile | None = None if shaping is None or shaping.changes_nothing else shaping

    def reply(self, reply: Reply, request: Message) -> bytes:
        """The ACS's reply to ``request``, shaped by the account's reply profile."""
        message = reply.message
        if self.profile is not None:
            message = profile.shape(message, reply.patron, self.profile)
        return self.encode(message, request)

    def encode(self, message: Message, request: Message | None, checksum: bool = False) -> bytes:
        """``message`` with error detection mirrored from ``request`` (or forced by the account)."""
        mode = self.error_detection
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
            encoding=self.encoding,
            delimiter=self.delimiter,
            terminator=self.terminator,
            sequence=sequence,
            checksum=checksum,
        )
