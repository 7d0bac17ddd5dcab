"""Where a request happens, from what the terminal sent and what the configuration knows.

A checkin happens at the branch its current location (AP) names or stands in, else at the branch
of the terminal. AP is free text on many devices (a desk name, a room, whatever an installer typed),
so an AP the institution does not know is not a place: the checkin happens at the terminal's branch,
and the terminal is named once in the log so that an administrator can list the code under its
branch (``institutions.<id>.branches``).
"""

from __future__ import annotations

from sipserver.observe.loglevel import logger

from .context import RequestContext

log = logger("sipserver.acs")

#: Unknown AP codes remembered (so logged) per login; a terminal cycling through more says nothing new.
UNKNOWN_PER_LOGIN = 16


def checkin_branch(ctx: RequestContext, current_location: str) -> str:
    """The branch a checkin happens at: the one AP names or stands in, else the terminal's."""
    return ctx.institution.places.branch_of(current_location) or ctx.branch


class UnknownLocations:
    """Logs, once per terminal (login) and code, a checkin whose AP names no known place.

    Bounded: at most :data:`UNKNOWN_PER_LOGIN` codes per login, and logins come from the
    configuration, so a terminal cannot make the server remember without limit.
    """

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}

    def note(self, ctx: RequestContext, code: str, branch: str) -> None:
        if not code.strip() or ctx.institution.places.knows(code):
            return
        seen = self._seen.setdefault(ctx.login, set())
        folded = code.strip().casefold()
        if folded in seen or len(seen) >= UNKNOWN_PER_LOGIN:
            return
        seen.add(folded)
        log.info(
            "login {login} checks in at current location {code!r}, which names no branch or location of"
            " institution {institution}: taken as {place}",
            login=ctx.login,
            code=code,
            institution=ctx.institution.id,
            place=f"the terminal's branch {branch}" if branch else "no branch (nothing is sent in transit)",
        )
