"""Endpoint strings in the config: checked lightly and made independent of the working directory.

A listener's ``endpoint`` (and ``http.endpoint``) is a Twisted server endpoint string. Reading
the config never binds anything and imports no Twisted: the string's kind and port are checked,
and the file paths it names (certificates, a unix socket) are made absolute against the config
file's folder, so that the same file works under ``make run``, systemd and the tests.
"""

from __future__ import annotations

import os
import re

from sipserver.config.schema import describe as _describe

#: The endpoint types a listener (or the HTTP endpoint) may use.
ENDPOINT_PREFIXES: tuple[str, ...] = ("tcp", "tcp6", "ssl", "unix", "systemd", "tls")


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
                segment = f"{parts[0]}={_escape(absolute(value, base_dir))}"
        else:
            value = _unescape(segment)
            if kind == "unix" and not positional:
                segment = _escape(absolute(value, base_dir))
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


def absolute(path: str, base_dir: str) -> str:
    """*path* made absolute against *base_dir*; ``:memory:`` and "" stay as they are."""
    if not path or path == ":memory:" or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, path))
