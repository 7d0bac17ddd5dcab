"""Registry and lockout: every refusal reason, address matching, lockout over time with a fake clock."""

from __future__ import annotations

import datetime
from typing import Any

import attrs
import pytest
from twisted.internet.task import Clock

from sipserver.accounts import passwords, registry
from sipserver.accounts.lockout import Lockout, peer_key
from sipserver.accounts.registry import AuthResult, Registry, allowed_from
from sipserver.config import Config, parse_config

TODAY = datetime.date(2025, 6, 1)


def make_config(**account_overrides: Any) -> Config:
    base = {"institution": "MAIN", "password": "plain:pw"}
    accounts = [
        {**base, "login": "open"},
        {**base, "login": "v4", "allow_from": ["10.1.0.0/16"]},
        {**base, "login": "v6", "allow_from": ["2001:db8::/32"]},
        {**base, "login": "local", "allow_from": ["127.0.0.0/8"]},
        {**base, "login": "local6", "allow_from": ["::1"]},
        {**base, "login": "mapped_net", "allow_from": ["::ffff:10.9.0.0/112"]},
        {**base, "login": "off", "enabled": False},
        {**base, "login": "old", "expires": "2025-05-31"},
        {**base, "login": "today", "expires": "2025-06-01"},
    ]
    for account in accounts:
        account.update(account_overrides.get(account["login"], {}))
    data = {
        "listeners": [
            {"name": "raw", "transport": "raw", "endpoint": "tcp:6001"},
            {"name": "telnet", "transport": "telnet", "endpoint": "tcp:6023", "institution": "BRANCH"},
        ],
        "institutions": {"MAIN": {"backend": "db"}, "BRANCH": {"backend": "db"}},
        "accounts": accounts,
        "backends": {"db": {"type": "sqlite", "path": ":memory:"}},
    }
    return parse_config(data, "test.yaml")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lockout(clock: Clock) -> Lockout:
    return Lockout(failures=3, window=60, duration=300, clock=clock)


@pytest.fixture
def reg(lockout: Lockout) -> Registry:
    return Registry.from_config(make_config(), lockout)


def auth(reg: Registry, login: str, password: str = "pw", peer: str = "10.1.2.3", **kw: Any) -> AuthResult:
    return reg.authenticate(login, password, peer, "raw", today=kw.pop("today", TODAY), **kw)


# --------------------------------------------------------------------------------------------------
# Lookups


def test_lookups(reg: Registry) -> None:
    account = reg.account("open")
    assert account is not None and account.login == "open"
    assert reg.account("nobody") is None
    assert reg.account("OPEN") is None  # logins are exact
    institution = reg.institution("MAIN")
    assert institution is not None and institution.id == "MAIN"
    assert reg.institution("NOPE") is None
    assert reg.listener_institution("raw").id == "MAIN"
    assert reg.listener_institution("telnet").id == "BRANCH"
    with pytest.raises(KeyError):
        reg.listener_institution("nope")


def test_registry_is_immutable(reg: Registry) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        reg.config = make_config()  # type: ignore[misc]
    with pytest.raises(TypeError):
        reg._accounts["x"] = None  # type: ignore[index]
    assert "pw" not in repr(reg)


# --------------------------------------------------------------------------------------------------
# Authentication outcomes


def test_success(reg: Registry) -> None:
    result = auth(reg, "v4")
    assert result.ok and result.reason is None
    assert result.account is reg.account("v4")


@pytest.mark.parametrize(
    ("login", "password", "peer", "reason"),
    [
        ("nobody", "pw", "10.1.2.3", "unknown_login"),
        ("open", "wrong", "10.1.2.3", "wrong_password"),
        ("open", "", "10.1.2.3", "wrong_password"),
        ("off", "pw", "10.1.2.3", "disabled"),
        ("old", "pw", "10.1.2.3", "expired"),
        ("v4", "pw", "10.2.0.1", "address_not_allowed"),
        ("v6", "pw", "10.1.2.3", "address_not_allowed"),
    ],
    ids=["unknown", "wrong", "empty", "disabled", "expired", "v4-outside", "v6-only"],
)
def test_refusals(reg: Registry, login: str, password: str, peer: str, reason: str) -> None:
    result = auth(reg, login, password, peer)
    assert not result.ok
    assert result.reason == reason
    assert result.reason in registry.REASONS
    assert result.account is None  # never hand out an account on refusal


def test_missing_login_fields_are_refused_not_errors(reg: Registry) -> None:
    assert reg.authenticate(None, None, "10.1.2.3", "raw").reason == "unknown_login"  # type: ignore[arg-type]
    assert reg.authenticate("open", None, "10.1.2.3", "raw").reason == "wrong_password"  # type: ignore[arg-type]


def test_expiry_is_inclusive_of_the_last_day(reg: Registry) -> None:
    assert auth(reg, "today").ok
    assert auth(reg, "today", today=datetime.date(2025, 6, 2)).reason == "expired"


def test_today_defaults_to_the_real_date(reg: Registry) -> None:
    assert reg.authenticate("old", "pw", "10.1.2.3", "raw").reason == "expired"  # 2025-05-31 is past


def test_password_is_checked_before_account_state(reg: Registry) -> None:
    # A wrong password on a disabled, expired or address-restricted account says only "wrong_password".
    assert auth(reg, "off", "wrong").reason == "wrong_password"
    assert auth(reg, "old", "wrong").reason == "wrong_password"
    assert auth(reg, "v6", "wrong").reason == "wrong_password"


def test_unknown_login_pays_for_a_dummy_verification(reg: Registry, monkeypatch) -> None:
    checked: list[str] = []
    monkeypatch.setattr(registry.passwords, "verify_password", lambda pw, stored: checked.append(stored) or False)
    assert auth(reg, "nobody").reason == "unknown_login"
    assert checked == [passwords.dummy_hash()]


def test_real_hash_accounts(lockout: Lockout) -> None:
    config = make_config(open={"password": passwords.hash_password("Correct horse")})
    reg = Registry.from_config(config, lockout)
    assert auth(reg, "open", "Correct horse").ok
    assert auth(reg, "open", "correct horse").reason == "wrong_password"


def test_listener_does_not_change_the_outcome(reg: Registry) -> None:
    for listener in ("raw", "telnet", "anything"):
        assert reg.authenticate("v4", "pw", "10.2.0.1", listener, today=TODAY).reason == "address_not_allowed"
        assert reg.authenticate("v4", "pw", "10.1.0.1", listener, today=TODAY).ok


# --------------------------------------------------------------------------------------------------
# Allow-lists


@pytest.mark.parametrize(
    ("login", "peer", "allowed"),
    [
        ("open", "203.0.113.9", True),
        ("open", "2001:db8::1", True),
        ("open", "", True),
        ("open", "not an address", True),  # an empty list allows everything
        ("v4", "10.1.255.255", True),
        ("v4", "10.2.0.0", False),
        ("v4", "::ffff:10.1.2.3", True),  # dual-stack socket reporting an IPv4 client
        ("v4", "::ffff:10.2.2.3", False),
        ("v4", "2001:db8::1", False),
        ("v4", "10.1.2.3:5000", False),  # not an IP string: matches nothing
        ("v6", "2001:db8:ffff::1", True),
        ("v6", "2001:db9::1", False),
        ("v6", "10.1.2.3", False),
        ("v6", "fe80::1%eth0", False),
        ("mapped_net", "10.9.0.7", True),  # an IPv4 peer matches a network written IPv4-mapped
        ("mapped_net", "10.8.0.7", False),
        ("local", "127.0.0.1", True),
        ("local", "::ffff:127.0.0.1", True),
        ("local", "::1", False),
        ("local", "", True),  # unix socket: local
        ("local", "/run/sipserver/sip.sock", True),
        ("local6", "", True),
        ("local6", "/run/sip.sock", True),
        ("local6", "::1", True),
        ("v4", "", False),  # unix socket, but the list covers no loopback address
        ("v4", "/run/sip.sock", False),
        ("v6", "", False),
    ],
)
def test_allowed_from(reg: Registry, login: str, peer: str, allowed: bool) -> None:
    account = reg.account(login)
    assert account is not None
    assert allowed_from(account, peer) is allowed
    assert reg.allowed_from(account, peer) is allowed


def test_address_refusal_through_authenticate(reg: Registry) -> None:
    assert auth(reg, "local", peer="::ffff:127.0.0.1").ok
    assert auth(reg, "local", peer="").ok
    assert auth(reg, "local", peer="192.0.2.1").reason == "address_not_allowed"


# --------------------------------------------------------------------------------------------------
# Lockout through the registry


def test_lockout_after_failures_across_connections(reg: Registry, clock: Clock) -> None:
    # Three "connections" from the same address (ports never reach the registry), one failure each.
    assert auth(reg, "open", "a", peer="192.0.2.7").reason == "wrong_password"
    assert auth(reg, "nobody", "b", peer="192.0.2.7").reason == "unknown_login"
    assert auth(reg, "v4", "pw", peer="192.0.2.7").reason == "address_not_allowed"
    # Now even the right password from that address is refused ...
    assert auth(reg, "open", "pw", peer="192.0.2.7").reason == "locked_out"
    # ... but other addresses are unaffected.
    assert auth(reg, "open", "pw", peer="192.0.2.8").ok
    clock.advance(299)
    assert auth(reg, "open", "pw", peer="192.0.2.7").reason == "locked_out"
    clock.advance(1)
    assert auth(reg, "open", "pw", peer="192.0.2.7").ok


def test_locked_peer_does_not_get_its_password_checked(reg: Registry, lockout: Lockout, monkeypatch) -> None:
    for _ in range(3):
        lockout.record_failure("192.0.2.7")
    calls: list[Any] = []
    monkeypatch.setattr(registry.passwords, "verify_password", lambda *a: calls.append(a) or True)
    assert auth(reg, "open", "pw", peer="192.0.2.7").reason == "locked_out"
    assert auth(reg, "nobody", "pw", peer="192.0.2.7").reason == "locked_out"
    assert calls == []


def test_mapped_and_plain_ipv4_share_one_count(reg: Registry) -> None:
    auth(reg, "open", "x", peer="192.0.2.7")
    auth(reg, "open", "x", peer="::ffff:192.0.2.7")
    auth(reg, "open", "x", peer="192.0.2.7")
    assert auth(reg, "open", "pw", peer="::ffff:192.0.2.7").reason == "locked_out"


def test_success_resets_the_count(reg: Registry) -> None:
    auth(reg, "open", "x", peer="192.0.2.7")
    auth(reg, "open", "x", peer="192.0.2.7")
    assert auth(reg, "open", "pw", peer="192.0.2.7").ok
    auth(reg, "open", "x", peer="192.0.2.7")
    auth(reg, "open", "x", peer="192.0.2.7")
    assert auth(reg, "open", "pw", peer="192.0.2.7").ok


def test_reload_keeps_the_lockout(reg: Registry, lockout: Lockout) -> None:
    for _ in range(3):
        auth(reg, "open", "x", peer="192.0.2.7")
    reloaded = Registry.from_config(make_config(open={"password": "plain:new"}), lockout)
    assert auth(reloaded, "open", "new", peer="192.0.2.7").reason == "locked_out"
    assert auth(reloaded, "open", "new", peer="192.0.2.8").ok
    assert auth(reloaded, "open", "pw", peer="192.0.2.8").reason == "wrong_password"
    assert auth(reg, "open", "pw", peer="192.0.2.9").ok  # the old registry still answers as before


# --------------------------------------------------------------------------------------------------
# Lockout on its own


def fail(lockout: Lockout, peer: str, times: int) -> list[bool]:
    return [lockout.record_failure(peer) for _ in range(times)]


def test_lock_after_n_failures_in_the_window(lockout: Lockout, clock: Clock) -> None:
    assert fail(lockout, "192.0.2.1", 2) == [False, False]
    assert not lockout.is_locked("192.0.2.1")
    assert lockout.record_failure("192.0.2.1") is True  # this one triggered the lock
    assert lockout.is_locked("192.0.2.1")
    assert lockout.record_failure("192.0.2.1") is False  # already locked: not a new lockout
    assert lockout.locked_count() == 1
    clock.advance(300)
    assert not lockout.is_locked("192.0.2.1")
    assert lockout.locked_count() == 0
    # After the lock the count starts from zero.
    assert fail(lockout, "192.0.2.1", 3) == [False, False, True]


def test_window_slides(lockout: Lockout, clock: Clock) -> None:
    lockout.record_failure("192.0.2.1")  # t=0
    clock.advance(30)
    lockout.record_failure("192.0.2.1")  # t=30
    clock.advance(31)
    assert lockout.record_failure("192.0.2.1") is False  # t=61: the t=0 failure has left the window
    clock.advance(28)
    assert lockout.record_failure("192.0.2.1") is True  # t=89: 30, 61, 89 are within 60 s


def test_failures_spread_out_never_lock(lockout: Lockout, clock: Clock) -> None:
    for _ in range(20):
        assert lockout.record_failure("192.0.2.1") is False
        clock.advance(31)
    assert not lockout.is_locked("192.0.2.1")


def test_success_clears_failures_but_not_a_running_lock(lockout: Lockout) -> None:
    fail(lockout, "192.0.2.1", 3)
    lockout.record_success("192.0.2.1")
    assert lockout.is_locked("192.0.2.1")


def test_reconfigure(lockout: Lockout, clock: Clock) -> None:
    fail(lockout, "192.0.2.1", 2)
    lockout.reconfigure(failures=2, window=60, duration=10)
    assert lockout.is_locked("192.0.2.1") is False
    assert lockout.record_failure("192.0.2.1") is True  # counts survive; limit is now 2
    clock.advance(5)
    lockout.reconfigure(failures=2, window=60, duration=4)  # shortening ends the running lock
    assert not lockout.is_locked("192.0.2.1")
    lockout.reconfigure(failures=5, window=60, duration=300)
    assert fail(lockout, "192.0.2.2", 5)[-1] is True


def test_zero_failures_disables(clock: Clock) -> None:
    lockout = Lockout(failures=3, window=60, duration=300, clock=clock)
    fail(lockout, "192.0.2.1", 3)
    lockout.reconfigure(failures=0, window=60, duration=300)
    assert not lockout.is_locked("192.0.2.1")
    assert fail(lockout, "192.0.2.1", 100) == [False] * 100
    assert len(lockout) == 0


@pytest.mark.parametrize(("failures", "window", "duration"), [(-1, 1, 1), (1.5, 1, 1), (True, 1, 1), (1, 0, 1)])
def test_bad_limits(clock: Clock, failures: Any, window: Any, duration: Any) -> None:
    with pytest.raises(ValueError):
        Lockout(failures, window, duration, clock=clock)


def test_from_config(clock: Clock) -> None:
    lockout = Lockout.from_config(make_config().server.lockout, clock=clock)
    assert (lockout.failures, lockout.window, lockout.duration) == (5, 60.0, 300.0)


def test_default_clock_is_the_reactor() -> None:
    from twisted.internet import reactor

    assert Lockout(1, 1, 1)._clock is reactor


def test_memory_is_bounded(clock: Clock) -> None:
    peers = [f"10.0.{i // 256}.{i % 256}" for i in range(1000)]
    counting = Lockout(failures=2, window=60, duration=300, clock=clock, max_peers=100)
    for peer in peers:
        counting.record_failure(peer)
    assert len(counting._failures) == 100
    locking = Lockout(failures=1, window=60, duration=300, clock=clock, max_peers=100)
    for peer in peers:
        assert locking.record_failure(peer) is True
    assert len(locking._locked) == 100
    assert locking.is_locked(peers[-1])  # the most recent locks are kept
    assert not locking.is_locked(peers[0])


def test_old_entries_are_pruned(clock: Clock) -> None:
    lockout = Lockout(failures=2, window=60, duration=300, clock=clock)
    for i in range(50):
        lockout.record_failure(f"10.0.0.{i}")
    fail(lockout, "10.0.1.1", 2)
    assert len(lockout) == 51
    clock.advance(301)
    lockout.record_failure("10.0.2.1")
    assert len(lockout) == 1


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("", "local"),
        ("/run/sip.sock", "local"),
        ("weird", "weird"),
    ],
)
def test_peer_key(peer: str, key: str) -> None:
    assert peer_key(peer) == key
