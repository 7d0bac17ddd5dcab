"""The AZ checksum: the two's complement of the 16-bit byte sum, up to and including ``AZ``."""

from __future__ import annotations


def checksum(data: bytes) -> str:
    """Four upper-case hex digits for ``data``, which must end with the characters ``AZ``."""
    return "%04X" % (-sum(data) & 0xFFFF)


def verify(data: bytes, digits: bytes) -> bool:
    """True when ``digits`` (3 to 5 hex digits as sent) is the checksum of ``data``.

    Verified numerically modulo 0x10000, so an unpadded (``F5E``) or unmasked (``1B610``) checksum
    from a real client is accepted when its value is right.
    """
    try:
        value = int(digits, 16)
    except ValueError:
        return False
    return (sum(data) + value) & 0xFFFF == 0
