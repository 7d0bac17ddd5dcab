"""``server.lockout.shared``: two real daemons on one PostgreSQL lock a guessing address together."""

from __future__ import annotations

import pytest

from sipserver.client import SIPClient
from tests import pg
from tests.daemon import Daemon, config_data, run_to_exit, write_config

pytestmark = [pytest.mark.postgresql, pytest.mark.e2e]


def shared_config(folder, dbname, **lockout):
    data = config_data(folder, backends={"embedded": {"type": "postgresql", "dsn": pg.dsn_for(dbname)}})
    data["server"]["lockout"] = {"failures": 5, "window": 60, "duration": 300, "shared": "embedded", **lockout}
    return write_config(folder, data)


def test_wrong_passwords_spread_over_two_daemons_lock_at_the_limit_on_both(pg_demo_template, tmp_path):
    with pg.temporary_database(pg_demo_template) as dbname:
        daemons = []
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                daemons.append(Daemon(shared_config(tmp_path / name, dbname), tmp_path / name / "daemon.log"))
            for daemon in daemons:
                daemon.wait_ready(2).wait_for_log("backend embedded ready")
            for attempt in range(7):  # a, b, a, b...: each daemon alone sees at most 4
                daemon = daemons[attempt % 2]
                with SIPClient("127.0.0.1", daemon.port("raw"), source="127.0.0.7") as client:
                    assert not client.login("sco", f"wrong{attempt}")
            for daemon in daemons:
                with SIPClient("127.0.0.1", daemon.port("raw"), source="127.0.0.7") as client:
                    assert not client.login("sco", "scpass"), "127.0.0.7 is not locked on this daemon"
                with SIPClient("127.0.0.1", daemon.port("raw"), source="127.0.0.8") as client:
                    assert client.login("sco", "scpass")
            refused = [line.rsplit("reason=", 1)[1] for d in daemons for line in d.log().splitlines()
                       if "login refused" in line and "reason=" in line and "peer=127.0.0.7" in line]  # fmt: skip
            assert sorted(refused).count("wrong_password") == 5, refused
            assert sorted(refused).count("locked_out") == 4, refused
            with pg.admin(pg.dsn_for(dbname)) as cur:
                cur.execute("SELECT address FROM login_locks")
                assert [row[0] for row in cur.fetchall()] == ["127.0.0.7"]
        finally:
            for daemon in daemons:
                daemon.stop()


def test_shared_must_name_a_postgresql_backend(tmp_path):
    data = config_data(tmp_path)
    data["server"]["lockout"] = {"failures": 5, "window": 60, "duration": 300, "shared": "embedded"}
    done = run_to_exit(write_config(tmp_path, data), 30, "--check")
    assert done.returncode != 0
    assert "server.lockout.shared: expected the name of a postgresql backend (there are none), got 'embedded'" in (
        done.stdout + done.stderr
    )
