"""The ``sipserver`` console command, run as an administrator would run it (a subprocess)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from sipserver.accounts import passwords
from tests.support import DEMO_DATA, ROOT

SIPSERVER = str(Path(sys.executable).parent / "sipserver")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIPSERVER, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=str(ROOT)
    )


def write_config(tmp_path: Path, database: Path) -> Path:
    config = {
        "listeners": [{"name": "raw", "transport": "raw", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "institutions": {"MAIN": {"backend": "embedded"}},
        "accounts": [],
        "backends": {"embedded": {"type": "sqlite", "path": str(database)}},
    }
    path = tmp_path / "sip.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_hash_password_from_stdin_verifies():
    result = run("hash-password", stdin="correct horse\n")
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert stored.startswith("scrypt$")
    assert passwords.verify_password("correct horse", stored)
    assert not passwords.verify_password("wrong horse", stored)
    assert "correct horse" not in result.stdout + result.stderr


def test_load_demo_data_into_the_configured_backend_twice(tmp_path):
    database = tmp_path / "ils.sqlite3"
    config = write_config(tmp_path, database)
    first = run("load", "--config", str(config), str(DEMO_DATA))
    assert first.returncode == 0, first.stderr
    assert "embedded: loaded" in first.stdout and "patrons" in first.stdout
    again = run("load", "--config", str(config), str(DEMO_DATA))
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(database) as db:
        patrons = db.execute("select count(*) from patrons").fetchone()[0]
        items = db.execute("select count(*) from items").fetchone()[0]
    assert patrons == 24 and items >= 100


def test_load_reports_a_bad_data_file_in_one_line(tmp_path):
    config = write_config(tmp_path, tmp_path / "ils.sqlite3")
    bad = tmp_path / "bad.yaml"
    bad.write_text("patrons:\n  - {barcode: '1', name: 'X', expires: 'soon'}\n")
    result = run("load", "--config", str(config), str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "patrons[0].expires" in lines[0]


def test_load_with_an_unknown_backend_name(tmp_path):
    config = write_config(tmp_path, tmp_path / "ils.sqlite3")
    result = run("load", "--config", str(config), "--backend", "nope", str(DEMO_DATA))
    assert result.returncode == 1 and "no backend named 'nope'" in result.stderr


def test_check_and_migrate(tmp_path):
    config = write_config(tmp_path, tmp_path / "ils.sqlite3")
    assert run("check", "--config", str(config)).returncode == 0
    migrated = run("migrate", "--config", str(config))
    assert migrated.returncode == 0, migrated.stderr
    assert "embedded:" in migrated.stdout
    config.write_text("listeners: []\n")
    broken = run("check", "--config", str(config))
    assert broken.returncode == 1 and str(config) in broken.stderr
