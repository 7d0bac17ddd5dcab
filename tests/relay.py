"""Two real daemons for the relay tests: an upstream on the embedded backend with the demo data,
and a relay in front of it whose institution uses the ``sip2`` backend (optionally through a
:class:`tests.tcpproxy.CuttableRelay`, to break the wire)."""

from __future__ import annotations

import copy
import socket
import textwrap
from pathlib import Path
from typing import Any

import attrs
import yaml

from tests.daemon import ACCOUNTS, Daemon, config_data, write_config
from tests.support import BASE_CONFIG, DEMO_DATA

GATEWAY = {"login": "gateway", "password": "plain:gwsecret-9d1", "institution": "MAIN", "location": "GW",
           "allow_from": ["127.0.0.0/8"]}  # fmt: skip
GATEWAY_PASSWORD = "gwsecret-9d1"


def start_upstream(
    tmp_path: Path, gateway: dict[str, Any] | None = None, extra_accounts: list[dict[str, Any]] = (), **changes: Any
) -> Daemon:
    directory = tmp_path / "upstream"
    directory.mkdir(exist_ok=True)
    accounts = [*copy.deepcopy(ACCOUNTS), {**GATEWAY, **(gateway or {})}, *extra_accounts]
    data = config_data(directory, accounts=accounts)
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


def base_config_data(tmp_path: Path) -> dict[str, Any]:
    """The behaviour suite's config (``tests.support.BASE_CONFIG``) for a real daemon: the demo data
    in a database file, and the status listener."""
    data = yaml.safe_load(textwrap.dedent(BASE_CONFIG))
    data["backends"] = {"embedded": {"type": "sqlite", "path": str(tmp_path / "ils.sqlite3"), "seed": str(DEMO_DATA)}}
    data["http"] = {"endpoint": "tcp:0:interface=127.0.0.1"}
    return data


@attrs.define
class RelayPair:
    """An upstream daemon on the embedded backend and a relay daemon in front of it, both on the
    behaviour suite's config."""

    upstream: Daemon
    relay: Daemon

    def stop(self) -> None:
        self.relay.stop()
        self.upstream.stop()


def start_pair(tmp_path: Path, **options: Any) -> RelayPair:
    up_dir, relay_dir = tmp_path / "upstream", tmp_path / "relay"
    up_dir.mkdir(exist_ok=True)
    relay_dir.mkdir(exist_ok=True)
    data = base_config_data(up_dir)
    data["accounts"].append(dict(GATEWAY))
    upstream = Daemon(write_config(up_dir, data), up_dir / "daemon.log").wait_ready(2)
    try:
        data = base_config_data(relay_dir)
        data["backends"] = {"ils": relay_backend(upstream.port("raw"), **options)}
        data["institutions"]["MAIN"]["backend"] = "ils"
        relay = Daemon(write_config(relay_dir, data), relay_dir / "daemon.log").wait_ready(2)
        relay.wait_for_log("logged in")
    except BaseException:
        upstream.stop()
        raise
    return RelayPair(upstream, relay)


class SocketTerminal:
    """A terminal on a real daemon's raw listener, with :class:`tests.support.Terminal`'s ``one``:
    one frame out, its one reply back (bounded in time)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""

    def one(self, frame: bytes) -> bytes:
        self.sock.sendall(frame if frame.endswith(b"\r") else frame + b"\r")
        while b"\r" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the daemon closed the connection; had {self._buffer!r}")
            self._buffer += chunk
        end = self._buffer.index(b"\r") + 1
        reply, self._buffer = self._buffer[:end], self._buffer[end:]
        return reply

    def close(self) -> None:
        self.sock.close()
