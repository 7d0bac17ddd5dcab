"""The audit trail: who changed what, from where, and how it ended.

Each mutating operation writes its row in the same transaction as the change (the caller's, not
one of its own): a change is never committed without its row, and a rolled-back change leaves
none. Refused attempts are recorded as well. PINs never reach this table: callers pass barcodes,
outcomes and plain details only.
"""

from __future__ import annotations

import datetime

from sipserver.ils.embedded import dbtime
from sipserver.ils.embedded.db.dialect import Tx
from sipserver.ils.interface import Refusal, TxContext

OK = "ok"


def outcome(refusal: Refusal | None) -> str:
    return OK if refusal is None else refusal.value


def record(
    tx: Tx,
    ctx: TxContext,
    now: datetime.datetime,
    request: str,
    *,
    patron: str = "",
    item: str = "",
    result: str = OK,
    detail: str = "",
) -> None:
    tx.execute(
        "INSERT INTO audit_log (logged_at, institution, login, location, peer, request, patron, item,"
        " outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            dbtime.stamp(now),
            ctx.institution,
            ctx.login,
            ctx.location,
            ctx.peer,
            ctx.request or request,
            patron,
            item,
            result,
            detail,
        ),
    )
