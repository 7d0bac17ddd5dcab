"""The configuration's objects: frozen attrs classes, one per section of the file.

A reload builds a whole new :class:`Config` and the service swaps it in, so nothing here ever
changes after it is made; mappings are read-only views. The classes hold the defaults; what each
key accepts, its description and whether a reload applies it live are declared beside its check,
in :mod:`sipserver.config.sections`.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from sipserver.config.places import UNDECLARED, Places
from sipserver.config.profiles import DEFAULT as DEFAULT_PROFILE
from sipserver.config.profiles import ReplyProfile

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


class ConfigError(ValueError):
    """A config file that cannot be used. ``str()`` is one line: ``file: key.path: what was expected``."""

    def __init__(self, file: str, key: str | None, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        text = f"{file}: {key}: {message}" if key else f"{file}: {message}"
        super().__init__(text.replace("\r", " ").replace("\n", " "))


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
    #: A postgresql backend whose database holds the failures of every daemon on it; None: this daemon's own.
    shared: str | None = None


@attrs.frozen
class ServerConfig:
    name: str = "sipserver"
    max_connections: int = 10000
    max_frame_bytes: int = 8192
    login_timeout: float = 60.0
    idle_timeout: float = 1800.0
    lockout: LockoutConfig = attrs.field(factory=LockoutConfig)
    workers: int = 1
    fast_paths: bool = True


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
class ProxyProtocolConfig:
    """A listener behind a balancer: who may send the PROXY header, and whether it must."""

    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    required: bool = True


@attrs.frozen
class AdminConfig:
    """One administrator of the operator's console. The hash is left out of ``repr()``."""

    login: str
    password_hash: str = attrs.field(repr=False)


@attrs.frozen
class ConsoleConfig:
    """The operator's console on the HTTP listener (:mod:`sipserver.observe.console`)."""

    admins: tuple[AdminConfig, ...] = attrs.field(default=(), converter=tuple)
    refusals: int = 200  # the last refusals the console keeps and shows


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
    #: Behind a balancer: the PROXY header's rules; None: the socket's peer is the terminal.
    proxy_protocol: ProxyProtocolConfig | None = None


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


@attrs.frozen
class UpstreamLogin:
    """How a terminal's requests reach an upstream SIP2 server (the ``sip2`` backend) over a
    connection of its own: logged in as ``user`` with ``password``, or, ``forwarded``, with the
    terminal's own login and password, which the upstream judges. The password is never shown."""

    user: str = ""
    password: str = attrs.field(default="", repr=False)
    location: str = ""
    forwarded: bool = False


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
    #: Its own upstream connection under a ``sip2`` backend (None: the shared pool); see
    #: :class:`UpstreamLogin`. ``password: upstream`` makes it a forwarded one.
    upstream_login: UpstreamLogin | None = None


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
    console: ConsoleConfig | None = None
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
