"""Has any connection, in any process, committed to a sqlite database in WAL mode since we looked?

The patron cache asks before every patron look-up on the reactor thread (half of the status mix),
and ``PRAGMA data_version`` answers it with a read transaction that takes and drops the
shared-memory locks, three system calls. The answer is also in memory the process already
shares: every connection maps the database's ``-shm`` file, whose first bytes are the WAL-index
header (sqlite's documented format: https://www.sqlite.org/walformat.html, "The WAL-Index
Header"). A commit rewrites it before it returns, with a change counter, the last valid frame and
the WAL's salts, at least one of which moves on every commit and every reset of the WAL. Reading
those bytes is one ``pread``, a fraction of the PRAGMA's cost (``docs/performance.md``, step 13).
(Mapping the file would save a little more but turns a truncated file into a SIGBUS that kills
the daemon; a short read is merely no answer.)

sqlite writes the header twice (the second copy first, then the first one), and its own readers
trust the header only when the two copies agree. So does :meth:`WalHeader.read`: when they differ,
a commit is halfway through writing them, and the caller asks ``PRAGMA data_version`` instead. A
commit whose header is not written yet has not returned to its caller, so no terminal can have
been told of it: the header read is exactly as fresh as the PRAGMA.
"""

from __future__ import annotations

import os
import sys

#: Bytes of one copy of the header; the second copy follows the first.
HEADER_SIZE = 48
#: The header's format version (its first 32-bit word, in the machine's byte order).
FORMAT_VERSION = 3007000


class WalHeader:
    """The two header copies at the start of a database's ``-shm`` file, read through one descriptor."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, database: str) -> WalHeader | None:
        """The header of ``database``'s shared memory, or None when there is none to read: not in
        WAL mode, no ``-shm`` file (yet), or a format this code does not know."""
        try:
            fd = os.open(f"{database}-shm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        header = cls(fd)
        first = header.read()
        if first is None or int.from_bytes(first[:4], sys.byteorder) != FORMAT_VERSION:
            header.close()
            return None
        return header

    def read(self) -> bytes | None:
        """The header's bytes, or None while a commit is writing them (the two copies differ), or
        when the file cannot be read."""
        try:
            both = os.pread(self._fd, 2 * HEADER_SIZE, 0)
        except OSError:
            return None
        first = both[:HEADER_SIZE]
        return first if len(both) == 2 * HEADER_SIZE and first == both[HEADER_SIZE:] else None

    def close(self) -> None:
        os.close(self._fd)
