"""The codec's exceptions. Decoding any bytes raises one of these and nothing else."""

from __future__ import annotations


class SIP2Error(ValueError):
    """Base class: the frame cannot be used as it is."""


class ChecksumError(SIP2Error):
    """The frame carries an AZ trailer that does not verify. The SC gets 96 and resends."""


class UnknownCommand(SIP2Error):
    """A well-formed frame whose two-digit code is not a SIP2 message. The spec says: no reply."""

    def __init__(self, code: str) -> None:
        super().__init__(f"unknown command code {code!r}")
        self.code = code


class MalformedFrame(SIP2Error):
    """Too broken to read at all (empty, no command code)."""


class EncodeError(ValueError):
    """A message cannot be encoded as asked (a fixed field of the wrong width, an unknown code).

    This is a programming error in the caller, never the terminal's fault.
    """
