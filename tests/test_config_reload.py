"""What a reload applies: each config key's own LIVE or RESTART declaration, and nothing else."""

from __future__ import annotations

import copy
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from sipserver.client import SIPClient
from sipserver.config import Config, reload_plan
from sipserver.config.schema import BY_KEY, LIVE, RESTART, Key, Section, check_reload_declarations
from sipserver.config.sections import CONFIG
from tests.daemon import Daemon, config_data, write_config
from tests.test_config import minimal, parse

#: What needs a restart today. A key moves in or out of this list by changing its declaration in
#: sipserver/config/sections.py, on purpose, never by being forgotten.
RESTART_KEYS = {
    "http",
    "listeners",
    "backends",
    "server.workers",
    "server.lockout.shared",
    "logging.format",
    "logging.destination",
    "logging.file",
    "logging.syslog_facility",
    "logging.syslog_socket",
}


def declared(section: Section[Any] = CONFIG, path: str = "") -> Iterator[tuple[str, Key]]:
    """Every key a reload decides on, with its path: those declared LIVE or RESTART."""
    for key in section.keys:
        where = f"{path}.{key.name}" if path else key.name
        if key.reload is BY_KEY:
            assert isinstance(key.type, Section)
            yield from declared(key.type, where)
        else:
            yield where, key


def attr_path(path: str) -> list[str]:
    section, names = CONFIG, []
    for name in path.split("."):
        key = section.key(name)
        names.append(key.attr)
        section = key.type if isinstance(key.type, Section) else section
    return names


def get(config: Any, names: list[str]) -> Any:
    for name in names:
        config = getattr(config, name)
    return config


def changed(config: Config, names: list[str], value: Any) -> Config:
    """A copy of the config with one value replaced, bypassing the classes' checks: any value that
    is not equal to the old one is a change to the plan."""
    if len(names) == 1:
        copied = copy.copy(config)
        object.__setattr__(copied, names[0], value)
        return copied
    return changed(config, names[:1], changed(getattr(config, names[0]), names[1:], value))


class Different:
    """A value equal to nothing else."""


def test_the_restart_only_keys_are_the_declared_ones() -> None:
    assert {path for path, key in declared() if key.reload is RESTART} == RESTART_KEYS
    assert {path for path, key in declared() if key.reload is LIVE} >= {"accounts", "institutions", "logging.level"}


@pytest.mark.parametrize(("path", "key"), list(declared()), ids=[path for path, _ in declared()])
def test_a_reload_applies_a_live_key_and_keeps_and_names_a_restart_key(path: str, key: Key) -> None:
    old = parse(minimal())
    names = attr_path(path)
    new = changed(old, names, Different())
    running, restart = reload_plan(old, new)
    if key.reload is RESTART:
        assert restart == (path,)
        assert get(running, names) == get(old, names)  # not applied live
        assert not isinstance(get(running, names), Different)
    else:
        assert restart == ()
        assert running is new


def test_a_reload_that_changes_nothing_runs_the_new_config() -> None:
    old, new = parse(minimal()), parse(minimal())
    assert reload_plan(old, new) == (new, ())
    assert reload_plan(old, new)[0] is new


def test_restart_only_changes_are_kept_and_live_ones_applied_together() -> None:
    old = parse(minimal())
    data = minimal()
    data["server"] = {"workers": 3, "idle_timeout": 5}
    data["logging"] = {"level": "debug", "format": "json"}
    data["listeners"][0]["name"] = "renamed"
    data["accounts"][0]["location"] = "DESK9"
    new = parse(data)
    running, restart = reload_plan(old, new)
    assert restart == ("server.workers", "logging.format", "listeners")
    assert (running.server.workers, running.server.idle_timeout) == (1, 5.0)
    assert (running.logging.level, running.logging.format) == ("debug", "text")
    assert running.listeners == old.listeners
    assert running.accounts == new.accounts
    assert running.accounts[0].location == "DESK9"


def test_a_key_without_a_declaration_stops_the_import() -> None:
    from sipserver.config.model import LockoutConfig
    from sipserver.config.schema import Integer

    forgotten = Section(LockoutConfig, (Key("failures", Integer(0), reload=LIVE), Key("window", Integer(0))))
    with pytest.raises(TypeError, match=r"config key lockout\.window declares neither LIVE nor RESTART"):
        check_reload_declarations(Section(Config, (Key("lockout", forgotten, reload=BY_KEY),)))
    check_reload_declarations(CONFIG)


def test_the_running_daemon_keeps_a_restart_only_key_names_it_and_applies_the_rest(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    path = write_config(tmp_path, data)
    running = Daemon(path, tmp_path / "d.log")
    try:
        running.wait_ready(2)
        data["logging"] = {"format": "json"}  # restart only: lines stay text until a restart
        data["accounts"].append({"login": "newdesk", "password": "plain:newpass", "institution": "MAIN"})
        write_config(tmp_path, data)
        running.signal(signal.SIGHUP)
        running.wait_for_log("configuration reloaded")
        running.wait_for_log("changes to logging.format need a restart to take effect")
        with SIPClient("127.0.0.1", running.port("raw")) as client:
            assert client.login("newdesk", "newpass")  # the live part was applied
        running.wait_for_log("newdesk")
        after = running.log().split("configuration reloaded", 1)[1].splitlines()[1:]
        assert after and not [line for line in after if line.lstrip().startswith("{")], after
        assert running.process.poll() is None
    finally:
        running.stop()


def test_declarations_cover_every_attribute_of_the_config() -> None:
    """Every attribute of Config (but the file's path and warnings) is a declared key."""
    keys = {key.attr for key in CONFIG.keys}
    assert {field.name for field in attrs.fields(Config)} - keys == {"path", "warnings"}


def test_the_configuration_reference_is_written_from_the_declarations() -> None:
    """docs/configuration.md's key tables are what the sections declare: every key, its default and
    whether a reload applies it (``python -m sipserver.config.reference docs/configuration.md``)."""
    from sipserver.config import reference

    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert reference.render(page) == page, "run: python -m sipserver.config.reference docs/configuration.md"
    assert reference.render(page.replace("| `workers` |", "| `worker` |")) == page  # a stale table is rewritten
    for name in reference.TABLES:
        assert f"<!-- generated: {name} -->" in page
    # Every section has its table; a backend's options are documented by the backend (docs/backends.md).
    assert {key.name for key in CONFIG.keys} - set(reference.TABLES) == {"backends"}
    assert reference.restart_keys() == [path for path, key in declared() if key.reload is RESTART]
