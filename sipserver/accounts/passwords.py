"""Password hashing for SIP accounts, and the ``sipserver hash-password`` command.

Stored values come in two forms:

``scrypt$<n>$<r>$<p>$<salt>$<key>``
    What ``sipserver hash-password`` prints: :func:`hashlib.scrypt` with a random 16-byte salt and a
    32-byte key, both standard base64. scrypt is memory-hard, so a leaked config file does not give
    the SIP passwords away cheaply.

``plain:<password>``
    Accepted so that a demo or a migration works at once; the config loader records a warning for
    every account that uses it.

Verification never raises on a malformed stored value (it returns False): the config loader rejects
such values up front with :func:`check_stored`, and a login attempt must never turn into a traceback.

Why a verification cache is safe
--------------------------------
A self-check machine that reconnects, or a patron service that opens a connection per request, can
log in thousands of times a second with the same credentials; paying ~50 ms of scrypt each time would
stall the server. :func:`verify_password` therefore remembers *successful* verifications in a small
bounded dict keyed by ``(stored value, HMAC-SHA256(process key, password))``:

* the key holds a digest, never the password; the HMAC key is random per process, so even a memory
  dump does not yield an unsalted hash that could be looked up in a precomputed table;
* the cache lives in memory only and dies with the process;
* the stored hash is part of the key, so changing an account's password (and reloading) makes the
  old entry unreachable at once: the new hash is a different key;
* only successes are cached, so a wrong password always pays the full scrypt cost, and a cache hit
  reveals nothing the login answer itself does not.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import os
import secrets
import sys
from collections.abc import Sequence

__all__ = [
    "PLAIN_PREFIX",
    "SCRYPT_PREFIX",
    "check_stored",
    "dummy_hash",
    "hash_password",
    "hash_password_main",
    "is_plain",
    "verify_password",
]

SCRYPT_PREFIX = "scrypt$"
PLAIN_PREFIX = "plain:"
#: An account's ``password`` that says: not checked here; its login and password are forwarded to the
#: upstream SIP2 server behind its institution's ``sip2`` backend, whose 94 decides. Never matches here.
UPSTREAM = "upstream"

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32

# Refuse stored parameters that would make one verification use absurd memory or time: a typo in a
# config file must not let a login attempt allocate gigabytes. 2**14 * 8 * 128 bytes is 16 MiB.
_MAX_MEM = 64 * 1024 * 1024
_MAX_N = 2**20
_MAX_R = 64
_MAX_P = 16

_CACHE_SIZE = 4096
_cache: dict[tuple[str, bytes], bool] = {}
_cache_key = secrets.token_bytes(32)
_dummy: str | None = None


def hash_password(password: str) -> str:
    """Return a new ``scrypt$...`` value for *password*, with a fresh random salt."""
    salt = os.urandom(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return "$".join(
        ("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(key)),
    )


def is_plain(stored: str) -> bool:
    """True when *stored* is a ``plain:`` password rather than a hash."""
    return isinstance(stored, str) and stored.startswith(PLAIN_PREFIX)


def check_stored(stored: object) -> str | None:
    """Return None when *stored* is a usable stored password, or why not (never echoing the value).

    The config loader uses this so that a truncated hash is a startup error, not an account that
    silently can never log in.
    """
    if not isinstance(stored, str):
        return "expected a string"
    if stored == UPSTREAM:
        return None
    if stored.startswith(PLAIN_PREFIX):
        return None if len(stored) > len(PLAIN_PREFIX) else "the plain: password is empty"
    if not stored.startswith(SCRYPT_PREFIX):
        return "expected a hash from `sipserver hash-password` (scrypt$...), plain:<password> or upstream"
    if _parse_scrypt(stored) is None:
        return "the scrypt$ hash is malformed or its parameters are out of range"
    return None


def verify_password(password: str, stored: str) -> bool:
    """True when *password* matches *stored*; False on mismatch or a malformed *stored* value.

    The comparison is constant-time (:func:`hmac.compare_digest`). Successful scrypt checks are
    cached; see the module docstring for why that is safe.
    """
    if not isinstance(password, str) or not isinstance(stored, str):
        return False
    try:
        password_bytes = password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: cannot be any stored password
        return False
    if stored.startswith(PLAIN_PREFIX):
        return hmac.compare_digest(password_bytes, stored[len(PLAIN_PREFIX) :].encode("utf-8", "replace"))
    parsed = _parse_scrypt(stored)
    if parsed is None:
        return False
    cache_key = (stored, hmac.new(_cache_key, password_bytes, hashlib.sha256).digest())
    if _cache.pop(cache_key, False):
        _cache[cache_key] = True  # re-insert: most recently used goes to the end
        return True
    n, r, p, salt, expected = parsed
    try:
        key = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    if not hmac.compare_digest(key, expected):
        return False
    _cache[cache_key] = True
    while len(_cache) > _CACHE_SIZE:
        del _cache[next(iter(_cache))]
    return True


def is_quick(password: str, stored: str) -> bool:
    """True when :func:`verify_password` will answer without running scrypt: a ``plain:`` value, a
    malformed one, or a success it remembers. The others cost ~50 ms of CPU and belong off the
    reactor thread (``sipserver.accounts.registry``)."""
    if not isinstance(password, str) or not isinstance(stored, str) or stored.startswith(PLAIN_PREFIX):
        return True
    if _parse_scrypt(stored) is None:
        return True
    try:
        password_bytes = password.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return (stored, hmac.new(_cache_key, password_bytes, hashlib.sha256).digest()) in _cache


def dummy_hash() -> str:
    """A valid hash of a random, never-revealed password, computed once per process.

    The registry verifies against it for unknown logins, so that an unknown login costs as much as
    a wrong password and response timing does not reveal which logins exist.
    """
    global _dummy
    if _dummy is None:
        _dummy = hash_password(secrets.token_urlsafe(24))
    return _dummy


def clear_cache() -> None:
    """Forget every cached verification (for tests, or after a suspected compromise)."""
    _cache.clear()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=_MAX_MEM)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_scrypt(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    if not all(part.isascii() and part.isdigit() for part in parts[1:4]):
        return None
    n, r, p = (int(part) for part in parts[1:4])
    try:
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        return None
    if 128 * r * (n + p + 2) > _MAX_MEM or not salt or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key


def _read_password(stdin, stderr) -> str | None:
    """Ask twice on a terminal; read one line from a pipe. None (after a message) on failure."""
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Again: ")
        if first != second:
            print("sipserver hash-password: the passwords do not match", file=stderr)
            return None
        password = first
    else:
        password = stdin.readline()
        if password.endswith("\n"):
            password = password[:-1]
        if password.endswith("\r"):
            password = password[:-1]
    if not password:
        print("sipserver hash-password: the password is empty", file=stderr)
        return None
    return password


def hash_password_main(argv: Sequence[str] | None = None) -> int:
    """Body of ``sipserver hash-password``: read a password, print its hash, return an exit status.

    On a terminal the password is asked for twice without echo; otherwise one line is read from
    standard input, so ``echo secret | sipserver hash-password`` works in scripts.
    """
    parser = argparse.ArgumentParser(
        prog="sipserver hash-password",
        description="Print a password hash for the `password:` key of an account in sip.yaml. "
        "Asks twice on a terminal; otherwise reads one line from standard input.",
    )
    parser.parse_args(argv)
    try:
        password = _read_password(sys.stdin, sys.stderr)
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return 1
    if password is None:
        return 1
    print(hash_password(password))
    return 0
