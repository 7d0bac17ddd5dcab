"""Messages per minute by type and outcome, and latency per minute, for the last 24 hours.

Nothing is counted on the request path for this: the metrics (:class:`~sipserver.observe.events.Metrics`)
already count every exchange and its latency bucket, so once a minute :meth:`Activity.sample`
stores how much each counter moved since the previous sample. The ring has one slot per minute of
the day and is overwritten in place, so its size never grows: a slot holds one small dict keyed by
``message|outcome`` (a finite set: the SIP2 message names and the outcomes) and one list of latency
bucket counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sipserver.observe.events import LATENCY_BUCKETS, Metrics

#: Slots in the ring: one per minute for 24 hours.
MINUTES = 24 * 60
#: Keys (``message|outcome``) kept at most; any beyond them are summed under ``other|other``.
MAX_KEYS = 128


class Activity:
    """The per-minute ring over one process's :class:`Metrics`; see the module docstring."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._messages: dict[tuple[str, str], int] = {}  # the counters at the previous sample
        self._latency = [0] * len(LATENCY_BUCKETS)
        self._slots: list[tuple[int, dict[str, int], list[int]] | None] = [None] * MINUTES
        self._keys: dict[tuple[str, str], str] = {}  # one string per key, shared by every slot

    def sample(self, now: float) -> None:
        """Store what the counters did since the previous sample, as the minute ``now`` falls in."""
        messages, latency = self._moved()
        minute = int(now // 60)
        slot = self._slots[minute % MINUTES]
        if slot is not None and slot[0] == minute:  # a second sample in the same minute adds to it
            _add(slot[1], messages)
            slot[2][:] = [a + b for a, b in zip(slot[2], latency, strict=True)]
        else:
            self._slots[minute % MINUTES] = (minute, messages, latency)
        self._messages = dict(self.metrics.messages)
        self._latency = list(self.metrics.latency_buckets)

    def minutes(self, now: float) -> dict[str, dict[str, Any]]:
        """The last 24 hours, sparse: ``{minute: {"messages": {"23|ok": n}, "latency": [...]}}`` for
        the minutes that had requests, the minute running now included (what moved since the last
        sample). Minutes are counted from the epoch, as strings (JSON keys)."""
        current = int(now // 60)
        out: dict[str, dict[str, Any]] = {}
        for slot in self._slots:
            if slot is not None and current - MINUTES < slot[0] <= current and slot[1]:
                out[str(slot[0])] = {"messages": dict(slot[1]), "latency": list(slot[2])}
        messages, latency = self._moved()
        if messages:
            here = out.setdefault(str(current), {"messages": {}, "latency": [0] * len(LATENCY_BUCKETS)})
            _add(here["messages"], messages)
            here["latency"] = [a + b for a, b in zip(here["latency"], latency, strict=True)]
        return out

    def _moved(self) -> tuple[dict[str, int], list[int]]:
        previous = self._messages
        moved: dict[str, int] = {}
        for (message, outcome), count in self.metrics.messages.items():
            delta = count - previous.get((message, outcome), 0)
            if delta > 0:
                key = self._keys.get((message, outcome))
                if key is None:
                    key = f"{message}|{outcome}" if len(self._keys) < MAX_KEYS else "other|other"
                    self._keys[(message, outcome)] = key
                moved[key] = moved.get(key, 0) + delta
        latency = [now - before for now, before in zip(self.metrics.latency_buckets, self._latency, strict=True)]
        return moved, latency


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


def percentile(buckets: list[int], fraction: float) -> float | None:
    """The upper bound (seconds) of the latency bucket the ``fraction`` percentile falls in; None
    without requests, and the last bound for requests slower than it (a histogram says no more)."""
    total = sum(buckets)
    if total == 0:
        return None
    wanted = fraction * total
    seen = 0
    for bound, count in zip(LATENCY_BUCKETS, buckets, strict=False):
        seen += count
        if seen >= wanted:
            return bound
    return LATENCY_BUCKETS[-1]
