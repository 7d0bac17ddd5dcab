"""The config file's keys, section by section: what each accepts, its default, what it means, and
whether a reload applies it live.

This is the one place a key is declared. :func:`sipserver.config.parse_config` reads a file with
these sections, :func:`sipserver.config.reload_plan` decides from their ``LIVE``/``RESTART``
declarations what a reload may apply, and :mod:`sipserver.config.reference` writes the tables of
``docs/configuration.md`` from them. A key added here without a reload declaration stops the
import (:func:`~sipserver.config.schema.check_reload_declarations`).

Defaults live in the model classes (:mod:`sipserver.config.model`), the kinds of value in
:mod:`sipserver.config.values`; a key's ``doc`` is the reference's one-line description (markdown,
relative to ``docs/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from sipserver.accounts import passwords
from sipserver.config.model import (
    PERMISSION_NAMES,
    AccountConfig,
    AdminConfig,
    BackendConfig,
    Config,
    ConsoleConfig,
    HttpConfig,
    InstitutionConfig,
    ListenerConfig,
    LockoutConfig,
    LoggingConfig,
    PolicyConfig,
    ProxyProtocolConfig,
    ServerConfig,
    UpstreamLogin,
)
from sipserver.config.places import Places, fold
from sipserver.config.profiles import PATRON_FIELDS, ReplyProfile
from sipserver.config.schema import (
    BY_KEY,
    LIVE,
    REQUIRED,
    RESTART,
    At,
    Choice,
    Flag,
    Integer,
    Key,
    ListOf,
    Named,
    Ref,
    Section,
    Text,
    Type,
    check_reload_declarations,
    hint,
)
from sipserver.config.secrets import LOGIN, read_secret
from sipserver.config.values import (
    ENDPOINT,
    ERROR_DETECTION,
    LOG_DESTINATIONS,
    LOG_FORMATS,
    LOG_LEVELS,
    PATH,
    SYSLOG_FACILITIES,
    TERMINATORS,
    TRANSPORTS,
    AddedFields,
    BackendOption,
    Branches,
    Currency,
    Date,
    Delimiter,
    Encoding,
    FieldId,
    Language,
    Network,
    Password,
    Permission,
    Seconds,
    first_of_each,
)

# --------------------------------------------------------------------------------------------------
# Rules that join several keys


def _log_file(values: dict[str, Any], written: Mapping[str, Any], at: At) -> None:
    """``file`` is read with ``destination: file`` only; set with another destination, it is a warning."""
    if values["destination"] == "file":
        if values["file"] is None:
            at.child("file").fail("required when destination is file (the log file's path)")
    elif written.get("file") is not None:
        at.child("file").warn(f"not used, the destination is {values['destination']} (set destination: file)")


class UpstreamLoginType(Type[UpstreamLogin]):
    """An account's ``upstream_login``: the user, secret and location its own upstream connection
    logs in with (the secret read from where it is given; see ``sipserver.config.secrets``)."""

    doc = "mapping"

    def read(self, value: Any, at: At) -> UpstreamLogin:
        given = LOGIN.read(value, at)
        if not given["user"]:
            at.child("user").expected("the upstream login name", given["user"])
        password = read_secret(given, lambda why: at.source.error(at.path, why))
        return UpstreamLogin(user=given["user"], password=password, location=given["location"])


def _account_checks(values: dict[str, Any], written: Mapping[str, Any], at: At) -> None:
    _plain_password(values, written, at)
    if values["password_hash"] == passwords.UPSTREAM:
        if values.get("upstream_login") is not None:
            at.child("upstream_login").fail(
                "a forwarded account (password: upstream) logs in upstream with its own login; leave this out"
            )
        values["upstream_login"] = UpstreamLogin(user=values["login"], forwarded=True)


def _plain_password(values: dict[str, Any], written: Mapping[str, Any], at: At) -> None:
    if passwords.is_plain(values["password_hash"]):
        at.child("password").warn(
            f"login {values['login']!r} has a plain-text password; "
            "replace it with the output of `sipserver hash-password`"
        )


class _Draft:
    """One institution's branches while its accounts complete them. It answers as
    ``Places.of(table)`` would, without building that anew for every account."""

    def __init__(self, places: Places) -> None:
        self.table = {branch: list(locations) for branch, locations in places.branches}
        self.codes = dict(places.codes)

    def branch_of(self, code: str) -> str:
        return self.codes.get(fold(code), "")

    def add_branch(self, branch: str) -> None:
        if branch not in self.table:
            self.table[branch] = []
            self.codes[fold(branch)] = branch

    def add_location(self, branch: str, location: str) -> None:
        """A location not known yet (else it would stand in two branches)."""
        self.table[branch].append(location)
        self.codes[fold(location)] = branch


def _places(values: dict[str, Any], written: Mapping[str, Any], at: At) -> None:
    """Complete each institution's places with its accounts: an account's ``branch`` must be one of
    the declared branches (when there are any, else it declares one), and its ``location`` stands
    in that branch. Accounts get their branch spelt as declared."""
    institutions: dict[str, InstitutionConfig] = values["institutions"]
    accounts: tuple[AccountConfig, ...] = values.get("accounts", ())
    drafts = {inst_id: _Draft(inst.places) for inst_id, inst in institutions.items()}
    result: list[AccountConfig] = []
    for index, account in enumerate(accounts):
        here = at.child("accounts").child(index)
        declared = institutions[account.institution].places
        draft = drafts[account.institution]
        if not account.branch:
            result.append(account)
            continue
        branch = declared.branch_of(account.branch) if declared.declared else ""
        if declared.declared and (not branch or branch.casefold() != account.branch.strip().casefold()):
            here.child("branch").expected(
                f"a branch of institution {account.institution} ({', '.join(declared.names)})",
                account.branch,
                hint(account.branch, declared.names),
            )
        if not branch:  # no branches declared: the account's branch declares one
            branch = next((b for b in draft.table if b.casefold() == account.branch.strip().casefold()), "")
            branch = branch or account.branch.strip()
            draft.add_branch(branch)
        location = account.location.strip()
        if location:
            stands_in = declared.branch_of(location) if declared.declared else ""
            if stands_in and stands_in != branch:
                here.child("location").fail(
                    f"{location!r} stands in branch {stands_in} (institutions.{account.institution}.branches), "
                    f"not in this account's branch {branch}"
                )
            if not stands_in and not draft.branch_of(location):
                draft.add_location(branch, location)
            elif draft.branch_of(location) not in ("", branch):
                here.child("location").fail(
                    f"{location!r} already stands in branch {draft.branch_of(location)} "
                    "(another account's location or branch)"
                )
        result.append(attrs.evolve(account, branch=branch))
    completed = {
        inst_id: attrs.evolve(inst, places=Places.of(drafts[inst_id].table)) for inst_id, inst in institutions.items()
    }
    _warn_about_places(completed, result, at)
    values["institutions"], values["accounts"] = completed, tuple(result)


def _warn_about_places(institutions: Mapping[str, InstitutionConfig], accounts: list[AccountConfig], at: At) -> None:
    """A terminal whose location is no known place would check items in at the wrong branch: say
    so at start-up, where an administrator looks."""
    for index, account in enumerate(accounts):
        location = account.location.strip()
        if not location or account.branch or "checkin" not in account.permissions:
            continue
        places = institutions[account.institution].places
        where = at.child("accounts").child(index).child("location")
        if not places.declared:
            where.warn(
                f"institution {account.institution} lists no branches, so a checkin from "
                f"{location!r} without a known AP is taken to happen at a branch called {location!r} "
                "and sends items of every other branch in transit; list the branches and their "
                f"location codes under institutions.{account.institution}.branches, or give the account a branch"
            )
        elif not places.knows(location):
            where.warn(
                f"{location!r} is not a location code of any branch of institution "
                f"{account.institution}, so a checkin from it without a known AP happens at no branch "
                "(nothing is sent in transit); list it under a branch, or give the account a branch"
            )


def _shared_lockout(values: dict[str, Any], at: At) -> None:
    """``server.lockout.shared`` names a postgresql backend (the server section is read before the
    backends, so the name is checked here)."""
    shared = values["server"].lockout.shared
    if shared is None:
        return
    backend = values["backends"].get(shared)
    if backend is None or backend.type != "postgresql":
        kinds = [name for name, b in values["backends"].items() if b.type == "postgresql"]
        at.child("server").child("lockout").child("shared").fail(
            f"expected the name of a postgresql backend ({', '.join(kinds) or 'there are none'}), got {shared!r}"
        )


def _whole_config(values: dict[str, Any], written: Mapping[str, Any], at: At) -> None:
    _places(values, written, at)
    _shared_lockout(values, at)
    values["path"] = at.source.name
    values["warnings"] = tuple(at.source.warnings)


# --------------------------------------------------------------------------------------------------
# The sections

LOCKOUT = Section(
    LockoutConfig,
    (
        Key(
            "failures",
            Integer(0),
            reload=LIVE,
            doc="Failed logins from one address within `window` that lock it. `0` disables the lockout.",
        ),
        Key("window", Seconds(), reload=LIVE, doc="The sliding window failures are counted in."),
        Key("duration", Seconds(), reload=LIVE, doc="How long a locked address is refused."),
        Key(
            "shared",
            Text(),
            nullable=True,
            reload=RESTART,
            type_doc="backend name",
            default_doc="none (each daemon its own)",
            doc="A `postgresql` backend whose database keeps the failures and locks of every daemon using it, so "
            "that a terminal guessing through a balancer is locked at `failures` over all of them; it costs one "
            "read per login and one write per failed login ([scale-out](scale-out.md#the-lockout-across-daemons)). "
            "The workers of one daemon share its lockout in any case.",
        ),
    ),
)

SERVER = Section(
    ServerConfig,
    (
        Key("name", Text(), reload=LIVE, doc="Shown in logs and on the status page."),
        Key(
            "max_connections",
            Integer(1),
            reload=LIVE,
            doc="Open connections over all listeners together; connections beyond it are refused.",
        ),
        Key(
            "max_frame_bytes",
            Integer(256, 1048576),
            reload=LIVE,
            doc="Longest SIP message accepted; a longer one closes the connection and is never run, even when it "
            "arrives complete in one read (the frames before it are answered).",
        ),
        Key(
            "login_timeout",
            Seconds(),
            reload=LIVE,
            doc="How long a connection may stay without a successful login, counted from the connection: frames "
            "sent before the login (a 99 answered where `status_before_login` allows it, or junk) do not extend it.",
        ),
        Key(
            "idle_timeout",
            Seconds(),
            reload=LIVE,
            doc="Silence after which a logged-in connection is closed. Self-check machines poll every few minutes, "
            "so keep it well above their polling interval.",
        ),
        Key(
            "lockout",
            LOCKOUT,
            reload=BY_KEY,
            doc="Failed-login lockout per client address ([Failed-login lockout](#failed-login-lockout)); the "
            "counts and running locks survive a reload, new limits apply at once.",
        ),
        Key(
            "workers",
            Integer(1),
            reload=RESTART,
            doc="Processes answering on the same listeners; the parent deals new connections out in turn "
            "([performance](performance.md#workers)).",
        ),
        Key(
            "fast_paths",
            Flag(),
            reload=RESTART,
            doc="`false` turns off every speed measure at once (reply batching, `gc.freeze`, sqlite on the "
            "reactor thread, the patron cache, PostgreSQL statement batching), for debugging: terminals get "
            "the same replies, more slowly ([architecture](architecture.md#fast-paths)).",
        ),
    ),
)

LOGGING = Section(
    LoggingConfig,
    (
        Key("level", Choice(LOG_LEVELS), reload=LIVE, doc="Least severe level written."),
        Key("format", Choice(LOG_FORMATS), reload=RESTART, doc="One line per event; `json` for log shippers."),
        Key(
            "destination",
            Choice(LOG_DESTINATIONS),
            reload=RESTART,
            doc="Under systemd, stdout goes to the journal. `file` appends to `file`, reopened on SIGHUP or SIGUSR1 "
            "(logrotate).",
        ),
        Key(
            "file",
            PATH,
            nullable=True,
            when=lambda values: values["destination"] == "file",
            reload=RESTART,
            default_doc="none",
            doc="The log file; required with `destination: file`, relative to the config file's folder. Set with "
            "another destination, it is ignored with a warning.",
        ),
        Key(
            "syslog_facility",
            Choice(SYSLOG_FACILITIES),
            reload=RESTART,
            type_doc="`kern`, `user`, `mail`, `daemon`, `auth`, `syslog`, `lpr`, `news`, `uucp`, `cron`, `authpriv`, "
            "`ftp`, `local0`..`local7`",
            doc="Used when `destination` is `syslog`.",
        ),
        Key(
            "syslog_socket",
            PATH,
            reload=RESTART,
            doc="The local syslog socket. While it cannot be reached the lines go to stderr.",
        ),
    ),
    check=_log_file,
)

HTTP = Section(
    HttpConfig,
    (
        Key(
            "endpoint",
            ENDPOINT,
            default=REQUIRED,
            doc="Where the status and metrics pages listen, e.g. `tcp:6080:interface=127.0.0.1`.",
        ),
        Key(
            "max_connections",
            Integer(1),
            doc="The status page's own budget, apart from the SIP terminals' (`server.max_connections`): past it a "
            "new connection is closed at once (counted in `sip_http_connections_refused_total`), so a flood on "
            "this port never costs a terminal its login.",
        ),
        Key(
            "timeout",
            Seconds(),
            doc="A status connection idle, or with its request unfinished, this long is closed.",
        ),
    ),
)

PROXY_PROTOCOL = Section(
    ProxyProtocolConfig,
    (
        Key(
            "trusted",
            ListOf(Network(), scalar=True, non_empty=True, what="a non-empty list of networks", doc="list of networks"),
            default=REQUIRED,
            example="trusted: [127.0.0.1/32]",
            doc="The balancers' addresses or networks: only a connection from one of them may send the PROXY "
            "header (v1 or v2), and its terminal's address is then the one `allow_from`, the lockout, the logs, "
            "the metrics and the audit trail see ([scale-out](scale-out.md)).",
        ),
        Key(
            "required",
            Flag(),
            doc="`true`: every connection must come from a trusted balancer and start with the header; any other "
            "is closed with a `connection refused` line. `false`: terminals may also connect directly (a header "
            "from them is refused), and a trusted balancer may leave the header out.",
        ),
    ),
    null=False,
    doc="mapping",
)


def _hashed_admin_password(values: dict[str, Any], written: Mapping[str, Any], at: At) -> None:
    if passwords.is_plain(values["password_hash"]):
        at.child("password").fail(
            "a console administrator needs a hash from `sipserver hash-password`, not a plain: password"
        )


ADMIN = Section(
    AdminConfig,
    (
        Key("login", Text(safe=True), default=REQUIRED, type_doc="string, unique", doc="The name typed at the "
            "browser's login prompt."),
        Key(
            "password",
            Password(),
            attr="password_hash",
            default=REQUIRED,
            secret=True,
            doc="A hash from `sipserver hash-password` (a `plain:` password is refused here).",
        ),
    ),
    check=_hashed_admin_password,
)

CONSOLE = Section(
    ConsoleConfig,
    (
        Key(
            "admins",
            ListOf(
                ADMIN,
                unique=("login", "duplicate console login {value!r} (already used by {where})"),
                doc="list of administrators",
            ),
            default_doc="`[]` (no console)",
            doc="Who may open the console ([console.md](console.md)); without any, the console is off. Each "
            "entry has a `login` and a `password` hash.",
        ),
        Key(
            "refusals",
            Integer(10, 100_000),
            doc="How many of the last refused logins and connections the console keeps (per process).",
        ),
    ),
)

LISTENER = Section(
    ListenerConfig,
    (
        Key("name", Text(safe=True), default=REQUIRED, type_doc="string, unique", doc="Used in logs and metrics."),
        Key(
            "transport",
            Choice(TRANSPORTS),
            default=REQUIRED,
            doc="`raw`: SIP2 messages directly (self-check, sorters, services). `telnet`: `login:` and `password:` "
            "prompts first, then the line `Login OK. Send SIP2 messages, one per line.` after a good password, "
            "then SIP2 (legacy terminals, and people testing by hand).",
        ),
        Key(
            "endpoint",
            ENDPOINT,
            default=REQUIRED,
            doc="A [Twisted server endpoint string](https://docs.twisted.org/en/stable/core/howto/endpoints.html).",
        ),
        Key("status_before_login", Flag(), doc="Answer 99 (SC status) before a 93 login, as many devices expect."),
        Key(
            "max_connections",
            Integer(1),
            nullable=True,
            doc="This listener's own cap; without it only `server.max_connections` applies.",
        ),
        Key(
            "institution",
            Ref("institutions", "an institution id defined under institutions", doc="institution id"),
            nullable=True,
            default_doc="the first institution",
            doc="The institution reported on this listener before login.",
        ),
        Key(
            "terminator",
            Choice(TERMINATORS),
            nullable=True,
            default_doc="none (each account's)",
            doc="What ends every reply on this listener, whatever the account's `terminator` says. `CRLF` on a "
            "telnet listener that people test by hand shows each reply on its own line ([Testing by "
            "telnet](troubleshooting.md#4-testing-by-telnet)); SIP2 devices expect a bare CR, the default.",
        ),
        Key(
            "proxy_protocol",
            PROXY_PROTOCOL,
            nullable=True,
            default_doc="none (no header is read)",
            doc="Behind HAProxy or a cloud balancer: read the PROXY protocol header before anything else (before "
            "TLS and telnet too), from the `trusted` addresses only ([PROXY protocol](#proxy-protocol)).",
        ),
    ),
)

POLICY = Section(
    PolicyConfig,
    (
        Key("checkin", Flag(), doc="Terminals may check items in."),
        Key("checkout", Flag(), doc="Terminals may check items out."),
        Key("renewal", Flag(), doc="Terminals may renew."),
        Key(
            "status_update",
            Flag(),
            doc="Terminals may update patron status: block patron (01) and patron enable (25) are refused when "
            "false, and 98 reports it.",
        ),
        Key("offline", Flag(), doc="Terminals may work offline."),
        Key(
            "timeout",
            Seconds(high=99.9),
            doc="Time limit for each backend call; reported in 98 in tenths of a second.",
        ),
        Key("retries", Integer(0, 999), doc="Retries a terminal may make; reported in 98."),
    ),
)

INSTITUTION = Section(
    InstitutionConfig,
    (
        Key(
            "backend",
            Text().then(Ref("backends", "the name of a backend under backends", doc="backend name")),
            default=REQUIRED,
            doc="A key under `backends`.",
        ),
        Key("library_name", Text(safe=True), default_doc="the id", doc="Reported in 98 (AM)."),
        Key("currency", Currency(), doc="ISO 4217 code used in fee messages."),
        Key(
            "language",
            Language(),
            default_doc='`"000"`',
            doc='SIP language code (`"001"` English); an integer like `1` is accepted as `"001"`.',
        ),
        Key("policy", POLICY, doc="What terminals may do; reported in 98 and enforced."),
        Key(
            "branches",
            Branches(),
            attr="places",
            nullable=True,
            default_doc="none",
            doc="The institution's branches and the location codes that stand in each; see [Branches and "
            "locations](#branches-and-locations).",
        ),
    ),
    name_attr="id",
)

PROFILE = Section(
    ReplyProfile,
    (
        Key(
            "patron_fields",
            ListOf(Choice(tuple(PATRON_FIELDS), fold=False), scalar=True, into=first_of_each, doc="list of ids"),
            default_doc="`[]`",
            doc="Patron fields to send in the patron replies, 24 and 64, from what the backend knows (a field with "
            "no value is left out), after the standard fields and before the screen messages.",
        ),
        Key(
            "hide",
            ListOf(FieldId(), scalar=True, into=frozenset, doc="list of field ids"),
            default_doc="`[]`",
            doc="Fields never sent to the account, in any reply. A field SIP2 requires (AE in 24 and 64, for "
            "example) goes out empty, so the reply stays valid.",
        ),
        Key(
            "add",
            AddedFields(),
            nullable=True,
            default_doc="`{}`",
            doc="Fixed fields added to 24 and 64; one the server would send anyway is replaced.",
        ),
    ),
    name_attr="name",
)

ACCOUNT = Section(
    AccountConfig,
    (
        Key(
            "login",
            Text(safe=True),
            default=REQUIRED,
            type_doc="string, unique",
            doc="The 93 login user id (CN), or the telnet `login:` answer.",
        ),
        Key(
            "password",
            Password(),
            attr="password_hash",
            default=REQUIRED,
            secret=True,
            doc="A hash from `sipserver hash-password`, or `plain:<password>` (see below), or `upstream`: "
            "judged by the upstream SIP2 server of a `sip2` backend ([docs/upstream.md](upstream.md)).",
        ),
        Key(
            "institution",
            Ref("institutions", "an institution id defined under institutions", doc="institution id"),
            default=REQUIRED,
            doc="A key under `institutions`.",
        ),
        Key("location", Text(empty=True, safe=True), doc="Location code (CP) of the terminal."),
        Key(
            "branch",
            Text(empty=True, safe=True),
            type_doc="branch code",
            default_doc="the branch of `location`",
            doc="The branch the terminal stands in (`MAIN`, not `MAIN-DESK1`): a checkin whose AP names no known "
            "place happens there, and a hold without a pickup location (for a patron without a home library) is "
            "picked up there. It must be one of the institution's `branches` when it has any; its `location` then "
            "stands in it ([Branches and locations](#branches-and-locations)).",
        ),
        Key(
            "allow_from",
            ListOf(
                Network(),
                scalar=True,
                null="expected a list of networks, got null (omit the key or write [] to allow any address)",
                doc="list of networks",
            ),
            default_doc="`[]` (any address)",
            doc='IPv4 or IPv6 networks the login may connect from, e.g. `10.1.0.0/16`, `"2001:db8::/32"`, '
            "`192.0.2.7` (a single address). A single string is read as a list of one. Host bits are ignored "
            "(`10.1.2.3/16` is `10.1.0.0/16`).",
        ),
        Key(
            "permissions",
            ListOf(
                Permission(),
                scalar=True,
                into=frozenset,
                null="expected a list of permissions, got null (omit the key to grant all)",
                doc="list",
            ),
            default_doc="all",
            doc="Any of " + ", ".join(f"`{name}`" for name in PERMISSION_NAMES) + ". An unknown name is an "
            "error listing the valid ones. `[]` grants nothing beyond login and status.",
        ),
        Key(
            "encoding",
            Encoding(),
            doc="Character set on the wire. Python's aliases (`UTF8`, `iso-8859-1`) are accepted.",
        ),
        Key(
            "error_detection",
            Choice(ERROR_DETECTION),
            doc="AY/AZ sequence numbers and checksums: `auto` mirrors what the client sends.",
        ),
        Key(
            "terminator",
            Choice(TERMINATORS),
            default_doc="`CR`",
            doc="What ends each response (a listener's own `terminator` wins).",
        ),
        Key(
            "delimiter",
            Delimiter(),
            default_doc='`"\\|"`',
            doc="Field delimiter: one printable ASCII character that is not a letter, digit or space. The "
            "device's 93 may already use it (`9300CNsco^COsecret^`): before login the server reads a 93 with any "
            "delimiter an account has.",
        ),
        Key(
            "expires",
            Date(),
            nullable=True,
            default_doc="none",
            doc='Logins are refused after this day (the day itself still works). `2030-12-31` or `"2030-12-31"`.',
        ),
        Key("enabled", Flag(), doc="`false` refuses the login but keeps the account in the file."),
        Key(
            "checkin_not_on_loan_ok",
            Flag(),
            doc="The `ok` of a checkin (10) of an item that was not on loan; see [Checkin of an item not on "
            "loan](#checkin-of-an-item-not-on-loan).",
        ),
        Key(
            "profile",
            Ref("profiles", "the name of a profile defined under profiles", resolve=True, doc="profile name"),
            nullable=True,
            default_doc="none",
            doc="A name under `profiles`: the extension fields this account receives and the fields it never "
            "receives ([Reply profiles](#reply-profiles)).",
        ),
        Key(
            "upstream_login",
            UpstreamLoginType(),
            nullable=True,
            default_doc="none",
            doc="Under a `sip2` backend: this terminal's own upstream connection, logged in as "
            "`{user, password_file (or password_env, password), location}` instead of through the shared "
            "pool ([docs/upstream.md](upstream.md)). `password: upstream` instead forwards the terminal's "
            "own login and password.",
        ),
    ),
    check=_account_checks,
)

BACKEND = Section(
    BackendConfig,
    (Key("type", Text(), default=REQUIRED, example="type: sqlite", doc="The backend's implementation."),),
    rest=BackendOption(),
    rest_attr="options",
    name_attr="name",
    null=False,
    what="a mapping of backend options with a type",
)

CONFIG = Section(
    Config,
    (
        Key("server", SERVER, reload=BY_KEY, doc="The daemon as a whole."),
        Key("logging", LOGGING, reload=BY_KEY, doc="Where and how log lines are written."),
        Key(
            "http",
            HTTP,
            nullable=True,
            reload=RESTART,
            doc="The status and metrics pages; absent: no HTTP listener.",
        ),
        Key(
            "console",
            CONSOLE,
            nullable=True,
            reload=RESTART,
            doc="The operator's console on the HTTP listener ([console.md](console.md)); absent: no console.",
        ),
        Key(
            "listeners",
            ListOf(
                LISTENER,
                non_empty=True,
                what="a non-empty list of listeners",
                unique=("name", "duplicate listener name {value!r} (already used by {where})"),
            ),
            default=REQUIRED,
            reload=RESTART,
            doc="The ports the server answers on.",
        ),
        Key(
            "institutions",
            Named(INSTITUTION, "institution ids", publish="institutions"),
            default=REQUIRED,
            reload=LIVE,
            doc="Institution id (the SIP AO field) to its settings.",
        ),
        Key(
            "profiles",
            Named(PROFILE, "profile names", publish="profiles", optional=True),
            reload=LIVE,
            doc="What a kind of terminal or vendor receives, by name.",
        ),
        Key(
            "accounts",
            ListOf(
                ACCOUNT,
                unique=(
                    "login",
                    "duplicate login {value!r} (already used by {where}); use one login per device or service",
                ),
            ),
            reload=LIVE,
            doc="The SIP logins.",
        ),
        Key(
            "backends",
            Named(BACKEND, "backend names", publish="backends"),
            default=REQUIRED,
            reload=RESTART,
            doc="Backend name to its options.",
        ),
    ),
    # Backends before the institutions that name them; institutions and profiles before the
    # listeners and accounts that name them.
    order=("server", "logging", "http", "console", "backends", "institutions", "listeners", "profiles", "accounts"),
    check=_whole_config,
)

check_reload_declarations(CONFIG)
