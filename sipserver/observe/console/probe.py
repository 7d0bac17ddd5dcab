"""Test a terminal from the console: ``sipclient check`` against this daemon, frame by frame.

The steps are sipclient's own (:func:`sipserver.client.connection.check`: connect, log in, SC
status, a patron status when a patron is given), so the console and the command line can never
disagree about what "works" means. They run with the blocking client on a thread, against one of
this daemon's own SIP listeners; each frame sent and received is kept, its CO, AC and AD masked,
with its decoding. The password the administrator types is used for this one login and dropped.
"""

from __future__ import annotations

from typing import Any

import attrs

from sipserver.client import show
from sipserver.client.cli import build_parser
from sipserver.client.connection import Connection, Failure, check
from sipserver.sip2 import Message, SIP2Error, decode

#: Seconds each step may wait for the daemon (it is this process: it answers or it is stuck).
STEP_TIMEOUT = 5.0


@attrs.frozen
class Target:
    """The listener the test runs against: where it is bound, and whether it speaks TLS."""

    listener: str
    host: str
    port: int
    tls: bool = False


class _Recorded(Connection):
    """sipclient's connection, keeping each exchange's frames instead of printing them."""

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.frames: list[dict[str, Any]] = []

    def say(self, text: str) -> None:
        pass  # the frames are kept by exchange() below, decoded

    def exchange(self, message: Message) -> Message:
        try:
            return super().exchange(message)
        finally:
            client = self.client
            if client is not None:
                self._keep("sent", client.last_request)
                if client.last_reply:
                    self._keep("received", client.last_reply)

    def _keep(self, direction: str, data: bytes) -> None:
        try:
            decoded = show.format_message(decode(data.rstrip(b"\r\n"), self.args.encoding))
        except (SIP2Error, ValueError) as exc:
            decoded = [f"(not decoded: {exc})"]
        self.frames.append({"direction": direction, "bytes": show.show_bytes(data), "decoded": decoded})


def run_check(target: Target, login: str, password: str, patron: str = "") -> dict[str, Any]:
    """The check's outcome: ``ok``, its one line (sipclient's), and the frames. Blocking: run it
    on a thread."""
    argv = ["-H", target.host, "-p", str(target.port), "--timeout", str(STEP_TIMEOUT), "-u", login]
    if target.tls:
        argv += ["--tls", "--no-verify"]  # our own listener: its name may not be in its certificate
    argv += ["check"] + (["--patron", patron] if patron else [])
    args = build_parser().parse_args(argv)
    args.password = password  # not in argv: nothing that lists arguments ever holds it
    args.raw = True
    conn = _Recorded(args)
    try:
        line, ok = check(conn), True
    except Failure as failure:
        line, ok = f"FAIL: {failure}", False
    finally:
        conn.close()
    return {"ok": ok, "line": line, "listener": target.listener, "frames": conn.frames}
