"""A small pool of psycopg2 connections served by a Twisted thread pool.

Why not ``twisted.enterprise.adbapi.ConnectionPool``: adbapi ties one connection to each pool
thread, learns that a connection is dead only by failing a call on it (and then logs "Rollback
failed" tracebacks), and gives no way to tell *where* a transaction failed or to drop a request
whose caller has given up. The PostgreSQL backend needs all three to retry safely after an outage
and to roll back a write the terminal was already told had failed. This pool is as non-blocking as
adbapi (every database call runs in a worker thread, never on the reactor) and smaller:

* at most ``maximum`` worker threads, hence at most ``maximum`` connections, opened on demand and
  kept in an idle list; ``minimum`` threads (and connections, opened by the backend) stay ready;
* :meth:`ConnectionPool.acquire` hands out an idle connection or opens one, outside any lock;
  :meth:`ConnectionPool.release` takes it back, or closes it when it is broken;
* :meth:`ConnectionPool.discard_idle` closes every idle connection: once one connection was found
  dead (a server restart, ``pg_terminate_backend``), its idle siblings most likely are too;
* :meth:`ConnectionPool.submit` runs ``work(cancelled, ...)`` in a worker thread and returns a
  Deferred; cancelling that Deferred (the ACS does, when the institution's timeout expires) sets
  the ``cancelled`` flag, which the work checks before it starts and before it commits.

The worker threads are this module's own (:class:`Workers`): one queue, threads started on demand
up to ``maximum``, each result handed to the reactor with ``callFromThread``. Every call of every
terminal passes through here, and Twisted's general-purpose ``ThreadPool`` spends several times
more of the reactor's time per call (a context wrapper, a coordinator, a lock per job) than a
:class:`queue.SimpleQueue` does.

In synchronous mode (``threads=False``) the work runs on the caller's thread and the Deferred has
fired on return: for the behaviour suites and benchmarks, which run without a reactor.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from sipserver.observe.loglevel import logger

T = TypeVar("T")
Connect = Callable[[], Any]


class PoolStopped(Exception):
    """The pool is not running (never started, or stopped)."""


class Cancelled:
    """Set when the caller gives up on a call: a flag read by the worker (cheaper than an Event)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


_STOP = object()


class Workers:
    """At most ``maximum`` threads running jobs from one queue, first in first out.

    ``minimum`` threads start at once; another starts when a job is submitted while more jobs
    wait than threads are idle. :meth:`stop` lets the threads finish the jobs already submitted,
    then joins them.
    """

    log = logger()

    def __init__(self, minimum: int, maximum: int, name: str) -> None:
        self.minimum = minimum
        self.maximum = max(1, maximum)
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job
        self._waiting = 0  # jobs submitted and not yet taken
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            while len(self._threads) < self.minimum:
                self._spawn()

    def _spawn(self) -> None:  # with self._lock held
        thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job()`` in a worker thread; the job must not raise (it reports its own result)."""
        with self._lock:
            if self._stopped:
                raise PoolStopped(f"worker threads {self.name!r} are stopped")
            self._waiting += 1
            if self._waiting > self._idle and len(self._threads) < self.maximum:
                self._spawn()
        self._jobs.put(job)

    def _work(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            with lock:
                self._idle += 1
            job = jobs.get()
            with lock:
                self._idle -= 1
                if job is not _STOP:
                    self._waiting -= 1
            if job is _STOP:
                return
            try:
                job()
            except BaseException:  # a job reports its own errors; this is a bug, keep the thread alive
                self.log.failure("worker thread {name}: a job raised", name=self.name)

    def stop(self) -> None:
        """Finish the jobs already submitted, then end every thread (waiting for them)."""
        with self._lock:
            self._stopped = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(_STOP)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()


class ConnectionPool:
    """See the module docstring."""

    def __init__(
        self, connect: Connect, *, minimum: int, maximum: int, reactor: Any, name: str, threads: bool = True
    ) -> None:
        self._connect = connect
        self.minimum = minimum
        self.maximum = maximum
        self.name = name
        self.threads = threads
        self._reactor = reactor
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._workers: Workers | None = None
        self._shutdown_trigger: Any = None
        self.opened = 0  # connections opened so far (tests and logs read it)

    # -- life cycle -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return not self.threads or self._workers is not None

    def start(self) -> None:
        if self.threads and self._workers is None:
            self._workers = Workers(self.minimum, self.maximum, name=f"sipserver-pg-{self.name}")
            self._workers.start()
            self._shutdown_trigger = self._get_reactor().addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        """Stop the worker threads (waiting for running work) and close every idle connection."""
        workers, self._workers = self._workers, None
        if self._shutdown_trigger is not None:
            try:
                self._get_reactor().removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):
                pass  # fired already: we are running as the shutdown trigger
            self._shutdown_trigger = None
        if workers is not None:
            workers.stop()
        self.discard_idle()

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    # -- connections ------------------------------------------------------------------------------

    def acquire(self, *, fresh: bool = False) -> Any:
        """An idle connection, or a new one (``fresh``: always a new one). Connect errors propagate."""
        if not fresh:
            with self._lock:
                while self._idle:
                    conn = self._idle.pop()
                    if not conn.closed:
                        return conn
        conn = self._connect()
        with self._lock:
            self.opened += 1
        return conn

    def release(self, conn: Any, *, broken: bool = False) -> None:
        if broken or conn.closed:
            _close_quietly(conn)
            return
        with self._lock:
            if len(self._idle) < self.maximum:
                self._idle.append(conn)
                return
        _close_quietly(conn)

    def discard_idle(self) -> int:
        """Close every idle connection; returns how many there were."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)
        return len(idle)

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    # -- running work -----------------------------------------------------------------------------

    def submit(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``work(cancelled, *args, **kwargs)`` in a worker thread (or inline when synchronous)."""
        if not self.threads:
            try:
                return succeed(work(None, *args, **kwargs))
            except BaseException:
                return fail()
        workers = self._workers
        if workers is None:
            return fail(PoolStopped(f"connection pool {self.name!r} is not running"))
        cancelled = Cancelled()
        d: Deferred[T] = Deferred(lambda _: cancelled.set())
        reactor = self._get_reactor()

        def deliver(success: bool, result: Any) -> None:
            if d.called:  # cancelled: the caller was answered already; the work rolled back or was skipped
                if not success and isinstance(result, Failure):
                    result.cleanFailure()
                return
            if success:
                d.callback(result)
            else:
                d.errback(result)

        def job() -> None:
            try:
                result = work(cancelled, *args, **kwargs)
            except BaseException:
                reactor.callFromThread(deliver, False, Failure())
            else:
                reactor.callFromThread(deliver, True, result)

        try:
            workers.submit(job)
        except PoolStopped as exc:
            return fail(exc)
        return d


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # a broken connection may fail to close; it is gone either way
        pass
