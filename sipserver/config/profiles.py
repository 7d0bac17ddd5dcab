"""Reply profiles: what one kind of terminal or vendor receives, as configuration data.

Vendors differ in what they need from the same request: a PC-booking system decides access by the
patron's internet privileges (PI) and age (PB), an e-content service by age and card expiry and must
not receive an address, a phone number or an e-mail address. A profile says it once, by name, and
accounts share it (``profiles:`` and an account's ``profile:`` in the configuration). The ACS
handlers stay the same for everyone: the profile is applied to each reply just before it is encoded
(:mod:`sipserver.acs.profile`).

No Twisted here: the configuration loader builds these objects.
"""

from __future__ import annotations

import attrs

#: Patron fields a profile can turn on, with what each carries. They go into the patron replies,
#: 24 and 64, when the backend knows a value; BD, BE and BF are in 64 already (standard SIP2) and
#: are added to 24 as Evergreen's "Relais extensions" do.
PATRON_FIELDS: dict[str, str] = {
    "PA": "card expiration date, YYYYMMDD (Envisionware extension)",
    "PB": "birth date, YYYYMMDD (Envisionware extension)",
    "PC": "patron type (Envisionware extension)",
    "PI": "internet privileges (Evergreen and Koha extension)",
    "AQ": "home library (Evergreen extension, in 64)",
    "BD": "home address",
    "BE": "e-mail address",
    "BF": "home phone number",
}

#: Replies that describe a patron: where ``patron_fields`` and ``add`` apply.
PATRON_REPLIES = frozenset({"24", "64"})

#: Fields a profile may neither hide nor add: the trailer is error detection, not content.
TRAILER_FIELDS = frozenset({"AY", "AZ"})


@attrs.frozen(cache_hash=True)
class ReplyProfile:
    """One named profile (see the module docstring). The default, ``DEFAULT``, changes nothing."""

    name: str = "default"
    #: PATRON_FIELDS ids to send in 24 and 64, in this order after the standard fields.
    patron_fields: tuple[str, ...] = ()
    #: Field ids never sent to the account, in any reply (a required one goes out empty).
    hide: frozenset[str] = frozenset()
    #: (id, value) pairs added to 24 and 64, replacing what the server would send for that id.
    add: tuple[tuple[str, str], ...] = ()

    @property
    def changes_nothing(self) -> bool:
        return not (self.patron_fields or self.hide or self.add)


DEFAULT = ReplyProfile()
