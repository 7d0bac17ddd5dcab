"""``twistd sip``'s makeService and a reload, on a memory reactor: no sockets, no subprocess.

The daemon is built from a real config file as twistd builds it (``tap.Options`` then
``tap.makeService``), started, asked things through its listeners' own factories, reloaded and
stopped; what a test here cannot see (real sockets, signals from outside, worker processes) the
end-to-end tests see.
"""

from __future__ import annotations

import gc
import signal
import socket
from pathlib import Path

import pytest
import yaml
from twisted.application.service import Application
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, globalLogPublisher

from sipserver import tap
from sipserver.daemon.transport.protocol import ListenerFactory
from sipserver.daemon.transport.telnet import TelnetListenerFactory
from sipserver.observe.http import CappedFactory
from sipserver.sip2 import encode, make
from tests.support import DEMO_DATA, Replies

LOGIN = encode(make("93", CN="sco", CO="scpass"), sequence="0")
STATUS = encode(make("99", protocol_version="2.00"), sequence="1")


def config_data(tmp_path: Path) -> dict:
    return {
        "server": {"name": "built", "login_timeout": 30, "idle_timeout": 60},
        "listeners": [
            {"name": "raw", "transport": "raw", "endpoint": "tcp:6001:interface=127.0.0.1"},
            {"name": "telnet", "transport": "telnet", "endpoint": "tcp:6023:interface=127.0.0.1"},
        ],
        "http": {"endpoint": "tcp:6080:interface=127.0.0.1"},
        "logging": {"level": "info", "destination": "file", "file": str(tmp_path / "sip.log")},
        "institutions": {"MAIN": {"backend": "embedded", "library_name": "Built Library"}},
        "accounts": [
            {"login": "sco", "password": "plain:scpass", "institution": "MAIN", "location": "MAIN-DESK1"},
            {"login": "sorter", "password": "plain:sorterpass", "institution": "MAIN"},
        ],
        "backends": {"embedded": {"type": "sqlite", "path": ":memory:", "threaded": False, "seed": str(DEMO_DATA)}},
    }


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "sip.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def _process_state():
    """Starting a daemon sets signal handlers and freezes the collector: put both back after."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGHUP, signal.SIGUSR1)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
    gc.unfreeze()


@pytest.fixture
def observers():
    """Log observers added to Twisted's global publisher by the test, removed after it."""
    added: list = []
    yield added
    for observer in added:
        globalLogPublisher.removeObserver(observer)


def make_service(path: Path, reactor: MemoryReactorClock, observers: list):
    """The daemon as twistd makes it: the options, makeService, the application as its parent, and
    Twisted's log events to the observer the daemon gives the application."""
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    daemon = tap.makeService(options, reactor)
    application = Application("sip")
    daemon.setServiceParent(application)
    observers.append(ILogObserver(application))
    globalLogPublisher.addObserver(observers[-1])
    return daemon


def connect(factory: ListenerFactory):
    """(protocol, transport) of a new connection through ``factory``, on a memory transport."""
    protocol = factory.buildProtocol(None)
    transport = Replies("127.0.0.1")
    protocol.makeConnection(transport)
    return protocol, transport


def get(factory, path: bytes) -> bytes:
    """The status site's answer to ``GET path``, through its own HTTP protocol."""
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET " + path + b" HTTP/1.0\r\n\r\n")
    return transport.value()


def test_make_service_composes_the_daemon_and_binds_only_when_started(tmp_path, monkeypatch, observers):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    reactor = MemoryReactorClock()
    daemon = make_service(write(tmp_path, config_data(tmp_path)), reactor, observers)
    assert [service.name for service in daemon] == [
        "reload", "backends", "health-probe", "listener:raw", "listener:telnet", "http"
    ]  # fmt: skip
    assert reactor.tcpServers == []  # nothing is bound while the daemon is only built

    daemon.privilegedStartService()
    bound = {port: (factory, interface) for port, factory, _backlog, interface in reactor.tcpServers}
    assert set(bound) == {6001, 6023, 6080} and {i for _, i in bound.values()} == {"127.0.0.1"}
    assert type(bound[6001][0]) is ListenerFactory and type(bound[6023][0]) is TelnetListenerFactory
    assert isinstance(bound[6080][0], CappedFactory)
    notify.setblocking(False)
    with pytest.raises(BlockingIOError):
        notify.recv(100)  # not ready before the service has started

    daemon.startService()
    assert notify.recv(100).startswith(b"READY=1\n")
    assert daemon.getServiceNamed("listener:raw").bound and daemon.getServiceNamed("http").bound
    protocol, raw = connect(bound[6001][0])
    protocol.dataReceived(LOGIN + STATUS)
    assert raw.writes[0].startswith(b"941") and raw.writes[1].startswith(b"98Y")
    telnet_login, telnet = connect(bound[6023][0])
    assert telnet.value().endswith(b"login: ")
    status = bound[6080][0]
    health = get(status, b"/health")
    assert health.startswith(b"HTTP/1.0 200") and b'"connections": 2' in health and b'"name": "built"' in health
    metrics = get(status, b"/metrics")
    assert b'sip_connections_open{listener="raw"} 1' in metrics and b'sip_backend_up{backend="embedded"} 1' in metrics

    stopped = daemon.stopService()
    assert notify.recv(100) == b"STOPPING=1"
    assert protocol.closed and raw.disconnecting  # the drain winds the connections down
    protocol.connectionLost(None)  # the peer reads its replies and closes
    telnet_login.connectionLost(None)
    reactor.advance(1)
    assert stopped.called
    log = (tmp_path / "sip.log").read_text()
    assert "listener:raw listening on 0.0.0.0:6001" in log  # where the memory reactor says it listens
    assert "backend embedded ready" in log
    assert "built serving 2 listener(s) for 1 institution(s), 2 account(s)" in log
    notify.close()


def test_a_port_that_cannot_be_bound_stops_start_up_with_one_line(tmp_path, capsys, observers):
    class Busy(MemoryReactorClock):
        def listenTCP(self, port, factory, backlog=50, interface=""):
            if port == 6023:
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))
            return super().listenTCP(port, factory, backlog, interface)

    daemon = make_service(write(tmp_path, config_data(tmp_path)), Busy(), observers)
    with pytest.raises(SystemExit) as stopped:
        daemon.privilegedStartService()
    assert stopped.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "sipserver: cannot listen on 127.0.0.1:6023: [Errno 98] Address already in use"
    ]


def test_a_reload_swaps_the_registry_and_settings_and_connections_follow_at_their_next_message(tmp_path, observers):
    reactor = MemoryReactorClock()
    data = config_data(tmp_path)
    path = write(tmp_path, data)
    daemon = make_service(path, reactor, observers)
    daemon.privilegedStartService()
    daemon.startService()
    assert callable(signal.getsignal(signal.SIGHUP))  # a reload handler, not the default that ends the process
    serving = daemon.serving
    before = serving.registry
    protocol, raw = connect(daemon.factories["raw"])
    protocol.dataReceived(LOGIN)
    assert raw.writes[-1].startswith(b"941")

    data["accounts"] = [a for a in data["accounts"] if a["login"] != "sco"]
    data["server"]["idle_timeout"] = 90
    data["logging"]["level"] = "warn"
    data["listeners"][0]["endpoint"] = "tcp:7001:interface=127.0.0.1"  # needs a restart
    path.write_text(yaml.safe_dump(data))
    assert daemon.reload.reload()
    assert serving.registry is not before and serving.registry.account("sco") is None
    assert serving.settings.idle_timeout == 90 and serving.events.level.name == "warn"
    assert serving.registry.config.listeners[0].endpoint == "tcp:6001:interface=127.0.0.1"  # running until a restart
    assert serving.events.metrics.reloads["ok"] == 1
    protocol.dataReceived(STATUS)  # the connection learns of the reload at its next message
    assert raw.disconnecting and protocol.connection.close_reason == "account no longer valid"

    path.write_text("server: [not, a, mapping\n")
    accepted = serving.registry
    assert not daemon.reload.reload()
    assert serving.registry is accepted and serving.events.metrics.reloads["refused"] == 1
    log = (tmp_path / "sip.log").read_text()
    assert "changes to listeners need a restart to take effect" in log
    assert "configuration reloaded" not in log  # an info line: the new level (warn) holds for Twisted's lines too
    assert "reload refused, still serving the previous configuration" in log

    daemon.stopService()
    reactor.advance(5)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # stopping: a late reload is ignored
