"""The floor of ``bench/load.py``: a Twisted server that answers every frame with canned bytes.

No parsing, no checksum, no session, no backend: it cuts frames at CR and writes a fixed reply of
the right code (941 for a login, a 98 for 99, a 24 for 23, an ``ok 0`` 12/30/10 for circulation).
What it reaches is what this machine, this reactor and loopback TCP allow *any* Twisted SIP server
with one CPU, so the bench can show how far the real daemon is from it. Not a SIP server: never
point a device at it.

    python bench/floor_server.py --port 7001
"""

from __future__ import annotations

import argparse

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402

REPLIES = {
    b"93": b"941AY0AZFDFC\r",
    b"99": b"98YYYYNN60000320250115    0930102.00AOMAIN|AMDemo Library|BXYYYYYYYYYYYYYYYY|AY1AZE4F1\r",
    b"23": b"24              00120250115    093010AOMAIN|AA21000000000001|AEJane Doe|BLY|CQY|AFWelcome, Jane|"
    b"AY1AZD8A9\r",
    b"11": b"120NUN20250115    093010AOMAIN|AA|AB|AJ|AH|AY1AZF5E6\r",
    b"29": b"300NUN20250115    093010AOMAIN|AA|AB|AJ|AH|AY1AZF5E6\r",
    b"09": b"100YNN20250115    093010AOMAIN|AB|AQ|AY1AZF5E6\r",
}


class Floor(protocol.Protocol):
    buffer = b""

    def dataReceived(self, data: bytes) -> None:
        data = self.buffer + data
        *frames, self.buffer = data.split(b"\r")
        for frame in frames:
            reply = REPLIES.get(frame.lstrip(b"\n")[:2])
            if reply is not None:
                self.transport.write(reply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    reactor.listenTCP(args.port, protocol.Factory.forProtocol(Floor), interface="127.0.0.1", backlog=1024)
    reactor.run()


if __name__ == "__main__":
    main()
