"""The config's own kinds of value: seconds, paths and endpoints, networks, permissions, codes.

Each is a :class:`~sipserver.config.schema.Type`: it checks one value as written in the file,
converts it (a path made absolute against the config file's folder, an endpoint string rewritten,
a network parsed) and says what was expected when it cannot. The sections that use them are
declared in :mod:`sipserver.config.sections`.
"""

from __future__ import annotations

import codecs
import datetime
import ipaddress
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sipserver.accounts import passwords
from sipserver.config.endpoints import absolute, resolve_endpoint
from sipserver.config.model import PERMISSION_NAMES, PERMISSIONS
from sipserver.config.places import Places
from sipserver.config.profiles import TRAILER_FIELDS
from sipserver.config.schema import SAFE_NAME, At, Key, ListOf, Number, Section, Text, Type, hint

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


# --------------------------------------------------------------------------------------------------
# The config's own kinds of value


class Seconds(Number):
    """A number of seconds greater than 0 (and at most *high*); integers and decimals alike."""

    def __init__(self, high: float | None = None) -> None:
        super().__init__(above=0, at_most=high)


class _Absolute(Type[str]):
    """A path made absolute against the config file's folder."""

    doc = "a path"

    def read(self, value: str, at: At) -> str:
        return absolute(value, at.source.base_dir)


PATH = Text().then(_Absolute())


class _Endpoint(Type[str]):
    doc = "endpoint string"

    def read(self, value: Any, at: At) -> str:
        text = Text().read(value, at)
        try:
            return resolve_endpoint(text, at.source.base_dir)
        except ValueError as exc:
            at.fail(str(exc))


ENDPOINT = _Endpoint()


class Language(Type[str]):
    doc = "3 digits"

    def read(self, value: Any, at: At) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 999:
            return f"{value:03d}"
        if isinstance(value, str) and re.fullmatch(r"[0-9]{3}", value):
            return value
        at.expected('a 3-digit SIP language code like "001"', value)


class Currency(Type[str]):
    doc = "3 upper-case letters"

    def read(self, value: Any, at: At) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Z]{3}", value):
            at.expected("3 upper-case letters like USD", value)
        return value


class Network(Type[ipaddress.IPv4Network | ipaddress.IPv6Network]):
    doc = "network"

    def read(self, value: Any, at: At) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            if not isinstance(value, str):
                raise ValueError
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            at.expected("an IPv4 or IPv6 network like 10.0.0.0/8", value)


class Permission(Type[str]):
    def read(self, value: Any, at: At) -> str:
        if not isinstance(value, str) or value not in PERMISSIONS:
            at.fail(
                f"unknown permission {at.source.show(value)}{hint(value, PERMISSION_NAMES)}; "
                f"expected one of {', '.join(PERMISSION_NAMES)}"
            )
        return value


class Encoding(Type[str]):
    """One of ENCODINGS; any alias Python knows for them (UTF8, iso-8859-1...) is accepted too."""

    doc = ", ".join(f"`{name}`" for name in ENCODINGS)

    def read(self, value: Any, at: At) -> str:
        if isinstance(value, str):
            try:
                codec = codecs.lookup(value).name
            except LookupError:
                codec = None
            for name in ENCODINGS:
                if codec == codecs.lookup(name).name:
                    return name
        at.expected(f"one of {', '.join(ENCODINGS)}", value)


class Delimiter(Type[str]):
    doc = "one character"

    def read(self, value: Any, at: At) -> str:
        if not isinstance(value, str) or len(value) != 1 or not "!" <= value <= "~" or value.isalnum():
            at.expected("one printable ASCII character that is not a letter, digit or space, like '|'", value)
        return value


class Date(Type[datetime.date]):
    doc = "date"

    def read(self, value: Any, at: At) -> datetime.date:
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value.strip())
            except ValueError:
                pass
        at.expected("a date like 2030-12-31", value)


class Password(Type[str]):
    doc = "string"

    def read(self, value: Any, at: At) -> str:
        problem = passwords.check_stored(value)
        if problem is not None:  # never echo the value
            at.fail(f"{problem} (value not shown)")
        return value


class FieldId(Type[str]):
    """A SIP2 variable-field id a profile may name: two upper-case letters or digits, not AY/AZ."""

    doc = "field id"

    def read(self, value: Any, at: At) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Z0-9]{2}", value) or value in TRAILER_FIELDS:
            at.expected("a SIP2 field id, two upper-case letters or digits (not AY, AZ)", value)
        return value


class AddedFields(Type[tuple[tuple[str, str], ...]]):
    """A profile's ``add``: field id -> fixed text (numbers are taken as written)."""

    doc = "mapping id -> text"

    def read(self, value: Any, at: At) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, Mapping):
            at.expected("a mapping of field ids to values, like PC: ADULT", value)
        added = []
        for field_id, field_value in value.items():
            field_id = FieldId().read(field_id, at.child(field_id))
            if isinstance(field_value, int | float) and not isinstance(field_value, bool):
                field_value = str(field_value)
            added.append((field_id, Text(empty=True, safe=True).read(field_value, at.child(field_id))))
        return tuple(added)


def first_of_each(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


class Branches(Type[Places]):
    """``branches:`` of an institution: branch code -> ``{locations: [code, ...]}``.

    Every code, branch or location, stands for one branch only (compared without regard to case),
    so that a place never resolves two ways."""

    doc = "mapping"

    def read(self, value: Any, at: At) -> Places:
        if not isinstance(value, Mapping) or not value:
            at.expected(
                "a mapping of branch codes to their location codes, like MAIN: {locations: [MAIN-DESK1]}", value
            )
        seen: dict[str, str] = {}  # folded code -> the key that defined it
        branches: dict[str, list[str]] = {}

        def claim(code: str, where: At) -> None:
            folded = code.strip().casefold()
            if folded in seen:
                where.fail(f"{code!r} is already used at {seen[folded]}; a code stands in one branch only")
            seen[folded] = where.path

        for branch, body in value.items():
            here = at.child(branch) if isinstance(branch, str) else at
            if not isinstance(branch, str) or not branch.strip() or not SAFE_NAME.fullmatch(branch):
                here.expected("branch codes to be non-empty strings without '|'", branch)
            claim(branch, here)
            locations = []
            listed = _BRANCH.read(body, here)["locations"]
            for index, location in enumerate(listed):
                where = here.child("locations").child(index)
                if not isinstance(location, str) or not location.strip():
                    where.expected("a location code (a non-empty string)", location)
                location = Text(safe=True).read(location.strip(), where)
                claim(location, where)
                locations.append(location)
            branches[branch.strip()] = locations
        return Places.of(branches)


class _Raw(Type[Any]):
    """A value checked by its section's own rule (the list items of ``locations``)."""

    def read(self, value: Any, at: At) -> Any:
        return value


_BRANCH: Section[dict[str, Any]] = Section(None, (Key("locations", ListOf(_Raw(), scalar=True), default=()),))


class BackendOption(Type[Any]):
    """A backend's own option, passed on read-only; file names are made absolute (``path``,
    ``seed``, ``*_file``). The backend checks its options when it is built."""

    def read(self, value: Any, at: At) -> Any:
        name = str(at.key)
        if isinstance(value, str) and (name in ("path", "seed") or name.endswith("_file")):
            value = absolute(value, at.source.base_dir)
        return _deep_freeze(value)


def _deep_freeze(value: Any) -> Any:
    """Backend options are read-only all the way down: mappings become proxies, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _deep_freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_deep_freeze(v) for v in value)
    return value
