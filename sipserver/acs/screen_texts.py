"""Screen messages (AF) a patron standing at a self-check can understand.

The backend says *why* (a :class:`Refusal`); this module says it in words: one message per
refusal, never a backend's own detail ("owes 12.00, limit 10.00", "nothing owed") run on after it.
Those details are for staff, and the audit trail keeps them. Kept in one place so a site can read,
and later translate, every sentence the server shows.
"""

from __future__ import annotations

from sipserver.ils.interface import Refusal

REFUSAL_TEXT: dict[Refusal, str] = {
    Refusal.UNKNOWN_PATRON: "Your library card was not recognised. Please see staff.",
    Refusal.PATRON_EXPIRED: "Your library card has expired. Please see staff to renew it.",
    Refusal.WRONG_PIN: "The PIN you entered is not correct.",
    Refusal.PATRON_BLOCKED: "Your account is blocked. Please see staff.",
    Refusal.CARD_LOST: "This card has been reported lost. Please see staff.",
    Refusal.TOO_MANY_ITEMS: "You have reached the limit of items you may borrow.",
    Refusal.TOO_MANY_OVERDUE: "You have too many overdue items. Please return them first.",
    Refusal.FINES_OVER_LIMIT: "Your fines are over the limit. Please pay them to borrow more.",
    Refusal.UNKNOWN_ITEM: "This item was not recognised. Please see staff.",
    Refusal.ITEM_CHECKED_OUT_TO_OTHER: "This item is checked out to someone else. Please see staff.",
    Refusal.ITEM_ON_HOLD_FOR_OTHER: "This item is on hold for another patron.",
    Refusal.ITEM_NOT_CIRCULATING: "This item cannot be borrowed. Please see staff.",
    Refusal.FEE_NOT_ACKNOWLEDGED: "This item has a fee. Please confirm to borrow it.",
    Refusal.NOT_CHECKED_OUT: "This item is not checked out to you.",
    Refusal.ALREADY_CHECKED_OUT_TO_YOU: "You already have this item checked out.",
    Refusal.TOO_MANY_RENEWALS: "This item cannot be renewed again.",
    Refusal.RENEWAL_BLOCKED_BY_HOLD: "This item cannot be renewed: another patron is waiting for it.",
    Refusal.HOLD_EXISTS: "You already have a hold on this.",
    Refusal.HOLD_NOT_FOUND: "No matching hold was found.",
    Refusal.HOLD_NOT_ALLOWED: "You have reached the limit of holds you may place.",
    Refusal.UNKNOWN_TITLE: "This title was not recognised. Please see staff.",
    Refusal.UNKNOWN_FEE: "This fee was not found. Please see staff.",
    Refusal.NO_BALANCE: "There is nothing to pay.",
    Refusal.AMOUNT_INVALID: "The amount is not valid or is more than you owe.",
    Refusal.NOT_PERMITTED: "This terminal may not do that. Please see staff.",
    Refusal.REFUSED_UPSTREAM: "The library system could not do this. Please see staff.",
}

UNAVAILABLE = "The library system is not available right now. Please try again later or see staff."
#: A checkin of an item that was not on loan: it is back on the shelf, but nobody had it.
NOT_ON_LOAN = "This item was not checked out."
NOT_PERMITTED = "This terminal may not do that. Please see staff."
DISABLED_BY_POLICY = "This service is not available right now. Please see staff."
SYSTEM_ERROR = "Something went wrong. Please see staff."
#: A change whose answer from the library system was lost: it may or may not have been done.
OUTCOME_UNKNOWN = (
    "The library system did not confirm this; it may or may not have been done. Please check and try again."
)
UNKNOWN_HOLD_MODE = "This hold request was not understood. Please see staff."


def refusal_text(refusal: Refusal | None, detail: str = "") -> str:
    """The one message for a refusal. ``detail`` (the backend's ``message``) is shown only for a
    refusal without a reason, where it is all the patron can be told; else it stays with staff."""
    if refusal is not None:
        return REFUSAL_TEXT.get(refusal, SYSTEM_ERROR)
    return detail or SYSTEM_ERROR
