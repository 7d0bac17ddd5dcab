"""SC status (99 -> 98): whether the ACS is on-line, and what this terminal may ask of it.

Sorters and self-checks poll 99 all day and give up after about a second, so the answer never
waits on a backend: it reads what the ACS believes about the institution's backend
(``sipserver.acs.health``), and everything but the date comes from frozen configuration values.
"""

from __future__ import annotations

import functools

from sipserver.config import AccountConfig, InstitutionConfig
from sipserver.sip2 import Message, make
from sipserver.sip2.codes import format_date

from .. import relayed, screen_texts
from ..context import Reply, RequestContext
from ..core import ACS, handles, offered, offered_to, permitted


def refuse_status(request: Message, ctx: RequestContext, text: str) -> Message:
    """98 off-line, with the account's BX, when even the status cannot be answered."""
    return make(
        "98", online_status=False, timeout_period=0, retries_allowed=ctx.institution.policy.retries,
        date_time_sync=ctx.now, AO=ctx.institution.id, AM=ctx.institution.library_name,
        BX=offered_to(ctx), AF=[text],
    )  # fmt: skip


@handles("99", refusal=refuse_status)
def sc_status(acs: ACS, request: Message, ctx: RequestContext) -> Reply:
    online = acs.online(ctx)
    version = request.fixed.get("protocol_version", "").strip()
    if _version_below(version, 1.0):
        online = False
        messages = [f"Protocol version {version} is not supported; 2.00 is."]
    else:
        messages = [] if online else [screen_texts.UNAVAILABLE]
    fixed, fields = _status_parts(ctx.institution, ctx.account, online)
    backend = acs.backends.get(ctx.institution.backend)
    upstream_status = getattr(backend, "upstream_status", None)
    if upstream_status is not None:  # a backend relaying to another SIP2 server: both must allow
        fixed, fields = _with_upstream(fixed, fields, upstream_status(ctx.terminal))
        if online and fixed["online_status"] != "Y":
            online, messages = False, [screen_texts.UNAVAILABLE]
        problem = backend.upstream_problem() if not online else ""  # type: ignore[union-attr]
        if problem:
            messages = [*messages, problem]
    reply = Message("98", {**fixed, "date_time_sync": format_date(ctx.now)}, dict(fields))
    if messages:
        reply.fields["AF"] = [*fields.get("AF", ()), *messages]
    return Reply(reply, "ok" if online else "offline")


#: The parts of a 98 combined with an upstream's 98, by the identity of both (an upstream's 98
#: changes with each keepalive): sorters polling 99 through a relay reuse them as they do
#: :func:`_status_parts`.
_COMBINED: dict[tuple[int, int], tuple[object, object, tuple[dict[str, str], dict[str, list[str]]]]] = {}


def _with_upstream(
    fixed: dict[str, str], fields: dict[str, list[str]], upstream: Message | None
) -> tuple[dict[str, str], dict[str, list[str]]]:
    if upstream is None:
        return fixed, fields
    key = (id(fields), id(upstream))
    cached = _COMBINED.get(key)
    if cached is not None and cached[0] is fields and cached[1] is upstream:
        return cached[2]
    combined = relayed.combined_status(Message("98", fixed, fields), upstream)
    if len(_COMBINED) >= 1024:
        _COMBINED.clear()
    parts = (combined.fixed, combined.fields)
    _COMBINED[key] = (fields, upstream, parts)
    return parts


@functools.lru_cache(maxsize=1024)
def _status_parts(
    institution: InstitutionConfig, account: AccountConfig | None, online: bool
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Everything in a 98 but the date and screen messages: it depends only on frozen config values
    and the on-line flag, so sorters polling 99 all day reuse it (a reload makes new keys)."""
    policy = institution.policy
    reply = make(
        "98",
        online_status=online,
        checkin_ok=policy.checkin and permitted(account, "09") if account else policy.checkin,
        checkout_ok=policy.checkout and permitted(account, "11") if account else policy.checkout,
        acs_renewal_policy=policy.renewal,
        status_update_ok=policy.status_update,
        offline_ok=policy.offline,
        timeout_period=min(999, round(policy.timeout * 10)) if online else 0,
        retries_allowed=min(999, policy.retries),
        protocol_version="2.00",
        AO=institution.id,
        AM=institution.library_name,
        BX=offered(policy, account.permissions if account is not None else None),
        AN=account.location if account is not None and account.location else None,
    )
    return reply.fixed, reply.fields


def _version_below(version: str, minimum: float) -> bool:
    try:
        return float(version) < minimum
    except ValueError:
        return False  # blank or odd versions are common; treat as current
