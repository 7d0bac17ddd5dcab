"""Choosing and constructing a backend from its configuration.

``options["type"]`` names the backend:

* ``sqlite``: the embedded backend (:class:`sipserver.ils.embedded.sqlite.SQLiteBackend`);
* ``postgresql``: :class:`sipserver.ils.embedded.postgresql.PostgreSQLBackend`, imported only when asked
  for, so that psycopg2 stays an optional dependency;
* a name registered by another distribution under the entry point group ``sipserver.backends``;
* ``package.module:Class``, for a backend that is importable but not registered.

Every backend class is called as ``Class(name=name, options=options, reactor=reactor)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from sipserver.ils.interface import BackendConfigError, ILSBackend

ENTRY_POINT_GROUP = "sipserver.backends"
BUILT_IN = {
    "sqlite": "sipserver.ils.embedded.sqlite:SQLiteBackend",
    "postgresql": "sipserver.ils.embedded.postgresql:PostgreSQLBackend",
    "sip2": "sipserver.ils.upstream.backend:SIP2Backend",
}


def _import(spec: str, backend_type: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendConfigError(f"backend type {backend_type!r}: cannot import {module_name}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BackendConfigError(f"backend type {backend_type!r}: {module_name} has no {attr}") from None


def backend_class(backend_type: str) -> Any:
    """The class for a backend type (see the module docstring); BackendConfigError if there is none."""
    if backend_type in BUILT_IN:
        return _import(BUILT_IN[backend_type], backend_type)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == backend_type:
            try:
                return ep.load()
            except Exception as exc:
                raise BackendConfigError(
                    f"backend type {backend_type!r}: entry point {ep.value} failed to load: {exc}"
                ) from exc
    if ":" in backend_type:
        return _import(backend_type, backend_type)
    known = sorted({*BUILT_IN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
    raise BackendConfigError(
        f"unknown backend type {backend_type!r}: expected one of {', '.join(known)} or package.module:Class"
    )


def create_backend(name: str, options: Mapping[str, Any], reactor: Any = None) -> ILSBackend:
    """Construct (not start) the backend ``name`` described by ``options``."""
    backend_type = options.get("type")
    if not isinstance(backend_type, str) or not backend_type:
        raise BackendConfigError(f"backend {name!r}: 'type' must name a backend, got {backend_type!r}")
    cls = backend_class(backend_type)
    try:
        return cls(name=name, options=options, reactor=reactor)
    except BackendConfigError:
        raise
    except TypeError as exc:
        raise BackendConfigError(
            f"backend type {backend_type!r}: {cls!r} does not take (name, options, reactor): {exc}"
        ) from exc
