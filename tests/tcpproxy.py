"""A TCP relay on loopback in front of a real server (PostgreSQL), which a test can cut and restore.

While cut, the relay accepts each new connection and closes it at once, counting it: to a client
that is what a database that went away looks like, and the count is how often the client tried to
reach it. One thread, bounded by ``close()``; every socket is closed there.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable

#: ``tamper(to_server, data, sender)``: the bytes to pass on instead of ``data`` (b"" drops them),
#: or None to end the connection; ``sender.sendall`` answers the side that sent them.
Tamper = Callable[[bool, bytes, socket.socket], "bytes | None"]


class CuttableRelay:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.attempts = 0  # connections made while cut
        self._cut = False
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._servers: set[socket.socket] = set()
        #: Changes what passes (see :data:`Tamper`); run on the relay's thread, under its lock.
        self.tamper: Tamper | None = None
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._cut = True
            self.attempts = 0
            self._drop_all()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        with self._lock:
            self._drop_all()
        self.listener.close()

    def _drop_all(self) -> None:
        for sock in list(self._pairs):
            with contextlib.suppress(OSError):
                sock.close()
        self._pairs.clear()

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                watched = [self.listener, *self._pairs]
            try:
                readable, _, _ = select.select(watched, [], [], 0.05)
            except (OSError, ValueError):
                continue  # a socket closed by cut() meanwhile
            with self._lock:
                for sock in readable:
                    if sock is self.listener:
                        self._accept()
                    elif sock in self._pairs:
                        self._relay(sock)

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        if self._cut:
            self.attempts += 1
            client.close()
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self._pairs[client] = server
        self._pairs[server] = client
        self._servers.add(server)

    def _relay(self, sock: socket.socket) -> None:
        other = self._pairs[sock]
        try:
            data = sock.recv(65536)
            if data:
                passed = data if self.tamper is None else self.tamper(sock not in self._servers, data, sock)
                if passed is not None:
                    if passed:
                        other.sendall(passed)
                    return
        except OSError:
            pass
        for end in (sock, other):
            self._pairs.pop(end, None)
            self._servers.discard(end)
            with contextlib.suppress(OSError):
                end.close()
