"""Fees and payments: charging a fee, and applying a payment to what a patron owes.

A payment goes to the fee it names, else to the oldest fees first. A patron's balance never goes
below zero unless the rules allow credit; then the excess is kept as a ``credit`` fee with a
negative balance, so that the balance is always the plain sum of the fees.
"""

from __future__ import annotations

import datetime

from sipserver.ils.embedded import audit, dbtime, records
from sipserver.ils.embedded.db.dialect import Tx
from sipserver.ils.embedded.limits import parse_id
from sipserver.ils.embedded.money import MAX_CENTS, format_cents, parse_amount
from sipserver.ils.embedded.pins import PinVerifier
from sipserver.ils.interface import FeePaidRequest, FeePaidResult, Refusal

_INSERT_FEE = (
    "INSERT INTO fees (patron_id, fee_type, amount, balance, item_id, loan_id, created, description)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def charge(
    tx: Tx,
    patron_id: int,
    fee_type: str,
    cents: int,
    now: datetime.datetime,
    *,
    item_id: int | None = None,
    loan_id: int | None = None,
    description: str = "",
) -> int:
    return tx.insert(_INSERT_FEE, (patron_id, fee_type, cents, cents, item_id, loan_id, dbtime.stamp(now), description))


def record_charge(
    tx: Tx,
    patron_id: int,
    fee_type: str,
    cents: int,
    now: datetime.datetime,
    *,
    item_id: int | None = None,
    loan_id: int | None = None,
    description: str = "",
) -> None:
    """:func:`charge` for a caller that does not need the new fee's id (the write may travel later)."""
    tx.execute(_INSERT_FEE, (patron_id, fee_type, cents, cents, item_id, loan_id, dbtime.stamp(now), description))


def void_unpaid(tx: Tx, loan_id: int, fee_type: str, *, since: str | None = None) -> None:
    """Drop the loan's latest fee of this type, if nothing was paid on it (undoing a transaction).

    ``since``: only a fee charged at or after this time (the checkin being undone).
    """
    fee = tx.one(
        "SELECT id, amount, balance, created FROM fees WHERE loan_id = ? AND fee_type = ? ORDER BY id DESC LIMIT 1",
        (loan_id, fee_type),
    )
    if fee is None or fee["balance"] != fee["amount"] or (since is not None and fee["created"] < since):
        return
    if tx.one("SELECT fee_id FROM payment_allocations WHERE fee_id = ?", (fee["id"],)) is None:
        tx.execute("DELETE FROM fees WHERE id = ?", (fee["id"],))


def fee_paid(tx: Tx, request: FeePaidRequest, now: datetime.datetime, pins: PinVerifier) -> FeePaidResult:
    patron_barcode, pin, amount, currency = request.patron, request.pin, request.amount, request.currency
    fee_id, transaction_id, payment_type = request.fee_id, request.transaction_id, request.payment_type

    def done(result: FeePaidResult, detail: str = "") -> FeePaidResult:
        audit.record(
            tx,
            request,
            now,
            "fee_paid",
            patron=patron_barcode,
            result=audit.outcome(result.refusal),
            detail=detail or f"amount {amount!r} {currency} transaction {result.transaction_id}".strip(),
        )
        return result

    patron = records.find_patron(tx, patron_barcode, lock=True)
    if patron is None:
        return done(FeePaidResult(ok=False, refusal=Refusal.UNKNOWN_PATRON, transaction_id=transaction_id))
    owed = records.balance(tx, patron.id)
    if pin is not None and not pins.verify(patron.barcode, pin, patron.pin_hash):
        return done(FeePaidResult(False, Refusal.WRONG_PIN, transaction_id=transaction_id, balance=format_cents(owed)))
    cents = parse_amount(amount)

    def refuse(refusal: Refusal, message: str = "") -> FeePaidResult:
        return done(FeePaidResult(False, refusal, message, transaction_id=transaction_id, balance=format_cents(owed)))

    if cents is None and parse_amount(amount, maximum=None) is not None:
        return refuse(Refusal.AMOUNT_INVALID, f"more than the largest amount {format_cents(MAX_CENTS)}")
    if cents is None or cents <= 0:
        return refuse(Refusal.AMOUNT_INVALID, f"not an amount: {amount!r}")
    if transaction_id:
        earlier = tx.one(
            "SELECT amount FROM payments WHERE patron_id = ? AND transaction_id = ?", (patron.id, transaction_id)
        )
        if earlier is not None:  # a resend of a payment already recorded: accept it once only
            return done(
                FeePaidResult(
                    True, message="payment already recorded", transaction_id=transaction_id, balance=format_cents(owed)
                ),
                detail=f"duplicate transaction {transaction_id}",
            )
    if fee_id:
        wanted = parse_id(fee_id)  # not a number, or more than an id can be: no such fee
        fee = None
        if wanted is not None:
            fee = tx.one("SELECT id, balance FROM fees WHERE patron_id = ? AND id = ?" + tx.lock, (patron.id, wanted))
        if fee is None:
            return refuse(Refusal.UNKNOWN_FEE, f"no fee {fee_id}")
        targets = [fee]
    else:
        targets = tx.all(
            "SELECT id, balance FROM fees WHERE patron_id = ? AND balance > 0 ORDER BY created, id" + tx.lock,
            (patron.id,),
        )
    payable = sum(int(f["balance"]) for f in targets if int(f["balance"]) > 0)
    allow_credit = records.rules_for(tx, patron.patron_type).allow_credit
    if payable <= 0 and not allow_credit:
        return refuse(Refusal.NO_BALANCE, "nothing owed")
    if cents > payable and not allow_credit:
        return refuse(Refusal.AMOUNT_INVALID, f"more than the {format_cents(payable)} owed")

    payment_id = tx.insert(
        "INSERT INTO payments (patron_id, transaction_id, amount, currency, payment_type, fee_type, paid)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (patron.id, transaction_id, cents, currency, payment_type, request.fee_type, dbtime.stamp(now)),
    )
    if not transaction_id:
        transaction_id = f"PAY{payment_id:08d}"
        tx.execute("UPDATE payments SET transaction_id = ? WHERE id = ?", (transaction_id, payment_id))
    left = cents
    for fee in targets:
        share = min(left, int(fee["balance"]))
        if share <= 0:
            continue
        tx.execute("UPDATE fees SET balance = balance - ? WHERE id = ?", (share, fee["id"]))
        tx.execute(
            "INSERT INTO payment_allocations (payment_id, fee_id, amount) VALUES (?, ?, ?)",
            (payment_id, fee["id"], share),
        )
        left -= share
    if left > 0:  # only reachable when credit is allowed
        credit = charge(tx, patron.id, "credit", -left, now, description=f"overpayment {transaction_id}")
        tx.execute(
            "INSERT INTO payment_allocations (payment_id, fee_id, amount) VALUES (?, ?, ?)",
            (payment_id, credit, left),
        )
    return done(
        FeePaidResult(True, transaction_id=transaction_id, balance=format_cents(records.balance(tx, patron.id))),
        detail=f"paid {format_cents(cents)} {currency} {payment_type} transaction {transaction_id}".strip(),
    )
