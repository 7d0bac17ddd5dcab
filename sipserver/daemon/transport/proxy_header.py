"""The PROXY protocol header (v1 text and v2 binary) a balancer sends before the terminal's bytes.

Sans-IO: :class:`HeaderReader` is fed the first bytes of a connection and says whether they are a
header (and the terminal's address in it), not a header at all, unfinished, or broken. It holds at
most :data:`MAX_HEADER_BYTES`, so a peer cannot make the daemon buffer more than that before it is
decided. Twisted's own ``twisted.protocols.haproxy`` is not used: its public part is an endpoint
wrapper that trusts a header from any peer, cannot make the header optional, and closes a
connection whose first read is shorter than 16 bytes (see docs/scale-out.md).
"""

from __future__ import annotations

import enum
import ipaddress
import struct

import attrs

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest v1 line, CR LF included (the protocol's own bound).
V1_MAX = 107
#: The most a v2 header may carry after its 16 fixed bytes: the addresses and TLVs balancers send
#: (a TLS summary, a cloud endpoint id) fit many times over.
V2_MAX_BODY = 2048
MAX_HEADER_BYTES = 16 + V2_MAX_BODY


class Verdict(enum.Enum):
    MORE = "more"  # unfinished: feed more
    HEADER = "header"  # a whole header: ``source`` (None: LOCAL or UNKNOWN, the peer's own) and ``rest``
    ABSENT = "absent"  # the bytes are not a PROXY header: ``rest`` is all of them
    INVALID = "invalid"  # a header, but broken or too long: ``reason``


@attrs.frozen
class Outcome:
    verdict: Verdict
    #: The terminal's (address, port) when the header carries one.
    source: tuple[str, int] | None = None
    version: int = 0
    rest: bytes = b""
    reason: str = ""


MORE = Outcome(Verdict.MORE)


class HeaderReader:
    """Reads one connection's first bytes (see the module docstring)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Outcome:
        buffer = self._buffer = self._buffer + data
        if buffer.startswith(V2_SIGNATURE):
            return self._v2(buffer)
        if buffer.startswith(V1_PREFIX):
            return self._v1(buffer)
        if V2_SIGNATURE.startswith(buffer[:12]) or V1_PREFIX.startswith(buffer[:6]):
            return MORE  # the start of a signature, cut short by the network
        self._buffer = b""
        return Outcome(Verdict.ABSENT, rest=buffer)

    def _v1(self, buffer: bytes) -> Outcome:
        end = buffer.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buffer) >= V1_MAX:
                return _invalid(f"PROXY v1 line longer than {V1_MAX} bytes")
            return MORE
        self._buffer = b""
        line, rest = buffer[:end], buffer[end + 2 :]
        words = line.split(b" ")
        if words[1:2] == [b"UNKNOWN"]:
            return Outcome(Verdict.HEADER, None, 1, rest)
        if len(words) != 6 or words[1] not in (b"TCP4", b"TCP6"):
            return _invalid("malformed PROXY v1 line")
        try:
            source = ipaddress.ip_address(words[2].decode("ascii"))
            ipaddress.ip_address(words[3].decode("ascii"))
            port = _port(words[4])
            _port(words[5])
        except ValueError:
            return _invalid("malformed PROXY v1 addresses")
        if source.version != (4 if words[1] == b"TCP4" else 6):
            return _invalid("PROXY v1 address of the wrong family")
        return Outcome(Verdict.HEADER, (str(source), port), 1, rest)

    def _v2(self, buffer: bytes) -> Outcome:
        if len(buffer) < 16:
            return MORE
        version_command, family, length = buffer[12], buffer[13], struct.unpack("!H", buffer[14:16])[0]
        if version_command >> 4 != 2 or version_command & 0x0F > 1:
            return _invalid("unknown PROXY v2 version or command")
        if length > V2_MAX_BODY:
            return _invalid(f"PROXY v2 header longer than {MAX_HEADER_BYTES} bytes")
        if len(buffer) < 16 + length:
            return MORE
        self._buffer = b""
        body, rest = buffer[16 : 16 + length], buffer[16 + length :]
        if version_command & 0x0F == 0:  # LOCAL: the balancer's own connection (a health check)
            return Outcome(Verdict.HEADER, None, 2, rest)
        if family in (0x11, 0x12):  # TCP or UDP over IPv4
            if length < 12:
                return _invalid("PROXY v2 IPv4 addresses cut short")
            host, _dst, port = body[:4], body[4:8], struct.unpack("!H", body[8:10])[0]
            return Outcome(Verdict.HEADER, (str(ipaddress.IPv4Address(host)), port), 2, rest)
        if family in (0x21, 0x22):
            if length < 36:
                return _invalid("PROXY v2 IPv6 addresses cut short")
            address = ipaddress.IPv6Address(body[:16])
            port = struct.unpack("!H", body[32:34])[0]
            mapped = address.ipv4_mapped
            return Outcome(Verdict.HEADER, (str(mapped if mapped is not None else address), port), 2, rest)
        return Outcome(Verdict.HEADER, None, 2, rest)  # UNSPEC or unix: no address to take


def _port(word: bytes) -> int:
    if not word.isdigit() or len(word) > 5 or int(word) > 65535:
        raise ValueError(word)
    return int(word)


def _invalid(reason: str) -> Outcome:
    return Outcome(Verdict.INVALID, reason=reason)


def v1_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header, as a balancer sends it (the tests' and the bench's terminals)."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode("ascii")


def v2_header(source: tuple[str, int], destination: tuple[str, int], *, local: bool = False) -> bytes:
    """A v2 header, as a balancer sends it; ``local``: a LOCAL command (a health check)."""
    if local:
        return V2_SIGNATURE + bytes((0x20, 0x00)) + struct.pack("!H", 0)
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + bytes((0x21, family)) + struct.pack("!H", len(body)) + body
