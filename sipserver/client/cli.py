"""``sipclient``: a SIP2 client for troubleshooting a server, a device's account or the network between.

``sipclient -H HOST -p PORT -u LOGIN COMMAND [ARGS]`` connects, logs in (the 93 login, or the
``login:``/``password:`` prompts over telnet), sends one request and prints the reply field by field
with names and meanings (``--json`` for data, ``--raw`` for the exact bytes too). ``interactive``
reads commands one per line on one connection; ``check`` runs connect, login, SC status and an
optional patron status and prints one line saying what is wrong, taken from what actually happened
(the exception, its errno, the reply) rather than guessed. docs/sipclient.md has every command.

Passwords and PINs are never printed: CO, AC and AD are masked in every form of output (see
``sipserver.client.show``), and the password is read from ``SIPCLIENT_PASSWORD`` or a prompt when ``-P`` is
missing or ``-`` (a password on the command line shows in ``ps``).

Exit codes: 0 done (and the answer was positive), 1 a SIP-level failure (login refused, a negative
answer, 96, a reply that fails its checksum), 2 usage, 3 a connection-level failure.
"""

from __future__ import annotations

import argparse
import codecs
import datetime
import getpass
import os
import shlex
import sys
import warnings
from typing import Any

from sipserver.client import show
from sipserver.client.connection import CONNECTION_FAILURE, OK, USAGE, Connection, Failure, OutputClosed, check
from sipserver.sip2 import BY_NAME, MESSAGES, EncodeError, Message, encode, make
from sipserver.sip2.codes import FeeType, PaymentType, Summary

DEFAULT_PORTS = {"raw": 6001, "telnet": 6023}
PASSWORD_ENV = "SIPCLIENT_PASSWORD"
SUMMARIES = {
    "hold": Summary.HOLD_ITEMS,
    "overdue": Summary.OVERDUE_ITEMS,
    "charged": Summary.CHARGED_ITEMS,
    "fine": Summary.FINE_ITEMS,
    "recall": Summary.RECALL_ITEMS,
    "unavailable": Summary.UNAVAILABLE_HOLDS,
}
HOLD_MODES = {"add": "+", "cancel": "-", "change": "*"}


# ---------------------------------------------------------------------------------------------------
# Requests


def _fee_type(text: str) -> str:
    return _code(FeeType, text, "fee type")


def _payment_type(text: str) -> str:
    return _code(PaymentType, text, "payment type")


def _code(table: Any, text: str, what: str) -> str:
    for member in table:
        if text in (member.value, member.name.lower()):
            return member.value
    names = ", ".join(f"{m.value}/{m.name.lower()}" for m in table)
    raise argparse.ArgumentTypeError(f"unknown {what} {text!r} (one of {names})")


def _encoding(text: str) -> str:
    try:
        return codecs.lookup(text).name
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown character set {text!r}") from None


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, got {text}")
    return value


def build_request(args: argparse.Namespace) -> Message:
    """The request message for a command (every command but check and interactive).

    Fields a message does not take are None here, and ``make`` leaves None out; the encoder puts
    the rest in the protocol's order, so the order of the keywords below does not matter.
    """
    c, a = args.command, args
    fee_ack = "Y" if getattr(a, "fee_ack", False) else None
    base = {"AO": a.institution, "AC": "", "AD": getattr(a, "pin", None), "BO": fee_ack}
    if c == "status":
        return make("99", status_code="0", max_print_width="080", protocol_version="2.00")
    if c == "patron-status":
        return make("23", base, language="001", AA=a.patron)
    if c == "patron-info":
        summary = ["Y" if a.summary and SUMMARIES[a.summary] == i else " " for i in range(10)]
        return make("63", base, language="001", summary="".join(summary), AA=a.patron, BP=a.start, BQ=a.end)
    if c == "checkout":
        return make("11", base, sc_renewal_policy=True, no_block=a.no_block, AA=a.patron, AB=a.item)
    if c == "checkin":
        return make("09", base, return_date=datetime.datetime.now(), AP=a.current_location or a.location, AB=a.item)
    if c == "renew":
        return make("29", base, AA=a.patron, AB=a.item)
    if c == "renew-all":
        return make("65", base, AA=a.patron)
    if c == "item-info":
        return make("17", base, AB=a.item)
    if c == "item-status":
        return make("19", base, AB=a.item, CH=a.properties)
    if c == "hold":
        return make("15", base, hold_mode=HOLD_MODES[a.mode], BS=a.pickup, AA=a.patron, AB=a.item, AJ=a.title)
    if c == "fee-paid":
        currency = {"currency_type": a.currency} if a.currency else {}
        fixed = {"fee_type": a.fee_type, "payment_type": a.payment_type, **currency}
        return make("37", base, BV=a.amount, AA=a.patron, CG=a.fee_id, **fixed)
    if c == "block":
        return make("01", base, card_retained=a.card_retained, AL=a.message, AA=a.patron)
    if c == "enable":
        return make("25", base, AA=a.patron)
    if c == "end-session":
        return make("35", base, AA=a.patron)
    if c == "send":
        return build_any(a.message, a.fields)
    raise Failure(f"unknown command {c!r}", USAGE)


def build_any(name_or_code: str, assignments: list[str]) -> Message:
    """``send``: a request by code or name, fixed fields by name, variable fields by two-letter id."""
    spec = MESSAGES.get(name_or_code) or BY_NAME.get(name_or_code.replace("-", "_"))
    if spec is None:
        requests = ", ".join(f"{s.code} {s.name}" for s in MESSAGES.values() if s.request)
        raise Failure(f"unknown message {name_or_code!r}; requests: {requests}", USAGE)
    if not spec.request:
        raise Failure(f"{spec.code} {spec.name} is a response (ACS to SC): the server ignores it", USAGE)
    fixed: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    names = [f.name for f in spec.fixed]
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise Failure(f"expected FIELD=VALUE, got {item!r}", USAGE)
        if key in names:
            fixed[key] = value
        elif len(key) == 2 and key.isalnum() and key.isupper():
            pairs.append((key, value))
        else:
            raise Failure(
                f"{key!r} is neither a fixed field of {spec.name} ({', '.join(names) or 'none'}) nor a "
                "two-letter field id",
                USAGE,
            )
    try:
        message = make(spec.code, pairs, **fixed)
        encode(message)  # a fixed value of the wrong width is a usage error here, not a traceback later
    except EncodeError as exc:
        raise Failure(str(exc), USAGE) from exc
    return message


# ---------------------------------------------------------------------------------------------------
# interactive


def interactive(conn: Connection, parser: argparse.ArgumentParser) -> int:
    """Commands one per line on this connection until ``quit`` or end of input (a tty is not needed)."""
    tty = sys.stdin.isatty()
    worst = OK
    while True:
        if tty:
            print("sip> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            print(f"sipclient: {exc}", file=sys.stderr)
            continue
        if not words:
            continue
        if words[0] in ("quit", "exit"):
            break
        if words[0] in ("help", "?"):
            words = [*words[1:2], "--help"]  # "help" lists the commands, "help checkout" explains one
        try:
            args = parser.parse_args(words, namespace=argparse.Namespace(**vars(conn.args)))
        except SystemExit:
            continue  # argparse has printed the help or the error
        if args.command in ("interactive", "check"):
            print(f"sipclient: {args.command} is not available inside interactive", file=sys.stderr)
            continue
        try:
            if getattr(args, "pin", None) == "-":
                args.pin = ask("Patron PIN: ")
            reply = conn.attempt(conn.exchange, build_request(args))
        except Failure as failure:
            print(f"sipclient: {failure}", file=sys.stderr)
            if failure.code == CONNECTION_FAILURE:
                return failure.code
            worst = worst if failure.code == USAGE else max(worst, failure.code)
            continue
        worst = max(worst, show.show(conn.args.json, reply))
    return worst


# ---------------------------------------------------------------------------------------------------
# Command line


def add_commands(parser: argparse.ArgumentParser) -> Any:
    """The commands that send one request; returns the subparsers so that main can add its own."""
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, *args: str, pin: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        for arg in args:
            p.add_argument(arg)
        if pin:
            p.add_argument("--pin", help="the patron's PIN (AD), never printed; '-' prompts for it")
        return p

    command("status", "SC status (99): is the ACS on-line, what does it support")
    command("patron-status", "patron status (23)", "patron", pin=True)
    info = command("patron-info", "patron information (63), with one list of items", "patron", pin=True)
    info.add_argument("--summary", choices=list(SUMMARIES), help="which item list to ask for")
    info.add_argument("--start", type=int, help="first item of the list (BP, from 1)")
    info.add_argument("--end", type=int, help="last item of the list (BQ)")
    out = command("checkout", "check an item out (11)", "patron", "item", pin=True)
    out.add_argument("--fee-ack", action="store_true", help="acknowledge a fee (BO Y)")
    out.add_argument("--no-block", action="store_true", help="an offline transaction the ACS may not refuse")
    back = command("checkin", "check an item in (09)", "item")
    back.add_argument("--location", dest="current_location", help="current location (AP); default: --location")
    command("renew", "renew one item (29)", "patron", "item", pin=True).add_argument("--fee-ack", action="store_true")
    command("renew-all", "renew all of a patron's items (65)", "patron", pin=True).add_argument(
        "--fee-ack", action="store_true"
    )
    command("item-info", "item information (17)", "item")
    command("item-status", "set an item's properties (19)", "item", "properties")
    hold = command("hold", "place, cancel or change a hold (15)", "patron", pin=True)
    what = hold.add_mutually_exclusive_group(required=True)
    what.add_argument("--item", help="a copy's barcode (AB)")
    what.add_argument("--title", help="a title identifier (AJ)")
    hold.add_argument("--mode", choices=list(HOLD_MODES), default="add")
    hold.add_argument("--pickup", help="pickup location (BS)")
    hold.add_argument("--fee-ack", action="store_true")
    fee = command("fee-paid", "pay a fee (37)", "patron", "amount", pin=True)
    fee.add_argument("--fee-id", help="the fee's identifier (CG)")
    fee.add_argument("--fee-type", type=_fee_type, default="01", help="code or name, e.g. 04 or overdue (default 01)")
    fee.add_argument("--payment-type", type=_payment_type, default="00", help="00 cash, 01 visa, 02 credit_card")
    fee.add_argument("--currency", help="ISO 4217 code (default: the institution's)")
    block = command("block", "block a patron's card (01)", "patron")
    block.add_argument("--message", default="", help="why (AL)")
    block.add_argument("--card-retained", action="store_true")
    command("enable", "lift a patron's block (25)", "patron", pin=True)
    command("end-session", "end a patron's session (35)", "patron", pin=True)
    send = command("send", "any request by code or name: fixed fields by name, variable fields by id", "message")
    send.add_argument("fields", nargs="*", metavar="FIELD=VALUE")
    return sub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipclient",
        description="A SIP2 client for troubleshooting.",
        epilog="Exit codes: 0 OK, 1 SIP-level failure, 2 usage, 3 connection failure.",
    )
    g = parser.add_argument_group("connection")
    g.add_argument("-H", "--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    g.add_argument("-p", "--port", type=int, help="port (default 6001 raw, 6023 telnet)")
    g.add_argument("-t", "--transport", choices=["raw", "telnet"], default="raw")
    g.add_argument("--tls", action="store_true", help="TLS; the certificate is verified unless --no-verify")
    g.add_argument("--ca", metavar="FILE", help="CA certificate(s) to verify the server with (default: the system's)")
    g.add_argument("--no-verify", action="store_true", help="with --tls: do not verify the certificate")
    g.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="seconds to wait (default 5)")
    g = parser.add_argument_group("login")
    g.add_argument("-u", "--login", help="SIP login (CN, or the telnet login: answer)")
    g.add_argument("-P", "--password", help=f"'-' or absent: ${PASSWORD_ENV}, else a prompt")
    g.add_argument("--location", default="", help="location code sent with the login (CP); checkin's default AP")
    g.add_argument("--institution", default="", help="institution id (AO); default empty: the login's own")
    g.add_argument("--no-login", action="store_true", help="do not log in first")
    g = parser.add_argument_group("wire and output")
    g.add_argument("--no-checksum", action="store_true", help="no AY/AZ error detection")
    g.add_argument("--encoding", type=_encoding, default="utf-8", help="character set (default utf-8)")
    g.add_argument("--raw", action="store_true", help="also print the bytes sent and received (secrets masked)")
    g.add_argument("--json", action="store_true", help="print replies as JSON")
    sub = add_commands(parser)
    chk = sub.add_parser("check", help="connect, log in, SC status (and a patron): one line saying what is wrong")
    chk.add_argument("--patron", help="also check this patron with a patron status (23)")
    chk.add_argument("--pin", help="and this PIN")
    sub.add_parser("interactive", help="read commands one per line (help, quit) on one connection")
    return parser


def repl_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipclient", description="Commands; help COMMAND explains one, quit ends.")
    add_commands(parser)
    return parser


def ask(prompt: str) -> str:
    """A secret from the terminal, never echoed. Without a terminal getpass would read stdin with
    echo on (and, under ``interactive``, eat the first command), so that is refused instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(prompt)
        except getpass.GetPassWarning:
            raise Failure(f"no terminal to ask on: set {PASSWORD_ENV} or give -P (and --pin)", USAGE) from None


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except (BrokenPipeError, OutputClosed):
        # The reader went away (sipclient ... | head): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.port is None:
        args.port = DEFAULT_PORTS[args.transport]
    try:
        if not args.no_login:
            if not args.login:
                raise Failure("give -u LOGIN (or --no-login)", USAGE)
            if args.password in (None, "-"):
                args.password = os.environ.get(PASSWORD_ENV) or ask(f"SIP password for {args.login}: ")
        if getattr(args, "pin", None) == "-":
            args.pin = ask("Patron PIN: ")
        request = None if args.command in ("check", "interactive") else build_request(args)
    except (EOFError, KeyboardInterrupt):
        print("\nsipclient: no password given", file=sys.stderr)
        return USAGE
    except Failure as failure:
        print(f"sipclient: {failure}", file=sys.stderr)
        return failure.code
    conn = Connection(args)
    try:
        if args.command == "check":
            line = check(conn)
        else:
            conn.attempt(conn.connect)
            if not args.no_login:
                conn.attempt(conn.login)
            if args.command == "interactive":
                return interactive(conn, repl_parser())
            reply = conn.attempt(conn.exchange, request)
    except Failure as failure:
        if args.command == "check":
            print(f"FAIL: {failure}")
        else:
            print(f"sipclient: {failure}", file=sys.stderr)
        return failure.code
    finally:
        conn.close()
    if args.command == "check":
        print(line)
        return OK
    return show.show(args.json, reply)


if __name__ == "__main__":
    sys.exit(main())
