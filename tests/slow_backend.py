"""A backend for the robustness tests: the embedded sqlite backend whose checkouts stall.

Loaded by the real daemon through the config (``type: tests.slow_backend:SlowBackend``; the daemon
runs with the repository as its working directory). ``delay`` (seconds, default 2) holds every
checkout back with ``reactor.callLater`` before it reaches the database: the stall is asynchronous,
as a slow ILS on the network is, so the reactor stays free for the other terminals. ``mark`` (a
file path, optional) gets a line as each checkout starts to wait, so that a test knows when one is
in flight.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task

from sipserver.ils.embedded.sqlite import SQLiteBackend


class SlowBackend:
    def __init__(self, name: str, options: dict[str, Any], reactor: Any = None) -> None:
        options = dict(options)
        self.delay = float(options.pop("delay", 2.0))
        self.mark = options.pop("mark", None)
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.inner = SQLiteBackend(name=name, options=options, reactor=reactor)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    def checkout(self, *args: Any, **kwargs: Any) -> Any:
        if self.mark is not None:
            with open(self.mark, "a") as mark:
                mark.write("checkout\n")
        return task.deferLater(self.reactor, self.delay, self.inner.checkout, *args, **kwargs)
