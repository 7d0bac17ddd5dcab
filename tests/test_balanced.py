"""Two daemons on one PostgreSQL behind Debian's HAProxy (PROXY v2), as a consortium runs them.

HAProxy runs ``contrib/haproxy.cfg`` itself, its addresses set through the environment. The
terminals connect to it from their own loopback addresses (127.0.0.2, 127.0.0.3, ..., bound before
connecting), so the daemons see them only through the PROXY header: an account's ``allow_from``
serves one address and refuses another, a brute force from one address is locked out across
both daemons (``server.lockout.shared``), and when one daemon is killed in the middle of a
checkout load the terminals reconnect through HAProxy and go on. Afterwards every checkout a
terminal was told succeeded is in the audit trail exactly once, with the terminal's address, and
none that was refused or left unanswered is half done.

Run with ``-s`` to see the summary line the docs quote (docs/scale-out.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sipserver.client import SIPClient, SIPClientError
from tests import pg
from tests.daemon import Daemon, config_data, write_config
from tests.support import ROOT

pytestmark = [pytest.mark.postgresql, pytest.mark.e2e]

HAPROXY_CFG = ROOT / "contrib" / "haproxy.cfg"
SIPSERVER = str(Path(sys.executable).parent / "sipserver")
TERMINALS = 8
ITEMS_EACH = 20
PATRONS = [f"2900000000{i:04d}" for i in range(TERMINALS)]
ITEMS = [[f"39{t:02d}0000{n:06d}" for n in range(ITEMS_EACH)] for t in range(TERMINALS)]
BALANCER = "127.0.0.1"

ACCOUNTS = [
    {"login": "sco", "password": "plain:scpass", "institution": "MAIN", "location": "MAIN-DESK1",
     "allow_from": ["127.0.0.0/27"]},
    {"login": "desk", "password": "plain:deskpass", "institution": "MAIN", "allow_from": ["127.0.0.30/32"]},
]  # fmt: skip


def haproxy() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if found is None:
        if pg.in_ci():
            pytest.fail("haproxy is not installed: .ci/run installs Debian's haproxy before the tests")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return found


def load_data(path: Path) -> Path:
    data = {
        "patrons": [{"barcode": b, "name": f"Balanced {i}", "expires": "2099-12-31"} for i, b in enumerate(PATRONS)],
        "items": [{"barcode": b, "title": f"Balanced {b}", "owner": "MAIN"} for each in ITEMS for b in each],
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def balanced(pg_demo_template, tmp_path_factory):
    """(database, [daemon A, daemon B], HAProxy's port)."""
    binary = haproxy()
    folder = tmp_path_factory.mktemp("balanced")
    with pg.temporary_database(pg_demo_template) as dbname:
        backend = {"type": "postgresql", "dsn": pg.dsn_for(dbname), "pool": {"min": 2, "max": 6}}
        listener = {"name": "raw", "transport": "raw", "endpoint": f"tcp:0:interface={BALANCER}",
                    "proxy_protocol": {"trusted": [f"{BALANCER}/32"], "required": True}}  # fmt: skip
        daemons: list[Daemon] = []
        balancer = None
        try:
            for name in ("a", "b"):
                (folder / name).mkdir()
                data = config_data(
                    folder / name, backends={"embedded": backend}, listeners=[listener], accounts=ACCOUNTS
                )
                data["server"]["lockout"] = {"failures": 5, "window": 60, "duration": 300, "shared": "embedded"}
                config = write_config(folder / name, data)
                if name == "a":
                    loaded = subprocess.run(
                        [SIPSERVER, "load", "--config", str(config), str(load_data(folder / "data.yaml"))],
                        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                    )  # fmt: skip
                    assert loaded.returncode == 0, loaded.stderr
                daemons.append(Daemon(config, folder / name / "daemon.log"))
            for daemon in daemons:
                daemon.wait_ready(1).wait_for_log("backend embedded ready")
            front = pg.free_port()
            a, b = (f"{BALANCER}:{daemon.port('raw')}" for daemon in daemons)
            env = dict(os.environ, SIP_FRONT=f"{BALANCER}:{front}", SIP_A=a, SIP_B=b)
            log = open(folder / "haproxy.log", "wb")  # noqa: SIM115 (closed below)
            balancer = subprocess.Popen(
                [binary, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            wait_until_serving(front, balancer, folder / "haproxy.log")
            yield dbname, daemons, front
        finally:
            if balancer is not None:
                balancer.terminate()
                try:
                    balancer.wait(10)
                except subprocess.TimeoutExpired:
                    balancer.kill()
                    balancer.wait(5)
                log.close()
            for daemon in daemons:
                daemon.stop()


def wait_until_serving(front: int, balancer: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert balancer.poll() is None, f"haproxy exited: {log.read_text(errors='replace')}"
        try:
            with SIPClient(BALANCER, front, source="127.0.0.2", timeout=3) as client:
                if client.login("sco", "scpass"):
                    return
        except (SIPClientError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"nothing served through haproxy: {log.read_text(errors='replace')}")


def terminal(front: int, source: str, **options) -> SIPClient:
    return SIPClient(BALANCER, front, source=source, **options)


def refused_reasons(daemons: list[Daemon], peer: str) -> list[str]:
    return [line.rsplit("reason=", 1)[1] for daemon in daemons for line in daemon.log().splitlines()
            if "login refused" in line and f"peer={peer} " in line and "reason=" in line]  # fmt: skip


def test_allow_from_serves_one_address_and_refuses_another_through_the_balancer(balanced):
    _, daemons, front = balanced
    with terminal(front, "127.0.0.30") as client:
        assert client.login("desk", "deskpass")
        assert client.sc_status().fixed["online_status"] == "Y"
    with terminal(front, "127.0.0.31") as client:
        assert not client.login("desk", "deskpass")
    assert refused_reasons(daemons, "127.0.0.31") == ["address_not_allowed"]


def test_a_brute_force_from_one_address_is_locked_out_across_both_daemons(balanced):
    _, daemons, front = balanced
    for attempt in range(7):
        with terminal(front, "127.0.0.20") as client:
            assert not client.login("sco", f"guess{attempt}")
    for _ in range(2):  # round robin: once on each daemon
        with terminal(front, "127.0.0.20") as client:
            assert not client.login("sco", "scpass"), "the right password got through a locked address"
    with terminal(front, "127.0.0.21") as client:
        assert client.login("sco", "scpass")
    reasons = refused_reasons(daemons, "127.0.0.20")
    assert reasons.count("wrong_password") == 5 and reasons.count("locked_out") == 4, reasons
    for daemon in daemons:  # the guesses were spread over both, and both refused the address
        assert "peer=127.0.0.20 login=sco reason=wrong_password" in daemon.log()
        assert "peer=127.0.0.20 login=sco reason=locked_out" in daemon.log()


class Load:
    """What the terminals were told, shared by their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acknowledged: list[tuple[str, str, str]] = []  # (patron, item, source)
        self.refused: list[tuple[str, str]] = []
        self.unanswered: list[tuple[str, str]] = []
        self.reconnects = 0
        self.problems: list[str] = []


def run_terminal(front: int, index: int, load: Load, deadline: float) -> None:
    source, patron = f"127.0.0.{2 + index}", PATRONS[index]
    client: SIPClient | None = None
    try:
        for item in ITEMS[index]:
            while client is None:  # (re)connect through the balancer, and log in again
                assert time.monotonic() < deadline, f"{source} could not get back in"
                try:
                    client = terminal(front, source, timeout=5)
                    if not client.login("sco", "scpass"):
                        raise SIPClientError("login refused")
                except (SIPClientError, OSError):
                    if client is not None:
                        client.close()
                    client = None
                    time.sleep(0.1)
            try:
                reply = client.checkout(patron, item, institution="MAIN")
            except (SIPClientError, OSError):  # the daemon died under it: the terminal goes on
                with load.lock:
                    load.unanswered.append((patron, item))
                    load.reconnects += 1
                client.close()
                client = None
                continue
            with load.lock:
                if reply.code == "12" and reply.fixed["ok"] == "1":
                    load.acknowledged.append((patron, item, source))
                else:
                    load.refused.append((patron, item))
    except Exception as exc:  # reported by the test
        with load.lock:
            load.problems.append(f"{source}: {exc!r}")
    finally:
        if client is not None:
            client.close()


def test_one_daemon_killed_mid_load_loses_and_doubles_nothing(balanced):
    dbname, daemons, front = balanced
    load = Load()
    started = time.monotonic()
    deadline = started + 45
    threads = [threading.Thread(target=run_terminal, args=(front, i, load, deadline), daemon=True)
               for i in range(TERMINALS)]  # fmt: skip
    for thread in threads:
        thread.start()
    total = TERMINALS * ITEMS_EACH
    while len(load.acknowledged) < total // 3:
        assert time.monotonic() < deadline, "the load did not start"
        time.sleep(0.005)
    before_kill = len(load.acknowledged)
    daemons[1].process.kill()  # SIGKILL: no drain, no goodbye
    daemons[1].process.wait(10)
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "terminals still running at the time limit"
    assert load.problems == []

    with pg.admin(pg.dsn_for(dbname)) as cur:
        cur.execute(
            "SELECT patron, item, outcome, peer FROM audit_log WHERE request = 'checkout' AND item LIKE '39%%'"
        )
        audit = cur.fetchall()
        cur.execute(
            "SELECT p.barcode, i.barcode FROM loans l JOIN items i ON i.id = l.item_id "
            "JOIN patrons p ON p.id = l.patron_id WHERE l.returned IS NULL AND i.barcode LIKE '39%%'"
        )
        loans = set(cur.fetchall())
    done = {}
    for patron, item, outcome, peer in audit:
        if outcome == "ok":
            done.setdefault((patron, item), []).append(peer)
    found = sum(1 for patron, item, _ in load.acknowledged if len(done.get((patron, item), ())) == 1)
    lost = sum(1 for patron, item, _ in load.acknowledged if (patron, item) not in done)
    doubled = sum(1 for peers in done.values() if len(peers) > 1)
    done_whole = sum(1 for patron, item in load.unanswered if (patron, item) in done)
    not_at_all = len(load.unanswered) - done_whole
    print(
        f"\nbalanced: terminals={TERMINALS} daemons=2 (one SIGKILLed mid-load) "
        f"acknowledged={len(load.acknowledged)} ({before_kill} before the kill) "
        f"found_in_audit={found} lost: {lost}, doubled: {doubled}; "
        f"unanswered={len(load.unanswered)} (done whole: {done_whole}, not at all: {not_at_all}) "
        f"refused={len(load.refused)} reconnects={load.reconnects} "
        f"seconds={time.monotonic() - started:.1f}"
    )
    assert lost == 0 and doubled == 0 and found == len(load.acknowledged)
    assert len(load.acknowledged) + len(load.refused) + len(load.unanswered) == total
    assert len(load.acknowledged) > total // 3, "nothing was served after the kill"
    for patron, item, source in load.acknowledged:  # the audit trail's peer is the terminal, not HAProxy
        assert done[(patron, item)] == [source]
    assert loans == set(done), "a loan without its audit row, or an audit row without its loan"
    for patron, item in load.refused:  # refused: nothing of it done
        assert (patron, item) not in done
    # Unanswered: done whole (loan and audit row, counted above) or not at all; never half.
    assert all(((p, i) in loans) == ((p, i) in done) for p, i in load.unanswered)


def test_the_scale_out_page_quotes_the_haproxy_config_the_test_runs():
    assert HAPROXY_CFG.read_text() in (ROOT / "docs" / "scale-out.md").read_text()
