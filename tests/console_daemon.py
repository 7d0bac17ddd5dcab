"""A real daemon with the console on, for the console's HTTP and browser tests."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.daemon import Daemon, config_data, write_config
from tests.support import cheap_scrypt_hash

ADMIN, ADMIN_PASSWORD = "admin", "console-demo-pass"


def start(tmp_path: Path, **changes: Any) -> Daemon:
    """The e2e daemon (accounts sco, telnet and faraway, allowed from 10.0.0.0/8 only) with one
    console administrator."""
    data = config_data(tmp_path, console={"admins": [{"login": ADMIN, "password": cheap_scrypt_hash(ADMIN_PASSWORD)}]})
    data.update(changes)
    return Daemon(write_config(tmp_path, data), tmp_path / "daemon.log").wait_ready(2)


def url(daemon: Daemon, path: str = "/console/") -> str:
    return f"http://127.0.0.1:{daemon.port('http')}{path}"


def get(
    daemon: Daemon,
    path: str = "/console/",
    login: str = ADMIN,
    password: str | None = ADMIN_PASSWORD,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request, with basic authentication unless ``password`` is None."""
    request = urllib.request.Request(url(daemon, path), data=data, headers=headers or {})
    if password is not None:
        token = base64.b64encode(f"{login}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def state(daemon: Daemon) -> dict[str, Any]:
    status, _, body = get(daemon, "/console/api/state")
    assert status == 200, body
    return json.loads(body)
