"""Two real daemons for the relay tests: an upstream on the embedded backend with the demo data,
and a relay in front of it whose institution uses the ``sip2`` backend (optionally through a
:class:`tests.tcpproxy.CuttableRelay`, to break the wire)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tests.daemon import ACCOUNTS, Daemon, config_data, write_config

GATEWAY = {"login": "gateway", "password": "plain:gwsecret-9d1", "institution": "MAIN", "location": "GW",
           "allow_from": ["127.0.0.0/8"]}  # fmt: skip
GATEWAY_PASSWORD = "gwsecret-9d1"


def start_upstream(tmp_path: Path, **changes: Any) -> Daemon:
    directory = tmp_path / "upstream"
    directory.mkdir(exist_ok=True)
    data = config_data(directory, accounts=[*copy.deepcopy(ACCOUNTS), dict(GATEWAY)])
    data.update(changes)
    return Daemon(write_config(directory, data), directory / "daemon.log").wait_ready(2)


def relay_backend(port: int, **options: Any) -> dict[str, Any]:
    backend = {"type": "sip2", "endpoint": f"tcp:127.0.0.1:{port}",
               "login": {"user": "gateway", "password": GATEWAY_PASSWORD, "location": "GW"},
               "pool": {"size": 2}, "timeout": 3}  # fmt: skip
    backend.update(options)
    return backend


def start_relay(tmp_path: Path, port: int, name: str = "relay", wait: bool = True, **options: Any) -> Daemon:
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    data = config_data(directory)
    data["backends"] = {"ils": relay_backend(port, **options)}
    data["institutions"]["MAIN"]["backend"] = "ils"
    relay = Daemon(write_config(directory, data), directory / "daemon.log").wait_ready(2)
    if wait:
        relay.wait_for_log("logged in")
    return relay
