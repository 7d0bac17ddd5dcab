"""Reading a config file into a :class:`~sipserver.config.model.Config`, and what a reload may apply.

The file is read with the strict YAML loader (:mod:`sipserver.config.yamlfile`) and checked whole
against the declared sections (:mod:`sipserver.config.sections`). Every problem is a
:class:`~sipserver.config.model.ConfigError` of one line naming the file, the key path and what was
expected; relative paths are taken from the config file's folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml

from sipserver.config import yamlfile
from sipserver.config.model import Config, ConfigError
from sipserver.config.schema import Source, describe, restart_plan
from sipserver.config.sections import CONFIG


class ConfigSource(Source):
    """The config file being read: its errors are :class:`ConfigError`."""

    def __init__(self, path: str) -> None:
        super().__init__(path, os.path.dirname(os.path.abspath(path)))

    def error(self, path: str, message: str) -> Exception:
        return ConfigError(self.name, path or None, message)


def parse_config(data: Any, path: str) -> Config:
    """Validate already-loaded YAML *data*; *path* names the file in errors and anchors relative paths."""
    at = ConfigSource(path).root()
    if not isinstance(data, Mapping):
        at.fail(
            "expected a mapping at the top level with listeners, institutions, accounts and backends, "
            f"got {'an empty file' if data is None else describe(data)}"
        )
    return CONFIG.read(data, at)


def load_config(path: str) -> Config:
    """Read and validate the YAML file at *path*; raise :class:`ConfigError` on any problem."""
    try:
        with open(path, "rb") as stream:
            data = yaml.load(stream, Loader=yamlfile.ConfigLoader)  # a SafeLoader subclass: no arbitrary objects
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read the config file: {exc.strerror or exc}") from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(path, None, yamlfile.error_text(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"invalid YAML: {' '.join(str(exc).split())}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor's own error, without a position
        raise ConfigError(path, None, f"invalid YAML: {exc}") from None
    return parse_config(data, path)


def reload_plan(old: Config, new: Config) -> tuple[Config, tuple[str, ...]]:
    """The config a reload from *old* to *new* runs with, and the keys whose change waits for a restart.

    Each key's ``LIVE`` or ``RESTART`` declaration in :mod:`sipserver.config.sections` decides: the
    running config has the new value of every live key and the old value of every restart-only one
    (listeners and backends keep their sockets and pools, the log its destination). The keys are
    named as the file spells them (``server.workers``); *new* itself is returned when none waits.
    """
    return restart_plan(CONFIG, old, new)
