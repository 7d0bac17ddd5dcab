"""End to end: the real daemon under twistd, spoken to over loopback sockets as terminals would."""

from __future__ import annotations

import datetime
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from sipserver.client import SIPClient, SIPClientError
from sipserver.sip2 import checksum, decode, encode, make
from tests.daemon import TWISTD, Daemon, config_data, run_to_exit, write_config
from tests.pg import free_port
from tests.support import ROOT

pytestmark = pytest.mark.e2e

JANE, PIN = "21000000000001", "1234"
ITEM = "31000000000008"


@pytest.fixture
def daemon(tmp_path):
    running = Daemon(write_config(tmp_path, config_data(tmp_path)), tmp_path / "daemon.log").wait_ready(2)
    yield running
    running.stop()


def self_check_session(client: SIPClient, login: bool = True) -> None:
    """What a self-check does all day: status, patron, checkout, checkin, end session."""
    if login:
        assert client.login("sco", "scpass")
    status = client.sc_status()
    assert status.code == "98" and status.fixed["online_status"] == "Y"
    patron = client.patron_information(JANE, PIN, summary="  Y       ", institution="MAIN")
    assert patron.get("BL") == "Y" and patron.get("CQ") == "Y" and patron.get("AE") == "Jane Doe"
    out = client.checkout(JANE, ITEM, PIN, institution="MAIN")
    assert out.code == "12" and out.fixed["ok"] == "1", out
    assert out.get("AH")
    back = client.checkin(ITEM, "MAIN", institution="MAIN")
    assert back.code == "10" and back.fixed["ok"] == "1" and back.get("AA") == JANE
    end = client.send("35", AO="MAIN", AA=JANE)
    assert end.code == "36" and end.fixed["end_session"] == "Y"


def test_self_check_session_over_raw(daemon):
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        self_check_session(client)
    log = daemon.log()
    assert "login=sco checkout ok" in log and "scpass" not in log and PIN not in log


def test_self_check_session_over_telnet_with_negotiation_bytes(daemon):
    with SIPClient("127.0.0.1", daemon.port("telnet"), transport="telnet") as client:
        client.read_until(b"login: ")
        # A terminal that opens with its own negotiation (DO SGA, WILL TTYPE) and types the name after it.
        client.sock.sendall(b"\xff\xfd\x03\xff\xfb\x18telnet\r\n")
        client.read_until(b"password: ")
        client.sock.sendall(b"telnetpass\r\x00")
        # A line says the terminal is in (as Evergreen's and Koha's telnet services print one).
        assert client.read_until(b"line.\r\n").endswith(b"\r\nLogin OK. Send SIP2 messages, one per line.\r\n")
        self_check_session(client, login=False)
    assert "login ok listener=telnet peer=127.0.0.1 login=telnet" in daemon.log()


def test_bare_cr_ends_a_telnet_line_at_once(daemon):
    with SIPClient("127.0.0.1", daemon.port("telnet"), transport="telnet", error_detection=False) as client:
        client.read_until(b"login: ")
        client.sock.sendall(b"telnet\r")
        client.read_until(b"password: ")
        client.sock.sendall(b"telnetpass\r")
        assert client.read_until(b"line.\r\n").endswith(b"\r\nLogin OK. Send SIP2 messages, one per line.\r\n")
        client.send_bytes(b"9900802.00\r")
        assert client.read_frame().startswith(b"98Y")


def test_allow_list_is_the_same_on_every_listener(daemon):
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert not client.login("faraway", "farpass")
    with SIPClient("127.0.0.1", daemon.port("telnet"), transport="telnet") as client:
        assert not client.telnet_login("faraway", "farpass")
    refusals = [line for line in daemon.log().splitlines() if "login refused" in line and "faraway" in line]
    assert {("listener=raw" in line, "listener=telnet" in line) for line in refusals} == {(True, False), (False, True)}
    assert all("reason=address_not_allowed" in line for line in refusals)


def test_lockout_across_connections_and_listeners(daemon):
    for _ in range(2):
        with SIPClient("127.0.0.1", daemon.port("raw")) as client:
            assert not client.login("sco", "wrong")
            assert not client.login("sco", "wrong")
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert not client.login("sco", "scpass")
    with SIPClient("127.0.0.1", daemon.port("telnet"), transport="telnet") as client:
        assert not client.telnet_login("telnet", "telnetpass")
    assert "reason=locked_out" in daemon.log()


def test_checksum_errors_resend_and_retransmission(daemon):
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert client.login("sco", "scpass")
        frame = encode(make("11", sc_renewal_policy=True, AO="MAIN", AA=JANE, AB=ITEM, AC="", AD=PIN), sequence="5")
        client.send_bytes(frame[:-5] + b"0000\r")
        assert client.read_frame() == b"96AZFEF6\r"
        client.send_bytes(frame)
        first = client.read_frame()
        assert decode(first).fixed["ok"] == "1"
        client.send_bytes(b"97AZFEF5\r")
        assert client.read_frame() == first
        client.send_bytes(frame)  # php-sip2 resends the identical request when in doubt
        assert client.read_frame() == first
        patron = client.patron_information(JANE, PIN, summary="  Y       ", institution="MAIN")
        assert patron.getall("AU").count(ITEM) == 1
        assert patron.get("AF") and "Renewed" not in client.last_reply.decode()
    assert daemon.log().count("checkout retransmission_replayed") == 1


def test_tls_client_hello_on_a_plain_port_is_closed_at_once(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port("raw")), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32)
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 2


def test_frame_over_the_limit_closes_the_connection(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port("raw")), timeout=5) as sock:
        sock.sendall(b"23" + b"x" * 9000)
        sock.settimeout(5)
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data == b""
    assert "frame longer than 8192 bytes" in daemon.log()


def test_tls_listener(tmp_path):
    cert, key = make_certificate(tmp_path)
    listeners = [
        {"name": "tls", "transport": "raw", "endpoint": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"},
        {"name": "tls-telnet", "transport": "telnet",
         "endpoint": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"},
    ]  # fmt: skip
    running = Daemon(write_config(tmp_path, config_data(tmp_path, listeners=listeners)), tmp_path / "d.log")
    try:
        running.wait_ready(2)
        with SIPClient("127.0.0.1", running.port("tls"), tls=True, ca_file=str(cert), tls_verify=True) as client:
            self_check_session(client)
        with SIPClient("127.0.0.1", running.port("tls-telnet"), tls=True, transport="telnet") as client:
            assert client.telnet_login("telnet", "telnetpass")
            assert client.sc_status().fixed["online_status"] == "Y"
    finally:
        running.stop()


def make_certificate(directory):
    """A self-signed certificate for 127.0.0.1, made here (never shipped)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_port_in_use_fails_start_up_with_one_line(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        listeners = [{"name": "raw", "transport": "raw", "endpoint": f"tcp:{port}:interface=127.0.0.1"}]
        data = config_data(tmp_path, listeners=listeners)
        del data["http"]
        result = run_to_exit(write_config(tmp_path, data))
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "cannot listen" in line]
    assert lines and f":{port}" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_config_fails_start_up_with_one_line_naming_file_and_key(tmp_path):
    data = config_data(tmp_path)
    data["accounts"][0]["allow_from"] = ["not-a-network"]
    path = write_config(tmp_path, data)
    result = run_to_exit(path)
    assert result.returncode == 1
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output == [f"sipserver: {path}: accounts[0].allow_from[0]: " + output[0].split("allow_from[0]: ", 1)[1]]
    assert "Traceback" not in result.stderr
    check = run_to_exit(path, 30.0, "--check")
    assert check.returncode == 1


def test_check_accepts_a_good_config(tmp_path):
    result = run_to_exit(write_config(tmp_path, config_data(tmp_path)), 30.0, "--check")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


@pytest.mark.parametrize(
    ("key", "endpoint", "why"),
    [
        ("http.endpoint", "tcp:0:interfac=127.0.0.1", "unexpected keyword argument 'interfac'"),
        ("http.endpoint", "tcp:0:interface=127.0.0.1:backlog=x", "invalid literal for int()"),
        ("listeners[0].endpoint", "ssl:0:interface=127.0.0.1:privateKey=nokey.pem", "No such file or directory"),
    ],
    ids=["http-option", "http-backlog", "missing-certificate"],
)
def test_an_endpoint_twisted_cannot_use_fails_check_and_start_up_with_one_line_naming_its_key(
    tmp_path, key, endpoint, why
):
    data = config_data(tmp_path)
    if key == "http.endpoint":
        data["http"]["endpoint"] = endpoint
    else:
        data["listeners"][0]["endpoint"] = endpoint
    path = write_config(tmp_path, data)
    for extra in (("--check",), ()):
        result = run_to_exit(path, 30.0, *extra)
        assert result.returncode == 1, (extra, result.stdout, result.stderr)
        output = (result.stdout + result.stderr).strip().splitlines()
        assert len(output) == 1 and output[0].startswith(f"sipserver: {path}: {key}: cannot use endpoint"), output
        assert why in output[0]


def test_a_unix_socket_in_a_missing_directory_fails_start_up_with_one_line(tmp_path):
    socket_path = tmp_path / "gone" / "sip.sock"
    data = config_data(tmp_path)
    data["listeners"][0]["endpoint"] = f"unix:{socket_path}"
    result = run_to_exit(write_config(tmp_path, data))
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "cannot listen" in line]
    assert lines and lines[0].endswith(f"sipserver: cannot listen on unix:{socket_path}: No such file or directory")
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_seed_data_stops_the_daemon_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("patrons:\n  - {barcode: 123}\n")
    data = config_data(tmp_path)
    data["backends"]["embedded"]["seed"] = str(bad)
    result = run_to_exit(write_config(tmp_path, data))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sipserver: backend embedded: ") and "bad.yaml: patrons[0].barcode" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_seed_data_is_refused_before_the_ports_open(tmp_path):
    """A seed the loader refuses only when it writes (a loan of a patron the file lacks) stops
    start-up, and --check, before a listener is bound: nothing ever answers on the port."""
    bad = tmp_path / "bad.yaml"
    bad.write_text('items:\n  - {barcode: "I1", title: Book}\nloans:\n  - {patron: "P404", item: "I1"}\n')
    port = free_port()
    data = config_data(tmp_path)
    data["listeners"][0]["endpoint"] = f"tcp:{port}:interface=127.0.0.1"
    data["backends"]["embedded"]["seed"] = str(bad)
    path = write_config(tmp_path, data)
    expected = f"sipserver: backend embedded: {bad}: loans[0].patron: expected a known patron barcode, got 'P404'"
    checked = run_to_exit(path, 30.0, "--check")
    assert (checked.returncode, checked.stderr.strip().splitlines()) == (1, [expected]), checked.stderr
    daemon = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "--logfile=-", "sip", "-c", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
    )  # fmt: skip
    answered = 0
    try:
        deadline = time.monotonic() + 30
        while daemon.poll() is None and time.monotonic() < deadline:
            with socket.socket() as probe:
                probe.settimeout(0.5)
                answered += probe.connect_ex(("127.0.0.1", port)) == 0
            time.sleep(0.01)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        out, err = daemon.communicate(timeout=15)
    assert daemon.returncode == 1 and err.strip().splitlines() == [expected], err
    assert answered == 0 and "listening on" not in out + err and "Traceback" not in out + err


def test_unreachable_backend_does_not_stop_the_daemon(tmp_path):
    data = config_data(tmp_path)
    data["backends"]["embedded"]["path"] = str(tmp_path / "missing-dir" / "db.sqlite3")
    running = Daemon(write_config(tmp_path, data), tmp_path / "d.log")
    try:
        running.wait_ready(2)
        running.wait_for_log("FAILED TO START")
        with SIPClient("127.0.0.1", running.port("raw")) as client:
            assert client.login("sco", "scpass")
            status = client.sc_status()
            assert status.fixed["online_status"] == "N"
            out = client.checkout(JANE, ITEM, PIN, institution="MAIN")
            assert out.fixed["ok"] == "0" and "not available" in out.get("AF")
        # Once the backend can start (its directory exists), it answers without a restart.
        (tmp_path / "missing-dir").mkdir()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with SIPClient("127.0.0.1", running.port("raw")) as client:
                client.login("sco", "scpass")
                if client.sc_status().fixed["online_status"] == "Y":
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("backend never came back on-line")
    finally:
        running.stop()


def test_sighup_reloads_accounts_without_dropping_connections(tmp_path):
    data = config_data(tmp_path)
    path = write_config(tmp_path, data)
    running = Daemon(path, tmp_path / "d.log")
    try:
        running.wait_ready(2)
        with SIPClient("127.0.0.1", running.port("raw")) as kept:
            assert kept.login("sco", "scpass")
            data["accounts"].append({"login": "newdesk", "password": "plain:newpass", "institution": "MAIN"})
            data["accounts"][0]["location"] = "MAIN-DESK9"
            write_config(tmp_path, data)
            running.signal(signal.SIGHUP)
            running.wait_for_log("configuration reloaded")
            assert kept.sc_status().get("AN") == "MAIN-DESK9"
            with SIPClient("127.0.0.1", running.port("raw")) as fresh:
                assert fresh.login("newdesk", "newpass")
            # A broken file is refused and the previous configuration keeps serving.
            path.write_text("accounts: [oops\n")
            running.signal(signal.SIGHUP)
            running.wait_for_log("reload refused")
            assert kept.sc_status().code == "98"
            with SIPClient("127.0.0.1", running.port("raw")) as fresh:
                assert fresh.login("newdesk", "newpass")
        assert running.process.poll() is None
    finally:
        running.stop()


def test_a_reload_that_renames_a_listener_keeps_the_running_one_serving_until_restart(tmp_path):
    data = config_data(tmp_path)
    data["listeners"][0]["institution"] = "MAIN"
    path = write_config(tmp_path, data)
    running = Daemon(path, tmp_path / "d.log")
    try:
        running.wait_ready(2)
        port = running.port("raw")
        data["listeners"][0]["name"] = "raw2"
        write_config(tmp_path, data)
        running.signal(signal.SIGHUP)
        running.wait_for_log("need a restart")
        with SIPClient("127.0.0.1", port) as client:
            assert client.sc_status().code == "98"  # before login, on the listener still called raw
        # The running listener serves MAIN until a restart: a file without MAIN is refused whole.
        data["institutions"]["OTHER"] = data["institutions"].pop("MAIN")
        data["listeners"][0]["institution"] = "OTHER"
        for account in data["accounts"]:
            account["institution"] = "OTHER"
        write_config(tmp_path, data)
        running.signal(signal.SIGHUP)
        running.wait_for_log("serves institution MAIN, which the new file removes")
        with SIPClient("127.0.0.1", port) as client:
            assert client.sc_status().code == "98"
            assert client.login("sco", "scpass")
        assert running.process.poll() is None
        assert "Traceback" not in running.log()
    finally:
        running.stop()


def test_logging_level_error_keeps_info_lines_and_health_polls_out_of_the_default_text_log(tmp_path):
    data = config_data(tmp_path)
    path = write_config(tmp_path, data)
    running = Daemon(path, tmp_path / "d.log")
    try:
        running.wait_ready(2)  # at info, to read the ports from the log
        data["logging"] = {**data.get("logging", {}), "level": "error"}
        write_config(tmp_path, data)
        started = len(running.log())
        running.signal(signal.SIGHUP)
        base = f"http://127.0.0.1:{running.port('http')}"
        deadline = time.monotonic() + 10
        counted = 'sip_config_reloads_total{result="ok"} 1'
        while counted not in urllib.request.urlopen(base + "/metrics", timeout=5).read().decode():
            assert time.monotonic() < deadline, "the reload was not counted within 10s"
            time.sleep(0.05)
        with SIPClient("127.0.0.1", running.port("raw")) as client:
            assert client.login("sco", "scpass")
            assert client.sc_status().code == "98"
        for _ in range(3):
            assert json.loads(urllib.request.urlopen(base + "/health", timeout=5).read())["status"] == "ok"
        # A line at error comes after them all: once it is there, any line they made would be too.
        path.write_text("server: [not a mapping\n")
        running.signal(signal.SIGHUP)
        running.wait_for_log("reload refused")
        later = running.log()[started:]
        assert "#info]" not in later and "GET /health" not in later, later
        assert running.process.poll() is None
    finally:
        running.stop()


def _read_until(sock: socket.socket, end: bytes, limit: int = 65536) -> bytes:
    """Bytes up to and including ``end`` (the socket's timeout bounds each read)."""
    received = b""
    while not received.endswith(end):
        chunk = sock.recv(1)
        assert chunk and len(received) < limit, received
        received += chunk
    return received


def test_scrypt_hashed_passwords_over_raw_and_telnet(tmp_path):
    from sipserver.accounts.passwords import hash_password

    data = config_data(tmp_path)
    for account in data["accounts"]:
        if account["login"] in ("sco", "telnet"):
            account["password"] = hash_password(account["password"].removeprefix("plain:"))
    running = Daemon(write_config(tmp_path, data), tmp_path / "d.log")
    try:
        running.wait_ready(2)
        with SIPClient("127.0.0.1", running.port("raw")) as client:
            assert not client.login("sco", "wrong")
            assert client.login("sco", "scpass")
            assert client.sc_status().code == "98"
        with socket.create_connection(("127.0.0.1", running.port("telnet")), timeout=10) as sock:
            assert _read_until(sock, b"login: ")
            sock.sendall(b"telnet\r\n")
            assert _read_until(sock, b"assword: ")
            # the first SIP frame right behind the password, while scrypt runs on a thread
            sock.sendall(b"telnetpass\r\n" + encode(make("99", protocol_version="2.00")))
            assert _read_until(sock, b"line.\r\n").endswith(b"\r\nLogin OK. Send SIP2 messages, one per line.\r\n")
            assert _read_until(sock, b"\r").startswith(b"98")  # then the answer to the frame sent behind it
        assert running.process.poll() is None
    finally:
        running.stop()


def test_health_and_metrics(daemon):
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert client.login("sco", "scpass")
        client.sc_status()
        base = f"http://127.0.0.1:{daemon.port('http')}"
        health = json.loads(urllib.request.urlopen(base + "/health", timeout=5).read())
        assert health["status"] == "ok" and health["backends"] == {"embedded": "up"}
        assert health["name"] == "e2e"  # server.name, which tells the daemons of a consortium apart
        assert health["listeners"] == {"raw": "up", "telnet": "up"}
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    assert 'sip_messages_total{message="sc_status",outcome="ok"} 1' in metrics
    assert 'sip_logins_total{result="ok",reason=""} 1' in metrics
    assert "sip_request_duration_seconds_bucket" in metrics
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(base + "/nothing", timeout=5)


def test_sigterm_stops_the_daemon(daemon):
    with SIPClient("127.0.0.1", daemon.port("raw")) as client:
        assert client.login("sco", "scpass")
        daemon.signal(signal.SIGTERM)
        daemon.process.wait(15)
        with pytest.raises((SIPClientError, OSError)):
            client.sc_status()


def test_checksum_helper_matches_reference():
    assert checksum(b"941AY0AZ") == "FDFD"


def test_json_log_lines(tmp_path):
    data = config_data(tmp_path, logging={"format": "json", "level": "info"})
    running = Daemon(write_config(tmp_path, data), tmp_path / "d.log")
    try:
        running.wait_ready(2)
        with SIPClient("127.0.0.1", running.port("raw")) as client:
            assert client.login("sco", "scpass")
            client.sc_status()
        running.wait_for_log('"request": "sc_status"')
        assert running.process.poll() is None
    finally:
        running.stop()
    records = [json.loads(line) for line in running.log().splitlines() if line.startswith("{")]
    exchange = [r for r in records if r.get("request") == "sc_status"]
    assert exchange and exchange[0]["login"] == "sco" and exchange[0]["outcome"] == "ok"
    assert not any("scpass" in json.dumps(r) for r in records)


def test_unusable_endpoint_fails_start_up_with_one_line(tmp_path):
    listeners = [{"name": "activated", "transport": "raw", "endpoint": "systemd:domain=INET:index=0"}]
    data = config_data(tmp_path, listeners=listeners)
    del data["http"]
    result = run_to_exit(write_config(tmp_path, data))
    assert result.returncode == 1
    assert ": listeners[0].endpoint: cannot use endpoint 'systemd:domain=INET:index=0'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` (FIN or RST) within ``seconds``, discarding what it sends."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def _turned_away(port: int, seconds: float = 5) -> bool:
    """True when a new connection to ``port`` is reset or closed by the server within ``seconds``.

    The server aborts a connection over the limit as soon as it accepts it, so the reset can reach
    the client while ``connect`` is still returning: that counts as turned away too."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    except ConnectionResetError:
        return True
    with sock:
        return _closed_within(sock, seconds)


def test_connection_caps_per_listener_and_in_total(tmp_path):
    data = config_data(tmp_path)
    data["listeners"][0]["max_connections"] = 2
    data["server"]["max_connections"] = 3
    running = Daemon(write_config(tmp_path, data), tmp_path / "d.log")
    try:
        running.wait_ready(2)
        raw, telnet = running.port("raw"), running.port("telnet")
        first, second = (socket.create_connection(("127.0.0.1", raw), timeout=5) for _ in range(2))
        with first, second:
            for sock in (first, second):
                sock.sendall(b"9900802.00\r")
                assert sock.recv(4096).startswith(b"98")
            assert _turned_away(raw)  # the third on the raw listener
            with socket.create_connection(("127.0.0.1", telnet), timeout=5) as fourth:
                assert fourth.recv(100).endswith(b"login: ")  # the server total (3) is not reached yet
                assert _turned_away(telnet)  # the fourth in all
        log = running.log()
        assert "reason=listener limit of 2 connections reached" in log
        assert "reason=server limit of 3 connections reached" in log
    finally:
        running.stop()


def test_login_and_idle_timeouts(tmp_path):
    data = config_data(tmp_path)
    data["server"].update(login_timeout=1, idle_timeout=2)
    running = Daemon(write_config(tmp_path, data), tmp_path / "d.log")
    try:
        running.wait_ready(2)
        with socket.create_connection(("127.0.0.1", running.port("raw")), timeout=5) as silent:
            assert _closed_within(silent, 5)
        with SIPClient("127.0.0.1", running.port("raw")) as client:
            assert client.login("sco", "scpass")
            time.sleep(1.5)  # past the login timeout: a logged-in terminal is on the idle timeout now
            assert client.sc_status().code == "98"
            assert _closed_within(client.sock, 6)
        log = running.log()
        assert "reason=login timeout" in log and "reason=idle timeout" in log
    finally:
        running.stop()


def test_three_wrong_telnet_logins_close_the_connection(daemon):
    with SIPClient("127.0.0.1", daemon.port("telnet"), transport="telnet") as client:
        for _ in range(2):
            assert not client.telnet_login("telnet", "wrong")
        client.read_until(b"login: ")
        client.sock.sendall(b"telnet\r\n")
        client.read_until(b"password: ")
        client.sock.sendall(b"wrong\r\n")
        assert _closed_within(client.sock, 5)
    assert "reason=3 failed logins" in daemon.log()
