"""The configuration file: YAML in, frozen attrs objects out.

A SIP2 server guards patron data with per-device logins and IP allow-lists, so a config mistake must
never fail open. Hence:

* every error is a :class:`ConfigError` whose message is *one line* naming the file, the key path and
  what was expected (``etc/sip.yaml: accounts[2].allow_from[0]: expected an IPv4 or IPv6 network ...``),
  so that a daemon that refuses to start, or a reload that is refused, says exactly why;
* unknown keys are errors (with a did-you-mean hint): a typo in ``allow_from`` must not silently
  allow every address; duplicate keys in one mapping are errors for the same reason;
* password values never appear in an error message or a warning;
* the objects are frozen; a reload parses a whole new :class:`Config` and the service swaps it in.

Relative paths (backend ``path``/``seed``/``*_file`` options, certificate and unix-socket paths in
endpoint strings) are resolved against the directory of the config file, not the working directory,
so the same file works under ``make run``, systemd and the tests.

This module knows nothing of Twisted: endpoint strings are checked lightly and rewritten, never bound.
"""

from __future__ import annotations

import codecs
import datetime
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import yaml

from sipserver.accounts import passwords
from sipserver.config.places import UNDECLARED, Places
from sipserver.config.profiles import DEFAULT as DEFAULT_PROFILE
from sipserver.config.profiles import PATRON_FIELDS, TRAILER_FIELDS, ReplyProfile

__all__ = [
    "ENDPOINT_PREFIXES",
    "PERMISSIONS",
    "PERMISSION_NAMES",
    "AccountConfig",
    "BackendConfig",
    "Config",
    "ConfigError",
    "HttpConfig",
    "InstitutionConfig",
    "ListenerConfig",
    "LockoutConfig",
    "LoggingConfig",
    "PolicyConfig",
    "ReplyProfile",
    "ServerConfig",
    "load_config",
    "parse_config",
    "resolve_endpoint",
]

#: Every permission an account may hold, in the order the docs list them.
PERMISSION_NAMES: tuple[str, ...] = (
    "patron",
    "checkout",
    "checkin",
    "renew",
    "hold",
    "fee",
    "block",
    "enable",
    "item_status",
    "end_session",
)
PERMISSIONS: frozenset[str] = frozenset(PERMISSION_NAMES)

#: The endpoint types a listener (or the HTTP endpoint) may use.
ENDPOINT_PREFIXES: tuple[str, ...] = ("tcp", "tcp6", "ssl", "unix", "systemd", "tls")

LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("text", "json")
LOG_DESTINATIONS = ("stdout", "file", "syslog")
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    *(f"local{i}" for i in range(8)),
)  # fmt: skip
TRANSPORTS = ("raw", "telnet")
ENCODINGS = ("utf-8", "cp850", "latin-1", "ascii")
ERROR_DETECTION = ("auto", "always", "never")
TERMINATORS = {"CR": b"\r", "CRLF": b"\r\n"}


class ConfigError(ValueError):
    """A config file that cannot be used. ``str()`` is one line: ``file: key.path: what was expected``."""

    def __init__(self, file: str, key: str | None, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        text = f"{file}: {key}: {message}" if key else f"{file}: {message}"
        super().__init__(text.replace("\r", " ").replace("\n", " "))


# --------------------------------------------------------------------------------------------------
# The objects


def _frozen_mapping(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(value))


def _networks(values: Iterable[Any]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Lets code (tests, tools) build an AccountConfig with network strings; the parser passes networks."""
    return tuple(ipaddress.ip_network(v, strict=False) if isinstance(v, str) else v for v in values)


@attrs.frozen
class LockoutConfig:
    """Lock an address for ``duration`` seconds after ``failures`` failed logins within ``window`` seconds."""

    failures: int = 5
    window: float = 60.0
    duration: float = 300.0


@attrs.frozen
class ServerConfig:
    name: str = "sipserver"
    max_connections: int = 10000
    max_frame_bytes: int = 8192
    login_timeout: float = 60.0
    idle_timeout: float = 1800.0
    lockout: LockoutConfig = attrs.field(factory=LockoutConfig)
    workers: int = 1


@attrs.frozen
class LoggingConfig:
    level: str = "info"
    format: str = "text"
    destination: str = "stdout"
    file: str | None = None  # with destination: file
    syslog_facility: str = "local6"
    syslog_socket: str = "/dev/log"


@attrs.frozen
class HttpConfig:
    endpoint: str
    max_connections: int = 64  # the status page's own budget, apart from the SIP terminals'
    timeout: float = 10.0  # seconds a status connection may stay idle or leave a request unfinished


@attrs.frozen
class ListenerConfig:
    name: str
    transport: str
    endpoint: str
    status_before_login: bool = False
    max_connections: int | None = None
    institution: str | None = None
    #: What ends every reply on this listener, whatever the account says; None: the account's.
    #: CR LF on a telnet port people test by hand shows each reply on its own line.
    terminator: bytes | None = None


@attrs.frozen(cache_hash=True)  # a key of the ACS's reply caches, hashed per request
class PolicyConfig:
    """What an institution lets terminals do; reported in 98 and enforced by the ACS."""

    checkin: bool = True
    checkout: bool = True
    renewal: bool = True
    status_update: bool = True
    offline: bool = True
    timeout: float = 30.0
    retries: int = 3


@attrs.frozen(cache_hash=True)  # a key of the ACS's reply caches, hashed per request
class InstitutionConfig:
    id: str
    backend: str
    library_name: str = attrs.field(default=attrs.Factory(lambda self: self.id, takes_self=True))
    currency: str = "USD"
    language: str = "000"
    policy: PolicyConfig = attrs.field(factory=PolicyConfig)
    #: Its branches and the location codes that stand in each (``sipserver.config.places``).
    places: Places = UNDECLARED


@attrs.frozen(cache_hash=True)  # a key of the ACS's reply caches, hashed per request
class AccountConfig:
    """One SIP login. The password hash is left out of ``repr()`` so that logging an account is safe."""

    login: str
    password_hash: str = attrs.field(repr=False)
    institution: str
    location: str = ""
    #: The branch the terminal stands in, as its institution's ``branches`` spell it: where its
    #: checkins happen when the 09's AP names no place the institution knows. Empty: the branch
    #: its ``location`` stands in (``RequestContext.branch``).
    branch: str = ""
    allow_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = attrs.field(default=(), converter=_networks)
    permissions: frozenset[str] = attrs.field(default=PERMISSIONS, converter=frozenset)
    encoding: str = "utf-8"
    error_detection: str = "auto"
    terminator: bytes = b"\r"
    delimiter: str = "|"
    expires: datetime.date | None = None
    enabled: bool = True
    #: Answer ok=1 to a checkin of an item that was not on loan (Koha's ``checked_in_ok``), for
    #: sorters that treat ok=0 as a failed return; the default ok=0 is what SIP2 servers answer.
    checkin_not_on_loan_ok: bool = False
    #: What this account's replies carry beyond the standard fields, and what they leave out.
    profile: ReplyProfile = DEFAULT_PROFILE


@attrs.frozen
class BackendConfig:
    name: str
    type: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen
class Config:
    path: str
    server: ServerConfig = attrs.field(factory=ServerConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    http: HttpConfig | None = None
    listeners: tuple[ListenerConfig, ...] = attrs.field(default=(), converter=tuple)
    institutions: Mapping[str, InstitutionConfig] = attrs.field(factory=dict, converter=_frozen_mapping)
    accounts: tuple[AccountConfig, ...] = attrs.field(default=(), converter=tuple)
    backends: Mapping[str, BackendConfig] = attrs.field(factory=dict, converter=_frozen_mapping)
    profiles: Mapping[str, ReplyProfile] = attrs.field(factory=dict, converter=_frozen_mapping)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def listener(self, name: str) -> ListenerConfig:
        """The listener called *name*; KeyError if there is none."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)

    def listener_institution(self, listener: ListenerConfig | str) -> InstitutionConfig:
        """The institution a listener serves: its ``institution`` key, else the first one in the file."""
        if isinstance(listener, str):
            listener = self.listener(listener)
        if listener.institution is not None:
            return self.institutions[listener.institution]
        return next(iter(self.institutions.values()))


# --------------------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and keeps leading-zero numbers as written.

    PyYAML silently keeps the last of two equal keys, so a second ``allow_from`` would replace the
    first unnoticed. And YAML 1.1 reads ``001`` as an octal integer, which would turn a language code
    ``010`` into 8; keeping such scalars as strings lets ``language: 001`` mean what it says.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {_describe(key)}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_LEADING_ZERO = re.compile(r"[-+]?0[0-7_]+")


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    if _LEADING_ZERO.fullmatch(text):
        return text
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    """An impossible date (2030-02-30) stays the text written, so the key's own check names it;
    PyYAML would raise a bare ValueError with neither file nor line."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def load_config(path: str) -> Config:
    """Read and validate the YAML file at *path*; raise :class:`ConfigError` on any problem."""
    try:
        with open(path, "rb") as stream:
            data = yaml.load(stream, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the config file: {exc.strerror or exc}") from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(path, None, _yaml_error_text(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"invalid YAML: {' '.join(str(exc).split())}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor's own error, without a position
        raise ConfigError(path, None, f"invalid YAML: {exc}") from None
    return parse_config(data, path)


def _yaml_error_text(exc: yaml.MarkedYAMLError) -> str:
    # Only the problem and the position: the snippet PyYAML adds could show a password.
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    text = f"invalid YAML{where}: {exc.problem or exc.context or 'syntax error'}"
    if exc.context and exc.problem and exc.context_mark:
        text += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return text


def parse_config(data: Any, path: str) -> Config:
    """Validate already-loaded YAML *data*; *path* names the file in errors and anchors relative paths."""
    return _Parser(path).config(data)


def resolve_endpoint(endpoint: str, base_dir: str) -> str:
    """Check a Twisted server endpoint string lightly and make its file paths absolute.

    Rewrites ``privateKey=``, ``certKey=``, ``extraCertChain=``, ``caCertsDir=``, ``dhParameters=``
    (and the ``tls:`` client names ``certificate=``, ``trustRoots=``) and a ``unix:`` path relative
    to *base_dir*. Backslash escapes elsewhere are left exactly as written. Raises ValueError with
    what was expected.
    """
    segments = _split_unescaped(endpoint, ":")
    kind = _unescape(segments[0])
    if len(segments) < 2 or kind not in ENDPOINT_PREFIXES:
        raise ValueError(
            "expected a Twisted server endpoint like tcp:6001:interface=127.0.0.1 (starting with "
            + ", ".join(f"{p}:" for p in ENDPOINT_PREFIXES)
            + f"), got {_describe(endpoint)}"
        )
    out = [segments[0]]
    positional: list[str] = []
    named: dict[str, str] = {}
    for segment in segments[1:]:
        parts = _split_unescaped(segment, "=", maxsplit=1)
        if len(parts) == 2:
            name, value = _unescape(parts[0]), _unescape(parts[1])
            named[name] = value
            if (kind == "unix" and name == "address") or (kind in ("ssl", "tls") and name in _PATH_PARAMS):
                segment = f"{parts[0]}={_escape(_absolute(value, base_dir))}"
        else:
            value = _unescape(segment)
            if kind == "unix" and not positional:
                segment = _escape(_absolute(value, base_dir))
            positional.append(value)
        out.append(segment)
    if kind in ("tcp", "tcp6", "ssl"):
        port = named.get("port", positional[0] if positional else None)
        if port is None:
            raise ValueError(f"expected a port number in the endpoint, like {kind}:6001, got {_describe(endpoint)}")
        if not (port.isascii() and port.isdigit() and int(port) <= 65535):
            raise ValueError(f"expected a port number from 0 to 65535 in the endpoint, got {_describe(port)}")
    if kind == "unix" and not (positional and positional[0]) and not named.get("address"):
        raise ValueError(f"expected a socket path in the endpoint, like unix:sip.sock, got {_describe(endpoint)}")
    return ":".join(out)


_PATH_PARAMS = frozenset(
    {"privateKey", "certKey", "extraCertChain", "caCertsDir", "dhParameters", "certificate", "trustRoots"}
)


def _split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split at unescaped *sep*, keeping each part's backslash escapes as written."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, None)
            if following is None:
                raise ValueError("the endpoint ends with a lone backslash")
            current.append(char + following)
        elif char == sep and maxsplit != len(parts):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _escape(text: str) -> str:
    return re.sub(r"([\\:=])", r"\\\1", text)


def _absolute(path: str, base_dir: str) -> str:
    if not path or path == ":memory:" or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def _describe(value: Any) -> str:
    """A short one-line rendering of a value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _join(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{key!r}]"


def _hint(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    folded = {c.casefold(): c for c in choices}
    close = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=0.6)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""


_SAFE_NAME = re.compile(r"[^|\x00-\x1f\x7f]+")


class _Parser:
    """Validates one document; holds the file name (for errors), its directory and the warnings."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.base_dir = os.path.dirname(os.path.abspath(path))
        self.warnings: list[str] = []

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.path, key, message)

    # ---- generic checks ------------------------------------------------------------------------

    def mapping(self, value: Any, key: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
        """A mapping with string keys, only *allowed* ones, all *required* present. null means {}."""
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(key or None, f"expected a mapping, got {_describe(value)}")
        allowed = list(allowed)
        for name in value:
            if not isinstance(name, str):
                raise self.error(key or None, f"expected string keys, got {_describe(name)} (quote it)")
            if name not in allowed:
                raise self.error(
                    _join(key, name),
                    f"unknown key{_hint(name, allowed)}; expected one of {', '.join(allowed)}",
                )
        for name in required:
            if name not in value:
                raise self.error(_join(key, name), "required key is missing")
        return value

    def id_mapping(self, value: Any, key: str, what: str) -> dict[str, Any]:
        """A non-empty mapping of names (institution ids, backend names) to sub-mappings."""
        if not isinstance(value, Mapping) or not value:
            raise self.error(key, f"expected a non-empty mapping of {what}, got {_describe(value)}")
        for name in value:
            if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
                raise self.error(key, f"expected {what} to be non-empty strings without '|', got {_describe(name)}")
        return value

    def sequence(self, value: Any, key: str, *, allow_scalar: bool = False) -> list[Any]:
        if value is None:
            return []
        if allow_scalar and isinstance(value, str):
            return [value]
        if not isinstance(value, list | tuple):
            raise self.error(key, f"expected a list, got {_describe(value)}")
        return value

    def string(self, value: Any, key: str, *, empty: bool = False, name: bool = False) -> str:
        """A string; *name*: also no '|' or control characters (it goes on the SIP wire or in logs)."""
        if not isinstance(value, str) or (not empty and not value):
            raise self.error(key, f"expected a {'' if empty else 'non-empty '}string, got {_describe(value)}")
        if name and value and not _SAFE_NAME.fullmatch(value):
            raise self.error(key, f"expected no '|' or control characters, got {_describe(value)}")
        return value

    def integer(self, value: Any, key: str, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            expected = f"from {low} to {high}" if high is not None else f">= {low}"
            raise self.error(key, f"expected an integer {expected}, got {_describe(value)}")
        return value

    def number(self, value: Any, key: str, high: float | None = None, unit: str = "seconds") -> float:
        """A number > 0 (and <= *high*)."""
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok or (high is not None and value > high):
            limit = f" and at most {high}" if high is not None else ""
            raise self.error(key, f"expected a number of {unit} greater than 0{limit}, got {_describe(value)}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_describe(value)}")
        return value

    def choice(self, value: Any, key: str, choices: Iterable[str]) -> str:
        """One of *choices*, compared case-insensitively; returns the canonical spelling."""
        choices = list(choices)
        if isinstance(value, str):
            for choice in choices:
                if value.casefold() == choice.casefold():
                    return choice
        hint = _hint(value, choices) if isinstance(value, str) else ""
        raise self.error(key, f"expected one of {', '.join(choices)}, got {_describe(value)}{hint}")

    def endpoint(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        try:
            return resolve_endpoint(text, self.base_dir)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    # ---- sections ------------------------------------------------------------------------------

    def config(self, data: Any) -> Config:
        if not isinstance(data, Mapping):
            raise self.error(
                None,
                "expected a mapping at the top level with listeners, institutions, accounts and backends, "
                f"got {'an empty file' if data is None else _describe(data)}",
            )
        top = self.mapping(
            data,
            "",
            ("server", "logging", "http", "listeners", "institutions", "profiles", "accounts", "backends"),
            ("listeners", "institutions", "backends"),
        )
        server = self.server(top.get("server"))
        logging = self.logging(top.get("logging"))
        http = self.http(top.get("http"))
        backends = self.backends(top["backends"])
        institutions = self.institutions(top["institutions"], backends)
        listeners = self.listeners(top["listeners"], institutions)
        profiles = self.profiles(top.get("profiles"))
        accounts = self.accounts(top.get("accounts"), institutions, profiles)
        institutions, accounts = self.places(institutions, accounts)
        return Config(
            path=self.path,
            server=server,
            logging=logging,
            http=http,
            listeners=listeners,
            institutions=institutions,
            accounts=accounts,
            backends=backends,
            profiles=profiles,
            warnings=tuple(self.warnings),
        )

    def server(self, value: Any) -> ServerConfig:
        key = "server"
        d = ServerConfig()
        m = self.mapping(
            value,
            key,
            ("name", "max_connections", "max_frame_bytes", "login_timeout", "idle_timeout", "lockout", "workers"),
        )
        lockout_key = _join(key, "lockout")
        lm = self.mapping(m.get("lockout"), lockout_key, ("failures", "window", "duration"))
        dl = d.lockout
        lockout = LockoutConfig(
            failures=self.integer(lm.get("failures", dl.failures), _join(lockout_key, "failures"), 0),
            window=self.number(lm.get("window", dl.window), _join(lockout_key, "window")),
            duration=self.number(lm.get("duration", dl.duration), _join(lockout_key, "duration")),
        )
        return ServerConfig(
            name=self.string(m.get("name", d.name), _join(key, "name")),
            max_connections=self.integer(m.get("max_connections", d.max_connections), _join(key, "max_connections"), 1),
            max_frame_bytes=self.integer(
                m.get("max_frame_bytes", d.max_frame_bytes), _join(key, "max_frame_bytes"), 256, 1048576
            ),
            login_timeout=self.number(m.get("login_timeout", d.login_timeout), _join(key, "login_timeout")),
            idle_timeout=self.number(m.get("idle_timeout", d.idle_timeout), _join(key, "idle_timeout")),
            lockout=lockout,
            workers=self.integer(m.get("workers", d.workers), _join(key, "workers"), 1),
        )

    def logging(self, value: Any) -> LoggingConfig:
        key = "logging"
        d = LoggingConfig()
        m = self.mapping(value, key, ("level", "format", "destination", "file", "syslog_facility", "syslog_socket"))
        destination = self.choice(m.get("destination", d.destination), _join(key, "destination"), LOG_DESTINATIONS)
        file = None
        if destination == "file":
            if m.get("file") is None:
                raise self.error(_join(key, "file"), "required when destination is file (the log file's path)")
            file = _absolute(self.string(m["file"], _join(key, "file")), self.base_dir)
        elif m.get("file") is not None:
            self.warnings.append(
                f"{self.path}: {_join(key, 'file')}: not used, the destination is {destination} (set destination: file)"
            )
        return LoggingConfig(
            level=self.choice(m.get("level", d.level), _join(key, "level"), LOG_LEVELS),
            format=self.choice(m.get("format", d.format), _join(key, "format"), LOG_FORMATS),
            destination=destination,
            file=file,
            syslog_facility=self.choice(
                m.get("syslog_facility", d.syslog_facility), _join(key, "syslog_facility"), SYSLOG_FACILITIES
            ),
            syslog_socket=_absolute(
                self.string(m.get("syslog_socket", d.syslog_socket), _join(key, "syslog_socket")), self.base_dir
            ),
        )

    def http(self, value: Any) -> HttpConfig | None:
        if value is None:
            return None
        d = HttpConfig(endpoint="")
        m = self.mapping(value, "http", ("endpoint", "max_connections", "timeout"), ("endpoint",))
        return HttpConfig(
            endpoint=self.endpoint(m["endpoint"], "http.endpoint"),
            max_connections=self.integer(m.get("max_connections", d.max_connections), "http.max_connections", 1),
            timeout=self.number(m.get("timeout", d.timeout), "http.timeout"),
        )

    def backends(self, value: Any) -> dict[str, BackendConfig]:
        key = "backends"
        backends = {}
        for name, options in self.id_mapping(value, key, "backend names").items():
            bkey = _join(key, name)
            if not isinstance(options, Mapping):
                raise self.error(bkey, f"expected a mapping of backend options with a type, got {_describe(options)}")
            if "type" not in options:
                raise self.error(_join(bkey, "type"), "required key is missing (for example type: sqlite)")
            kind = self.string(options["type"], _join(bkey, "type"))
            rest = {}
            for option, option_value in options.items():
                if not isinstance(option, str):
                    raise self.error(bkey, f"expected string keys, got {_describe(option)} (quote it)")
                if option == "type":
                    continue
                is_path = option in ("path", "seed") or option.endswith("_file")
                if is_path and isinstance(option_value, str):
                    option_value = _absolute(option_value, self.base_dir)
                rest[option] = _deep_freeze(option_value)
            backends[name] = BackendConfig(name=name, type=kind, options=rest)
        return backends

    def institutions(self, value: Any, backends: Mapping[str, BackendConfig]) -> dict[str, InstitutionConfig]:
        key = "institutions"
        result = {}
        for inst_id, body in self.id_mapping(value, key, "institution ids").items():
            ikey = _join(key, inst_id)
            m = self.mapping(
                body, ikey, ("backend", "library_name", "currency", "language", "policy", "branches"), ("backend",)
            )
            backend = self.string(m["backend"], _join(ikey, "backend"))
            if backend not in backends:
                raise self.error(
                    _join(ikey, "backend"),
                    f"expected the name of a backend under backends ({', '.join(backends)}), "
                    f"got {_describe(backend)}{_hint(backend, backends)}",
                )
            currency = m.get("currency", "USD")
            if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
                raise self.error(
                    _join(ikey, "currency"), f"expected 3 upper-case letters like USD, got {_describe(currency)}"
                )
            result[inst_id] = InstitutionConfig(
                id=inst_id,
                backend=backend,
                library_name=self.string(m.get("library_name", inst_id), _join(ikey, "library_name"), name=True),
                currency=currency,
                language=self.language(m.get("language", "000"), _join(ikey, "language")),
                policy=self.policy(m.get("policy"), _join(ikey, "policy")),
                places=self.branches(m.get("branches"), _join(ikey, "branches")),
            )
        return result

    def branches(self, value: Any, key: str) -> Places:
        """``branches:`` of an institution: branch code -> ``{locations: [code, ...]}``.

        Every code, branch or location, stands for one branch only (compared without regard to
        case), so that a place never resolves two ways."""
        if value is None:
            return UNDECLARED
        if not isinstance(value, Mapping) or not value:
            raise self.error(
                key,
                "expected a mapping of branch codes to their location codes, like "
                f"MAIN: {{locations: [MAIN-DESK1]}}, got {_describe(value)}",
            )
        seen: dict[str, str] = {}  # folded code -> the key that defined it
        branches: dict[str, list[str]] = {}

        def claim(code: str, where: str) -> None:
            folded = code.strip().casefold()
            if folded in seen:
                raise self.error(where, f"{code!r} is already used at {seen[folded]}; a code stands in one branch only")
            seen[folded] = where

        for branch, body in value.items():
            bkey = _join(key, branch) if isinstance(branch, str) else key
            if not isinstance(branch, str) or not branch.strip() or not _SAFE_NAME.fullmatch(branch):
                raise self.error(
                    bkey, f"expected branch codes to be non-empty strings without '|', got {_describe(branch)}"
                )
            claim(branch, bkey)
            m = self.mapping(body, bkey, ("locations",))
            lkey = _join(bkey, "locations")
            locations = []
            for index, location in enumerate(self.sequence(m.get("locations"), lkey, allow_scalar=True)):
                where = _join(lkey, index)
                if not isinstance(location, str) or not location.strip():
                    raise self.error(where, f"expected a location code (a non-empty string), got {_describe(location)}")
                location = self.string(location.strip(), where, name=True)
                claim(location, where)
                locations.append(location)
            branches[branch.strip()] = locations
        return Places.of(branches)

    def places(
        self, institutions: dict[str, InstitutionConfig], accounts: tuple[AccountConfig, ...]
    ) -> tuple[dict[str, InstitutionConfig], tuple[AccountConfig, ...]]:
        """Complete each institution's places with its accounts: an account's ``branch`` must be
        one of the declared branches (when there are any, else it declares one), and its
        ``location`` stands in that branch. Accounts get their branch spelt as declared."""
        tables: dict[str, dict[str, list[str]]] = {
            inst_id: {branch: list(locations) for branch, locations in inst.places.branches}
            for inst_id, inst in institutions.items()
        }
        result: list[AccountConfig] = []
        for index, account in enumerate(accounts):
            key = _join("accounts", index)
            inst = institutions[account.institution]
            declared = inst.places
            table = tables[account.institution]
            if not account.branch:
                result.append(account)
                continue
            branch = declared.branch_of(account.branch) if declared.declared else ""
            if declared.declared and (not branch or branch.casefold() != account.branch.strip().casefold()):
                names = ", ".join(declared.names)
                raise self.error(
                    _join(key, "branch"),
                    f"expected a branch of institution {account.institution} ({names}), "
                    f"got {_describe(account.branch)}{_hint(account.branch, declared.names)}",
                )
            if not branch:  # no branches declared: the account's branch declares one
                branch = next((b for b in table if b.casefold() == account.branch.strip().casefold()), "")
                branch = branch or account.branch.strip()
                table.setdefault(branch, [])
            location = account.location.strip()
            if location:
                stands_in = declared.branch_of(location) if declared.declared else ""
                if stands_in and stands_in != branch:
                    raise self.error(
                        _join(key, "location"),
                        f"{location!r} stands in branch {stands_in} (institutions.{account.institution}.branches), "
                        f"not in this account's branch {branch}",
                    )
                if not stands_in and not Places.of(table).knows(location):
                    table[branch].append(location)
                elif Places.of(table).branch_of(location) not in ("", branch):
                    raise self.error(
                        _join(key, "location"),
                        f"{location!r} already stands in branch {Places.of(table).branch_of(location)} "
                        "(another account's location or branch)",
                    )
            result.append(attrs.evolve(account, branch=branch))
        completed = {
            inst_id: attrs.evolve(inst, places=Places.of(tables[inst_id])) for inst_id, inst in institutions.items()
        }
        self.warn_about_places(completed, tuple(result))
        return completed, tuple(result)

    def warn_about_places(
        self, institutions: Mapping[str, InstitutionConfig], accounts: tuple[AccountConfig, ...]
    ) -> None:
        """A terminal whose location is no known place would check items in at the wrong branch:
        say so at start-up, where an administrator looks."""
        for index, account in enumerate(accounts):
            location = account.location.strip()
            if not location or account.branch or "checkin" not in account.permissions:
                continue
            places = institutions[account.institution].places
            where = f"{self.path}: {_join(_join('accounts', index), 'location')}"
            if not places.declared:
                self.warnings.append(
                    f"{where}: institution {account.institution} lists no branches, so a checkin from "
                    f"{location!r} without a known AP is taken to happen at a branch called {location!r} "
                    "and sends items of every other branch in transit; list the branches and their "
                    f"location codes under institutions.{account.institution}.branches, or give the account a branch"
                )
            elif not places.knows(location):
                self.warnings.append(
                    f"{where}: {location!r} is not a location code of any branch of institution "
                    f"{account.institution}, so a checkin from it without a known AP happens at no branch "
                    "(nothing is sent in transit); list it under a branch, or give the account a branch"
                )

    def language(self, value: Any, key: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 999:
            return f"{value:03d}"
        if isinstance(value, str) and re.fullmatch(r"[0-9]{3}", value):
            return value
        raise self.error(key, f'expected a 3-digit SIP language code like "001", got {_describe(value)}')

    def policy(self, value: Any, key: str) -> PolicyConfig:
        d = PolicyConfig()
        flags = ("checkin", "checkout", "renewal", "status_update", "offline")
        m = self.mapping(value, key, (*flags, "timeout", "retries"))
        return PolicyConfig(
            **{flag: self.boolean(m.get(flag, getattr(d, flag)), _join(key, flag)) for flag in flags},
            timeout=self.number(m.get("timeout", d.timeout), _join(key, "timeout"), high=99.9),
            retries=self.integer(m.get("retries", d.retries), _join(key, "retries"), 0, 999),
        )

    def listeners(self, value: Any, institutions: Mapping[str, InstitutionConfig]) -> tuple[ListenerConfig, ...]:
        key = "listeners"
        items = value if isinstance(value, list | tuple) else None
        if not items:
            raise self.error(key, f"expected a non-empty list of listeners, got {_describe(value)}")
        result: list[ListenerConfig] = []
        seen: dict[str, str] = {}
        for index, body in enumerate(items):
            lkey = _join(key, index)
            m = self.mapping(
                body,
                lkey,
                (
                    "name", "transport", "endpoint", "status_before_login", "max_connections", "institution",
                    "terminator",
                ),
                ("name", "transport", "endpoint"),
            )  # fmt: skip
            name = self.string(m["name"], _join(lkey, "name"), name=True)
            if name in seen:
                raise self.error(
                    _join(lkey, "name"), f"duplicate listener name {name!r} (already used by {seen[name]})"
                )
            seen[name] = lkey
            max_connections = m.get("max_connections")
            if max_connections is not None:
                max_connections = self.integer(max_connections, _join(lkey, "max_connections"), 1)
            institution = m.get("institution")
            if institution is not None:
                institution = self.institution_ref(institution, _join(lkey, "institution"), institutions)
            result.append(
                ListenerConfig(
                    name=name,
                    transport=self.choice(m["transport"], _join(lkey, "transport"), TRANSPORTS),
                    endpoint=self.endpoint(m["endpoint"], _join(lkey, "endpoint")),
                    status_before_login=self.boolean(
                        m.get("status_before_login", False), _join(lkey, "status_before_login")
                    ),
                    max_connections=max_connections,
                    institution=institution,
                    terminator=(
                        TERMINATORS[self.choice(m["terminator"], _join(lkey, "terminator"), TERMINATORS)]
                        if m.get("terminator") is not None
                        else None
                    ),
                )
            )
        return tuple(result)

    def institution_ref(self, value: Any, key: str, institutions: Mapping[str, InstitutionConfig]) -> str:
        if not isinstance(value, str) or value not in institutions:
            hint = _hint(value, institutions) if isinstance(value, str) else ""
            raise self.error(
                key,
                f"expected an institution id defined under institutions ({', '.join(institutions)}), "
                f"got {_describe(value)}{hint}",
            )
        return value

    def accounts(
        self, value: Any, institutions: Mapping[str, InstitutionConfig], profiles: Mapping[str, ReplyProfile]
    ) -> tuple[AccountConfig, ...]:
        result: list[AccountConfig] = []
        seen: dict[str, str] = {}
        for index, body in enumerate(self.sequence(value, "accounts")):
            account = self.account(body, _join("accounts", index), institutions, profiles)
            if account.login in seen:
                raise self.error(
                    _join(_join("accounts", index), "login"),
                    f"duplicate login {account.login!r} (already used by {seen[account.login]}); "
                    "use one login per device or service",
                )
            seen[account.login] = _join("accounts", index)
            result.append(account)
        return tuple(result)

    def account(
        self, body: Any, key: str, institutions: Mapping[str, InstitutionConfig], profiles: Mapping[str, ReplyProfile]
    ) -> AccountConfig:
        d = AccountConfig(login="-", password_hash="-", institution="-")
        m = self.mapping(
            body,
            key,
            (
                "login", "password", "institution", "location", "branch", "allow_from", "permissions", "encoding",
                "error_detection", "terminator", "delimiter", "expires", "enabled", "checkin_not_on_loan_ok",
                "profile",
            ),
            ("login", "password", "institution"),
        )  # fmt: skip
        login = self.string(m["login"], _join(key, "login"), name=True)
        password = m["password"]
        problem = passwords.check_stored(password)
        if problem is not None:  # never echo the value
            raise self.error(_join(key, "password"), f"{problem} (value not shown)")
        if passwords.is_plain(password):
            self.warnings.append(
                f"{self.path}: {_join(key, 'password')}: login {login!r} has a plain-text password; "
                "replace it with the output of `sipserver hash-password`"
            )
        return AccountConfig(
            login=login,
            password_hash=password,
            institution=self.institution_ref(m["institution"], _join(key, "institution"), institutions),
            location=self.string(m.get("location", ""), _join(key, "location"), empty=True, name=True),
            branch=self.string(m.get("branch", ""), _join(key, "branch"), empty=True, name=True),
            allow_from=self.allow_from(m, _join(key, "allow_from")),
            permissions=self.permissions(m, _join(key, "permissions")),
            encoding=self.encoding(m.get("encoding", d.encoding), _join(key, "encoding")),
            error_detection=self.choice(
                m.get("error_detection", d.error_detection), _join(key, "error_detection"), ERROR_DETECTION
            ),
            terminator=TERMINATORS[self.choice(m.get("terminator", "CR"), _join(key, "terminator"), TERMINATORS)],
            delimiter=self.delimiter(m.get("delimiter", d.delimiter), _join(key, "delimiter")),
            expires=self.date(m.get("expires"), _join(key, "expires")),
            enabled=self.boolean(m.get("enabled", True), _join(key, "enabled")),
            checkin_not_on_loan_ok=self.boolean(
                m.get("checkin_not_on_loan_ok", d.checkin_not_on_loan_ok), _join(key, "checkin_not_on_loan_ok")
            ),
            profile=self.profile_ref(m.get("profile"), _join(key, "profile"), profiles),
        )

    def profile_ref(self, value: Any, key: str, profiles: Mapping[str, ReplyProfile]) -> ReplyProfile:
        if value is None:
            return DEFAULT_PROFILE
        if not isinstance(value, str) or value not in profiles:
            hint = _hint(value, profiles) if isinstance(value, str) else ""
            defined = f" ({', '.join(profiles)})" if profiles else " (there are none)"
            raise self.error(
                key, f"expected the name of a profile defined under profiles{defined}, got {_describe(value)}{hint}"
            )
        return profiles[value]

    def profiles(self, value: Any) -> dict[str, ReplyProfile]:
        """``profiles:``: name -> what accounts using it receive (``sipserver.config.profiles``)."""
        if value is None:
            return {}
        result = {}
        for name, body in self.id_mapping(value, "profiles", "profile names").items():
            pkey = _join("profiles", name)
            m = self.mapping(body, pkey, ("patron_fields", "hide", "add"))
            fields_key = _join(pkey, "patron_fields")
            patron_fields: list[str] = []
            for index, item in enumerate(self.sequence(m.get("patron_fields"), fields_key, allow_scalar=True)):
                if not isinstance(item, str) or item not in PATRON_FIELDS:
                    raise self.error(
                        _join(fields_key, index),
                        f"expected one of {', '.join(PATRON_FIELDS)}, got {_describe(item)}",
                    )
                if item not in patron_fields:
                    patron_fields.append(item)
            hide_key = _join(pkey, "hide")
            hide = [
                self.field_id(item, _join(hide_key, index))
                for index, item in enumerate(self.sequence(m.get("hide"), hide_key, allow_scalar=True))
            ]
            add_key = _join(pkey, "add")
            added = m.get("add")
            if added is not None and not isinstance(added, Mapping):
                raise self.error(
                    add_key, f"expected a mapping of field ids to values, like PC: ADULT, got {_describe(added)}"
                )
            add = []
            for field_id, field_value in (added or {}).items():
                field_id = self.field_id(field_id, _join(add_key, field_id))
                if isinstance(field_value, int | float) and not isinstance(field_value, bool):
                    field_value = str(field_value)
                add.append((field_id, self.string(field_value, _join(add_key, field_id), empty=True, name=True)))
            result[name] = ReplyProfile(
                name=name, patron_fields=tuple(patron_fields), hide=frozenset(hide), add=tuple(add)
            )
        return result

    def field_id(self, value: Any, key: str) -> str:
        """A SIP2 variable-field id a profile may name: two upper-case letters or digits, not AY/AZ."""
        if not isinstance(value, str) or not re.fullmatch(r"[A-Z0-9]{2}", value) or value in TRAILER_FIELDS:
            raise self.error(
                key, f"expected a SIP2 field id, two upper-case letters or digits (not AY, AZ), got {_describe(value)}"
            )
        return value

    def allow_from(self, m: dict[str, Any], key: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        if "allow_from" not in m:
            return ()
        value = m["allow_from"]
        if value is None:  # `allow_from:` left empty is more likely a slip than "allow everyone"
            raise self.error(
                key, "expected a list of networks, got null (omit the key or write [] to allow any address)"
            )
        networks = []
        for index, item in enumerate(self.sequence(value, key, allow_scalar=True)):
            try:
                if not isinstance(item, str):
                    raise ValueError
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise self.error(
                    _join(key, index), f"expected an IPv4 or IPv6 network like 10.0.0.0/8, got {_describe(item)}"
                ) from None
        return tuple(networks)

    def permissions(self, m: dict[str, Any], key: str) -> frozenset[str]:
        if "permissions" not in m:
            return PERMISSIONS
        if m["permissions"] is None:
            raise self.error(key, "expected a list of permissions, got null (omit the key to grant all)")
        result = set()
        for index, item in enumerate(self.sequence(m["permissions"], key, allow_scalar=True)):
            if not isinstance(item, str) or item not in PERMISSIONS:
                hint = _hint(item, PERMISSION_NAMES) if isinstance(item, str) else ""
                raise self.error(
                    _join(key, index),
                    f"unknown permission {_describe(item)}{hint}; expected one of {', '.join(PERMISSION_NAMES)}",
                )
            result.add(item)
        return frozenset(result)

    def encoding(self, value: Any, key: str) -> str:
        """One of ENCODINGS; any alias Python knows for them (UTF8, iso-8859-1...) is accepted too."""
        if isinstance(value, str):
            try:
                codec = codecs.lookup(value).name
            except LookupError:
                codec = None
            for name in ENCODINGS:
                if codec == codecs.lookup(name).name:
                    return name
        raise self.error(key, f"expected one of {', '.join(ENCODINGS)}, got {_describe(value)}")

    def delimiter(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or len(value) != 1 or not "!" <= value <= "~" or value.isalnum():
            raise self.error(
                key,
                f"expected one printable ASCII character that is not a letter, digit or space, like '|', "
                f"got {_describe(value)}",
            )
        return value

    def date(self, value: Any, key: str) -> datetime.date | None:
        if value is None:
            return None
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise self.error(key, f"expected a date like 2030-12-31, got {_describe(value)}")


def _deep_freeze(value: Any) -> Any:
    """Backend options are read-only all the way down: mappings become proxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _deep_freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_deep_freeze(v) for v in value)
    return value
