"""Patron PINs: stored salted and hashed, verified in constant time, cheap to check again.

The hash is PBKDF2-HMAC-SHA256 with a random 16-byte salt and a modest iteration count
(:data:`DEFAULT_ITERATIONS`, about half a millisecond): a patron PIN is four to six digits, so no
iteration count makes a stolen hash safe, while authentication services (OverDrive, Libki...) send
thousands of patron-status requests with a PIN. The stored string carries its own iteration count,
so a site can raise it later without invalidating PINs.

:class:`PinVerifier` remembers *successful* verifications in a small bounded LRU. Its keys are
keyed BLAKE2b digests (a MAC, and a tenth of HMAC's cost) under a per-process random key over
(barcode, PIN, stored hash): memory never
holds a PIN or an offline-guessable digest of one, a changed PIN changes the stored hash and so
misses the cache, and a wrong PIN always pays the full hashing cost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections import OrderedDict

DEFAULT_ITERATIONS = 1000
_SCHEME = "pbkdf2_sha256"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_pin(pin: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """The string stored for ``pin``: ``pbkdf2_sha256$<iterations>$<salt>$<hash>``."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), salt, iterations)
    return f"{_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def check_pin(pin: str, stored: str) -> bool:
    """Whether ``pin`` matches ``stored``. A patron without a PIN (``stored`` empty) matches only ''."""
    if not stored:
        return hmac.compare_digest(pin.encode("utf-8"), b"")
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8"), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


class PinVerifier:
    """:func:`check_pin` with a bounded memory of recent successes (see the module docstring)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._key = os.urandom(32)
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def _digest(self, barcode: str, pin: str, stored: str) -> bytes:
        msg = "\0".join((barcode, pin, stored)).encode("utf-8")
        return hashlib.blake2b(msg, key=self._key, digest_size=32).digest()

    def verify(self, barcode: str, pin: str, stored: str) -> bool:
        key = self._digest(barcode, pin, stored)
        with self._lock:
            if key in self._good:
                self._good.move_to_end(key)
                return True
        if not check_pin(pin, stored):
            return False
        with self._lock:
            self._good[key] = None
            while len(self._good) > self._size:
                self._good.popitem(last=False)
        return True
