"""Two real daemons on one PostgreSQL database, raced by many terminals at once.

What a consortium behind a load balancer needs: each item lent to exactly one patron however many
terminals on however many daemons ask for it at the same moment, no lost fee payment, and a
retransmitted request carried out once. The data is loaded with ``sipserver load`` into a copy of
the demo database, and checked afterwards in the database itself.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sipserver.client import SIPClient
from sipserver.sip2 import encode, make
from tests import pg
from tests.daemon import Daemon, config_data, run_to_exit, write_config
from tests.support import ROOT

pytestmark = [pytest.mark.postgresql, pytest.mark.e2e]

SIPSERVER = str(Path(sys.executable).parent / "sipserver")
PATRONS = [f"2800000000{i:04d}" for i in range(50)]
ITEMS = [f"3800000000{i:04d}" for i in range(20)]
PAYER = "27000000000001"
PAYMENTS = 40


def race_data(path: Path) -> Path:
    data = {
        "patrons": [{"barcode": b, "name": f"Racer {i}", "expires": "2099-12-31"} for i, b in enumerate(PATRONS)]
        + [{"barcode": PAYER, "name": "Paying Patron", "expires": "2099-12-31"}],
        "items": [{"barcode": b, "title": f"Contested {i}", "owner": "MAIN"} for i, b in enumerate(ITEMS)],
        "fees": [
            {"patron": PAYER, "type": "damage", "amount": "5.00", "ref": "race-1", "created": "2024-01-01"},
            {"patron": PAYER, "type": "replacement", "amount": "5.00", "ref": "race-2", "created": "2024-01-02"},
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def two_daemons(pg_demo_template, tmp_path_factory):
    """Daemons A and B on one database (a copy of the demo one plus the race data)."""
    folder = tmp_path_factory.mktemp("two-daemons")
    with pg.temporary_database(pg_demo_template) as dbname:
        backend = {"type": "postgresql", "dsn": pg.dsn_for(dbname), "pool": {"min": 2, "max": 6}}
        daemons = []
        try:
            for name in ("a", "b"):
                (folder / name).mkdir()
                config = write_config(folder / name, config_data(folder / name, backends={"embedded": backend}))
                if name == "a":  # `sipserver load` on a PostgreSQL backend
                    loaded = subprocess.run(
                        [SIPSERVER, "load", "--config", str(config), str(race_data(folder / "race.yaml"))],
                        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                    )  # fmt: skip
                    assert loaded.returncode == 0 and "loaded" in loaded.stdout, loaded.stderr
                daemons.append(Daemon(config, folder / name / "daemon.log"))
            for daemon in daemons:
                daemon.wait_ready(2)
                daemon.wait_for_log("backend embedded ready")
            yield dbname, daemons
        finally:
            for daemon in daemons:
                daemon.stop()


def query(dbname: str, sql: str, params: tuple = ()) -> list[tuple]:
    with pg.admin(pg.dsn_for(dbname)) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def run_threads(targets: list, timeout: float) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "terminals still running after the time limit"


def test_fifty_terminals_on_two_daemons_lend_each_item_to_exactly_one_patron(two_daemons):
    dbname, daemons = two_daemons
    start = threading.Barrier(len(PATRONS), timeout=60)
    oks: list[tuple[str, str]] = []
    problems: list[str] = []

    def terminal(i: int) -> None:
        patron = PATRONS[i]
        order = list(ITEMS)
        random.Random(i).shuffle(order)
        try:
            with SIPClient("127.0.0.1", daemons[i % 2].port("raw"), timeout=30) as client:
                assert client.login("sco", "scpass")
                start.wait()
                for item in order:
                    reply = client.checkout(patron, item, institution="MAIN")
                    if reply.code != "12":
                        problems.append(f"{patron} {item}: {reply.code}")
                    elif reply.fixed["ok"] == "1":
                        oks.append((patron, item))
                    elif not reply.get("AF"):
                        problems.append(f"{patron} {item}: refused without a screen message")
        except Exception as exc:  # collected and reported below
            problems.append(f"terminal {i}: {exc!r}")

    run_threads([lambda i=i: terminal(i) for i in range(len(PATRONS))], timeout=120)
    assert problems == []
    assert len(oks) == len(ITEMS) and sorted(item for _, item in oks) == sorted(ITEMS)
    loans = query(
        dbname,
        "SELECT i.barcode, p.barcode FROM loans l JOIN items i ON i.id = l.item_id JOIN patrons p ON p.id = l.patron_id"
        " WHERE l.returned IS NULL AND i.barcode LIKE '3800000000%%'",
    )
    assert sorted(loans) == sorted((item, patron) for patron, item in oks)  # each item out once, to its winner
    audited = query(
        dbname,
        "SELECT count(*) FROM audit_log WHERE request = 'checkout' AND item LIKE '3800000000%%' AND outcome = 'ok'",
    )
    assert audited == [(len(ITEMS),)]
    assert query(dbname, "SELECT count(*) FROM audit_log WHERE request = 'checkout' AND item LIKE '3800000000%%'") == [
        (len(PATRONS) * len(ITEMS),)
    ]


def test_concurrent_fee_payments_on_two_daemons_lose_no_update(two_daemons):
    dbname, daemons = two_daemons
    start = threading.Barrier(PAYMENTS, timeout=60)
    accepted: list[str] = []

    def pay(i: int) -> None:
        with SIPClient("127.0.0.1", daemons[i % 2].port("raw"), timeout=30) as client:
            assert client.login("sco", "scpass")
            start.wait()
            reply = client.send(
                "37", fee_type="01", payment_type="00", currency_type="USD", BV="0.10", AO="MAIN", AA=PAYER, BK=f"T{i}"
            )
            if reply.code == "38" and reply.fixed["payment_accepted"] == "Y":
                accepted.append(reply.get("BK"))

    run_threads([lambda i=i: pay(i) for i in range(PAYMENTS)], timeout=60)
    assert len(accepted) == PAYMENTS
    owed = query(
        dbname, "SELECT sum(f.balance) FROM fees f JOIN patrons p ON p.id = f.patron_id WHERE p.barcode = %s", (PAYER,)
    )
    assert owed == [(1000 - 10 * PAYMENTS,)]  # cents: 10.00 owed, 40 payments of 0.10
    paid = query(
        dbname,
        "SELECT count(*), sum(amount) FROM payments WHERE patron_id = (SELECT id FROM patrons WHERE barcode = %s)",
        (PAYER,),
    )
    assert paid == [(PAYMENTS, 10 * PAYMENTS)]


def test_a_retransmitted_checkout_runs_once(two_daemons):
    dbname, daemons = two_daemons
    patron, item = "21000000000001", "31000000000008"
    frame = encode(
        make("11", sc_renewal_policy=True, no_block=False, nb_due_date=None, AO="MAIN", AA=patron, AB=item, AC=""),
        sequence="7",
    )
    with SIPClient("127.0.0.1", daemons[0].port("raw"), timeout=30) as client:
        assert client.login("sco", "scpass")
        client.send_bytes(frame)
        first = client.read_frame()
        client.send_bytes(frame)  # the terminal did not see the answer in time and sends it again
        second = client.read_frame()
    assert first == second and first.startswith(b"121")
    assert query(dbname, "SELECT count(*) FROM audit_log WHERE request = 'checkout' AND item = %s", (item,)) == [(1,)]
    assert query(
        dbname,
        "SELECT count(*) FROM loans l JOIN items i ON i.id = l.item_id WHERE i.barcode = %s AND l.returned IS NULL",
        (item,),
    ) == [(1,)]


def test_a_database_behind_the_code_stops_the_daemon_with_one_line(tmp_path):
    with pg.temporary_database() as dbname:  # created, never migrated: schema version 0
        backend = {"type": "postgresql", "dsn": pg.dsn_for(dbname), "pool": {"min": 1, "max": 2}}
        config = write_config(tmp_path, config_data(tmp_path, backends={"embedded": backend}))
        done = run_to_exit(config, 60)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "backend embedded" in lines[0] and "schema version 0" in lines[0] and "sipserver migrate" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
