"""The queue of scrypt checks in front of the password threads, through real sessions.

Each test drives sessions (bytes in, bytes out) on the real registry and lockout, with threads
that run a check only when the test says so (``PendingThreads``): what runs, in which order, and
what is refused without running is then exact, with no clock involved. The hashes are real scrypt
with the smallest parameters (``cheap``), so hundreds of checks cost milliseconds.
"""

from __future__ import annotations

import pytest

from sipserver.accounts.password_checks import CAPACITY
from sipserver.sip2 import decode, encode, make
from tests.support import Hub, Terminal, hash_the_password, make_config, sync_backend, use_pending_threads

THREADS = 2


def hub_with(tmp_path, failures: int) -> Hub:
    config = make_config(tmp_path, {"server": {"lockout": {"failures": failures, "window": 60, "duration": 300}}})
    hub = Hub(config, sync_backend())
    hash_the_password(hub, "sco", "scpass", cheap=True)  # allow_from 127.0.0.0/8 and ::1
    hash_the_password(hub, "sorter", "sorterpass", cheap=True)  # no allow_from: any address
    return hub


def attempt(hub: Hub, peer: str, login: str, password: str) -> Terminal:
    terminal = Terminal(hub, peer=peer)
    assert terminal.send(encode(make("93", CN=login, CO=password), sequence="0")) == []  # waits for a thread
    return terminal


def answer(terminal: Terminal) -> str:
    """'ok', 'refused', or '' while the login is not answered."""
    if not terminal.out:
        return ""
    return "ok" if decode(terminal.out[-1]).fixed["ok"] == "1" else "refused"


def passwords_run(threads) -> list[str]:
    return [f.args[0] for f, _args in threads.ran]


def started(threads) -> list[str]:
    return [f.args[0] for f, _args, _d in threads.waiting]


def checks_before(threads, password: str) -> int:
    """How many checks finish before the one of ``password`` starts, run one at a time."""
    count = 0
    while password not in started(threads):
        threads.finish_one()
        count += 1
    return count


def test_parallel_guesses_get_no_more_checks_than_the_lockout_allows(tmp_path):
    hub = hub_with(tmp_path, failures=5)
    threads = use_pending_threads(hub, THREADS)
    guesses = [attempt_or_answer(hub, "127.0.0.9", "sco", f"guess{i}") for i in range(100)]
    right = attempt(hub, "127.0.0.9", "sco", "scpass")  # the right password, queued behind 100 wrong ones
    guesses += [attempt_or_answer(hub, "127.0.0.9", "sco", f"guess{i}") for i in range(100, 999)]
    threads.finish_all()
    assert len(threads.ran) == 5  # the lockout's failures, not 1,000
    assert all(answer(t) == "refused" for t in guesses)
    assert answer(right) == "refused" and not right.connection.logged_in  # refused without being checked
    assert "scpass" not in passwords_run(threads)
    assert hub.lockout.is_locked("127.0.0.9")
    assert hub.password_checks.waiting == 0 and hub.events.in_flight == 0
    logins = hub.events.metrics.logins
    assert logins[("refused", "wrong_password")] == 5
    # What could wait was refused locked_out once the lock came; the rest (past the queue's
    # bound) was refused busy at once. Neither was hashed.
    assert logins[("refused", "locked_out")] == CAPACITY + THREADS - 5
    assert logins[("refused", "busy")] == 1000 - CAPACITY - THREADS


def test_checks_of_one_address_never_outrun_its_remaining_failures(tmp_path):
    hub = hub_with(tmp_path, failures=3)
    threads = use_pending_threads(hub, threads=8)
    attempt(hub, "127.0.0.9", "sco", "wrong1")
    hub.lockout.record_failure("127.0.0.9")  # one failure already in the window
    for i in range(10):
        attempt(hub, "127.0.0.9", "sco", f"more{i}")
    assert len(threads.waiting) == 2  # 3 failures allowed, 1 spent: two may run at once, not eight
    threads.finish_all()
    assert len(threads.ran) == 2 and hub.password_checks.waiting == 0


def test_a_right_password_in_flight_keeps_the_others_of_its_address_checkable(tmp_path):
    # Devices behind one NAT address log in at once after a restart: successes clear the count,
    # so every one of them is checked, two at a time, none refused.
    hub = hub_with(tmp_path, failures=2)
    threads = use_pending_threads(hub, THREADS)
    devices = [attempt(hub, "127.0.0.9", "sorter", "sorterpass") for _ in range(20)]
    while threads.waiting:
        assert len(threads.waiting) <= 2
        threads.finish_one()
    assert all(answer(t) == "ok" for t in devices)


def test_a_known_terminal_is_checked_next_during_a_flood_of_1500_wrong_logins(tmp_path):
    # 1,500 wrong logins from 300 addresses, unknown names and an account without an allow-list,
    # then a terminal logs in where its account says it stands (sco from 127.0.0.2).
    hub = hub_with(tmp_path, failures=0)  # no lockout: every wrong login would be checked
    threads = use_pending_threads(hub, THREADS)
    flood = [
        attempt_or_answer(
            hub, f"127.1.{i % 300 // 250}.{i % 300 % 250 + 1}", "sorter" if i % 2 else f"nobody{i}", f"w{i}"
        )
        for i in range(1500)
    ]
    terminal = attempt(hub, "127.0.0.2", "sco", "scpass")
    # Only the checks already running when it arrived; a first-come queue would run ~1,500 first.
    assert checks_before(threads, "scpass") <= THREADS
    while answer(terminal) == "":
        threads.finish_one()
    assert answer(terminal) == "ok"
    assert len(threads.ran) <= THREADS + 1  # and answered right after them
    # The rest of the flood waits (at most CAPACITY), runs, or was refused busy at once.
    assert hub.password_checks.waiting <= CAPACITY
    waiting = hub.password_checks.waiting + len(threads.waiting)
    assert sum(1 for t in flood if answer(t)) + waiting == len(flood)


def test_an_address_with_nothing_waiting_goes_before_one_with_600_waiting(tmp_path):
    # The same lane (sorter has no allow-list): round robin by address.
    hub = hub_with(tmp_path, failures=0)
    threads = use_pending_threads(hub, THREADS)
    for i in range(600):  # past the queue's bound: the last ones are refused busy at once
        attempt_or_answer(hub, "127.0.0.9", "sorter", f"wrong{i}")
    other = attempt(hub, "127.0.0.10", "sorter", "sorterpass")
    assert checks_before(threads, "sorterpass") <= THREADS
    threads.finish_one()
    threads.finish_one()
    assert answer(other) == "ok"


def test_a_connection_that_closes_takes_its_waiting_check_with_it(tmp_path):
    hub = hub_with(tmp_path, failures=0)
    threads = use_pending_threads(hub, THREADS)
    terminals = [attempt(hub, "127.0.0.9", "sorter", f"wrong{i}") for i in range(200)]
    for terminal in terminals[:150]:
        terminal.hang_up()
    assert hub.password_checks.waiting == 50  # the 148 closed while waiting left; 2 were running
    threads.finish_all()
    assert len(threads.ran) == 50 + THREADS  # the closed ones that were already running finished
    assert all(not t.out for t in terminals[:150]) and all(answer(t) == "refused" for t in terminals[150:])
    assert hub.events.in_flight == 0


def test_a_check_cancelled_while_running_still_counts_against_its_address(tmp_path):
    hub = hub_with(tmp_path, failures=2)
    threads = use_pending_threads(hub, THREADS)
    first = attempt(hub, "127.0.0.9", "sco", "wrong1")
    second = attempt(hub, "127.0.0.9", "sco", "wrong2")
    first.hang_up()  # the guesser does not wait for the answer
    second.hang_up()
    threads.finish_all()
    assert hub.lockout.is_locked("127.0.0.9")  # both guesses were checked, and counted
    late = attempt_or_answer(hub, "127.0.0.9", "sco", "scpass")
    assert answer(late) == "refused" and threads.waiting == []


def attempt_or_answer(hub: Hub, peer: str, login: str, password: str) -> Terminal:
    terminal = Terminal(hub, peer=peer)
    terminal.send(encode(make("93", CN=login, CO=password), sequence="0"))
    return terminal


@pytest.mark.parametrize("lane_login", ["sorter", "sco"])
def test_the_queue_is_bounded_and_a_newcomer_takes_the_place_of_the_longest_line(tmp_path, lane_login):
    hub = hub_with(tmp_path, failures=0)
    threads = use_pending_threads(hub, THREADS)
    flood = [attempt_or_answer(hub, "127.0.0.9", lane_login, f"wrong{i}") for i in range(CAPACITY + 100)]
    assert hub.password_checks.waiting == CAPACITY
    refused_at_once = [t for t in flood if t.out]
    assert len(refused_at_once) == 100 - THREADS and all(answer(t) == "refused" for t in refused_at_once)
    assert hub.events.metrics.logins[("refused", "busy")] == 100 - THREADS
    newcomer = attempt(hub, "127.0.0.10", lane_login, "sorterpass" if lane_login == "sorter" else "scpass")
    assert hub.password_checks.waiting == CAPACITY  # the flood's newest waiting check made room
    assert answer(flood[THREADS + CAPACITY - 1]) == "refused"
    while answer(newcomer) == "":
        threads.finish_one()
    assert answer(newcomer) == "ok" and len(threads.ran) <= 2 * THREADS


def test_a_busy_refusal_does_not_count_as_a_failure(tmp_path):
    hub = hub_with(tmp_path, failures=1)
    use_pending_threads(hub, THREADS)
    hub.password_checks.capacity = 0
    hub.password_checks.threads = 0  # nothing may start and nothing may wait
    terminal = attempt_or_answer(hub, "127.0.0.9", "sco", "scpass")
    assert answer(terminal) == "refused"
    assert not hub.lockout.is_locked("127.0.0.9") and hub.events.metrics.logins[("refused", "busy")] == 1
