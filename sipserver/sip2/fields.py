"""Variable-field identifiers: the two-character ids of SIP2 2.00 and the extensions seen in the field.

Decoding keeps every id it reads; this table only says which ids are *known*, so that a decoded
message can report the ones that are not, and so that logs and the client can print names.
"""

from __future__ import annotations

# id -> (name, standard). standard=False marks an extension (3M SIP2 extensions, Envisionware, ...).
FIELDS: dict[str, tuple[str, bool]] = {
    "AA": ("patron identifier", True),
    "AB": ("item identifier", True),
    "AC": ("terminal password", True),
    "AD": ("patron password", True),
    "AE": ("personal name", True),
    "AF": ("screen message", True),
    "AG": ("print line", True),
    "AH": ("due date", True),
    "AJ": ("title identifier", True),
    "AL": ("blocked card msg", True),
    "AM": ("library name", True),
    "AN": ("terminal location", True),
    "AO": ("institution id", True),
    "AP": ("current location", True),
    "AQ": ("permanent location", True),
    "AS": ("hold items", True),
    "AT": ("overdue items", True),
    "AU": ("charged items", True),
    "AV": ("fine items", True),
    "AY": ("sequence number", True),
    "AZ": ("checksum", True),
    "BD": ("home address", True),
    "BE": ("e-mail address", True),
    "BF": ("home phone number", True),
    "BG": ("owner", True),
    "BH": ("currency type", True),
    "BI": ("cancel", True),
    "BK": ("transaction id", True),
    "BL": ("valid patron", True),
    "BM": ("renewed items", True),
    "BN": ("unrenewed items", True),
    "BO": ("fee acknowledged", True),
    "BP": ("start item", True),
    "BQ": ("end item", True),
    "BR": ("queue position", True),
    "BS": ("pickup location", True),
    "BT": ("fee type", True),
    "BU": ("recall items", True),
    "BV": ("fee amount", True),
    "BW": ("expiration date", True),
    "BX": ("supported messages", True),
    "BY": ("hold type", True),
    "BZ": ("hold items limit", True),
    "CA": ("overdue items limit", True),
    "CB": ("charged items limit", True),
    "CC": ("fee limit", True),
    "CD": ("unavailable hold items", True),
    "CF": ("hold queue length", True),
    "CG": ("fee identifier", True),
    "CH": ("item properties", True),
    "CI": ("security inhibit", True),
    "CJ": ("recall date", True),
    "CK": ("media type", True),
    "CL": ("sort bin", True),
    "CM": ("hold pickup date", True),
    "CN": ("login user id", True),
    "CO": ("login password", True),
    "CP": ("location code", True),
    "CQ": ("valid patron password", True),
    # Extensions.
    "CR": ("collection code", False),
    "CS": ("call number", False),
    "CT": ("destination location", False),
    "CV": ("alert type", False),
    "CY": ("hold patron id", False),
    "DA": ("hold patron name", False),
    "PA": ("patron expiration date", False),
    "PB": ("patron birth date", False),
    "PC": ("patron class", False),
    "PI": ("internet privileges", False),
    "XI": ("patron internal id", False),
    "ZY": ("patron type", False),
    "PT": ("patron group", False),
    "MA": ("bib id", False),
    "MB": ("isbn", False),
    "MC": ("lccn", False),
    "FA": ("fee amount detail", False),
    "FB": ("fee item detail", False),
    "FC": ("fee date detail", False),
    "FD": ("fee description detail", False),
    "FE": ("fee cost type detail", False),
    "FF": ("fee detail f", False),
    "FG": ("fee detail g", False),
    "FU": ("borrower type", False),
    "FV": ("borrower type description", False),
}

#: Fields whose values are secrets: never logged, never shown in errors.
SECRET_FIELDS = frozenset({"AC", "AD", "CO"})


def field_name(field_id: str) -> str:
    """The field's name for logs and the client, or ``unknown field XX``."""
    entry = FIELDS.get(field_id)
    return entry[0] if entry else f"unknown field {field_id}"
