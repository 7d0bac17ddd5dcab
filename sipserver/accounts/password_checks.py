"""Password checks waiting for a thread: bounded, fair between addresses, gated by the lockout.

A scrypt check costs about 50 ms of CPU and 16 MB, so only a couple run at once
(``sipserver.daemon.service.PASSWORD_THREADS``) and the others wait here. A plain first-come queue let
anyone stall every login: 1,500 wrong logins from a few addresses kept a terminal's login waiting
longer than its timeout, the checks of connections already closed were still run, and every guess
already queued was checked even after its address was locked. So:

* **Each address has its own line, and the threads take from the lines in turn** (round robin).
  A login from an address with nothing waiting starts after at most one check of every other
  address that waits, however many checks one address has queued.
* **Two lanes.** A login naming an account whose ``allow_from`` lists the address it comes from
  (a known terminal where it belongs) waits in the first lane, which the threads serve before the
  second; every other login (unknown names, accounts without an allow-list, addresses outside it)
  waits in the second. A flood from elsewhere therefore never delays a terminal at its own
  address by more than the checks already running; a flood from inside an account's allow-list
  shares the first lane address by address.
* **The lockout gates every start.** A check starts only while its address has room for one more
  failure in the lockout window (:meth:`sipserver.accounts.lockout.Lockout.may_check`), and holds that room
  while it runs. Once the address is locked, its waiting checks are refused at once, without
  running: parallel connections get no more wrong guesses checked than ``lockout.failures`` per
  window.
* **Bounded.** At most :data:`CAPACITY` checks wait in each lane. A newcomer to a full lane takes
  the place of the newest check of the address with the longest line, which is refused as busy;
  when its own line is the longest, the newcomer is refused instead.
* **A connection that closes takes its check with it**: cancelling the Deferred removes a waiting
  check (the Deferred fires with the judge's answer to :attr:`Refused.WITHDRAWN`). A check already
  running finishes and is still judged and counted (a wrong guess counts even when its connection
  did not wait for the answer).

Not thread-safe: call it from the reactor thread.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from sipserver.accounts.lockout import Lockout, peer_key

__all__ = ["CAPACITY", "PasswordChecks", "Refused"]

T = TypeVar("T")

#: Checks that may wait in each lane (the checks running are not counted).
CAPACITY = 256


class Refused(enum.Enum):
    """Why a check was answered without its result: its address got locked, the lane was full,
    or its caller gave up (the Deferred was cancelled)."""

    LOCKED_OUT = "locked_out"
    BUSY = "busy"
    WITHDRAWN = "withdrawn"


class _Check:
    __slots__ = ("judge", "key", "result", "running", "verify")

    def __init__(self, key: str, verify: Callable[[], bool], judge: Callable[[bool | Refused], Any]) -> None:
        self.key = key
        self.verify = verify
        self.judge = judge
        self.running = False
        self.result: Deferred[Any] = Deferred()


class _Lane:
    """One line of waiting checks per address; the dict's order is the round robin's."""

    __slots__ = ("lines", "waiting")

    def __init__(self) -> None:
        self.lines: dict[str, deque[_Check]] = {}
        self.waiting = 0

    def add(self, check: _Check) -> None:
        self.lines.setdefault(check.key, deque()).append(check)
        self.waiting += 1

    def remove(self, check: _Check) -> bool:
        line = self.lines.get(check.key)
        if line is None or check not in line:
            return False
        line.remove(check)
        self.waiting -= 1
        if not line:
            del self.lines[check.key]
        return True

    def take(self, key: str) -> _Check:
        """The first check of ``key``'s line; the address goes to the back of the round."""
        line = self.lines.pop(key)
        check = line.popleft()
        self.waiting -= 1
        if line:
            self.lines[key] = line
        return check

    def drop(self, key: str) -> deque[_Check]:
        line = self.lines.pop(key, deque())
        self.waiting -= len(line)
        return line

    def evict_for(self, key: str) -> _Check | None:
        """Make room for a newcomer from ``key``: the newest check of the longest line, unless
        that line is no longer than ``key``'s would be with the newcomer in it."""
        if not self.lines:
            return None
        longest = max(self.lines, key=lambda k: len(self.lines[k]))
        if len(self.lines[longest]) <= len(self.lines.get(key, ())) + 1:
            return None
        check = self.lines[longest].pop()
        self.waiting -= 1
        return check


class PasswordChecks:
    """See the module docstring. ``run(f)`` runs ``f()`` on a thread and returns a Deferred."""

    def __init__(
        self,
        lockout: Lockout,
        run: Callable[[Callable[[], bool]], Deferred[bool]],
        *,
        threads: int = 2,
        capacity: int = CAPACITY,
    ) -> None:
        self.lockout = lockout
        self._run = run
        self.threads = threads
        self.capacity = capacity
        self._lanes = (_Lane(), _Lane())  # known terminals at their own address first
        self.running = 0
        self._stopped = False
        self._dispatching = False
        self._answers: list[tuple[_Check, Refused]] = []

    @property
    def waiting(self) -> int:
        return sum(lane.waiting for lane in self._lanes)

    def submit(
        self, peer: str, verify: Callable[[], bool], judge: Callable[[bool | Refused], T], *, expected: bool = False
    ) -> Deferred[T]:
        """Run ``verify()`` on a thread when its turn comes; the Deferred fires with ``judge``'s
        answer to its result, or to a :class:`Refused` when it never runs. ``judge`` runs on the
        reactor thread, also for a check whose Deferred was cancelled once it had started.
        Cancelling the Deferred fires it with ``judge(Refused.WITHDRAWN)``.
        ``expected``: the login names an account that allows this address (the first lane)."""
        key = peer_key(peer)
        if self._stopped:
            return succeed(judge(Refused.BUSY))
        if self.lockout.is_locked(key):
            return succeed(judge(Refused.LOCKED_OUT))
        check = _Check(key, verify, judge)
        check.result = Deferred(lambda _: self._withdraw(check))
        lane = self._lanes[0 if expected else 1]
        if lane.waiting >= self.capacity:
            evicted = lane.evict_for(key)
            if evicted is None:
                return succeed(judge(Refused.BUSY))
            self._answers.append((evicted, Refused.BUSY))
        lane.add(check)
        self._dispatch()
        return check.result

    def stop(self) -> None:
        """Refuse every waiting check and every new one (the server is stopping)."""
        self._stopped = True
        for lane in self._lanes:
            for key in list(lane.lines):
                self._answers.extend((check, Refused.BUSY) for check in lane.drop(key))
        self._dispatch()

    # ---------------------------------------------------------------------------------------------

    def _withdraw(self, check: _Check) -> None:
        """The caller gave up (its connection closed): a waiting check leaves its line; a running
        one finishes and is judged then all the same."""
        if not check.running:
            for lane in self._lanes:
                if lane.remove(check):
                    break
        check.result.callback(check.judge(Refused.WITHDRAWN))

    def _dispatch(self) -> None:
        """Start checks while threads are free, then give the refused their answers."""
        if self._dispatching:
            return  # a judge called back into submit(): the loop below goes on
        self._dispatching = True
        try:
            while True:
                while self.running < self.threads:
                    check = self._next()
                    if check is None:
                        break
                    self._start(check)
                if not self._answers:
                    break
                answers, self._answers = self._answers, []
                for check, why in answers:
                    check.result.callback(check.judge(why))
        finally:
            self._dispatching = False

    def _next(self) -> _Check | None:
        """The next check to run: lanes in order, addresses in turn, skipping those at their
        lockout limit for now and refusing the lines of those locked meanwhile."""
        for lane in self._lanes:
            for key in list(lane.lines):
                if self.lockout.may_check(key):
                    return lane.take(key)
                if self.lockout.is_locked(key):
                    self._answers.extend((check, Refused.LOCKED_OUT) for check in lane.drop(key))
        return None

    def _start(self, check: _Check) -> None:
        check.running = True
        self.running += 1
        self.lockout.reserve(check.key)
        self._run(check.verify).addBoth(self._finished, check)

    def _finished(self, outcome: bool | Failure, check: _Check) -> None:
        self.running -= 1
        self.lockout.release(check.key)
        result = check.result
        if isinstance(outcome, Failure):
            if not result.called:
                result.errback(outcome)
        else:
            answer = check.judge(outcome)  # records the failure or the success in the lockout
            if not result.called:
                result.callback(answer)
            if self.lockout.is_locked(check.key):  # this failure locked it: the rest go unchecked
                for lane in self._lanes:
                    self._answers.extend((waiting, Refused.LOCKED_OUT) for waiting in lane.drop(check.key))
        self._dispatch()
