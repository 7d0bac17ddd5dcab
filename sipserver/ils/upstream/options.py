"""What a ``sip2`` backend is configured with, read through the config schema so that a mistake
names the option and what was expected; the upstream password is read from a file or the
environment as well as inline, and is kept out of every error and repr."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any

import attrs

from sipserver.config.schema import At, Flag, Integer, Key, Number, Options, Section, Text, Type
from sipserver.config.secrets import LOGIN, read_secret
from sipserver.ils.interface import BackendConfigError


class InstitutionMap(Type[Any]):
    """The AO to send upstream: one id for every institution, or a mapping from this daemon's
    institution id to the upstream's (the ids left out are sent as they are)."""

    doc = "string or mapping"

    def read(self, value: Any, at: At) -> Any:
        if isinstance(value, str) and value and "|" not in value:
            return value
        if isinstance(value, Mapping) and value:
            for ours, theirs in value.items():
                if not isinstance(ours, str) or not isinstance(theirs, str) or not theirs or "|" in theirs:
                    at.child(str(ours)).expected("an upstream institution id (a string without '|')", theirs)
            return dict(value)
        return at.expected("an institution id, or a mapping of institution ids to upstream ids", value)


class EncodingName(Type[str]):
    doc = "encoding name"

    def read(self, value: Any, at: At) -> str:
        if not isinstance(value, str):
            at.expected("an encoding name such as utf-8, cp850 or latin-1", value)
        try:
            return codecs.lookup(value).name
        except LookupError:
            return at.expected("an encoding name such as utf-8, cp850 or latin-1", value)


POOL: Section[dict[str, Any]] = Section(
    None,
    (
        Key("size", Integer(1, 256), default=4),
        Key("queue", Integer(1, 1_000_000), default=1000),
    ),
    what="a mapping with size (and queue)",
)

OPTIONS: Section[dict[str, Any]] = Section(
    None,
    (
        Key("type", Text(), default="sip2"),
        Key("endpoint", Text(), default=None, example='endpoint: "tcp:ils.example.org:6001"'),
        Key("login", LOGIN, default=None),
        Key("institution", InstitutionMap(), default=None),
        Key("pool", POOL, default=None),
        Key("timeout", Number(above=0), default=10.0),
        Key("keepalive", Number(above=0), default=60.0),
        Key("encoding", EncodingName(), default="utf-8"),
        Key("error_detection", Flag(), default=True),
        Key("resends", Integer(0, 10), default=3),
    ),
    what="a mapping of options",
)


@attrs.frozen
class UpstreamSettings:
    """A ``sip2`` backend's options, read and checked."""

    endpoint: str
    user: str
    password: str = attrs.field(repr=False)
    location: str
    institution: str | dict[str, str] | None
    pool_size: int
    queue_limit: int
    timeout: float
    keepalive: float
    encoding: str
    error_detection: bool
    resends: int

    def upstream_institution(self, ours: str) -> str:
        """The AO the upstream expects for this daemon's institution ``ours``."""
        mapping = self.institution
        if mapping is None:
            return ours
        if isinstance(mapping, str):
            return mapping
        return mapping.get(ours, ours)


def read_settings(name: str, options: Mapping[str, Any]) -> UpstreamSettings:
    """The settings of backend ``name``; BackendConfigError naming the option when one is wrong."""
    source = Options("sip2", name, BackendConfigError)
    chosen = OPTIONS.read(options, source.root())
    if not chosen["endpoint"]:
        raise BackendConfigError(f"sip2 backend {name!r}: 'endpoint' is required, e.g. endpoint: \"tcp:ils:6001\"")
    login = chosen["login"] or {}
    pool = chosen["pool"] or {"size": 4, "queue": 1000}
    return UpstreamSettings(
        endpoint=chosen["endpoint"],
        user=login.get("user", ""),
        password=_password(name, login),
        location=login.get("location", ""),
        institution=chosen["institution"],
        pool_size=pool["size"],
        queue_limit=pool["queue"],
        timeout=chosen["timeout"],
        keepalive=chosen["keepalive"],
        encoding=chosen["encoding"],
        error_detection=chosen["error_detection"],
        resends=chosen["resends"],
    )


def _password(name: str, login: Mapping[str, Any]) -> str:
    """The upstream password (none: the gateway logs in without one)."""
    return read_secret(login, lambda why: BackendConfigError(f"sip2 backend {name!r}: login: {why}"))
