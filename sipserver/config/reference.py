"""The reference tables of ``docs/configuration.md``, written from the declared sections.

Each table sits between two markers in the page, ``<!-- generated: server -->`` and
``<!-- end generated -->``, and is rewritten from :mod:`sipserver.config.sections`: one row per
key with its type, default, whether a reload applies it, and its description. A key declared
there is documented here, and the tests check that the page is what the declarations say::

    python -m sipserver.config.reference docs/configuration.md           # rewrite the tables
    python -m sipserver.config.reference --check docs/configuration.md   # exit 1 if out of date
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

from sipserver.config import sections
from sipserver.config.schema import BY_KEY, MODEL, REQUIRED, Key, Reload, Section

#: The tables the page holds, by marker name: the section and the key of the config above it.
TABLES: dict[str, tuple[Section[Any], str]] = {
    "server": (sections.SERVER, "server"),
    "logging": (sections.LOGGING, "logging"),
    "http": (sections.HTTP, "http"),
    "listeners": (sections.LISTENER, "listeners"),
    "institutions": (sections.INSTITUTION, "institutions"),
    "profiles": (sections.PROFILE, "profiles"),
    "accounts": (sections.ACCOUNT, "accounts"),
}

_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def rows(section: Section[Any], reload: Reload | None, prefix: str = "") -> Iterator[tuple[str, Key, Reload]]:
    """``(path in the section, key, what a reload does)``; a key holding a section with a model
    of its own (``lockout``, ``policy``) is listed key by key."""
    for key in section.keys:
        decided = key.reload if key.reload not in (None, BY_KEY) else reload
        if key.reload is BY_KEY and isinstance(key.type, Section):  # each of its keys declares its own
            yield from rows(key.type, None, f"{prefix}{key.name}.")
            continue
        assert decided is not None, f"{prefix}{key.name} declares neither live nor restart"
        if isinstance(key.type, Section) and key.type.model is not None:
            yield from rows(key.type, decided, f"{prefix}{key.name}.")
        else:
            yield f"{prefix}{key.name}", key, decided


def default_text(section: Section[Any], key: Key) -> str:
    if key.default_doc:
        return key.default_doc
    value = section.default_of(key)
    if value is REQUIRED:
        return "required"
    if value is MODEL:
        raise ValueError(f"key {key.name}: the model computes its default; say it in default_doc")
    value = getattr(value, "factory", lambda: value)()
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value == "":
        return '`""`'
    if isinstance(value, str | int | float):
        return f"`{value}`"
    raise ValueError(f"key {key.name}: no words for the default {value!r}; say it in default_doc")


def table(name: str) -> str:
    section, top = TABLES[name]
    decided = sections.CONFIG.key(top).reload
    lines = ["| Key | Type | Default | Reload | Meaning |", "|---|---|---|---|---|"]
    for path, key, reload in rows(section, decided if decided is not BY_KEY else None):
        found = section
        for part in path.split(".")[:-1]:
            inner = found.key(part).type
            assert isinstance(inner, Section)
            found = inner
        cells = (f"`{path}`", key.type_doc or key.type.doc, default_text(found, key), reload.value, key.doc)
        lines.append("| " + " | ".join(cell.replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def restart_keys() -> list[str]:
    """The keys whose change waits for a restart, as the file spells them."""
    found = []
    for top in sections.CONFIG.keys:
        if top.reload is BY_KEY:
            assert isinstance(top.type, Section)
            found += [f"{top.name}.{path}" for path, _, reload in rows(top.type, None) if reload is Reload.RESTART]
        elif top.reload is Reload.RESTART:
            found.append(top.name)
    return found


def block(name: str) -> str:
    if name == "restart":
        return ", ".join(f"`{key}`" for key in restart_keys()) + "\n"
    return table(name)


def render(text: str) -> str:
    """The page with every generated block written anew."""
    return _BLOCK.sub(lambda m: m.group(1) + block(m.group("name")) + m.group(4), text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [arg for arg in argv if arg != "--check"]
    stale = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = render(text)
        if new != text:
            stale.append(path)
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)
    if check and stale:
        print(f"out of date (run python -m sipserver.config.reference {' '.join(stale)}): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
