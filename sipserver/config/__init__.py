"""The configuration file: YAML in, frozen attrs objects out.

A SIP2 server guards patron data with per-device logins and IP allow-lists, so a config mistake must
never fail open. Hence:

* every error is a :class:`ConfigError` whose message is *one line* naming the file, the key path and
  what was expected (``etc/sip.yaml: accounts[2].allow_from[0]: expected an IPv4 or IPv6 network ...``),
  so that a daemon that refuses to start, or a reload that is refused, says exactly why;
* unknown keys are errors (with a did-you-mean hint): a typo in ``allow_from`` must not silently
  allow every address; duplicate keys in one mapping are errors for the same reason;
* password values never appear in an error message or a warning;
* the objects are frozen; a reload parses a whole new :class:`Config`, and :func:`reload_plan` says
  which of its keys the running service may take, from each key's own declaration.

Relative paths (backend ``path``/``seed``/``*_file`` options, certificate and unix-socket paths in
endpoint strings) are resolved against the directory of the config file, not the working directory,
so the same file works under ``make run``, systemd and the tests.

The package knows nothing of Twisted: endpoint strings are checked lightly and rewritten, never bound.
Its modules, one job each: ``model`` (the objects), ``schema`` (keys, types and sections: the one way
files are checked, shared with the data files and the backends' options), ``sections`` (the config's
keys), ``values`` (the kinds of value they take), ``load`` (reading a file, reload plans), ``yamlfile``
(the strict YAML loader), ``endpoints``, ``places``, ``profiles``, ``reference`` (the docs' tables,
written from ``sections``).
"""

from __future__ import annotations

from sipserver.config.endpoints import ENDPOINT_PREFIXES, resolve_endpoint
from sipserver.config.load import load_config, parse_config, reload_plan
from sipserver.config.model import (
    PERMISSION_NAMES,
    PERMISSIONS,
    AccountConfig,
    AdminConfig,
    BackendConfig,
    Config,
    ConfigError,
    ConsoleConfig,
    HttpConfig,
    InstitutionConfig,
    ListenerConfig,
    LockoutConfig,
    LoggingConfig,
    PolicyConfig,
    ServerConfig,
    UpstreamLogin,
)
from sipserver.config.profiles import ReplyProfile

__all__ = [
    "ENDPOINT_PREFIXES",
    "PERMISSIONS",
    "PERMISSION_NAMES",
    "AccountConfig",
    "AdminConfig",
    "BackendConfig",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "HttpConfig",
    "InstitutionConfig",
    "ListenerConfig",
    "LockoutConfig",
    "LoggingConfig",
    "PolicyConfig",
    "ReplyProfile",
    "ServerConfig",
    "UpstreamLogin",
    "load_config",
    "parse_config",
    "reload_plan",
    "resolve_endpoint",
]
