"""Named snapshots of a process's state, taken in every worker and merged into one for the daemon.

With ``server.workers`` above 1 each process counts its own connections and exchanges, while
``/metrics`` and ``/health`` must answer for the whole daemon. So each part that wants to be seen
registers a *provider* under a name: a callable returning a JSON-able dict of what it has now. The
parent asks every worker for its snapshot over the control channel
(:mod:`sipserver.daemon.control`) and merges them with its own, name by name: numbers add up,
mappings merge key by key, lists join, and any other value is the first process's. A provider
whose figures must not add up (a table the parent alone holds) registers in the parent only.

New providers (the operator console's, say) register on the daemon's :class:`Snapshots` the same
way; nothing else needs to change for their figures to cover every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

Provider = Callable[[], dict[str, Any]]
Merger = Callable[[Iterable[dict[str, Any]]], dict[str, Any]]


class Snapshots:
    """The providers of one process, by name."""

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._mergers: dict[str, Merger] = {}

    def register(self, name: str, provider: Provider, merger: Merger | None = None) -> None:
        """Add (or replace) the provider called ``name``; ``merger`` joins several processes'
        snapshots of it where adding numbers up would be wrong (times, rings, tables by key)."""
        self._providers[name] = provider
        if merger is None:
            self._mergers.pop(name, None)
        else:
            self._mergers[name] = merger

    def merger(self, name: str) -> Merger:
        """How the snapshots called ``name`` are merged (:func:`merge` unless registered)."""
        return self._mergers.get(name, merge)

    def merged(self, parts: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        """Several processes' :meth:`take` merged name by name; a merge that fails (a worker's
        snapshot of another shape) gives ``{"error": ...}`` for its name only, so that one part's
        bug cannot take ``/metrics`` and ``/health`` down with it."""
        together: dict[str, dict[str, Any]] = {}
        for name in sorted(set().union(*parts)):
            try:
                together[name] = self.merger(name)(part[name] for part in parts if name in part)
            except Exception as exc:
                together[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return together

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._providers)

    def take(self) -> dict[str, dict[str, Any]]:
        """Every provider's snapshot now; one that fails gives ``{"error": ...}`` instead of
        spoiling the others."""
        taken: dict[str, dict[str, Any]] = {}
        for name, provider in self._providers.items():
            try:
                taken[name] = provider()
            except Exception as exc:  # a provider's bug must not take /metrics down
                taken[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return taken


@attrs.frozen
class Gathered:
    """The daemon's snapshot: ``merged`` by name, from ``answered`` of ``processes`` processes."""

    merged: dict[str, dict[str, Any]]
    processes: int = 1
    answered: int = 1

    @property
    def complete(self) -> bool:
        return self.answered == self.processes


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The snapshots of several processes merged (see the module docstring)."""
    merged: dict[str, Any] = {}
    for snapshot in snapshots:
        merged = _merge_values(merged, snapshot)
    return merged


def _merge_values(ours: Any, theirs: Any) -> Any:
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours
    if isinstance(ours, int | float) and isinstance(theirs, int | float):
        return ours + theirs
    if isinstance(ours, dict) and isinstance(theirs, dict):
        result = dict(ours)
        for key, value in theirs.items():
            result[key] = _merge_values(result[key], value) if key in result else value
        return result
    if isinstance(ours, list) and isinstance(theirs, list):
        return ours + theirs
    return ours
