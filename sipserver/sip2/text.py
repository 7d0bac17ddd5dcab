"""Text encodings for the wire: UTF-8, cp850 (the protocol's default), latin-1, and ASCII.

ASCII transliterates accented letters (``é`` -> ``e``, ``ß`` -> ``ss``) instead of dropping them,
because a patron named Müller should read "Muller" on a receipt, not "Mller". Characters with no
Latin spelling become ``?``, as they do in every legacy encoding here.
"""

from __future__ import annotations

import codecs
import unicodedata

ENCODINGS = ("utf-8", "cp850", "latin-1", "ascii")

# Letters that NFKD does not take apart into a base letter plus marks.
_ASCII_SPECIAL = str.maketrans({
    "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i", "‘": "'", "’": "'",
    "“": '"', "”": '"', "–": "-", "—": "-", "…": "...",
})  # fmt: skip


def transliterate(text: str) -> str:
    """An ASCII spelling of ``text``: marks removed, ligatures spelled out, the rest ``?``."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_SPECIAL))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.encode("ascii", "replace").decode("ascii")


def normalize_encoding(name: str) -> str:
    """The canonical name of one of the supported encodings; ValueError for anything else."""
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        canonical = name
    aliases = {"utf-8": "utf-8", "cp850": "cp850", "iso8859-1": "latin-1", "latin-1": "latin-1", "ascii": "ascii"}
    if canonical not in aliases:
        raise ValueError(f"unsupported encoding {name!r}; expected one of {', '.join(ENCODINGS)}")
    return aliases[canonical]


def encode_text(text: str, encoding: str) -> bytes:
    """Encode for the wire; never raises on an unrepresentable character (it becomes ``?``)."""
    if encoding == "ascii":
        return transliterate(text).encode("ascii")
    return text.encode(encoding, "replace")
