"""What a handler knows about the request beyond the message itself, and what it hands back."""

from __future__ import annotations

import datetime
import time

import attrs

from sipserver.config import AccountConfig, InstitutionConfig
from sipserver.ils.interface import Patron, Terminal
from sipserver.sip2 import Message

_this_second: tuple[int, datetime.datetime] = (-1, datetime.datetime.min)


def now_to_the_second() -> datetime.datetime:
    """The local time without microseconds, worked out once per second.

    Every request asks for it (the reply's transaction date, the loan's times), and
    ``datetime.now().replace(...)`` costs more than a dictionary look-up per request; ``time.time()``
    and a comparison do not. The pair is swapped in one assignment, so any thread may call this.
    """
    global _this_second
    second = int(time.time())
    cached = _this_second
    if cached[0] == second:
        return cached[1]
    now = datetime.datetime.fromtimestamp(second)
    _this_second = (second, now)
    return now


def _terminal_of(ctx: RequestContext) -> Terminal:
    return Terminal(
        institution=ctx.institution.id,
        login=ctx.login,
        location=ctx.location,
        peer=ctx.peer,
        now=ctx.now,
        branch=ctx.branch,
        places=ctx.institution.places,
        upstream_login=ctx.account.upstream_login if ctx.account else None,
    )


@attrs.frozen
class RequestContext:
    """One request's circumstances: the terminal's account, its institution, where it connects from.

    A session hands the same context to every request of the same second (``now`` is whole
    seconds), so what is worked out from it here, once, serves them all.
    """

    institution: InstitutionConfig
    account: AccountConfig | None
    listener: str
    peer: str
    now: datetime.datetime = attrs.field(factory=now_to_the_second)
    #: The backend's view of who asks, from where and when (never a PIN): every backend request carries it.
    terminal: Terminal = attrs.field(
        init=False, default=attrs.Factory(_terminal_of, takes_self=True), eq=False, repr=False
    )

    @property
    def login(self) -> str:
        return self.account.login if self.account else ""

    @property
    def location(self) -> str:
        return self.account.location if self.account else ""

    @property
    def branch(self) -> str:
        """The branch the terminal stands in: its account's ``branch``, else the branch its
        ``location`` stands in (``""`` when neither is known; see ``sipserver.config.places``)."""
        account = self.account
        if account is None:
            return ""
        return account.branch or self.institution.places.branch_of(account.location)


@attrs.frozen
class Reply:
    """A response and a one-word outcome for the exchange log and metrics (``ok``, a refusal name,
    ``denied``, ``unavailable``, ``error``), with the patron it describes, from which the account's
    reply profile takes the extension fields it turns on (``sipserver.acs.profile``)."""

    message: Message
    outcome: str = "ok"
    patron: Patron | None = None
