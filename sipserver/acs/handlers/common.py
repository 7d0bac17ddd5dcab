"""What several handlers read from a request or write into a reply."""

from __future__ import annotations

import datetime
from typing import Protocol

from sipserver.ils.interface import Refusal
from sipserver.sip2 import Message
from sipserver.sip2.codes import format_date


def pin_of(request: Message) -> str | None:
    """The patron PIN to check: None when AD is absent or empty (clients send ``AD|`` for none)."""
    value = request.get("AD")
    return value or None


def due_text(when: datetime.datetime | None) -> str:
    return format_date(when) if when else ""


class Outcome(Protocol):
    """A backend result that succeeds or says why not."""

    @property
    def ok(self) -> bool: ...

    @property
    def refusal(self) -> Refusal | None: ...


def outcome_of(result: Outcome) -> str:
    """The exchange log's outcome: ``ok``, the refusal's name, or ``refused`` when none is given."""
    if result.ok:
        return "ok"
    return result.refusal.value if result.refusal else "refused"
