"""One process's console books as plain JSON-able data, and the merge of several processes' snapshots.

With ``server.workers: N`` every process keeps its own books (its own connections, logins and
counters), and the parent shows the whole daemon: it asks each worker for its :func:`snapshot`
and shows :func:`merge` of them. So a snapshot holds only what adds up across processes: lists
that concatenate (terminals), counters that sum (refusals by reason, messages per minute, latency
buckets), times of which the latest wins (an account's last login), and the last refusals, which
merge by time. What the config says (allow-lists, expiry) is not in it: the parent adds that for
the page (:mod:`.view`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sipserver.observe.events import LATENCY_BUCKETS

if TYPE_CHECKING:
    from sipserver.acs import BackendHealth

    from .activity import Activity
    from .record import ConsoleRecord

VERSION = 1


def snapshot(
    record: ConsoleRecord,
    activity: Activity | None = None,
    health: BackendHealth | None = None,
    worker: int | None = None,
) -> dict[str, Any]:
    """What one process knows now, for the console (see the module docstring)."""
    now = record.clock()
    terminals = []
    for connection, t in list(record.terminals.items()):
        account = connection.account
        terminals.append(
            {
                "worker": worker,
                "listener": connection.listener.name,
                "peer": connection.peer,
                "login": connection.login,
                "institution": account.institution if account is not None else "",
                "since": t.since,
                "last_at": t.last_at,
                "last_request": t.last_request,
                "outcome": t.outcome,
                "latency_ms": round(t.latency * 1000, 3),
                "messages": t.messages,
                "refusals": t.refusals,
            }
        )
    accounts = {
        login: {
            "last_seen": (
                {"at": seen.last_seen, "peer": seen.last_peer, "listener": seen.last_listener}
                if seen.last_seen is not None
                else None
            ),
            "refusals": dict(seen.refusals),
            "not_allowed": [
                {"peer": peer, "listener": listener, "count": count, "since": first, "last": last}
                for (peer, listener), (count, first, last) in seen.not_allowed.items()
            ],
        }
        for login, seen in list(record.accounts.items())
    }
    refusals = [
        {"at": at, "peer": peer, "login": login, "listener": listener, "reason": reason}
        for at, peer, login, listener, reason in reversed(record.refusals)
    ]
    backends: dict[str, Any] = {}
    if health is not None:
        for name, up in health.snapshot().items():
            backends[name] = {
                "up": bool(up),
                "errors": health.errors.get(name, 0),
                "timeouts": health.timeouts.get(name, 0),
                "probe_ms": _ms(health.probe_seconds.get(name)),
            }
        for name, report in health.upstreams().items():  # a sip2 backend: the ILS's own SIP2 server
            if name in backends:
                backends[name]["upstream"] = _upstream(report)
    return {
        "version": VERSION,
        "taken": now,
        "started": record.started,
        "workers": [worker],
        "terminals": terminals,
        "accounts": accounts,
        "refusals": refusals,
        "refusals_kept": record.refusals.maxlen,
        "minutes": activity.minutes(now) if activity is not None else {},
        "backends": backends,
    }


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The snapshots of several processes as one: the whole daemon (see the module docstring)."""
    parts = list(snapshots)
    merged: dict[str, Any] = {
        "version": VERSION,
        "taken": max((s["taken"] for s in parts), default=0.0),
        "started": min((s["started"] for s in parts), default=0.0),
        "workers": [w for s in parts for w in s["workers"]],
        "terminals": [t for s in parts for t in s["terminals"]],
        "accounts": {},
        "refusals": [],
        "refusals_kept": max((s["refusals_kept"] or 0 for s in parts), default=0),
        "minutes": {},
        "backends": {},
    }
    accounts: dict[str, Any] = merged["accounts"]
    for part in parts:
        for login, seen in part["accounts"].items():
            into = accounts.setdefault(login, {"last_seen": None, "refusals": {}, "not_allowed": []})
            last = seen["last_seen"]
            if last is not None and (into["last_seen"] is None or last["at"] > into["last_seen"]["at"]):
                into["last_seen"] = dict(last)
            for reason, count in seen["refusals"].items():
                into["refusals"][reason] = into["refusals"].get(reason, 0) + count
            into["not_allowed"].extend(dict(entry) for entry in seen["not_allowed"])
    for seen in accounts.values():
        seen["not_allowed"] = _merge_addresses(seen["not_allowed"])
    refusals = sorted((r for s in parts for r in s["refusals"]), key=lambda r: r["at"], reverse=True)
    merged["refusals"] = refusals[: merged["refusals_kept"]]
    minutes: dict[str, Any] = merged["minutes"]
    for part in parts:
        for minute, figures in part["minutes"].items():
            into = minutes.setdefault(minute, {"messages": {}, "latency": [0] * len(LATENCY_BUCKETS)})
            for key, count in figures["messages"].items():
                into["messages"][key] = into["messages"].get(key, 0) + count
            into["latency"] = [a + b for a, b in zip(into["latency"], figures["latency"], strict=True)]
    backends: dict[str, Any] = merged["backends"]
    for part in parts:
        for name, state in part["backends"].items():
            into = backends.setdefault(name, {"up": True, "errors": 0, "timeouts": 0, "probe_ms": None})
            into["up"] = into["up"] and state["up"]  # down in one process is down for its terminals
            into["errors"] += state["errors"]
            into["timeouts"] += state["timeouts"]
            probe = state.get("probe_ms")
            if probe is not None and (into["probe_ms"] is None or probe > into["probe_ms"]):
                into["probe_ms"] = probe  # the slowest process's last probe
            upstream = state.get("upstream")
            if upstream is not None:  # each process has its own pool: their figures add up
                ours = into.setdefault("upstream", dict.fromkeys(_UPSTREAM_COUNTS, 0) | {"problem": ""})
                for key in _UPSTREAM_COUNTS:
                    ours[key] += upstream[key]
                ours["problem"] = ours["problem"] or upstream["problem"]
    for into in backends.values():
        if "upstream" in into:
            into["upstream"]["latency_ms"] = _mean_ms(into["upstream"])
    return merged


#: The figures of a sip2 backend's pool that the console shows, added over the processes.
_UPSTREAM_COUNTS = ("logged_in", "pool_size", "queue", "requests", "errors", "latency_sum", "latency_count")


def _upstream(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the console shows of a sip2 backend's upstream: logged-in connections of the pool,
    the queue, requests, errors, mean latency, and what keeps it from logging in (never a secret:
    the report carries none)."""
    shown = {
        "logged_in": report["logged_in"], "pool_size": report["pool_size"], "queue": report["queue_depth"],
        "requests": report["requests"], "errors": report["errors"], "latency_sum": report["latency_sum"],
        "latency_count": report["latency_count"],
        "problem": "the upstream refuses this gateway's login" if report["login_refused"] else report["problem"],
    }  # fmt: skip
    shown["latency_ms"] = _mean_ms(shown)
    return shown


def _mean_ms(figures: Mapping[str, Any]) -> float | None:
    count = figures["latency_count"]
    return round(figures["latency_sum"] / count * 1000, 3) if count else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _merge_addresses(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (address, listener): counts summed, the first and last times kept."""
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        key = (entry["peer"], entry["listener"])
        into = by_key.get(key)
        if into is None:
            by_key[key] = entry
        else:
            into["count"] += entry["count"]
            into["since"] = min(into["since"], entry["since"])
            into["last"] = max(into["last"], entry["last"])
    return sorted(by_key.values(), key=lambda e: e["last"])
