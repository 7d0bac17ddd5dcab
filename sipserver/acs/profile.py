"""Apply an account's reply profile (``sipserver.config.profiles``) to a reply, just before it is encoded.

Handlers build the same replies for every account and hand back the patron a reply describes
(``Reply.patron``); this module adds the patron fields the profile turns on, the fixed fields it
adds, and drops the fields it hides. A field the backend has no value for is not sent at all.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from sipserver.config.profiles import PATRON_FIELDS, PATRON_REPLIES, ReplyProfile
from sipserver.ils.interface import Patron
from sipserver.sip2 import Message


def _day(value: datetime.date | None) -> str:
    """PA and PB as Envisionware terminals and Evergreen write them: YYYYMMDD."""
    return value.strftime("%Y%m%d") if value is not None else ""


#: What each of ``PATRON_FIELDS`` carries, from the backend's Patron.
PATRON_VALUES: dict[str, Callable[[Patron], str]] = {
    "PA": lambda patron: _day(patron.expires),
    "PB": lambda patron: _day(patron.birth_date),
    "PC": lambda patron: patron.patron_type,
    "PI": lambda patron: patron.internet_privileges,
    "AQ": lambda patron: patron.home_library,
    "BD": lambda patron: patron.address,
    "BE": lambda patron: patron.email,
    "BF": lambda patron: patron.phone,
}
assert set(PATRON_VALUES) == set(PATRON_FIELDS)


def shape(message: Message, patron: Patron | None, profile: ReplyProfile) -> Message:
    """``message`` as ``profile`` wants it. The message given is not changed (handlers may share
    parts of their replies between requests); a new one is made when anything differs."""
    fields = message.fields
    changed: dict[str, list[str]] | None = None
    if message.code in PATRON_REPLIES:
        changed = dict(fields)
        if patron is not None:
            for field_id in profile.patron_fields:
                value = PATRON_VALUES[field_id](patron)
                if value and field_id not in changed:  # BD, BE, BF are in 64 already
                    changed[field_id] = [value]
        for field_id, value in profile.add:
            changed[field_id] = [value]
    if profile.hide:
        current = changed if changed is not None else fields
        hidden = [field_id for field_id in current if field_id in profile.hide]
        if hidden:
            changed = dict(current)
            for field_id in hidden:
                del changed[field_id]
    if changed is None:
        return message
    return Message(message.code, message.fixed, changed, message.sequence, message.checksum)
