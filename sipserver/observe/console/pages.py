"""The console's pages under ``/console/`` on the HTTP status listener.

One HTML page, its script and its style sheet (shipped in the package: no CDN, nothing built at
install time), a JSON endpoint the page polls every few seconds, and the test form's endpoint.
Every answer needs an administrator's basic authentication (:mod:`.guard`) and carries a strict
Content-Security-Policy (only this origin's script and style, no inline script, no framing). The
test form's POST also needs the page's CSRF token, which a page from elsewhere cannot read. No
answer ever holds a password, a PIN or a hash.
"""

from __future__ import annotations

import datetime
import hmac
import html
import importlib.resources
import ipaddress
import json
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.address import UNIXAddress
from twisted.web import resource, server

from sipserver.accounts.registry import Registry
from sipserver.observe.loglevel import logger

from .guard import Admins, basic_credentials
from .probe import Target, run_check
from .record import ConsoleRecord
from .snapshot import merge
from .view import page_data

log = logger("sipserver.observe.console")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: The files under static/ the page may load, and their types.
STATIC = {
    "console.js": b"text/javascript; charset=utf-8",
    "console.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
#: Bytes of a test form's request body read at most.
MAX_BODY = 4096
#: A login or patron typed in the test form, at most.
MAX_FIELD = 200


def _static(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()


@attrs.frozen
class ConsoleSources:
    """What the console reads of the running daemon."""

    name: Callable[[], str]  # server.name
    registry: Callable[[], Registry]  # the live registry (a reload swaps it): the accounts shown
    record: ConsoleRecord  # this process's books (its refusal ring gets the console's own refusals)
    admins: Admins
    #: Every process's snapshot (a list, or a Deferred of one); merged for the page.
    snapshots: Callable[[], Sequence[dict[str, Any]] | defer.Deferred[Sequence[dict[str, Any]]]]
    target: Callable[[], Target | None]  # the listener the test form runs against, once bound
    run_in_thread: Callable[..., defer.Deferred[Any]]


class Console(resource.Resource):
    """``/console/...``: see the module docstring."""

    isLeaf = True

    def __init__(self, sources: ConsoleSources) -> None:
        super().__init__()
        self.sources = sources
        self.testing = False  # one test at a time: each holds a thread and a connection

    def render(self, request: Any) -> Any:
        _headers(request)
        request.console_gone = False
        request.notifyFinish().addErrback(_gone, request)
        if not _private(request):
            return _answer(request, 403, b"The console is served only over TLS or to loopback.\n")
        credentials = basic_credentials(request.getHeader(b"authorization"))
        if credentials is None:
            return self._challenge(request, b"Log in as a console administrator.\n")
        login, password = credentials
        peer = _peer(request)
        d = self.sources.admins.check(login, password, peer)
        del password
        d.addCallback(self._checked, request, login, peer)
        d.addErrback(self._broken, request)
        return server.NOT_DONE_YET

    def _checked(self, refusal: str | None, request: Any, login: str, peer: str) -> Any:
        if refusal is not None:
            log.warn("console login refused peer={peer} login={login} reason={reason}", peer=peer,
                     login=_printable(login), reason=refusal)  # fmt: skip
            if refusal == "busy":  # checks of this address already running: not a failure, no new prompt
                return _finish(request, 503, b"Busy checking passwords: try again.\n", b"text/plain")
            self.sources.record.console_refused(peer, _printable(login), refusal)
            why = b"Too many failed logins from this address: try again later.\n" if refusal == "locked_out" else b""
            return _finish(request, *self._challenge_parts(why or b"Login refused.\n"))
        path = request.postpath
        method = request.method
        if path in ([b""], []) and method in (b"GET", b"HEAD"):
            return _finish(request, 200, self._index(login), b"text/html; charset=utf-8")
        if len(path) == 2 and path[0] == b"static" and method in (b"GET", b"HEAD"):
            name = path[1].decode("ascii", "replace")
            if name in STATIC:
                return _finish(request, 200, _static(name), STATIC[name])
        if path == [b"api", b"state"] and method == b"GET":
            try:
                answer = self.sources.snapshots()
            except Exception:
                answer = defer.fail()
            d = answer if isinstance(answer, defer.Deferred) else defer.succeed(answer)
            d.addCallback(self._state, request)
            d.addErrback(self._broken, request)
            return d
        if path == [b"api", b"test"]:
            if method != b"POST":
                return _finish(request, 405, b"POST only\n", b"text/plain")
            return self._test(request, login)
        return _finish(request, 404, b"Not found.\n", b"text/plain")

    def _index(self, login: str) -> bytes:
        page = _static("index.html").decode("utf-8")
        page = page.replace("{{name}}", html.escape(self.sources.name()))
        page = page.replace("{{admin}}", html.escape(login))
        page = page.replace("{{csrf}}", self.sources.admins.csrf_token(login))
        return page.encode("utf-8")

    def _state(self, snapshots: Sequence[dict[str, Any]], request: Any) -> None:
        registry = self.sources.registry()
        data = page_data(merge(snapshots), registry.config.accounts, datetime.date.today(), self.sources.name())
        target = self.sources.target()
        data["test_listener"] = target.listener if target is not None else None
        _finish(request, 200, json.dumps(data).encode("utf-8"), b"application/json")

    def _test(self, request: Any, admin: str) -> Any:
        token = request.getHeader(b"x-csrf-token") or b""
        expected = self.sources.admins.csrf_token(admin).encode("ascii")
        if not hmac.compare_digest(token, expected):
            return _finish(request, 403, b'{"error": "the form\'s token is missing or wrong: reload the page"}\n')
        try:
            form = json.loads(request.content.read(MAX_BODY + 1)[: MAX_BODY + 1])
            if len(json.dumps(form)) > MAX_BODY or not isinstance(form, dict):
                raise ValueError("too long")
            login, password, patron = (str(form.get(k) or "") for k in ("login", "password", "patron"))
        except ValueError:
            return _finish(request, 400, b'{"error": "expected a JSON object with login, password, patron"}\n')
        if not login or len(login) > MAX_FIELD or len(patron) > MAX_FIELD or len(password) > MAX_FIELD:
            return _finish(request, 400, b'{"error": "give the account\'s login and password"}\n')
        target = self.sources.target()
        if target is None:
            return _finish(request, 409, b'{"error": "no raw SIP listener (tcp or ssl) to test against"}\n')
        if self.testing:
            return _finish(request, 429, b'{"error": "a test is running: wait for it"}\n')
        self.testing = True
        d = self.sources.run_in_thread(run_check, target, login, password, patron)
        del password, form

        def done(outcome: Any) -> Any:
            self.testing = False
            return outcome

        d.addBoth(done)
        d.addCallback(lambda outcome: _finish(request, 200, json.dumps(outcome).encode("utf-8")))
        d.addErrback(self._broken, request)
        return d

    def _challenge_parts(self, text: bytes) -> tuple[int, bytes, bytes, dict[bytes, bytes]]:
        return 401, text, b"text/plain; charset=utf-8", {b"www-authenticate": b'Basic realm="sipserver console"'}

    def _challenge(self, request: Any, text: bytes) -> Any:
        return _finish(request, *self._challenge_parts(text))

    def _broken(self, failure: Any, request: Any) -> None:
        log.failure("console request failed", failure)
        _finish(request, 500, b"Internal error (see the log).\n", b"text/plain")


def _headers(request: Any) -> None:
    request.setHeader(b"content-security-policy", CSP.encode("ascii"))
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"cache-control", b"no-store")


def _finish(
    request: Any,
    code: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: dict[bytes, bytes] | None = None,
) -> Any:
    """Answer ``request`` (once, and only while its client is still there); NOT_DONE_YET, which
    is what ``render`` returns for an answer it wrote itself."""
    if request.finished or request.console_gone:
        return server.NOT_DONE_YET
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    if request.method != b"HEAD":
        request.write(body)
    request.finish()
    return server.NOT_DONE_YET


def _gone(_: Any, request: Any) -> None:
    request.console_gone = True  # the client left: its answer is dropped


def _answer(request: Any, code: int, body: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return body


def _peer(request: Any) -> str:
    address = request.getClientAddress()
    return "" if isinstance(address, UNIXAddress) else str(getattr(address, "host", ""))


def _private(request: Any) -> bool:
    """TLS, a unix socket, or a loopback peer: nobody else reads the basic authentication."""
    if request.isSecure():
        return True
    address = request.getClientAddress()
    if isinstance(address, UNIXAddress):
        return True
    try:
        host = ipaddress.ip_address(getattr(address, "host", ""))
    except ValueError:
        return False
    mapped = getattr(host, "ipv4_mapped", None)
    return (mapped or host).is_loopback


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:64]
