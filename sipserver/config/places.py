"""Places: an institution's branches, and the location codes that stand in each.

Terminals say where they are in many ways: a branch code (``MAIN``), a desk or terminal code
(``MAIN-DESK1``, ``DESK1``), or whatever an installer typed into the AP field (``Under the bed``).
Circulation reasons about *branches* only: an item checked in away from its home branch travels
there, a hold waits at its pickup branch. :class:`Places` turns any such code into the branch it
stands in, or says it does not know the code, so that an unknown string is never mistaken for a
foreign branch (which would send every item checked in there in transit).

An institution that declares no branch at all (neither ``branches:`` nor an account ``branch:``)
gets an *undeclared* table, which takes every code as the branch it names, exactly as sent: the
behaviour from before places existed, kept so that an unconfigured site changes nothing on upgrade
(the configuration loader warns about it).

No Twisted, no I/O: the configuration builds one per institution, the ACS resolves a request's
place with it, and the backends resolve the codes they store (an item's home, a hold's pickup).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs


def fold(code: str) -> str:
    """A code as codes are compared: without regard to case or surrounding blanks."""
    return code.strip().casefold()


def _lookup(branches: tuple[tuple[str, tuple[str, ...]], ...]) -> Mapping[str, str]:
    table: dict[str, str] = {}
    for branch, locations in branches:
        table[fold(branch)] = branch
        for location in locations:
            table.setdefault(fold(location), branch)
    return table


@attrs.frozen(cache_hash=True)
class Places:
    """Branches with their location codes; compared and hashed as configuration values are.

    ``branches`` is ``((branch, (location, ...)), ...)`` in the order configured. Codes match
    without regard to case or surrounding blanks; the answer is always the branch as configured.
    """

    branches: tuple[tuple[str, tuple[str, ...]], ...] = ()
    _codes: Mapping[str, str] = attrs.field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_codes", _lookup(self.branches))

    @classmethod
    def of(cls, branches: Mapping[str, Iterable[str]]) -> Places:
        """``Places.of({"MAIN": ["MAIN-DESK1"], "EAST": []})``."""
        return cls(tuple((branch, tuple(locations)) for branch, locations in branches.items()))

    @property
    def declared(self) -> bool:
        """Whether any branch is known; an undeclared table takes every code as a branch."""
        return bool(self.branches)

    @property
    def codes(self) -> Mapping[str, str]:
        """Every code known (folded) -> the branch it names or stands in."""
        return self._codes

    @property
    def names(self) -> tuple[str, ...]:
        """The branch codes, in the order configured."""
        return tuple(branch for branch, _ in self.branches)

    def branch_of(self, code: str | None) -> str:
        """The branch ``code`` names or stands in, ``""`` when it is empty or not known.

        Undeclared: the code itself (stripped), as every code was taken before places existed.
        """
        if not code or not code.strip():
            return ""
        if not self.branches:
            return code.strip()
        return self._codes.get(fold(code), "")

    def knows(self, code: str | None) -> bool:
        """Whether ``code`` is a branch or a location code of this institution."""
        return bool(self.branch_of(code))

    def same_branch(self, a: str, b: str) -> bool:
        """Whether two known codes stand in the same branch (False when either is unknown)."""
        first, second = self.branch_of(a), self.branch_of(b)
        return bool(first) and fold(first) == fold(second)


#: The table of an institution (or a backend caller) that declares nothing: codes are taken as sent.
UNDECLARED = Places()
