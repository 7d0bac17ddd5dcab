"""The console page's data: a (merged) snapshot with what the config says about each account.

The fix for the most common refusal is worked out here: an account refused with
``address_not_allowed`` from a new address gets the ``allow_from`` line that would let that
address in, written as the config file writes it, so the administrator can paste it.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from sipserver.config import AccountConfig

from .activity import percentile

#: Days before an account's expiry the page warns.
EXPIRY_WARNING_DAYS = 30


def allow_from_line(allow_from: Iterable[Any], address: str) -> str:
    """The ``allow_from:`` line with ``address`` added as a single-address network (/32 or /128)."""
    try:
        network = str(ipaddress.ip_network(address))
    except ValueError:  # a unix socket's peer: it counts as loopback
        network = "127.0.0.1/32"
    entries = [str(n) for n in allow_from]
    if network not in entries:
        entries.append(network)
    return "allow_from: [" + ", ".join(f'"{e}"' if ":" in e else e for e in entries) + "]"


def account_rows(
    accounts: Iterable[AccountConfig], seen: Mapping[str, Any], today: datetime.date
) -> list[dict[str, Any]]:
    """One row per account in the config, with what the snapshot saw of it."""
    rows = []
    for account in accounts:
        figures = seen.get(account.login) or {"last_seen": None, "refusals": {}, "not_allowed": []}
        days_left = (account.expires - today).days if account.expires is not None else None
        rows.append(
            {
                "login": account.login,
                "institution": account.institution,
                "enabled": account.enabled,
                "allow_from": [str(n) for n in account.allow_from],
                "expires": account.expires.isoformat() if account.expires is not None else None,
                "days_left": days_left,
                "expiry_warning": days_left is not None and days_left <= EXPIRY_WARNING_DAYS,
                "last_seen": figures["last_seen"],
                "refusals": figures["refusals"],
                "not_allowed": [
                    {**entry, "fix": allow_from_line(account.allow_from, entry["peer"])}
                    for entry in figures["not_allowed"]
                ],
            }
        )
    return rows


def activity_rows(minutes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per minute with requests, oldest first: the count by ``message|outcome``, the total, and the
    latency percentiles (the upper bounds of the histogram buckets they fall in, in ms)."""
    rows = []
    for minute in sorted(minutes, key=int):
        figures = minutes[minute]
        buckets = figures["latency"]
        row: dict[str, Any] = {
            "minute": int(minute) * 60,
            "total": sum(figures["messages"].values()),
            "messages": figures["messages"],
        }
        for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value = percentile(buckets, fraction)
            row[name] = None if value is None else value * 1000
        rows.append(row)
    return rows


def page_data(
    snap: Mapping[str, Any], accounts: Iterable[AccountConfig], today: datetime.date, name: str
) -> dict[str, Any]:
    """Everything the page shows, from a snapshot (one process's, or the merge of the workers')."""
    return {
        "name": name,
        "taken": snap["taken"],
        "started": snap["started"],
        "workers": snap["workers"],
        "terminals": sorted(snap["terminals"], key=lambda t: (t["login"], t["peer"], t["since"])),
        "accounts": account_rows(accounts, snap["accounts"], today),
        "refusals": snap["refusals"],
        "activity": activity_rows(snap["minutes"]),
        "backends": snap["backends"],
    }
