"""A secret this daemon must send (a password it logs in with upstream) rather than check: given
inline, in a file, or in the environment, exactly one of them, and never shown in an error."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from sipserver.config.schema import Key, Section, Text

#: The keys that give a secret; a section that takes one lists these among its keys.
SECRET_KEYS = (
    Key("password", Text(empty=True), default=None, secret=True, doc="The password itself (prefer a file)."),
    Key("password_file", Text(), default=None, doc="A file holding the password (one line)."),
    Key("password_env", Text(), default=None, doc="An environment variable holding the password."),
)

#: A login this daemon makes elsewhere: a user, its secret, a location code.
LOGIN: Section[dict[str, Any]] = Section(
    None,
    (Key("user", Text(safe=True), default=""), *SECRET_KEYS, Key("location", Text(empty=True, safe=True), default="")),
    what="a mapping with user and one of password, password_file or password_env",
)


def read_secret(given: Mapping[str, Any], fail: Callable[[str], Exception]) -> str:
    """The secret from exactly one of ``password``, ``password_file``, ``password_env`` ("" for
    none); ``fail(message)`` is raised naming the source, never the value."""
    keys = [key for key in ("password", "password_file", "password_env") if given.get(key) is not None]
    if len(keys) > 1:
        raise fail(f"give one of {', '.join(keys)}, not several")
    if not keys:
        return ""
    key = keys[0]
    if key == "password":
        return str(given["password"])
    if key == "password_env":
        value = os.environ.get(given["password_env"])
        if value is None:
            raise fail(f"password_env: the environment has no {given['password_env']}")
        return value
    path = given["password_file"]
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().strip("\r\n")
    except OSError as exc:
        raise fail(f"password_file: cannot read {path}: {exc.strerror}") from None
