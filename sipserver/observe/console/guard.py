"""Who may open the console, and where it may be served.

HTTP basic authentication sends the password with every request, so the console is served only
where nobody can read it on the way: a TLS endpoint, or one that listens on loopback (or a unix
socket) alone. :func:`unsafe_endpoint` says why an endpoint is neither; the console then stays off
and start-up says so.

A password is checked with scrypt on a thread, through the same :class:`~sipserver.accounts.lockout.Lockout`
as the terminals' logins: an address that guesses console passwords is locked out of the SIP
logins too, and the other way round. The page polls every few seconds, so a password found right
is remembered for :data:`REMEMBER` seconds as a keyed digest (never the password itself) instead
of running scrypt on every poll.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer

from sipserver.accounts import passwords
from sipserver.accounts.lockout import Lockout
from sipserver.config import AdminConfig

#: Seconds a right console password is remembered (as a keyed digest).
REMEMBER = 600.0
#: Remembered logins at most (browsers of a few administrators).
MAX_REMEMBERED = 64

_LOOPBACK_INTERFACES = ("127.", "::1", "localhost", "0:0:0:0:0:0:0:1")


def unsafe_endpoint(endpoint: str) -> str | None:
    """Why basic authentication must not be served on ``endpoint`` (a Twisted endpoint string),
    or None when it is TLS, a unix socket, or TCP bound to a loopback interface."""
    kind = endpoint.split(":", 1)[0].lower()
    if kind in ("ssl", "tls", "unix"):
        return None
    if kind in ("tcp", "tcp6"):
        for part in _split(endpoint)[1:]:
            name, _, value = part.partition("=")
            if name == "interface" and value.replace("\\:", ":").startswith(_LOOPBACK_INTERFACES):
                return None
        return "the HTTP endpoint is neither TLS (ssl:) nor bound to a loopback interface"
    return f"the HTTP endpoint type {kind!r} is neither TLS nor loopback"


def _split(endpoint: str) -> list[str]:
    """An endpoint string's colon-separated parts (a backslash escapes a colon)."""
    parts, current, escaped = [], "", False
    for ch in endpoint:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            current += ch
            escaped = True
        elif ch == ":":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def basic_credentials(header: bytes | None) -> tuple[str, str] | None:
    """The login and password of an ``Authorization: Basic`` header, or None."""
    if not header or header[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


class Admins:
    """Checks console logins; see the module docstring. ``run_check(f, *args)`` runs ``f`` on a
    thread and returns a Deferred; ``seconds()`` is the clock."""

    def __init__(
        self,
        admins: Mapping[str, AdminConfig],
        lockout: Lockout,
        run_check: Callable[..., defer.Deferred[Any]],
        seconds: Callable[[], float],
    ) -> None:
        self.admins = admins
        self.lockout = lockout
        self.run_check = run_check
        self.seconds = seconds
        self._key = os.urandom(32)  # per process: a digest kept here means nothing elsewhere
        self._remembered: dict[bytes, float] = {}  # digest -> until

    def csrf_token(self, login: str) -> str:
        """The test form's token for ``login``: only a page this process served holds it."""
        return hmac.new(self._key, b"csrf\0" + login.encode("utf-8"), hashlib.sha256).hexdigest()

    def check(self, login: str, password: str, peer: str) -> defer.Deferred[str | None]:
        """None when ``login`` may in from ``peer``, else the refusal reason (``locked_out``,
        ``busy``, ``wrong_password``)."""
        digest = hmac.new(self._key, login.encode("utf-8") + b"\0" + password.encode("utf-8"), hashlib.sha256).digest()
        now = self.seconds()
        until = self._remembered.get(digest)
        if until is not None and now < until and login in self.admins and not self.lockout.is_locked(peer):
            return defer.succeed(None)
        if self.lockout.is_locked(peer):
            self.lockout.record_failure(peer)
            return defer.succeed("locked_out")
        if not self.lockout.may_check(peer):
            return defer.succeed("busy")
        admin = self.admins.get(login)
        stored = admin.password_hash if admin is not None else passwords.dummy_hash()
        self.lockout.reserve(peer)
        d = self.run_check(passwords.verify_password, password, stored)

        def judged(matches: Any) -> str | None:
            self.lockout.release(peer)
            if matches is True and admin is not None:
                self.lockout.record_success(peer)
                self._remember(digest, now + REMEMBER)
                return None
            self.lockout.record_failure(peer)
            return "wrong_password"

        return d.addBoth(judged)

    def _remember(self, digest: bytes, until: float) -> None:
        self._remembered.pop(digest, None)
        self._remembered[digest] = until
        while len(self._remembered) > MAX_REMEMBERED:
            del self._remembered[next(iter(self._remembered))]
