"""Accounts and institutions as the running server sees them: who may log in, from where.

A :class:`Registry` is built from one :class:`~sipserver.config.Config` and never changes; a reload
builds a new one and the service swaps the reference, so a session sees either the old accounts or
the new ones, never a mix. The :class:`~sipserver.accounts.lockout.Lockout` is the one mutable part and is
shared across registries, so a reload neither forgets failed attempts nor frees a locked address.
``Registry.from_config`` does not touch the lockout's limits: the reload code calls
``lockout.reconfigure(...)`` once the new config is accepted.

One allow-list per account is checked the same way whichever listener (raw, telnet, TLS) the login
arrives on: the common field mistake is an allow-list updated for one port and not the other.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from sipserver.accounts import passwords
from sipserver.accounts.lockout import Lockout
from sipserver.config import AccountConfig, Config, InstitutionConfig
from sipserver.ils.interface import BackendError

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from sipserver.accounts.password_checks import PasswordChecks, Refused

__all__ = [
    "ADDRESS_NOT_ALLOWED",
    "BUSY",
    "DISABLED",
    "EXPIRED",
    "LOCKED_OUT",
    "REASONS",
    "UNKNOWN_LOGIN",
    "WRONG_PASSWORD",
    "AuthResult",
    "Registry",
    "allowed_from",
]

# Stable refusal reasons: used verbatim in logs and metric labels.
LOCKED_OUT = "locked_out"
UNKNOWN_LOGIN = "unknown_login"
WRONG_PASSWORD = "wrong_password"
DISABLED = "disabled"
EXPIRED = "expired"
ADDRESS_NOT_ALLOWED = "address_not_allowed"
UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # a forwarded login the upstream could not be asked; not counted
BUSY = "busy"  # too many password checks waiting (sipserver.accounts.password_checks); not counted as a failure
REASONS = (LOCKED_OUT, UNKNOWN_LOGIN, WRONG_PASSWORD, DISABLED, EXPIRED, ADDRESS_NOT_ALLOWED, BUSY)

_LOOPBACKS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@attrs.frozen
class AuthResult:
    """The outcome of a login. ``account`` is set only on success, so a caller that tests
    ``result.account`` instead of ``result.ok`` still cannot let a refused login through."""

    account: AccountConfig | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None and self.account is not None


def _peer_addresses(peer: str | None) -> tuple[Address, ...] | None:
    """The forms of *peer* to test against networks, or None for a unix-socket (local) peer.

    IPv4-mapped IPv6 (``::ffff:10.1.2.3``, what a dual-stack socket reports) is tested as IPv4 and
    plain IPv4 is also tested in its mapped form, so either way of writing a network matches. A peer
    that is neither an IP address nor a socket path yields an empty tuple: it matches nothing.
    """
    if not peer or peer.startswith(("/", "@")):
        return None
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return ()
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        return (address,) if mapped is None else (mapped, address)
    return (address, ipaddress.IPv6Address(f"::ffff:{address}"))


def allowed_from(account: AccountConfig, peer: str) -> bool:
    """True when *account* may log in from *peer* (an IP string; "" or a path for a unix socket).

    An empty ``allow_from`` allows every address. A unix-socket peer is local: allowed when the list
    is empty or covers 127.0.0.1 or ::1.
    """
    if not account.allow_from:
        return True
    candidates = _peer_addresses(peer)
    if candidates is None:
        candidates = _LOOPBACKS
    return any(address in network for network in account.allow_from for address in candidates)


@attrs.frozen
class Registry:
    """Immutable lookup and authentication over one config; see the module docstring."""

    config: Config = attrs.field(repr=False)
    lockout: Lockout = attrs.field(eq=False, repr=False)
    _accounts: Mapping[str, AccountConfig] = attrs.field(repr=False)
    #: The field delimiters accounts use other than ``|``: a 93 arrives before the session knows
    #: its account, so these are the ones it may be written with (``sipserver.connection``).
    other_delimiters: frozenset[bytes] = attrs.field(default=frozenset(), repr=False)

    @classmethod
    def from_config(cls, config: Config, lockout: Lockout) -> Registry:
        accounts = MappingProxyType({account.login: account for account in config.accounts})
        others = frozenset(a.delimiter.encode("latin-1") for a in config.accounts if a.delimiter != "|")
        return cls(config=config, lockout=lockout, accounts=accounts, other_delimiters=others)

    def account(self, login: str) -> AccountConfig | None:
        return self._accounts.get(login)

    def institution(self, id: str) -> InstitutionConfig | None:
        return self.config.institutions.get(id)

    def listener_institution(self, listener_name: str) -> InstitutionConfig:
        """The institution served by the listener *listener_name* (KeyError for an unknown listener)."""
        return self.config.listener_institution(listener_name)

    def allowed_from(self, account: AccountConfig, peer: str) -> bool:
        return allowed_from(account, peer)

    def authenticate(
        self,
        login: str,
        password: str,
        peer: str,
        listener: str,
        today: datetime.date | None = None,
    ) -> AuthResult:
        """Check a 93 login (or a telnet login prompt) from *peer*.

        The order matters: a locked address is refused before any password work, so a lockout also
        sheds the scrypt cost of a guessing attack; an unknown login is verified against a dummy hash
        so that it costs as much as a wrong password and timing does not reveal which logins exist;
        the account's state and allow-list come after the password. *listener* names the listener the
        login arrived on; the outcome does not depend on it (one allow-list for every listener) and it
        is taken so that callers pass the full context for future per-listener rules.

        Every refusal counts as a failure for *peer*'s address in the lockout.
        """
        del listener  # see the docstring: deliberately not part of the decision
        refused, account, stored = self._before_password(login, password, peer)
        if refused is not None:
            return refused
        matches = passwords.verify_password(password or "", stored)
        return self._after_password(account, matches, peer, today)

    def authenticate_queued(
        self,
        login: str,
        password: str,
        peer: str,
        listener: str,
        checks: PasswordChecks,
    ) -> AuthResult | Deferred[AuthResult]:
        """:meth:`authenticate`, with the scrypt work (about 50 ms of CPU, the GIL released) queued
        in ``checks`` to run on a thread, so that a burst of wrong or unknown logins does not stall
        every other terminal (see :mod:`sipserver.accounts.password_checks` for the order the checks run
        in, and when one is refused without running). The result is immediate when no scrypt runs
        (a ``plain:`` password, a success already verified, a locked-out address); everything but
        the hash runs on the caller's thread, in the same order as :meth:`authenticate`."""
        del listener
        refused, account, stored = self._before_password(login, password, peer)
        if refused is not None:
            return refused
        if passwords.is_quick(password or "", stored):
            return self._after_password(account, passwords.verify_password(password or "", stored), peer, None)

        def judge(verdict: bool | Refused) -> AuthResult:
            if isinstance(verdict, bool):
                return self._after_password(account, verdict, peer, None)
            return AuthResult(None, verdict.value)

        # A known terminal where its account says it stands waits in the first lane.
        expected = account is not None and bool(account.allow_from) and allowed_from(account, peer)
        verify = functools.partial(passwords.verify_password, password or "", stored)
        return checks.submit(peer, verify, judge, expected=expected)

    def authenticate_forwarded(
        self,
        login: str,
        password: str,
        peer: str,
        forward: Callable[[str, str, str], Deferred[bool]] | None,
        location: str = "",
    ) -> AuthResult | Deferred[AuthResult]:
        """A login whose account says ``password: upstream``: the upstream SIP2 server judges the
        password (``forward(login, password, location)``, its 94), and everything else is judged
        here as for any account: the lockout first, the account's state and allow-list before the
        password leaves this daemon, and a refusal counts as a failure for the address. An upstream
        that cannot be asked refuses the login without counting it."""
        refused, account, _ = self._before_password(login, password, peer)
        if refused is not None:
            return refused
        assert account is not None
        early = self._after_password(account, True, peer, None, record=False)
        if not early.ok:
            return early
        if forward is None:
            return AuthResult(None, UPSTREAM_UNAVAILABLE)

        def judged(ok: bool) -> AuthResult:
            return self._after_password(account, ok, peer, None)

        def unreachable(failure: Any) -> AuthResult:
            failure.trap(BackendError)
            return AuthResult(None, UPSTREAM_UNAVAILABLE)

        return forward(login, password, location or account.location).addCallbacks(judged, unreachable)

    def _before_password(
        self, login: str, password: str, peer: str
    ) -> tuple[AuthResult | None, AccountConfig | None, str]:
        """A refusal that needs no password work, or the account and the hash to verify against
        (the dummy hash for an unknown login, so it costs what a wrong password costs)."""
        del password
        if self.lockout.is_locked(peer):
            self.lockout.record_failure(peer)
            return AuthResult(None, LOCKED_OUT), None, ""
        account = self._accounts.get(login or "")  # a 93 without CN or CO: refused like any other
        return None, account, account.password_hash if account is not None else passwords.dummy_hash()

    def _after_password(
        self, account: AccountConfig | None, matches: bool, peer: str, today: datetime.date | None,
        record: bool = True,
    ) -> AuthResult:
        if account is None:
            return self._refuse(peer, UNKNOWN_LOGIN)
        if not matches:
            return self._refuse(peer, WRONG_PASSWORD)
        if not account.enabled:
            return self._refuse(peer, DISABLED)
        if today is None:
            today = datetime.date.today()
        if account.expires is not None and today > account.expires:
            return self._refuse(peer, EXPIRED)
        if not allowed_from(account, peer):
            return self._refuse(peer, ADDRESS_NOT_ALLOWED)
        if record:
            self.lockout.record_success(peer)
        return AuthResult(account, None)

    def _refuse(self, peer: str, reason: str) -> AuthResult:
        self.lockout.record_failure(peer)
        return AuthResult(None, reason)
