"""Password hashing: format, verification, malformed values, the cache and the CLI body."""

from __future__ import annotations

import hmac
import io

import pytest

from sipserver.accounts import passwords
from sipserver.accounts.passwords import check_stored, hash_password, hash_password_main, is_plain, verify_password


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("s3cret-pw")


@pytest.fixture(autouse=True)
def _fresh_cache():
    passwords.clear_cache()
    yield
    passwords.clear_cache()


def test_hash_format(stored: str) -> None:
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(passwords.base64.b64decode(salt)) == 16
    assert len(passwords.base64.b64decode(key)) == 32
    assert "s3cret-pw" not in stored
    assert check_stored(stored) is None


def test_salt_is_random() -> None:
    assert hash_password("same") != hash_password("same")


def test_verify(stored: str) -> None:
    assert verify_password("s3cret-pw", stored)
    assert not verify_password("s3cret-PW", stored)
    assert not verify_password("", stored)


def test_non_ascii_password() -> None:
    stored = hash_password("pässwörd✓")
    assert verify_password("pässwörd✓", stored)
    assert not verify_password("passwort", stored)
    assert not verify_password("\udcff", stored)  # unencodable: False, not an exception


def test_plain() -> None:
    assert is_plain("plain:abc")
    assert not is_plain("scrypt$1")
    assert verify_password("abc", "plain:abc")
    assert not verify_password("abd", "plain:abc")
    assert not verify_password("", "plain:abc")
    assert verify_password("a:b$c", "plain:a:b$c")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "scrypt$",
        "scrypt$16384$8$1$c2FsdA==",
        "scrypt$16384$8$1$c2FsdA==$not base64!$",
        "scrypt$16384$8$1$c2FsdA==$!!!!",
        "scrypt$16385$8$1$c2FsdGZvcnRlc3Rpbmc=$" + "A" * 44,  # n not a power of two
        "scrypt$1$8$1$c2FsdGZvcnRlc3Rpbmc=$" + "A" * 44,
        "scrypt$x$8$1$c2FsdGZvcnRlc3Rpbmc=$" + "A" * 44,
        "scrypt$16384$0$1$c2FsdGZvcnRlc3Rpbmc=$" + "A" * 44,
        "scrypt$1073741824$8$1$c2FsdGZvcnRlc3Rpbmc=$" + "A" * 44,  # would need gigabytes
        "scrypt$16384$8$1$$" + "A" * 44,  # empty salt
        "scrypt$16384$8$1$c2FsdGZvcnRlc3Rpbmc=$QUFB",  # key too short
        "bcrypt$2b$12$abc",
        "PLAIN:abc",
    ],
)
def test_malformed_stored_values_are_false_not_errors(bad: str) -> None:
    assert verify_password("anything", bad) is False
    assert check_stored(bad) is not None


@pytest.mark.parametrize("bad", [None, 123, b"plain:x", "plain:"])
def test_check_stored_rejects(bad: object) -> None:
    problem = check_stored(bad)
    assert problem is not None
    if isinstance(bad, str):
        assert bad not in problem or bad == "plain:"


def test_verify_tolerates_non_strings() -> None:
    assert verify_password(None, "plain:x") is False  # type: ignore[arg-type]
    assert verify_password("x", None) is False  # type: ignore[arg-type]


def test_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch, stored: str) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    verify_password("nope", "plain:abc")
    verify_password("nope", stored)
    assert len(calls) == 2


def test_successful_verifications_are_cached(monkeypatch: pytest.MonkeyPatch, stored: str) -> None:
    calls = []
    real = passwords._scrypt

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(passwords, "_scrypt", counting)
    assert verify_password("s3cret-pw", stored)
    assert verify_password("s3cret-pw", stored)
    assert len(calls) == 1
    # A wrong password is never served from the cache and always pays the full cost.
    assert not verify_password("wrong", stored)
    assert not verify_password("wrong", stored)
    assert len(calls) == 3
    # The cache key holds a keyed digest, never the password itself.
    assert all("s3cret-pw" not in repr(key) for key in passwords._cache)


def test_cache_follows_the_stored_hash(stored: str) -> None:
    assert verify_password("s3cret-pw", stored)
    other = hash_password("new-password")
    assert not verify_password("s3cret-pw", other)  # a changed hash is a different cache key


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_CACHE_SIZE", 3)
    monkeypatch.setattr(passwords, "_scrypt", lambda password, salt, n, r, p, dklen: (password * 32).encode()[:32])
    import base64

    for i in range(10):
        key = base64.b64encode((str(i) * 32).encode()[:32]).decode()
        assert verify_password(str(i), f"scrypt$16384$8$1$c2FsdA==${key}")
    assert len(passwords._cache) == 3


def test_dummy_hash_is_stable_and_valid() -> None:
    assert passwords.dummy_hash() == passwords.dummy_hash()
    assert check_stored(passwords.dummy_hash()) is None


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_cli_reads_one_line_from_a_pipe(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", _Stdin("from-pipe\r\nsecond line\n", tty=False))
    assert hash_password_main([]) == 0
    out, err = capsys.readouterr()
    assert verify_password("from-pipe", out.strip())
    assert "from-pipe" not in out + err


def test_cli_refuses_an_empty_pipe(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", _Stdin("", tty=False))
    assert hash_password_main([]) == 1
    assert "empty" in capsys.readouterr().err


def test_cli_asks_twice_on_a_terminal(monkeypatch, capsys) -> None:
    answers = iter(["typed-pw", "typed-pw"])
    monkeypatch.setattr("sys.stdin", _Stdin("", tty=True))
    monkeypatch.setattr(passwords.getpass, "getpass", lambda prompt: next(answers))
    assert hash_password_main([]) == 0
    out, err = capsys.readouterr()
    assert verify_password("typed-pw", out.strip())
    assert "typed-pw" not in out + err


def test_cli_refuses_a_mismatch(monkeypatch, capsys) -> None:
    answers = iter(["typed-pw", "typo-pw"])
    monkeypatch.setattr("sys.stdin", _Stdin("", tty=True))
    monkeypatch.setattr(passwords.getpass, "getpass", lambda prompt: next(answers))
    assert hash_password_main([]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "do not match" in err
    assert "typed-pw" not in err and "typo-pw" not in err


def test_cli_interrupted(monkeypatch, capsys) -> None:
    def interrupted(prompt):
        raise KeyboardInterrupt

    monkeypatch.setattr("sys.stdin", _Stdin("", tty=True))
    monkeypatch.setattr(passwords.getpass, "getpass", interrupted)
    assert hash_password_main([]) == 1
    assert capsys.readouterr().out == ""
