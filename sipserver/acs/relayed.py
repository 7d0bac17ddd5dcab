"""The terminal's reply when a backend relayed the request to another SIP2 server: that server's
reply, so the terminal gets what the ILS said (screen and print lines, due dates as it wrote them,
fees and currency, alerts, list entries, and fields this daemon does not know), with the few
things that belong to this side put right: the institution id the terminal sent, and required
fields the upstream left out taken from the reply the ACS built itself. AY and AZ are the
terminal's own, written by its connection.
"""

from __future__ import annotations

from sipserver.sip2 import MESSAGES, Message

_TRAILER = ("AY", "AZ")
#: Each reply's required fields but AO (the terminal's own institution id goes in instead).
_REQUIRED = {code: tuple(f.id for f in spec.fields if f.required and f.id != "AO") for code, spec in MESSAGES.items()}


def faithful(own: Message, upstream: Message) -> Message:
    """The reply for the terminal: ``upstream``'s, with ``own``'s AO and its required fields
    where the upstream has none. A reply of another kind than ``own`` (a confused upstream) is
    not passed on: ``own`` is."""
    if upstream.code != own.code:
        return own
    fixed = dict(own.fixed)
    for name, value in upstream.fixed.items():
        if name in fixed and value.strip():
            fixed[name] = value
    fields: dict[str, list[str]] = {}
    for field_id, values in upstream.fields.items():
        if field_id not in _TRAILER:
            fields[field_id] = list(values)
    if "AO" in own.fields:
        fields["AO"] = list(own.fields["AO"])
    for field in own.spec.fields:
        if field.required and field.id not in fields and field.id in own.fields:
            fields[field.id] = list(own.fields[field.id])
    return Message(own.code, fixed, fields)


def passed_on(upstream: Message, code: str, institution: str) -> Message | None:
    """What :func:`faithful` gives for a reply of ``code`` with AO ``institution`` when
    ``upstream`` is complete (of that code, every fixed field given, every required field there),
    without the ACS's own reply; None when it is not, and :func:`faithful` must fill it in."""
    if upstream.code != code:
        return None
    fixed = upstream.fixed
    spec = upstream.spec
    if len(fixed) != len(spec.fixed) or "" in map(str.strip, fixed.values()):
        return None
    fields = upstream.fields
    for field_id in _REQUIRED[code]:
        if field_id not in fields:
            return None
    if "AY" in fields or "AZ" in fields:
        fields = {field_id: values for field_id, values in fields.items() if field_id not in _TRAILER}
    else:
        fields = dict(fields)
    fields["AO"] = [institution]
    return Message(code, dict(fixed), fields)


def combined_status(own: Message, upstream: Message | None) -> Message:
    """98 for the terminal: this daemon's, with each Y/N flag and each BX position Y only when the
    upstream says Y too (a terminal may do what both allow), and the upstream's screen messages."""
    if upstream is None or upstream.code != "98":
        return own
    fixed = dict(own.fixed)
    for name in ("online_status", "checkin_ok", "checkout_ok", "acs_renewal_policy", "status_update_ok",
                 "offline_ok"):  # fmt: skip
        if fixed.get(name) == "Y" and upstream.fixed.get(name, "Y").strip().upper() == "N":
            fixed[name] = "N"
    fields = {field_id: list(values) for field_id, values in own.fields.items()}
    ours, theirs = own.get("BX"), upstream.get("BX")
    if ours and theirs:
        theirs = theirs[: len(ours)].ljust(len(ours), "N").upper()
        fields["BX"] = ["".join("Y" if a == b == "Y" else "N" for a, b in zip(ours, theirs, strict=True))]
    for text in upstream.getall("AF"):
        fields.setdefault("AF", []).append(text)
    return Message(own.code, fixed, fields)
