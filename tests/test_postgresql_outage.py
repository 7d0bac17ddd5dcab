"""Outages: the database goes away under a running daemon, and comes back.

Terminals must get a SIP answer within the institution's timeout (negative, with a screen message),
98 must say the ACS is off-line, no connection may be dropped and the daemon must not crash; when
the database answers again, service resumes without a restart. Two ways to lose the database:
``pg_terminate_backend`` on the daemon's connections (on the shared server), and a throwaway
cluster of our own that the test stops and starts (``pg_ctl stop -m fast``), including a daemon
that starts while its database is down.
"""

from __future__ import annotations

import threading
import time

import pytest

from sipserver.client import SIPClient
from tests import pg
from tests.daemon import Daemon, config_data, write_config
from tests.support import DEMO_DATA

pytestmark = [pytest.mark.postgresql, pytest.mark.e2e]

JANE, ITEM, OTHER_ITEM = "21000000000001", "31000000000008", "31000000000009"
TIMEOUT = 2  # the institution's policy.timeout in these tests
MARGIN = 1.5


def outage_config(folder, dsn: str):
    data = config_data(folder, backends={
        "embedded": {"type": "postgresql", "dsn": dsn, "pool": {"min": 2, "max": 4}, "connect_timeout": 2},
    })  # fmt: skip
    data["institutions"]["MAIN"]["policy"] = {"timeout": TIMEOUT}
    return write_config(folder, data)


def timed(client: SIPClient, code: str, **fields):
    started = time.monotonic()
    reply = client.send(code, **fields)
    return reply, time.monotonic() - started


def online(client: SIPClient) -> str:
    return client.sc_status().fixed["online_status"]


def wait_online(client: SIPClient, want: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if online(client) == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"98 did not say online={want} within {timeout}s")


def assert_refused_in_time(client: SIPClient) -> None:
    """Every kind of request gets a negative SIP answer with a screen message, in time."""
    reply, elapsed = timed(client, "11", sc_renewal_policy=True, no_block=False, nb_due_date=None,
                           AO="MAIN", AA=JANE, AB=OTHER_ITEM, AC="")  # fmt: skip
    assert reply.code == "12" and reply.fixed["ok"] == "0" and reply.get("AF"), reply
    assert elapsed < TIMEOUT + MARGIN
    reply, elapsed = timed(client, "63", language="001", summary=" " * 10, AO="MAIN", AA=JANE, AC="")
    assert reply.code == "64" and reply.get("AF") and elapsed < TIMEOUT + MARGIN, reply
    reply, elapsed = timed(client, "09", no_block=False, AP="MAIN", AO="MAIN", AB=ITEM, AC="")
    assert reply.code == "10" and reply.fixed["ok"] == "0" and reply.get("AF") and elapsed < TIMEOUT + MARGIN, reply


def test_killed_connections_get_answers_and_service_goes_on(pg_demo_template, tmp_path):
    with pg.temporary_database(pg_demo_template) as dbname:
        daemon = Daemon(outage_config(tmp_path, pg.dsn_for(dbname)), tmp_path / "daemon.log")
        try:
            daemon.wait_ready(2)
            daemon.wait_for_log("backend embedded ready")
            with SIPClient("127.0.0.1", daemon.port("raw"), timeout=10) as client:
                assert client.login("sco", "scpass")
                for round_ in range(3):
                    assert pg.terminate(dbname) >= 1
                    out = client.checkout(JANE, ITEM, institution="MAIN")
                    # a write that failed before COMMIT is retried on a new connection: it succeeds
                    assert out.code == "12" and out.fixed["ok"] == "1", (round_, out)
                    pg.terminate(dbname)
                    back = client.checkin(ITEM, "MAIN", institution="MAIN")
                    assert back.code == "10" and back.fixed["ok"] == "1", (round_, back)
                    pg.terminate(dbname)
                    patron = client.patron_information(JANE, "1234", institution="MAIN")
                    assert patron.code == "64" and patron.get("AE") == "Jane Doe"
                assert online(client) == "Y"
            assert daemon.process.poll() is None
            assert "Traceback" not in daemon.log()
        finally:
            daemon.stop()


def test_a_stopped_and_restarted_database_is_survived_without_a_restart(tmp_path):
    pg.require()
    cluster = pg.ThrowawayCluster()
    daemon = None
    try:
        cluster.start()
        with pg.admin(cluster.dsn) as cur:
            cur.execute("CREATE DATABASE sip")
        dsn = pg.dsn_for("sip", cluster.dsn)
        pg.migrate_and_seed(dsn, str(DEMO_DATA))
        cluster.stop()

        # The daemon starts while its database is down: it serves, says so, and keeps trying.
        daemon = Daemon(outage_config(tmp_path, dsn), tmp_path / "daemon.log")
        daemon.wait_ready(2)
        daemon.wait_for_log("FAILED TO START")
        with SIPClient("127.0.0.1", daemon.port("raw"), timeout=10) as client:
            assert client.login("sco", "scpass")
            assert online(client) == "N"
            assert_refused_in_time(client)

            cluster.start()
            wait_online(client, "Y")
            out = client.checkout(JANE, ITEM, institution="MAIN")
            assert out.fixed["ok"] == "1", out

            # The database stops under a running daemon: several terminals at once, all answered.
            cluster.stop("fast")
            answers: list[bytes] = []
            problems: list[str] = []

            def terminal() -> None:
                try:
                    with SIPClient("127.0.0.1", daemon.port("raw"), timeout=10) as other:
                        assert other.login("sco", "scpass")
                        assert_refused_in_time(other)
                        answers.append(other.last_reply)
                except Exception as exc:  # collected below
                    problems.append(repr(exc))

            threads = [threading.Thread(target=terminal) for _ in range(3)]
            for t in threads:
                t.start()
            assert_refused_in_time(client)
            for t in threads:
                t.join(30)
            assert problems == [] and len(answers) == 3
            assert online(client) == "N"

            cluster.start()
            wait_online(client, "Y")  # no restart: the same daemon, the same terminal connection
            back = client.checkin(ITEM, "MAIN", institution="MAIN")
            assert back.fixed["ok"] == "1", back
            out = client.checkout(JANE, OTHER_ITEM, institution="MAIN")
            assert out.fixed["ok"] == "1", out
        assert daemon.process.poll() is None
    finally:
        if daemon is not None:
            daemon.stop()
        cluster.destroy()


def test_with_the_database_gone_requests_are_answered_at_once_and_it_is_tried_with_backoff(pg_demo_template, tmp_path):
    # Each request used to try to connect: ~187,000 attempts in 40 s against a stopped database.
    import psycopg2.extensions

    from tests.tcpproxy import CuttableRelay

    admin = psycopg2.extensions.parse_dsn(pg.ADMIN_DSN)
    with pg.temporary_database(pg_demo_template) as dbname:
        relay = CuttableRelay(admin.get("host", "127.0.0.1"), int(admin.get("port", 5432)))
        parts = psycopg2.extensions.parse_dsn(pg.dsn_for(dbname))
        dsn = psycopg2.extensions.make_dsn(**{**parts, "host": "127.0.0.1", "port": str(relay.port)})
        daemon = Daemon(outage_config(tmp_path, dsn), tmp_path / "daemon.log")
        try:
            daemon.wait_ready(2)
            daemon.wait_for_log("backend embedded ready")
            with SIPClient("127.0.0.1", daemon.port("raw"), timeout=10) as client:
                assert client.login("sco", "scpass")
                assert client.checkout(JANE, ITEM, institution="MAIN").fixed["ok"] == "1"
                relay.cut()
                cut_at = time.monotonic()
                answered = 0
                for _ in range(300):  # a busy terminal through the outage
                    reply = client.patron_status(JANE, "1234", institution="MAIN")
                    assert reply.code == "24" and reply.get("AF"), reply
                    answered += 1
                assert online(client) == "N"
                while time.monotonic() - cut_at < 4:  # a sorter polling meanwhile
                    assert online(client) == "N"
                    time.sleep(0.2)
                attempts = relay.attempts
                # One for the request that found it gone, then the backoff's tries (0.5, 1, 2 s...).
                assert answered == 300 and attempts <= 10, attempts
                relay.restore()
                wait_online(client, "Y", timeout=20)
                assert client.checkin(ITEM, "MAIN", institution="MAIN").fixed["ok"] == "1"
            assert daemon.process.poll() is None and "Traceback" not in daemon.log()
        finally:
            daemon.stop()
            relay.close()
