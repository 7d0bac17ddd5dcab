"""systemd's readiness protocol (``sd_notify``), so the unit can be ``Type=notify``.

With ``Type=simple`` systemd calls the service started the moment the process exists, and a
``systemctl reload`` issued right after a restart (as configuration management does) sends SIGHUP
before the daemon has a handler for it: the process dies, and as SIGHUP counts as a clean exit,
``Restart=on-failure`` does not bring it back. Under ``Type=notify`` systemd holds the reload until
the daemon says ``READY=1``, which it does once every listener is bound.

The protocol is one datagram of ``KEY=value`` lines to the unix socket named in ``NOTIFY_SOCKET``
(``@`` at its start means Linux's abstract namespace). Outside systemd the variable is unset and
nothing is sent. Written here rather than taken from a library: it is these dozen lines.
"""

from __future__ import annotations

import os
import socket


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``...) to systemd; False when not run by systemd
    or the socket cannot be reached (readiness is a courtesy, never a reason to fail)."""
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return False
    address = "\0" + path[1:] if path[0] == "@" else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True
