"""Secrets out of text that is about to be logged: the value after CO, AC or AD, whatever the delimiter.

A SIP frame (or a login name typed at a telnet prompt, or a 93's CN read with the wrong
delimiter) may carry a terminal password (CO, AC) or a patron PIN (AD) anywhere, separated by
``|``, by the delimiter of an account we do not know yet, or by nothing at all. So no delimiter is
assumed: wherever a secret field's id appears, what follows it is removed up to the next copy of
the character right before the id (the delimiter that field was written with), or to the end of
the text when that character is a letter, a digit or a space, or there is none: then the id
follows a fixed part (``9300``, ``93  ``) or nothing a parser could split on, and where its value
ends cannot be known. The price is that a login name containing upper-case ``CO``,
``AC`` or ``AD`` is shortened in the log; a password is never shown.
"""

from __future__ import annotations

from .fields import SECRET_FIELDS

__all__ = ["MASK", "mask_secrets"]

MASK = "***"

_IDS = tuple(sorted(SECRET_FIELDS))


def mask_secrets(text: str) -> str:
    """``text`` with the value after every CO, AC and AD replaced by ``***`` (see the module docstring).

    Every occurrence of an id is a possible field start, also one inside what another occurrence
    already hides (``CP_CO|CO_000|``: the ``_CO`` in a location code must not make the real CO's
    value look like the end of its own), so the hidden spans of all occurrences are joined."""
    if not any(fid in text for fid in _IDS):
        return text
    spans: list[tuple[int, int]] = []
    start = _next_id(text, 0)
    while start >= 0:
        value = start + 2
        before = text[start - 1] if start > 0 else ""
        if before and not before.isalnum() and not before.isspace():
            end = text.find(before, value)
            end = len(text) if end < 0 else end
        else:
            end = len(text)
        if spans and value <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((value, end))
        start = _next_id(text, start + 1)
    pieces: list[str] = []
    position = 0
    for value, end in spans:
        pieces.append(text[position:value] + MASK)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _next_id(text: str, start: int) -> int:
    """Where the first secret field id at or after ``start`` begins, or -1."""
    found = [i for i in (text.find(fid, start) for fid in _IDS) if i >= 0]
    return min(found) if found else -1
