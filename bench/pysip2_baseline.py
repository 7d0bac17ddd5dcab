#!/usr/bin/env python3
"""The baseline for ``bench/load.py``: PyPI ``pysip2`` 0.1.0's AnyIO server with in-memory handlers.

    python bench/pysip2_baseline.py --port PORT [--data etc/demo-data.yaml]

It answers 93, 99, 23, 63, 11, 09 and 29 from dicts built from the demo data (patrons with their
PINs, items, loans), the same data our embedded backend is seeded with, so both servers do the
equivalent work per message minus what ours adds (a database, PIN hashing, policy, logging). The
handlers are ``async def`` so pysip2 runs them on its event loop; a plain ``def`` handler would cost
it a thread hop per request, which would make the baseline look slower than it can be. It prints
``ready PORT`` once listening and serves until killed.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import anyio
import yaml
from pysip2 import (
    CHECKIN,
    CHECKOUT,
    LOGIN,
    PATRON_INFORMATION,
    PATRON_STATUS,
    RENEW,
    SC_STATUS,
    CheckinResponse,
    CheckoutResponse,
    LoginResponse,
    PatronInformationResponse,
    PatronStatusResponse,
    RenewResponse,
    SIP2Server,
)

ROOT = Path(__file__).resolve().parent.parent
LOGINS = {"bench": "benchpass"}
LOAN_DAYS = 21


def now18() -> str:
    return datetime.datetime.now().strftime("%Y%m%d    %H%M%S")


def due18() -> str:
    return (datetime.datetime.now() + datetime.timedelta(days=LOAN_DAYS)).strftime("%Y%m%d    235900")


def build(data_file: Path) -> SIP2Server:
    data = yaml.safe_load(data_file.read_text(encoding="utf-8"))
    patrons = {p["barcode"]: p for p in data["patrons"]}
    items = {i["barcode"]: i for i in data["items"]}
    loans: dict[str, str] = {loan["item"]: loan["patron"] for loan in data.get("loans", [])}
    # UTF-8 like our bench account: the demo patrons include Cyrillic, Greek, CJK and Arabic names.
    server = SIP2Server(institution_id="MAIN", library_name="Demo Library", login_required=True, encoding="utf-8")

    def patron_view(barcode: str, pin: str | None) -> tuple[dict | None, str, str]:
        patron = patrons.get(barcode)
        if patron is None:
            return None, "N", "N"
        return patron, "Y", "Y" if pin is not None and pin == patron.get("pin") else "N"

    @server.route(LOGIN)
    async def login(req, ctx):
        return LoginResponse(ok="1" if LOGINS.get(req.login_user_id) == req.login_password else "0")

    @server.route(SC_STATUS)
    async def sc_status(req, ctx):
        return ctx.server.build_acs_status(req)

    @server.route(PATRON_STATUS)
    async def patron_status(req, ctx):
        patron, valid, pin_ok = patron_view(req.patron_identifier, req.patron_password)
        return PatronStatusResponse(
            patron_status=" " * 14,
            language=req.language,
            transaction_date=now18(),
            institution_id=req.institution_id,
            patron_identifier=req.patron_identifier,
            personal_name=patron["name"] if patron else "",
            valid_patron=valid,
            valid_patron_password=pin_ok,
            currency_type="USD",
            screen_message=(f"Welcome, {patron['name'].split()[0]}",) if patron else ("Unknown patron",),
        )

    @server.route(PATRON_INFORMATION)
    async def patron_information(req, ctx):
        patron, valid, pin_ok = patron_view(req.patron_identifier, req.patron_password)
        charged = tuple(item for item, who in loans.items() if who == req.patron_identifier)
        return PatronInformationResponse(
            patron_status=" " * 14,
            language=req.language,
            transaction_date=now18(),
            hold_items_count="0000",
            overdue_items_count="0000",
            charged_items_count=f"{len(charged):04d}",
            fine_items_count="0000",
            recall_items_count="0000",
            unavailable_holds_count="0000",
            institution_id=req.institution_id,
            patron_identifier=req.patron_identifier,
            personal_name=patron["name"] if patron else "",
            valid_patron=valid,
            valid_patron_password=pin_ok,
            charged_items=charged if req.summary[2:3] == "Y" else (),
        )

    def circulation(req, response_type, *, renew: bool):
        patron, _valid, pin_ok = patron_view(req.patron_identifier, req.patron_password)
        item = items.get(req.item_identifier or "")
        holder = loans.get(req.item_identifier or "")
        if renew:
            ok = patron is not None and pin_ok == "Y" and item is not None and holder == req.patron_identifier
        else:
            ok = patron is not None and pin_ok == "Y" and item is not None and holder in (None, req.patron_identifier)
        if ok:
            loans[req.item_identifier] = req.patron_identifier
        return response_type(
            ok="1" if ok else "0",
            renewal_ok="Y" if renew and ok else "N",
            magnetic_media="N",
            desensitize="Y" if ok else "N",
            transaction_date=now18(),
            institution_id=req.institution_id,
            patron_identifier=req.patron_identifier,
            item_identifier=req.item_identifier or "",
            title_identifier=item["title"] if item else "",
            due_date=due18() if ok else "",
            screen_message=() if ok else ("Refused",),
        )

    @server.route(CHECKOUT)
    async def checkout(req, ctx):
        return circulation(req, CheckoutResponse, renew=False)

    @server.route(RENEW)
    async def renew(req, ctx):
        return circulation(req, RenewResponse, renew=True)

    @server.route(CHECKIN)
    async def checkin(req, ctx):
        item = items.get(req.item_identifier)
        holder = loans.pop(req.item_identifier, None)
        return CheckinResponse(
            ok="1" if item is not None else "0",
            resensitize="Y" if item is not None else "N",
            magnetic_media="N",
            alert="N",
            transaction_date=now18(),
            institution_id=req.institution_id,
            item_identifier=req.item_identifier,
            permanent_location=item["owner"] if item else "",
            title_identifier=item["title"] if item else None,
            patron_identifier=holder,
        )

    return server


async def serve(server: SIP2Server, host: str, port: int) -> None:
    async with server.start(host, port) as bound:
        print(f"ready {bound}", flush=True)
        await anyio.sleep_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data", type=Path, default=ROOT / "etc" / "demo-data.yaml")
    args = parser.parse_args(argv)
    try:
        anyio.run(serve, build(args.data), args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
