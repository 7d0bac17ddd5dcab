"""Snapshots merged over worker processes, and a lockout shared with other processes."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from sipserver.accounts.lockout import Lockout
from sipserver.observe.events import Metrics
from sipserver.observe.snapshots import Snapshots, merge


def test_numbers_add_mappings_merge_lists_join_and_the_rest_is_the_first_s():
    merged = merge([
        {"n": 1, "by": {"a": 1}, "names": ["x"], "since": "first", "up": True},
        {"n": 2, "by": {"a": 2, "b": 5}, "names": ["y"], "since": "second", "up": False},
    ])  # fmt: skip
    assert merged == {"n": 3, "by": {"a": 3, "b": 5}, "names": ["x", "y"], "since": "first", "up": True}


def test_a_failing_provider_spoils_only_its_own_snapshot():
    snapshots = Snapshots()
    snapshots.register("good", lambda: {"n": 1})
    snapshots.register("bad", lambda: 1 / 0)
    taken = snapshots.take()
    assert taken["good"] == {"n": 1} and "ZeroDivisionError" in taken["bad"]["error"]


def test_a_merge_that_fails_spoils_only_its_own_name():
    snapshots = Snapshots()
    snapshots.register("metrics", lambda: {"n": 1})
    snapshots.register("console", lambda: {"terminals": []}, lambda parts: {"taken": max(p["taken"] for p in parts)})
    merged = snapshots.merged([snapshots.take(), snapshots.take()])
    assert merged["metrics"] == {"n": 2}
    assert "KeyError" in merged["console"]["error"]


def test_metrics_of_two_processes_add_up_through_their_snapshots():
    first, second = Metrics(), Metrics()
    first.messages[("checkout", "ok")] += 2
    second.messages[("checkout", "ok")] += 3
    second.open_by_login[("raw", "sco")] += 1
    first.observe(0.002)
    second.observe(0.2)
    together = Metrics.from_snapshot(merge([first.snapshot(), second.snapshot()]))
    assert together.messages[("checkout", "ok")] == 5
    assert together.open_by_login[("raw", "sco")] == 1
    assert together.latency_count == 2 and sum(together.latency_buckets) == 2


def test_outcomes_are_handed_on_and_a_refusal_waits_until_they_are_known():
    clock = Clock()
    here, there = Lockout(3, 60, 300, clock=clock), Lockout(3, 60, 300, clock=clock)
    acknowledgements: list[Deferred[None]] = []

    def share(event: str, peer: str) -> Deferred[None]:
        getattr(there, f"record_{event}")(peer, shared=True)
        acknowledgements.append(Deferred())
        return acknowledgements[-1]

    here.share = share
    here.record_failure("10.0.0.1")
    there.record_failure("10.0.0.1")
    there.record_failure("10.0.0.1")
    assert there.is_locked("10.0.0.1") and not here.is_locked("10.0.0.1")  # ``there`` did not hand on
    waiting = here.settled()
    assert waiting is not None and not waiting.called
    acknowledgements[0].callback(None)
    assert waiting.called and here.settled() is None


def test_a_process_joining_late_takes_the_running_locks():
    clock = Clock()
    old, new = Lockout(2, 60, 300, clock=clock), Lockout(2, 60, 300, clock=clock)
    old.record_failure("10.0.0.1")
    old.record_failure("10.0.0.1")
    clock.advance(100)
    new.adopt_locks(old.running_locks())
    assert new.is_locked("10.0.0.1")
    clock.advance(199)
    assert new.is_locked("10.0.0.1")
    clock.advance(2)
    assert not new.is_locked("10.0.0.1")
