"""The YAML reading shared by the config file and the data files: PyYAML's safe loader, made strict.

* **Duplicate keys are refused.** PyYAML silently keeps the last of two equal keys, so a second
  ``allow_from`` (or a patron's second ``pin``) would replace the first unnoticed.
* **An impossible date stays the text written** (``2030-02-30``), so that the key's own check names
  it; PyYAML would raise a bare ValueError with neither file nor line nor key.
* The config also keeps **numbers with a leading zero as written**: YAML 1.1 reads ``001`` as an
  octal integer, which would turn a language code ``010`` into 8. Data files keep YAML's reading,
  and their barcode check says to quote such a number.

Safe loaders only: a file never builds arbitrary Python objects.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from sipserver.config.schema import describe


class StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys and keeping impossible dates as text."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {describe(key)}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        return loader.construct_scalar(node)


StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


class ConfigLoader(StrictLoader):
    """The strict loader, keeping numbers with a leading zero (``001``) as the text written."""


_LEADING_ZERO = re.compile(r"[-+]?0[0-7_]+")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    if _LEADING_ZERO.fullmatch(text):
        return text
    return yaml.SafeLoader.construct_yaml_int(loader, node)


ConfigLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def error_text(exc: yaml.MarkedYAMLError) -> str:
    """``invalid YAML at line L, column C: problem``: only the problem and where, never PyYAML's
    snippet of the file, which could show a password."""
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    text = f"invalid YAML{where}: {exc.problem or exc.context or 'syntax error'}"
    if exc.context and exc.problem and exc.context_mark:
        text += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return text
