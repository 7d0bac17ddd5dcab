"""Config loading: defaults, every validation error path, relative paths, endpoint rewriting."""

from __future__ import annotations

import copy
import datetime
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from sipserver.config import (
    PERMISSIONS,
    AccountConfig,
    Config,
    ConfigError,
    LockoutConfig,
    PolicyConfig,
    ServerConfig,
    load_config,
    parse_config,
    resolve_endpoint,
)

ROOT = Path(__file__).resolve().parent.parent
FILE = "/srv/sip/etc/sip.yaml"
SECRET = "do-not-print-me"


def minimal() -> dict[str, Any]:
    return {
        "listeners": [{"name": "raw", "transport": "raw", "endpoint": "tcp:6001"}],
        "institutions": {"MAIN": {"backend": "db"}},
        "accounts": [{"login": "sip_sco_main", "password": f"plain:{SECRET}", "institution": "MAIN"}],
        "backends": {"db": {"type": "sqlite", "path": ":memory:"}},
    }


def parse(data: dict[str, Any]) -> Config:
    return parse_config(data, FILE)


def with_change(path: str, value: Any) -> dict[str, Any]:
    """minimal() with the value at a dotted path set (numbers index lists); DELETE removes it."""
    data = minimal()
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, dict) and part not in node:
            node[part] = {}
        node = node[part]
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return data


DELETE = object()


# --------------------------------------------------------------------------------------------------
# Defaults and the happy path


def test_defaults() -> None:
    config = parse(minimal())
    assert config.path == FILE
    assert config.server == ServerConfig()
    assert config.server.max_connections == 10000
    assert config.server.max_frame_bytes == 8192
    assert config.server.lockout == LockoutConfig(5, 60.0, 300.0)
    assert config.server.workers == 1
    assert (config.logging.level, config.logging.format, config.logging.destination) == ("info", "text", "stdout")
    assert config.logging.syslog_facility == "local6"
    assert (config.logging.file, config.logging.syslog_socket) == (None, "/dev/log")
    assert config.http is None
    [listener] = config.listeners
    assert (listener.status_before_login, listener.max_connections, listener.institution) == (False, None, None)
    institution = config.institutions["MAIN"]
    assert (institution.library_name, institution.currency, institution.language) == ("MAIN", "USD", "000")
    assert institution.policy == PolicyConfig(True, True, True, True, True, 30.0, 3)
    [account] = config.accounts
    assert account.location == ""
    assert account.allow_from == ()
    assert account.permissions == PERMISSIONS
    assert (account.encoding, account.error_detection, account.terminator, account.delimiter) == (
        "utf-8",
        "auto",
        b"\r",
        "|",
    )
    assert account.expires is None and account.enabled is True


def test_a_log_file_is_found_beside_the_config_and_one_set_for_another_destination_is_a_warning() -> None:
    data = minimal()
    data["logging"] = {"destination": "FILE", "file": "log/sip.log", "syslog_socket": "run/log"}
    config = parse(data)
    assert (config.logging.destination, config.logging.file) == ("file", "/srv/sip/etc/log/sip.log")
    assert config.logging.syslog_socket == "/srv/sip/etc/run/log"
    data["logging"] = {"file": "/var/log/sip.log"}
    config = parse(data)
    assert config.logging.file is None
    [warning] = [w for w in config.warnings if "logging" in w]  # beside the plain-password warnings
    assert warning == f"{FILE}: logging.file: not used, the destination is stdout (set destination: file)"


def test_full_values() -> None:
    data = minimal()
    data["server"] = {
        "name": "X",
        "max_connections": 5,
        "max_frame_bytes": 256,
        "login_timeout": 1.5,
        "idle_timeout": 10,
        "lockout": {"failures": 0, "window": 1, "duration": 2},
        "workers": 4,
    }
    data["logging"] = {"level": "DEBUG", "format": "json", "destination": "syslog", "syslog_facility": "local0"}
    data["http"] = {"endpoint": "tcp:8080:interface=127.0.0.1"}
    data["listeners"][0].update(status_before_login=True, max_connections=7, institution="MAIN")
    data["institutions"]["MAIN"].update(
        library_name="Demo", currency="EUR", language=1, policy={"checkout": False, "timeout": 99.9, "retries": 0}
    )
    data["accounts"][0].update(
        location="DESK",
        allow_from=["10.0.0.1/8", "::1/128"],
        permissions=["patron", "checkin"],
        encoding="UTF8",
        error_detection="never",
        terminator="crlf",
        delimiter="^",
        expires="2030-12-31",
        enabled=False,
    )
    config = parse(data)
    assert config.server.lockout.failures == 0
    assert config.server.login_timeout == 1.5 and isinstance(config.server.idle_timeout, float)
    assert config.logging.level == "debug"
    assert config.http is not None and config.http.endpoint == "tcp:8080:interface=127.0.0.1"
    assert (config.http.max_connections, config.http.timeout) == (64, 10.0)  # the status page's own budget
    assert config.listeners[0].max_connections == 7
    institution = config.institutions["MAIN"]
    assert (institution.library_name, institution.currency, institution.language) == ("Demo", "EUR", "001")
    assert institution.policy.checkout is False and institution.policy.timeout == 99.9
    account = config.accounts[0]
    assert account.allow_from == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert account.permissions == frozenset({"patron", "checkin"})
    assert account.encoding == "utf-8"
    assert account.terminator == b"\r\n"
    assert account.delimiter == "^"
    assert account.expires == datetime.date(2030, 12, 31)
    assert account.enabled is False


def test_objects_are_frozen_and_mappings_read_only() -> None:
    config = parse(minimal())
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.path = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.institutions["X"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        config.backends["db"].options["path"] = "x"  # type: ignore[index]
    assert attrs.evolve(config.server, workers=2).workers == 2


def test_account_repr_hides_the_password() -> None:
    account = parse(minimal()).accounts[0]
    assert SECRET not in repr(account)
    assert "password" not in repr(account)
    assert SECRET not in repr(parse(minimal()))


def test_account_config_constructs_with_defaults() -> None:
    account = AccountConfig(login="a", password_hash="plain:x", institution="M", allow_from=["10.0.0.0/8"])
    assert account.allow_from == (ipaddress.ip_network("10.0.0.0/8"),)
    assert account.permissions == PERMISSIONS


def test_plain_password_warning_names_the_login_not_the_value() -> None:
    config = parse(minimal())
    [warning] = config.warnings
    assert "sip_sco_main" in warning and "accounts[0].password" in warning and FILE in warning
    assert SECRET not in warning


def test_hashed_password_gives_no_warning() -> None:
    data = with_change("accounts.0.password", "scrypt$16384$8$1$c2FsdGZvcnRlc3Rpbmc=$" + "A" * 43 + "=")
    assert parse(data).warnings == ()


def test_listener_lookup_and_institution() -> None:
    data = minimal()
    data["institutions"]["BRANCH"] = {"backend": "db"}
    data["listeners"].append({"name": "branch", "transport": "telnet", "endpoint": "tcp:6023", "institution": "BRANCH"})
    config = parse(data)
    assert config.listener("branch").transport == "telnet"
    with pytest.raises(KeyError):
        config.listener("nope")
    assert config.listener_institution(config.listener("raw")).id == "MAIN"  # the first one
    assert config.listener_institution("branch").id == "BRANCH"


def test_accounts_may_be_empty() -> None:
    assert parse(with_change("accounts", None)).accounts == ()
    assert parse(with_change("accounts", DELETE)).accounts == ()


def test_empty_sections_mean_defaults() -> None:
    data = minimal()
    data.update(server=None, logging=None)
    data["institutions"]["MAIN"]["policy"] = None
    config = parse(data)
    assert config.server == ServerConfig()
    assert config.institutions["MAIN"].policy == PolicyConfig()


def test_single_strings_are_accepted_for_lists() -> None:
    data = with_change("accounts.0.allow_from", "192.168.1.0/24")
    data["accounts"][0]["permissions"] = "patron"
    account = parse(data).accounts[0]
    assert account.allow_from == (ipaddress.ip_network("192.168.1.0/24"),)
    assert account.permissions == {"patron"}


def test_empty_permissions_is_allowed() -> None:
    assert parse(with_change("accounts.0.permissions", [])).accounts[0].permissions == frozenset()


# --------------------------------------------------------------------------------------------------
# Every error names the file, the key path and the expectation

E = pytest.param

BAD: list[Any] = [
    E(lambda d: d.update(serve={}), "serve", "unknown key (did you mean 'server'?)", id="unknown-top-key"),
    E(lambda d: d.pop("listeners"), "listeners", "required key is missing", id="no-listeners"),
    E(lambda d: d.pop("institutions"), "institutions", "required key is missing", id="no-institutions"),
    E(lambda d: d.pop("backends"), "backends", "required key is missing", id="no-backends"),
    E(lambda d: d.update(server=[]), "server", "expected a mapping, got a list", id="server-list"),
    E(lambda d: d.update(server={"workers": 0}), "server.workers", "expected an integer >= 1", id="workers-0"),
    E(lambda d: d.update(server={"workers": True}), "server.workers", "got true", id="workers-bool"),
    E(lambda d: d.update(server={"name": ""}), "server.name", "expected a non-empty string", id="name-empty"),
    E(lambda d: d.update(server={"max_connections": 0}), "server.max_connections", ">= 1", id="maxconn-0"),
    E(
        lambda d: d.update(server={"max_frame_bytes": 255}),
        "server.max_frame_bytes",
        "expected an integer from 256 to 1048576, got 255",
        id="frame-small",
    ),
    E(lambda d: d.update(server={"max_frame_bytes": 2**21}), "server.max_frame_bytes", "1048576", id="frame-big"),
    E(lambda d: d.update(server={"max_frame_bytes": 300.5}), "server.max_frame_bytes", "integer", id="frame-float"),
    E(lambda d: d.update(server={"login_timeout": 0}), "server.login_timeout", "greater than 0", id="login-0"),
    E(lambda d: d.update(server={"idle_timeout": "1h"}), "server.idle_timeout", "got '1h'", id="idle-str"),
    E(
        lambda d: d.update(server={"idle_timeout": float("inf")}),
        "server.idle_timeout",
        "greater than 0",
        id="idle-inf",
    ),
    E(lambda d: d.update(server={"lockout": {"failures": -1}}), "server.lockout.failures", ">= 0", id="lock-neg"),
    E(lambda d: d.update(server={"lockout": {"window": 0}}), "server.lockout.window", "greater than 0", id="win-0"),
    E(lambda d: d.update(server={"lockout": {"duraton": 1}}), "server.lockout.duraton", "'duration'", id="lock-typo"),
    E(
        lambda d: d.update(logging={"level": "verbose"}),
        "logging.level",
        "expected one of debug, info, warn, error, got 'verbose'",
        id="level",
    ),
    E(lambda d: d.update(logging={"format": "xml"}), "logging.format", "text, json", id="format"),
    E(lambda d: d.update(logging={"destination": "journal"}), "logging.destination", "stdout, file, syslog", id="dest"),
    E(
        lambda d: d.update(logging={"destination": "file"}),
        "logging.file",
        "required when destination is file",
        id="dest-file-no-path",
    ),
    E(lambda d: d.update(logging={"destination": "file", "file": 7}), "logging.file", "non-empty string", id="file-7"),
    E(lambda d: d.update(logging={"syslog_socket": ""}), "logging.syslog_socket", "non-empty string", id="sock-empty"),
    E(lambda d: d.update(logging={"syslog_facility": "local9"}), "logging.syslog_facility", "local7", id="facility"),
    E(lambda d: d.update(http={}), "http.endpoint", "required key is missing", id="http-no-endpoint"),
    E(lambda d: d.update(http={"endpoint": "8080"}), "http.endpoint", "tcp:6001", id="http-bad-endpoint"),
    E(
        lambda d: d.update(http={"endpoint": "tcp:8080", "max_connections": 0}),
        "http.max_connections",
        "expected an integer >= 1, got 0",
        id="http-max-0",
    ),
    E(
        lambda d: d.update(http={"endpoint": "tcp:8080", "timeout": -1}),
        "http.timeout",
        "greater than 0",
        id="http-timeout",
    ),
    E(lambda d: d.update(listeners=[]), "listeners", "expected a non-empty list of listeners", id="listeners-empty"),
    E(lambda d: d.update(listeners={"raw": {}}), "listeners", "got a mapping", id="listeners-mapping"),
    E(lambda d: d["listeners"].append("raw"), "listeners[1]", "expected a mapping", id="listener-str"),
    E(lambda d: d["listeners"][0].pop("name"), "listeners[0].name", "required key is missing", id="listener-noname"),
    E(lambda d: d["listeners"][0].pop("endpoint"), "listeners[0].endpoint", "missing", id="listener-noendpoint"),
    E(
        lambda d: d["listeners"][0].update(transport="tls"),
        "listeners[0].transport",
        "expected one of raw, telnet, got 'tls'",
        id="transport",
    ),
    E(
        lambda d: d["listeners"][0].update(endpoint="tpc:6001"),
        "listeners[0].endpoint",
        "starting with tcp:, tcp6:, ssl:, unix:, systemd:, tls:",
        id="endpoint-prefix",
    ),
    E(lambda d: d["listeners"][0].update(endpoint="tcp:http"), "listeners[0].endpoint", "port", id="port-name"),
    E(lambda d: d["listeners"][0].update(endpoint="tcp:70000"), "listeners[0].endpoint", "65535", id="port-big"),
    E(lambda d: d["listeners"][0].update(endpoint="tcp:interface=::1"), "listeners[0].endpoint", "port", id="noport"),
    E(lambda d: d["listeners"][0].update(endpoint="unix:"), "listeners[0].endpoint", "socket path", id="unix-empty"),
    E(lambda d: d["listeners"][0].update(endpoint="tcp:6001\\"), "listeners[0].endpoint", "backslash", id="backslash"),
    E(lambda d: d["listeners"][0].update(endpoint=6001), "listeners[0].endpoint", "got 6001", id="endpoint-int"),
    E(
        lambda d: d["listeners"][0].update(status_before_login="yes"),
        "listeners[0].status_before_login",
        "expected true or false",
        id="bool-str",
    ),
    E(lambda d: d["listeners"][0].update(max_connections=0), "listeners[0].max_connections", ">= 1", id="l-max"),
    E(
        lambda d: d["listeners"][0].update(institution="MIAN"),
        "listeners[0].institution",
        "expected an institution id defined under institutions (MAIN), got 'MIAN' (did you mean 'MAIN'?)",
        id="listener-institution",
    ),
    E(
        lambda d: d["listeners"].append(dict(d["listeners"][0])),
        "listeners[1].name",
        "duplicate listener name 'raw' (already used by listeners[0])",
        id="dup-listener",
    ),
    E(
        lambda d: d["listeners"][0].update(allow_from=[]),
        "listeners[0].allow_from",
        "unknown key; expected one of name,",
        id="listener-unknown-key",
    ),
    E(lambda d: d.update(institutions={}), "institutions", "non-empty mapping", id="institutions-empty"),
    E(lambda d: d.update(institutions={1: {}}), "institutions", "got 1", id="institution-int-id"),
    E(lambda d: d["institutions"]["MAIN"].pop("backend"), "institutions.MAIN.backend", "missing", id="inst-nobackend"),
    E(
        lambda d: d["institutions"]["MAIN"].update(backend="dbx"),
        "institutions.MAIN.backend",
        "expected the name of a backend under backends (db), got 'dbx' (did you mean 'db'?)",
        id="inst-backend",
    ),
    E(lambda d: d["institutions"]["MAIN"].update(currency="usd"), "institutions.MAIN.currency", "3 upper", id="cur"),
    E(lambda d: d["institutions"]["MAIN"].update(language="en"), "institutions.MAIN.language", "3-digit", id="lang"),
    E(lambda d: d["institutions"]["MAIN"].update(language=1000), "institutions.MAIN.language", "1000", id="lang-big"),
    E(
        lambda d: d["institutions"]["MAIN"].update(library_name="A|B"),
        "institutions.MAIN.library_name",
        "'|'",
        id="libname-pipe",
    ),
    E(
        lambda d: d["institutions"]["MAIN"].update(policy={"timeout": 100}),
        "institutions.MAIN.policy.timeout",
        "greater than 0 and at most 99.9, got 100",
        id="policy-timeout",
    ),
    E(
        lambda d: d["institutions"]["MAIN"].update(policy={"retries": 1000}),
        "institutions.MAIN.policy.retries",
        "from 0 to 999",
        id="policy-retries",
    ),
    E(
        lambda d: d["institutions"]["MAIN"].update(policy={"renew": True}),
        "institutions.MAIN.policy.renew",
        "did you mean 'renewal'",
        id="policy-typo",
    ),
    E(
        lambda d: d["institutions"]["MAIN"].update(policy={"checkin": 1}),
        "institutions.MAIN.policy.checkin",
        "expected true or false, got 1",
        id="policy-bool",
    ),
    E(lambda d: d.update(accounts={"a": 1}), "accounts", "expected a list, got a mapping", id="accounts-mapping"),
    E(lambda d: d["accounts"][0].pop("login"), "accounts[0].login", "required key is missing", id="no-login"),
    E(lambda d: d["accounts"][0].pop("password"), "accounts[0].password", "required key is missing", id="no-pw"),
    E(lambda d: d["accounts"][0].pop("institution"), "accounts[0].institution", "missing", id="no-institution"),
    E(lambda d: d["accounts"][0].update(login=""), "accounts[0].login", "non-empty string", id="login-empty"),
    E(lambda d: d["accounts"][0].update(login="a|b"), "accounts[0].login", "'|'", id="login-pipe"),
    E(
        lambda d: d["accounts"].append(dict(d["accounts"][0])),
        "accounts[1].login",
        "duplicate login 'sip_sco_main' (already used by accounts[0])",
        id="dup-login",
    ),
    E(
        lambda d: d["accounts"][0].update(institution="BRANCH"),
        "accounts[0].institution",
        "expected an institution id defined under institutions (MAIN), got 'BRANCH'",
        id="account-institution",
    ),
    E(
        lambda d: d["accounts"][0].update(allow_form=["10.0.0.0/8"]),
        "accounts[0].allow_form",
        "unknown key (did you mean 'allow_from'?)",
        id="allow-from-typo",
    ),
    E(
        lambda d: d["accounts"][0].update(allow_from=["127.0.0.0/8", "foo"]),
        "accounts[0].allow_from[1]",
        "expected an IPv4 or IPv6 network like 10.0.0.0/8, got 'foo'",
        id="allow-from-bad",
    ),
    E(
        lambda d: d["accounts"][0].update(allow_from=[10]),
        "accounts[0].allow_from[0]",
        "got 10",
        id="allow-from-int",
    ),
    E(
        lambda d: d["accounts"][0].update(allow_from=None),
        "accounts[0].allow_from",
        "got null (omit the key or write [] to allow any address)",
        id="allow-from-null",
    ),
    E(
        lambda d: d["accounts"][0].update(permissions=["patron", "chekout"]),
        "accounts[0].permissions[1]",
        "unknown permission 'chekout' (did you mean 'checkout'?); expected one of patron, checkout,",
        id="permission",
    ),
    E(lambda d: d["accounts"][0].update(permissions=None), "accounts[0].permissions", "got null", id="perm-null"),
    E(
        lambda d: d["accounts"][0].update(encoding="utf-16"),
        "accounts[0].encoding",
        "expected one of utf-8, cp850, latin-1, ascii, got 'utf-16'",
        id="encoding",
    ),
    E(lambda d: d["accounts"][0].update(encoding="klingon"), "accounts[0].encoding", "klingon", id="enc-unknown"),
    E(
        lambda d: d["accounts"][0].update(error_detection="on"),
        "accounts[0].error_detection",
        "auto, always, never",
        id="error-detection",
    ),
    E(lambda d: d["accounts"][0].update(terminator="LF"), "accounts[0].terminator", "CR, CRLF", id="terminator"),
    E(lambda d: d["accounts"][0].update(delimiter="||"), "accounts[0].delimiter", "one printable", id="delim-2"),
    E(lambda d: d["accounts"][0].update(delimiter="A"), "accounts[0].delimiter", "not a letter", id="delim-letter"),
    E(lambda d: d["accounts"][0].update(delimiter="\t"), "accounts[0].delimiter", "'\\t'", id="delim-tab"),
    E(
        lambda d: d["accounts"][0].update(expires="next year"),
        "accounts[0].expires",
        "expected a date like 2030-12-31, got 'next year'",
        id="expires-str",
    ),
    E(
        lambda d: d["accounts"][0].update(expires=datetime.datetime(2030, 1, 1, 12, 0)),
        "accounts[0].expires",
        "expected a date",
        id="expires-datetime",
    ),
    E(lambda d: d["accounts"][0].update(enabled="no"), "accounts[0].enabled", "true or false", id="enabled"),
    E(lambda d: d.update(backends={}), "backends", "non-empty mapping of backend names", id="backends-empty"),
    E(lambda d: d.update(backends={"db": "sqlite"}), "backends.db", "mapping of backend options", id="backend-str"),
    E(lambda d: d["backends"]["db"].pop("type"), "backends.db.type", "required key is missing", id="backend-type"),
    E(lambda d: d["backends"]["db"].update(type=""), "backends.db.type", "non-empty string", id="backend-type-empty"),
    E(lambda d: d["backends"]["db"].update({3: "x"}), "backends.db", "string keys", id="backend-int-key"),
    E(lambda d: d.update({7: 1}), None, "expected string keys, got 7", id="top-int-key"),
]


@pytest.mark.parametrize(("mutate", "key", "expected"), BAD)
def test_errors_name_file_key_and_expectation(
    mutate: Callable[[dict[str, Any]], Any], key: str | None, expected: str
) -> None:
    data = minimal()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert "\n" not in message
    prefix = f"{FILE}: {key}: " if key else f"{FILE}: "
    assert message.startswith(prefix), message
    if key:
        assert info.value.key is not None and info.value.key.endswith(key)
    assert expected in message, message
    assert SECRET not in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "password",
    [
        "hunter2",  # neither a hash nor plain:
        "scrypt$16384$8$1$hunter2",  # a truncated hash
        "plain:",
        12345,
        None,
    ],
    ids=["not-a-hash", "truncated-hash", "empty-plain", "int", "null"],
)
def test_bad_password_values_are_never_echoed(password: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse(with_change("accounts.0.password", password))
    message = str(info.value)
    assert message.startswith(f"{FILE}: accounts[0].password: "), message
    assert "value not shown" in message
    if password not in (None, "plain:"):
        assert "hunter2" not in message and "12345" not in message


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"expected a mapping at the top level .* got an empty file"):
        parse_config(None, FILE)
    with pytest.raises(ConfigError, match=r"got a list$"):
        parse_config([1], FILE)


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        parse(with_change("accounts.0.zzz", 1))
    assert str(info.value) == (
        f"{FILE}: accounts[0].zzz: unknown key; expected one of login, password, institution, location, branch, "
        "allow_from, permissions, encoding, error_detection, terminator, delimiter, expires, enabled, "
        "checkin_not_on_loan_ok, profile, upstream_login"
    )


def test_odd_institution_ids_are_quoted_in_key_paths() -> None:
    data = minimal()
    data["institutions"] = {"Main Library": {"backend": "nope"}}
    with pytest.raises(ConfigError, match=r"institutions\['Main Library'\]\.backend: "):
        parse(data)


# --------------------------------------------------------------------------------------------------
# Relative paths


def test_backend_paths_are_relative_to_the_config_file() -> None:
    data = minimal()
    data["backends"]["db"] = {
        "type": "sqlite",
        "path": "../var/db.sqlite3",
        "seed": "demo.yaml",
        "ca_file": "certs/ca.pem",
        "abs_file": "/etc/ssl/x.pem",
        "dsn": "host=db",
        "nested": {"list": [1, 2]},
        "count_file": 3,
    }
    options = parse(data).backends["db"].options
    assert options["path"] == "/srv/sip/var/db.sqlite3"
    assert options["seed"] == "/srv/sip/etc/demo.yaml"
    assert options["ca_file"] == "/srv/sip/etc/certs/ca.pem"
    assert options["abs_file"] == "/etc/ssl/x.pem"
    assert options["dsn"] == "host=db"
    assert options["nested"]["list"] == (1, 2)
    assert options["count_file"] == 3
    assert "type" not in options
    assert parse(minimal()).backends["db"].options["path"] == ":memory:"
    assert parse(minimal()).backends["db"].type == "sqlite"


def test_relative_config_path_resolves_against_the_working_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    data = with_change("backends.db.path", "x.db")
    config = parse_config(data, "conf/sip.yaml")
    assert config.path == "conf/sip.yaml"
    assert config.backends["db"].options["path"] == os.path.join(str(tmp_path), "conf", "x.db")


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("tcp:6001:interface=127.0.0.1", "tcp:6001:interface=127.0.0.1"),
        ("tcp6:port=6001:interface=\\:\\:1", "tcp6:port=6001:interface=\\:\\:1"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
        ("unix:sip.sock", "unix:/srv/sip/etc/sip.sock"),
        ("unix:address=../run/sip.sock:mode=660", "unix:address=/srv/sip/run/sip.sock:mode=660"),
        ("unix:/run/sip.sock:lockfile=1", "unix:/run/sip.sock:lockfile=1"),
        (
            "ssl:6443:privateKey=tls/key.pem:certKey=tls/cert.pem",
            "ssl:6443:privateKey=/srv/sip/etc/tls/key.pem:certKey=/srv/sip/etc/tls/cert.pem",
        ),
        (
            "ssl:6443:privateKey=/etc/ssl/k.pem:extraCertChain=chain.pem:caCertsDir=ca:dhParameters=dh.pem",
            "ssl:6443:privateKey=/etc/ssl/k.pem:extraCertChain=/srv/sip/etc/chain.pem:caCertsDir=/srv/sip/etc/ca"
            ":dhParameters=/srv/sip/etc/dh.pem",
        ),
        # an escaped colon inside a path survives, and is re-escaped after resolution
        ("ssl:6443:privateKey=c\\:key.pem", "ssl:6443:privateKey=/srv/sip/etc/c\\:key.pem"),
        # escapes in untouched parameters are kept exactly as written
        ("ssl:6443:interface=\\:\\::privateKey=k.pem", "ssl:6443:interface=\\:\\::privateKey=/srv/sip/etc/k.pem"),
    ],
)
def test_endpoint_rewriting(endpoint: str, expected: str) -> None:
    assert resolve_endpoint(endpoint, "/srv/sip/etc") == expected
    data = with_change("listeners.0.endpoint", endpoint)
    data["http"] = {"endpoint": endpoint}
    config = parse(data)
    assert config.listeners[0].endpoint == expected
    assert config.http is not None and config.http.endpoint == expected


def test_rewritten_endpoints_parse_in_twisted() -> None:
    from twisted.internet import endpoints
    from twisted.internet.task import Clock

    rewritten = resolve_endpoint("unix:address=../run/a\\:b.sock:mode=660", "/srv/sip/etc")
    endpoint = endpoints.serverFromString(Clock(), rewritten)
    assert endpoint._address == "/srv/sip/run/a:b.sock"


# --------------------------------------------------------------------------------------------------
# Files


def write(tmp_path: Path, text: str, name: str = "sip.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


MINIMAL_YAML = f"""\
listeners:
  - {{name: raw, transport: raw, endpoint: "tcp:6001"}}
institutions:
  MAIN: {{backend: db, language: 001}}
accounts:
  - login: sip_sco_main
    password: "plain:{SECRET}"
    institution: MAIN
    expires: 2030-12-31
backends:
  db: {{type: sqlite, path: db.sqlite3}}
"""


def test_load_config_from_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_YAML)
    config = load_config(path)
    assert config.path == path
    assert config.institutions["MAIN"].language == "001"  # not octal 1
    assert config.accounts[0].expires == datetime.date(2030, 12, 31)
    assert config.backends["db"].options["path"] == str(tmp_path / "db.sqlite3")


def test_leading_zero_numbers_are_not_read_as_octal(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_YAML.replace("language: 001", "language: 010"))
    assert load_config(path).institutions["MAIN"].language == "010"


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/sip.yaml")
    assert str(info.value) == "/nonexistent/sip.yaml: cannot read the config file: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(str(tmp_path))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="got an empty file"):
        load_config(write(tmp_path, "# nothing here\n"))


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace("    institution: MAIN\n", "    institution: MAIN\n  oops: [\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML at line ")
    assert "column" in message and "\n" not in message
    assert SECRET not in message


def test_yaml_error_never_shows_the_source_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'accounts:\n  - password: "plain:{SECRET}" : x\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 2" in str(info.value)
    assert SECRET not in str(info.value)


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace(
        "    institution: MAIN\n", "    institution: MAIN\n    allow_from: [10.0.0.0/8]\n    allow_from: []\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "found duplicate key 'allow_from'" in str(info.value)
    assert "line 10" in str(info.value)


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace(
        "accounts:\n",
        "accounts:\n"
        "  - &first {login: a, password: 'plain:p', institution: MAIN, location: X}\n"
        "  - {<<: *first, login: b}\n",
    )
    config = load_config(write(tmp_path, text))
    assert [(a.login, a.location) for a in config.accounts[:2]] == [("a", "X"), ("b", "X")]


def test_an_impossible_date_names_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_YAML.replace("expires: 2030-12-31", "expires: 2030-02-30"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: accounts[0].expires: expected a date like 2030-12-31, got '2030-02-30'"


def test_a_list_inside_permissions_is_an_unknown_permission(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace("    institution: MAIN\n", "    institution: MAIN\n    permissions: [[checkin]]\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: accounts[0].permissions[0]: unknown permission a list; expected one of")


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "sip.yaml"
    path.write_bytes(b"listeners: \xff\xfe\xfa\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(path))


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "listeners: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_the_shipped_config_loads() -> None:
    config = load_config(str(ROOT / "etc" / "sip.yaml"))
    assert config.warnings == ()  # real hashes, no plain passwords
    assert [listener.name for listener in config.listeners] == ["raw", "telnet"]
    assert config.listener("raw").status_before_login is True
    assert config.listener("raw").endpoint == "tcp:6001:interface=127.0.0.1"
    assert config.listener("telnet").endpoint == "tcp:6023:interface=127.0.0.1"
    assert config.listener_institution("telnet").library_name == "Demo Library"
    # the demo terminals stand in MAIN, where the demo items live: a checkin there sends none in transit
    assert {a.branch for a in config.accounts if a.location} == {"MAIN"}
    assert config.institutions["MAIN"].currency == "USD"
    logins = {account.login: account for account in config.accounts}
    assert set(logins) == {"sip_sco_main", "sip_sorter_main", "sip_overdrive", "sip_telnet_main", "sip_gateway"}
    assert logins["sip_sorter_main"].permissions == {"checkin", "item_status"}
    assert logins["sip_sorter_main"].location == "MAIN-SORTER"
    assert logins["sip_overdrive"].permissions == {"patron"}
    options = config.backends["embedded"].options
    assert config.backends["embedded"].type == "sqlite"
    assert options["path"] == str(ROOT / "var" / "sipserver.sqlite3")
    assert options["seed"] == str(ROOT / "etc" / "demo-data.yaml")


def test_the_shipped_config_loads_by_relative_path(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    config = load_config("etc/sip.yaml")
    assert config.backends["embedded"].options["path"] == str(ROOT / "var" / "sipserver.sqlite3")


def test_copy_of_data_is_not_mutated() -> None:
    data = minimal()
    before = copy.deepcopy(data)
    parse(data)
    assert data == before


def test_a_listener_terminator_is_cr_or_crlf_and_absent_by_default() -> None:
    assert parse(minimal()).listeners[0].terminator is None
    assert parse(with_change("listeners.0.terminator", "crlf")).listeners[0].terminator == b"\r\n"
    with pytest.raises(ConfigError) as info:
        parse(with_change("listeners.0.terminator", "LF"))
    message = "listeners[0].terminator: expected one of CR, CRLF, got 'LF' (did you mean 'CRLF'?)"
    assert str(info.value) == f"{FILE}: {message}"
