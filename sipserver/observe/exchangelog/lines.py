"""What a line of the exchange log looks like: twistd's text, JSON, or a syslog datagram.

Each line ends with one newline and holds no other (a Twisted event of several lines, a traceback,
becomes several), so a destination counts lines by newlines. The time is formatted once a second.
"""

from __future__ import annotations

import datetime
import json
import os
import syslog
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import eventAsText, formatEvent, formatEventAsClassicLogText, formatTime

SYSLOG_TAG = "sipserver"
_SEVERITY = {"debug": syslog.LOG_DEBUG, "info": syslog.LOG_INFO, "warn": syslog.LOG_WARNING,
             "error": syslog.LOG_ERR, "critical": syslog.LOG_CRIT}  # fmt: skip
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SCALARS = (str, int, float, bool, type(None))
_json_string: Callable[[str], str] = json.encoder.encode_basestring
_ESCAPED_MAX = 4096


class Lines(Protocol):
    def exchange(self, now: float, listener: str, peer: str, login: str, request: str, outcome: str,
                 elapsed: float) -> str: ...  # fmt: skip

    def line(self, now: float, level: str, namespace: str, message: str, fields: dict[str, Any]) -> list[str]: ...

    def event(self, event: dict[str, Any]) -> list[str]: ...


class TextLines:
    """twistd's classic line: ``2026-11-23T19:39:13+0000 [sipserver#info] message``, local time."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    def stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, formatTime(second)
        return self._stamp

    def exchange(self, now: float, listener: str, peer: str, login: str, request: str, outcome: str,
                 elapsed: float) -> str:  # fmt: skip
        if int(now) != self._second:
            self.stamp(now)
        return (f"{self._stamp} [sipserver#info] sip listener={listener} peer={peer} login={login} "
                f"{request} {outcome} {elapsed * 1000:.1f}ms\n")  # fmt: skip

    def line(self, now: float, level: str, namespace: str, message: str, fields: dict[str, Any]) -> list[str]:
        first, *rest = _physical(message)
        return [f"{self.stamp(now)} [{namespace}#{level}] {first}\n", *(f"{piece}\n" for piece in rest)]

    def event(self, event: dict[str, Any]) -> list[str]:
        text = formatEventAsClassicLogText(event) or ""  # None for an event with nothing to show
        return [piece + "\n" for piece in text.splitlines() if piece.strip()]


class JsonLines:
    """One JSON object a line: time (UTC, to the microsecond), level, namespace, message, and the
    line's own fields (listener, peer, login, request, outcome, ms...), for log shippers."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        # Values escaped for JSON, without their quotes: listeners, logins, peers, messages and
        # outcomes come back line after line. Bounded: emptied when it grows past _ESCAPED_MAX.
        self._escaped: dict[str, str] = {}

    def _escape(self, value: str) -> str:
        escaped = self._escaped
        if len(escaped) >= _ESCAPED_MAX:
            escaped.clear()
        quoted = escaped[value] = _json_string(value)[1:-1]
        return quoted

    def stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            iso = datetime.datetime.fromtimestamp(second, datetime.UTC).isoformat()
            self._second, self._prefix = second, iso.removesuffix("+00:00")
        return f"{self._prefix}.{int((now - second) * 1e6):06d}+00:00"

    def exchange(self, now: float, listener: str, peer: str, login: str, request: str, outcome: str,
                 elapsed: float) -> str:  # fmt: skip
        second = int(now)
        if second != self._second:
            self.stamp(now)
        # each value escaped once, without its quotes, serves in the message and in its own field
        get, escape = self._escaped.get, self._escape
        lst, pr, lg = get(listener) or escape(listener), get(peer) or escape(peer), get(login) or escape(login)
        rq, oc = get(request) or escape(request), get(outcome) or escape(outcome)
        ms = elapsed * 1000
        return (f'{{"time": "{self._prefix}.{int((now - second) * 1e6):06d}+00:00", "level": "info", '
                f'"namespace": "sipserver", "message": "sip listener={lst} peer={pr} login={lg} {rq} {oc} {ms:.1f}ms", '
                f'"listener": "{lst}", "peer": "{pr}", "login": "{lg}", "request": "{rq}", "outcome": "{oc}", '
                f'"ms": {ms:.3f}}}\n')  # fmt: skip

    def line(self, now: float, level: str, namespace: str, message: str, fields: dict[str, Any]) -> list[str]:
        record = {"time": self.stamp(now), "level": level, "namespace": namespace, "message": message, **fields}
        return [json.dumps(record, ensure_ascii=False, default=str) + "\n"]

    def event(self, event: dict[str, Any]) -> list[str]:
        record: dict[str, Any] = {
            "time": self.stamp(event.get("log_time") or time.time()),
            "level": getattr(event.get("log_level"), "name", "info"),
            "namespace": event.get("log_namespace", ""),
            "message": formatEvent(event),
        }
        for key, value in event.items():
            if not key.startswith("log_") and key not in record and isinstance(value, _SCALARS):
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        return [json.dumps(record, ensure_ascii=False, default=str) + "\n"]


class SyslogLines:
    """RFC 3164 as the C library's ``syslog()`` sends it: ``<PRI>Nov 23 19:39:13 sipserver[PID]:``,
    then the text line without its time: ``[sipserver#info] message``. The priority carries the
    level (warn is ``warning``, error is ``err``); no newline, each line is one datagram."""

    def __init__(self, facility: int) -> None:
        self._head = {level: f"<{facility | severity}>" for level, severity in _SEVERITY.items()}
        self._tag = f" {SYSLOG_TAG}[{os.getpid()}]: "
        self._second = -1
        self._stamp = ""

    def stamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            t = time.localtime(second)
            self._second = second
            self._stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        return self._stamp

    def exchange(self, now: float, listener: str, peer: str, login: str, request: str, outcome: str,
                 elapsed: float) -> str:  # fmt: skip
        return (f"{self._head['info']}{self.stamp(now)}{self._tag}[sipserver#info] sip listener={listener} "
                f"peer={peer} login={login} {request} {outcome} {elapsed * 1000:.1f}ms\n")  # fmt: skip

    def line(self, now: float, level: str, namespace: str, message: str, fields: dict[str, Any]) -> list[str]:
        head = f"{self._head.get(level, self._head['info'])}{self.stamp(now)}{self._tag}[{namespace}#{level}] "
        return [f"{head}{text}\n" for text in _physical(message)]

    def event(self, event: dict[str, Any]) -> list[str]:
        level = getattr(event.get("log_level"), "name", "info")
        text = eventAsText(event, includeTimestamp=False)
        when = event.get("log_time") or time.time()
        head = f"{self._head.get(level, self._head['info'])}{self.stamp(when)}{self._tag}"
        return [f"{head}{piece}\n" for piece in text.splitlines() if piece.strip()]


def _physical(message: str) -> list[str]:
    """A message as the lines it prints (a message with a newline in it is rare: a reason or a
    frame fragment); continuation lines start with a tab, as twistd writes them."""
    if "\n" not in message and "\r" not in message:
        return [message]
    first, *rest = message.splitlines() or [""]
    return [first, *(f"\t{piece}" for piece in rest)]
