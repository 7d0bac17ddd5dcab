"""What the Debian package installs, checked from the source tree: the configuration it installs
serves no published password (the real daemon, over loopback), the instance unit stays in step with
the default one, the man page sip.yaml(5) is made from docs/configuration.md, and
sipserver-instances lists the servers of a configuration directory. .ci/deb-smoke.sh checks the same
things on the installed package."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sipserver.accounts import passwords
from sipserver.client import SIPClient
from tests.daemon import Daemon
from tests.support import ROOT

DEBIAN = ROOT / "debian"
PRODUCTION = ROOT / "etc" / "production.yaml"
DEMO = ROOT / "etc" / "sip.yaml"
GUIDE = ROOT / "docs" / "configuration.md"
SIPSERVER = str(Path(sys.executable).parent / "sipserver")


def manpage_module() -> Any:
    spec = importlib.util.spec_from_file_location("manpage_from_markdown", DEBIAN / "manpage_from_markdown.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


manpage = manpage_module()


# --- the installed configuration ----------------------------------------------------------------------


def published_demo_logins() -> list[tuple[str, str]]:
    """The demo's logins with the passwords its comments publish (``# ... Password: scpass``), its
    console administrator's included."""
    found = re.findall(r"- login: (\S+)\s+#.*?[Pp]assword: (\S+)", DEMO.read_text())
    demo = yaml.safe_load(DEMO.read_text())
    hashes = {account["login"]: account["password"] for account in demo["accounts"] + demo["console"]["admins"]}
    assert len(found) == len(hashes) == 6
    for login, password in found:  # they are the demo's real passwords, not stale comments
        assert passwords.verify_password(password, hashes[login]), login
    return found


def on_loopback(source: Path, tmp_path: Path) -> Path:
    """``source`` with its listeners on free loopback ports and its database in ``tmp_path``."""
    data = yaml.safe_load(source.read_text())
    for listener in data["listeners"]:
        listener["endpoint"] = "tcp:0:interface=127.0.0.1"
    data["http"]["endpoint"] = "tcp:0:interface=127.0.0.1"
    data["backends"]["embedded"]["path"] = str(tmp_path / "sipserver.sqlite3")
    path = tmp_path / "sip.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_installed_configuration_has_no_account_and_keeps_its_database_in_the_state_directory() -> None:
    data = yaml.safe_load(PRODUCTION.read_text())
    assert data["accounts"] == []
    assert data["backends"]["embedded"] == {"type": "sqlite", "path": "/var/lib/sipserver/sipserver.sqlite3"}
    assert all("interface=127.0.0.1" in listener["endpoint"] for listener in data["listeners"])
    assert "seed" not in PRODUCTION.read_text().split("backends:")[1]  # no demo patrons with known PINs


def test_the_installed_configuration_refuses_the_published_passwords_until_an_account_is_added(tmp_path) -> None:
    config = on_loopback(PRODUCTION, tmp_path)
    data = yaml.safe_load(config.read_text())
    published = published_demo_logins()
    # Each published password is one failed login from this address: room for all of them and one more.
    lockout = data["server"].setdefault("lockout", {})
    lockout["failures"] = max(lockout.get("failures", 5), len(published) + 2)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    daemon = Daemon(config, tmp_path / "daemon.log").wait_ready(1)
    try:
        port = daemon.port("raw")
        admins = {admin["login"] for admin in yaml.safe_load(DEMO.read_text())["console"]["admins"]}
        for login, password in published:
            if login in admins:
                continue  # a console login, not a SIP one (and production has no console)
            with SIPClient("127.0.0.1", port, timeout=10) as client:
                assert not client.login(login, password), login
        with SIPClient("127.0.0.1", port, timeout=10) as client:
            assert client.sc_status().code == "98"  # serving, before any login, as terminals expect
        assert "0 account(s)" in daemon.log()

        # What README.Debian tells the administrator: a hash from hash-password, an account, a reload.
        made = subprocess.run(
            [SIPSERVER, "hash-password"], input="first device\n", capture_output=True, text=True, timeout=60
        )
        assert made.returncode == 0, made.stderr
        data = yaml.safe_load(config.read_text())
        data["accounts"] = [{"login": "sip_sco_main", "password": made.stdout.strip(), "institution": "MAIN",
                             "location": "MAIN-DESK1", "allow_from": ["127.0.0.0/8"]}]  # fmt: skip
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("configuration reloaded: 1 account(s)")
        with SIPClient("127.0.0.1", port, timeout=10) as client:  # one failure per published password so far
            assert client.login("sip_sco_main", "first device")
            assert client.sc_status().fixed["online_status"] == "Y"
    finally:
        assert daemon.stop() in (0, -signal.SIGTERM)
    assert "first device" not in daemon.log() and "scpass" not in daemon.log()


# --- the systemd units ----------------------------------------------------------------------------------


def directives(unit: Path) -> list[tuple[str, str, str]]:
    """A unit file's (section, key, value) lines in order, without comments."""
    section, result = "", []
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        result.append((section, key, value))
    return result


PER_INSTANCE = {"Description", "Documentation", "ExecStart", "SyslogIdentifier", "StateDirectory", "LogsDirectory",
                "WorkingDirectory"}  # fmt: skip


def test_the_instance_unit_is_the_default_unit_with_its_own_config_state_logs_and_journal_identifier() -> None:
    default = directives(DEBIAN / "sipserver.service")
    instance = directives(DEBIAN / "sipserver@.service")
    # Everything else (the hardening, reload, restart, limits, the user) is the same, in the same order.
    assert [d for d in instance if d[1] not in PER_INSTANCE] == [d for d in default if d[1] not in PER_INSTANCE]
    mine = {key: value for _, key, value in instance if key in PER_INSTANCE}
    theirs = {key: value for _, key, value in default if key in PER_INSTANCE}
    assert set(mine) == set(theirs) == PER_INSTANCE
    assert theirs["ExecStart"].endswith(" --config=/etc/sipserver/sip.yaml")
    assert mine["ExecStart"] == theirs["ExecStart"].replace("/sip.yaml", "/%i.yaml")
    assert mine["StateDirectory"] == theirs["StateDirectory"] + "/%i"
    assert mine["LogsDirectory"] == theirs["LogsDirectory"] + "/%i"
    assert mine["WorkingDirectory"] == theirs["WorkingDirectory"] + "/%i"
    assert mine["SyslogIdentifier"] == theirs["SyslogIdentifier"] + "-%i"
    assert "%i" in mine["Description"]
    assert ("[Service]", "ExecReload", "/bin/kill -HUP $MAINPID") in instance
    assert ("[Install]", "WantedBy", "multi-user.target") in instance


def test_the_packaging_names_the_units_it_installs() -> None:
    installed = {path.name for path in DEBIAN.glob("sipserver*.service")} | {
        path.name for path in DEBIAN.glob("sipserver*.socket")
    }
    assert installed == {"sipserver.service", "sipserver@.service", "sipserver.socket"}
    rules = (DEBIAN / "rules").read_text()
    named = re.findall(r"dh_installsystemd\b[^\n]*?\s(\S+\.(?:service|socket))\s*$", rules, re.MULTILINE)
    assert sorted(named) == ["sipserver.service", "sipserver.socket"]
    assert ("[Socket]", "Service", "sipserver.service") in directives(DEBIAN / "sipserver.socket")
    for path in [*DEBIAN.iterdir(), ROOT / ".ci" / "deb-smoke.sh", ROOT / "docs" / "install.md"]:
        if path.is_file():  # the layout change once renamed the unit along with the Python module
            assert "sipserver.daemon.service" not in path.read_text(errors="replace"), path


# --- sip.yaml(5) ------------------------------------------------------------------------------------------


def test_tables_become_lists_a_terminal_can_show() -> None:
    text = """## Keys

| Key | Type | Default | Meaning |
|---|---|---|---|
| `name` | string | `sipserver` | Shown in logs. |
| `delimiter` | one character | `"\\|"` | Field delimiter. |

| Applies on reload | Needs a restart |
|---|---|
| `accounts` | `listeners` |
| | `backends` |
"""
    assert manpage.convert(text) == """# KEYS

`name`
: Type: string. Default: `sipserver`. Shown in logs.

`delimiter`
: Type: one character. Default: `"|"`. Field delimiter.

**Applies on reload**

* `accounts`

**Needs a restart**

* `listeners`
* `backends`
"""


def test_links_name_installed_files_and_list_items_keep_their_code() -> None:
    text = """# Title

## Contents

- [server](#server)

## Server

See [logging.md](logging.md#levels), [the guide](install.md) and [below](#server), or
[Twisted](https://docs.twisted.org/).

* **One line** per error:

  ```
  etc/sip.yaml: accounts[2]: expected
  ```

  The old one keeps serving.
* Next.
"""
    assert manpage.convert(text) == """# SERVER

See */usr/share/doc/sipserver/logging.md*, the guide (*/usr/share/doc/sipserver/install.md*) and below, or
[Twisted](https://docs.twisted.org/).

* **One line** per error:

        etc/sip.yaml: accounts[2]: expected

    The old one keeps serving.
* Next.
"""


def test_the_configuration_guide_as_a_man_page_keeps_every_section_and_key() -> None:
    guide = GUIDE.read_text()
    page = manpage.page((DEBIAN / "sip.yaml.5.md").read_text(), DEBIAN, date="2026-12-07", source="sipserver 9")
    assert page.startswith('% SIP.YAML 5 "2026-12-07" "sipserver 9" "sipserver manual"\n')
    assert "@include" not in page and "\n# NAME\n\nsip.yaml - " in page
    sections = [title for title in re.findall(r"^## (.+)$", guide, re.MULTILINE) if title != "Contents"]
    assert sections
    for title in sections:
        assert "\n# " + manpage.plain(title).upper() + "\n" in page, title
    keys = re.findall(r"^\| (`[^`|]+`) \|", guide, re.MULTILINE)
    assert len(keys) > 40
    for key in keys:  # an entry of its own, or an item of a table's column
        assert f"\n{key}\n: " in page or f"\n* {key}\n" in page, key
    outside_code = re.sub(r"```.*?```", "", page, flags=re.DOTALL)
    assert not re.search(r"^\s*\|", outside_code, re.MULTILINE)  # no table left
    assert not re.search(r"\]\((?!https?:)", outside_code)  # no link go-md2man would print as a relative path
    assert "max_frame_bytes: 8192" in page  # the complete example, as it is


@pytest.mark.skipif(not (shutil.which("go-md2man") and shutil.which("man")), reason="needs go-md2man and man-db")
def test_the_man_page_formats_without_groff_warnings(tmp_path) -> None:
    markdown = tmp_path / "sip.yaml.5.md"
    made = subprocess.run([sys.executable, DEBIAN / "manpage_from_markdown.py", DEBIAN / "sip.yaml.5.md"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    markdown.write_text(made.stdout)
    roff = tmp_path / "sip.yaml.5"
    subprocess.run(["go-md2man", "-in", markdown, "-out", roff], check=True, timeout=60)
    # What lintian runs on every man page it finds in a package.
    env = dict(os.environ, LC_ALL="C.UTF-8", MANROFFSEQ="", MANWIDTH="80")
    checked = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", roff],
                             capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert checked.returncode == 0 and checked.stderr == ""
    assert roff.read_text().startswith(".nh\n.TH SIP.YAML 5 ")


# --- sipserver-instances ---------------------------------------------------------------------------------


def test_sipserver_instances_lists_the_default_server_and_each_instance_but_not_data_files(tmp_path) -> None:
    shutil.copy(PRODUCTION, tmp_path / "sip.yaml")
    shutil.copy(DEMO, tmp_path / "east-branch.yaml")
    shutil.copy(ROOT / "etc" / "demo-data.yaml", tmp_path / "demo-data.yaml")
    (tmp_path / "notes.txt").write_text("listeners:\n")
    listed = subprocess.run(["sh", DEBIAN / "sipserver-instances"], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, SIPSERVER_CONFIG_DIR=str(tmp_path)))  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["INSTANCE", "UNIT", "ENABLED", "ACTIVE", "CONFIG"]
    assert [(row[0], row[1], row[-1]) for row in rows[1:3]] == [
        ("(default)", "sipserver.service", f"{tmp_path}/sip.yaml"),
        ("east-branch", "sipserver@east-branch.service", f"{tmp_path}/east-branch.yaml"),
    ]
    if not os.path.isdir("/run/systemd/system"):  # no systemd to ask: said once, states unknown
        assert len(rows) == 3 and all(row[2:4] == ["-", "-"] for row in rows[1:])
        assert listed.stderr == "sipserver-instances: systemd is not running here: states are unknown (-)\n"


# --- what setup.cfg ships -----------------------------------------------------------------------------


def test_every_source_folder_is_a_package_that_setup_cfg_ships() -> None:
    """setup.cfg lists packages by name (twisted/plugins must stay without an __init__.py), so a
    new folder left off the list builds a package that fails at import; CI's Debian build found one."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    listed = {name.strip() for name in parser["options"]["packages"].split() if name.strip()}
    folders = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in (ROOT / "sipserver").rglob("*")
        if folder.is_dir() and "__pycache__" not in folder.parts and any(folder.glob("*.py"))
    } | {"sipserver"}
    for folder in folders:
        assert (ROOT / folder.replace(".", "/") / "__init__.py").exists(), f"{folder} has no __init__.py"
    assert folders <= listed, f"setup.cfg does not list {sorted(folders - listed)}"
    assert listed - {"twisted.plugins"} <= folders, f"setup.cfg lists missing {sorted(listed - folders)}"
