"""The audit trail: who changed what, from where, and how it ended.

Each mutating operation writes its row in the same transaction as the change (the caller's, not
one of its own): a change is never committed without its row, and a rolled-back change leaves
none. Refused attempts are recorded as well. PINs never reach this table: callers pass barcodes,
outcomes and plain details only.
"""

from __future__ import annotations

import datetime
from typing import Any

from sipserver.ils.embedded import dbtime
from sipserver.ils.embedded.db.dialect import Tx
from sipserver.ils.interface import ChangeRequest, Refusal

OK = "ok"


def outcome(refusal: Refusal | None) -> str:
    return OK if refusal is None else refusal.value


def record(
    tx: Tx,
    request: ChangeRequest[Any],
    now: datetime.datetime,
    name: str,
    *,
    patron: str = "",
    item: str = "",
    result: str = OK,
    detail: str = "",
) -> None:
    """The row of ``request``, named as the terminal's SIP request, else ``name``."""
    terminal = request.terminal
    tx.execute(
        "INSERT INTO audit_log (logged_at, institution, login, location, peer, request, patron, item,"
        " outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            dbtime.stamp(now),
            terminal.institution,
            terminal.login,
            terminal.location,
            terminal.peer,
            request.sip_request or name,
            patron,
            item,
            result,
            detail,
        ),
    )
