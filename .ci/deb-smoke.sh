#!/usr/bin/env bash
# deb-smoke: build the Debian package, lint it, install it, and run the packaged daemon.
#
#   bash .ci/deb-smoke.sh [--worktree] [--purge]        full smoke test (root, Debian bookworm)
#   bash .ci/deb-smoke.sh --build-only [--outdir DIR]   only build (and lint) the .deb: `make deb`
#
# The full test installs the build dependencies, builds from a copy of the committed tree
# (`git archive HEAD`; --worktree copies the working tree instead: tracked and untracked files,
# without ignored ones), runs lintian, installs the .deb with apt, checks the installed layout, then
# starts /usr/bin/twistd3 sip as the sipserver user on free loopback ports with a config derived
# from /etc/sipserver/sip.yaml, logs in with the packaged client, sends SC status (and a patron
# status when the demo data is there), reloads with SIGHUP and stops it with SIGTERM. --purge then
# removes and purges the package and checks what purge leaves. Only 127.0.0.1 is used. Every step is
# time-bounded; the last line is `deb-smoke: OK` or the reason for the failure, and the exit status
# is non-zero on any failure. Safe to run again on a system where the package is installed.
set -euo pipefail

usage() { sed -n '2,16s/^# \{0,1\}//p' "$0"; }

SOURCE="head"
BUILD_ONLY=0
OUTDIR=""
PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --worktree) SOURCE=worktree ;;
        --head) SOURCE="head" ;;
        --build-only) BUILD_ONLY=1 ;;
        --outdir) OUTDIR=${2:?--outdir needs a directory}; shift ;;
        --outdir=*) OUTDIR=${1#*=} ;;
        --purge) PURGE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "deb-smoke: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# Debian's own tools only: a pyenv shim or a venv on PATH breaks pybuild and the Twisted trigger.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE VIRTUAL_ENV PYENV_VERSION CONDA_PREFIX || true
export LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
LINTIAN_FAIL_ON=${LINTIAN_FAIL_ON:-error,warning}

REPO=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN_CACHE=/usr/lib/python3/dist-packages/twisted/plugins/dropin.cache
SVC_USER=sipserver
WORK=""
RUN=""
DAEMON_PID=""      # the `timeout` wrapper we started; twistd is its only child
INSTALLED_BY_US=0

ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
START_MS=$(ms)
STEP_MS=$START_MS
STEP_NAME=""
TIMINGS=()
secs() { printf '%d.%01d' $(($1 / 1000)) $((($1 % 1000) / 100)); }
step() {
    local now; now=$(ms)
    if [ -n "$STEP_NAME" ]; then TIMINGS+=("${STEP_NAME%% (*} $(secs $((now - STEP_MS)))s"); fi
    STEP_NAME=$1
    STEP_MS=$now
    echo "deb-smoke: [$(secs $((now - START_MS)))s] $1"
}
note() { echo "deb-smoke:   $*"; }
fail() { echo "deb-smoke: FAIL: $*" >&2; exit 1; }

as_service() { setpriv --reuid="$SVC_USER" --regid="$SVC_USER" --init-groups "$@"; }

DAEMON_RC=""
DAEMON_CONFIG=""   # the config file of the daemon we started: it names its twistd process
twistd_pid() { pgrep -u "$SVC_USER" -f -- "twistd3 .*--config=$DAEMON_CONFIG\$" | head -n 1; }
stop_daemon() {   # stop_daemon SIGNAL: signal our twistd, wait up to 15 s, KILL if needed; sets DAEMON_RC
    local pid=$DAEMON_PID rc=0 _ twistd
    DAEMON_RC=""
    [ -n "$pid" ] || return 0
    # Signal twistd itself, once, as systemd does: timeout(1) would pass a TERM on to its whole
    # process group as well, and Twisted 22.4 logs a ReactorNotRunning traceback for a second TERM.
    twistd=$(twistd_pid || true)
    kill -"$1" "${twistd:-$pid}" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        pkill -KILL -P "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    DAEMON_PID=""
    DAEMON_RC=$rc
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$DAEMON_PID" ]; then stop_daemon TERM; fi
    if [ "$rc" -ne 0 ] && [ -n "$RUN" ] && [ -s "$RUN/daemon.log" ]; then
        echo "deb-smoke: --- last lines of the daemon log ---" >&2
        tail -n 40 "$RUN/daemon.log" >&2
    fi
    if [ "$rc" -ne 0 ] && [ "$PURGE" = 1 ] && [ "$INSTALLED_BY_US" = 1 ]; then
        timeout 300 apt-get purge -y -qq sipserver >/dev/null 2>&1
    fi
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    if [ "$rc" -ne 0 ]; then
        echo "deb-smoke: FAILED (exit $rc) during: ${STEP_NAME:-start-up}" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$BUILD_ONLY" = 0 ] && [ "$(id -u)" != 0 ]; then
    fail "the smoke test installs packages: run it as root (or use --build-only)"
fi
[ -r /etc/debian_version ] || fail "not a Debian system"

WORK=$(mktemp -d /tmp/deb-smoke.XXXXXX)
chmod 0755 "$WORK"

# ---------------------------------------------------------------------------------------------------
if [ "$BUILD_ONLY" = 0 ]; then
    step "apt-get update"
    timeout 300 apt-get update -qq || fail "apt-get update failed"
    if ! command -v git >/dev/null; then
        timeout 600 apt-get install -y -qq git >/dev/null || fail "cannot install git"
    fi
fi

step "copy the $SOURCE tree"
git_() { git -c safe.directory="$REPO" -C "$REPO" "$@"; }
SRC=$WORK/src
mkdir -p "$SRC"
if [ "$SOURCE" = head ]; then
    git_ cat-file -e HEAD:debian/control 2>/dev/null \
        || fail "HEAD has no debian/control: commit debian/ first, or use --worktree"
    git_ archive --format=tar HEAD | tar -xf - -C "$SRC"
    note "$(git_ rev-parse --short HEAD) ($(git_ log -1 --format=%s HEAD | cut -c1-60))"
else
    git_ ls-files -z --cached --others --exclude-standard \
        | (cd "$REPO" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
        | tar -C "$REPO" --null -T - -cf - | tar -xf - -C "$SRC"
fi
[ -f "$SRC/debian/changelog" ] || fail "no debian/changelog in the copied tree"
VERSION=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$SRC/debian/changelog")
[ -n "$VERSION" ] || fail "cannot read the version from debian/changelog"
BUILD=$WORK/sipserver-$VERSION
mv "$SRC" "$BUILD"
note "version $VERSION, $(find "$BUILD" -type f | wc -l) files"

if [ "$BUILD_ONLY" = 0 ]; then
    step "install build dependencies"
    timeout 900 apt-get build-dep -y -qq "$BUILD" >"$WORK/apt.log" 2>&1 \
        || { tail -n 30 "$WORK/apt.log" >&2; fail "apt-get build-dep failed"; }
    timeout 900 apt-get install -y -qq --no-install-recommends lintian util-linux procps \
        >>"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; fail "cannot install lintian/util-linux/procps"; }
else
    (cd "$BUILD" && dpkg-checkbuilddeps) \
        || fail "missing build dependencies: as root, run  apt-get build-dep ./  in the repository"
fi

# ---------------------------------------------------------------------------------------------------
step "dpkg-buildpackage -us -uc -b (runs the unit-test subset on Debian's Twisted)"
if ! (cd "$BUILD" && env -i HOME="${HOME:-/root}" PATH="$PATH" LANG=C.UTF-8 \
        ${DEB_BUILD_OPTIONS:+DEB_BUILD_OPTIONS="$DEB_BUILD_OPTIONS"} \
        timeout 1200 dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1; then
    tail -n 60 "$WORK/build.log" >&2
    fail "dpkg-buildpackage failed (last 60 lines above)"
fi
TESTS_LINE=$(grep -E '^[0-9]+ passed' "$WORK/build.log" | tail -n 1 || true)
note "unit tests during the build: ${TESTS_LINE:-not run (nocheck?)}"
DEB=$WORK/sipserver_${VERSION}_all.deb
[ -f "$DEB" ] || fail "dpkg-buildpackage made no $DEB"
CHANGES=$(ls "$WORK"/sipserver_"${VERSION}"_*.changes)

step "lintian (fails on: $LINTIAN_FAIL_ON)"
if command -v lintian >/dev/null; then
    LINT_RC=0
    timeout 300 lintian --info --fail-on "$LINTIAN_FAIL_ON" "$CHANGES" >"$WORK/lintian.log" 2>&1 || LINT_RC=$?
    grep -v 'running with root privileges' "$WORK/lintian.log" | sed 's/^/deb-smoke:   lintian: /' || true
    [ "$LINT_RC" = 0 ] || fail "lintian found problems (exit $LINT_RC)"
    grep -qv 'running with root privileges' "$WORK/lintian.log" || note "lintian: clean"
else
    note "lintian is not installed: skipped"
fi

if [ "$BUILD_ONLY" = 1 ]; then
    OUTDIR=${OUTDIR:-$REPO/dist}
    mkdir -p "$OUTDIR"
    cp "$DEB" "$OUTDIR/"
    step "done"
    echo "deb-smoke: built $OUTDIR/$(basename "$DEB")"
    exit 0
fi

# ---------------------------------------------------------------------------------------------------
step "apt-get install ./$(basename "$DEB")"
(cd "$WORK" && timeout 600 apt-get install -y -qq --reinstall \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "./$(basename "$DEB")") >"$WORK/install.log" 2>&1 \
    || { tail -n 30 "$WORK/install.log" >&2; fail "apt-get install of the .deb failed"; }
INSTALLED_BY_US=1
grep -q 'Processing triggers for python3-twisted' "$WORK/install.log" \
    || fail "the twisted-plugins-cache trigger did not run"
note "installed $(dpkg-query -W -f='${Package} ${Version} (${db:Status-Abbrev})' sipserver)"

step "check the installed layout"
getent passwd "$SVC_USER" >/dev/null || fail "no system user $SVC_USER"
check_stat() {   # check_stat PATH "MODE OWNER:GROUP"
    local got; got=$(stat -c '%a %U:%G' "$1" 2>/dev/null) || fail "$1 is missing"
    [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
    note "$1: $got"
}
check_stat /etc/sipserver/sip.yaml "640 root:sipserver"
check_stat /var/lib/sipserver "750 sipserver:sipserver"
grep -Eq '^[[:space:]]+path:[[:space:]]+/var/lib/sipserver/sipserver\.sqlite3' /etc/sipserver/sip.yaml \
    || fail "/etc/sipserver/sip.yaml does not keep its database in /var/lib/sipserver"
if [ -f /etc/sipserver/demo-data.yaml ]; then DEMO=1; note "demo data: /etc/sipserver/demo-data.yaml"; else
    DEMO=0; note "no /etc/sipserver/demo-data.yaml: the patron status check is skipped"; fi
for f in /usr/bin/sipserver /usr/bin/sipclient /lib/systemd/system/sipserver.service \
    /lib/systemd/system/sipserver.socket /usr/lib/python3/dist-packages/twisted/plugins/sipserver_plugin.py \
    /usr/share/doc/sipserver/install.md; do  # the last: the unit's Documentation= and the man page
    [ -e "$f" ] || fail "$f is missing"
done
grep -aq sipserver_plugin "$PLUGIN_CACHE" || fail "$PLUGIN_CACHE does not list sipserver_plugin"
/usr/bin/sipserver --help >/dev/null || fail "/usr/bin/sipserver --help failed"
HAS_SIPCLIENT=0
if /usr/bin/python3 -I -c 'import sipserver.client.cli' 2>/dev/null; then
    /usr/bin/sipclient --help >/dev/null || fail "/usr/bin/sipclient --help failed"
    HAS_SIPCLIENT=1
else
    note "WARNING: sipserver.client.cli does not exist yet: /usr/bin/sipclient cannot run"
fi
TWISTD_HELP=$(/usr/bin/twistd3 --help) || fail "twistd3 --help failed"
grep -Eq '^ +sip +' <<<"$TWISTD_HELP" || fail "twistd3 --help does not list the sip plugin"
SIP_HELP=$(/usr/bin/twistd3 sip --help) || fail "twistd3 sip --help failed"
for opt in --config --check; do
    grep -q -- "$opt" <<<"$SIP_HELP" || fail "twistd3 sip --help does not list $opt"
done
note "twistd3 --help lists sip; twistd3 sip --help lists --config and --check"
CHECK_OUT=$(cd / && as_service /usr/bin/twistd3 sip --config=/etc/sipserver/sip.yaml --check 2>&1) \
    || fail "the shipped config does not pass --check as $SVC_USER: $CHECK_OUT"
note "as $SVC_USER: $(tail -n 1 <<<"$CHECK_OUT")"
if command -v systemd-analyze >/dev/null; then
    UNIT_OUT=$(systemd-analyze verify /lib/systemd/system/sipserver.service \
        /lib/systemd/system/sipserver.socket 2>&1) || fail "systemd-analyze verify: $UNIT_OUT"
    [ -z "$UNIT_OUT" ] || note "systemd-analyze verify: $UNIT_OUT"
    note "systemd-analyze verify: units OK"
fi
if [ -d /run/systemd/system ]; then   # a real systemd: the package has started the service
    for _ in $(seq 30); do systemctl is-active -q sipserver && break; sleep 1; done
    systemctl is-active -q sipserver \
        || { journalctl -u sipserver -n 30 --no-pager >&2 || true; fail "sipserver.service is not active"; }
    systemctl reload sipserver || fail "systemctl reload sipserver failed"
    sleep 1
    systemctl is-active -q sipserver || fail "sipserver.service died on reload"
    note "sipserver.service is active and survived a reload"
    systemctl is-enabled -q sipserver.socket 2>/dev/null && fail "sipserver.socket is enabled by default"
else
    note "no systemd running here: the unit was verified, not started"
fi

# ---------------------------------------------------------------------------------------------------
step "start twistd3 sip as $SVC_USER on free loopback ports"
RUN=$WORK/run
install -d -o "$SVC_USER" -g "$SVC_USER" -m 0750 "$RUN"
read -r RAW_PORT TELNET_PORT HTTP_PORT < <(/usr/bin/python3 -I -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()')
[ -n "$HTTP_PORT" ] || fail "cannot pick free loopback ports"
CONFIG=$RUN/sip.yaml
CONFIG_INFO=$(/usr/bin/python3 -I - /etc/sipserver/sip.yaml "$CONFIG" "$RUN" \
    "$RAW_PORT" "$TELNET_PORT" "$HTTP_PORT" <<'PY'
"""Derive a test config: same accounts and institutions, listeners on free loopback ports."""
import os
import sys

import yaml

src, dst, rundir, raw, telnet, http = sys.argv[1:7]
with open(src) as f:
    cfg = yaml.safe_load(f)
base = os.path.dirname(src)
listeners, seen = [], {}
for listener in cfg.get("listeners") or []:
    kind = listener.get("transport", "raw")
    if kind in seen or kind not in ("raw", "telnet"):
        continue  # one raw and one telnet listener; TLS ones need certificates
    port = raw if kind == "raw" else telnet
    seen[kind] = port
    listeners.append(dict(listener, endpoint=f"tcp:{port}:interface=127.0.0.1"))
if "raw" not in seen:
    sys.exit("the shipped config has no raw listener")
cfg["listeners"] = listeners
if cfg.get("http"):
    cfg["http"]["endpoint"] = f"tcp:{http}:interface=127.0.0.1"
for name, backend in (cfg.get("backends") or {}).items():
    if backend.get("type") == "sqlite":
        backend["path"] = os.path.join(rundir, f"{name}.sqlite3")
        if backend.get("seed") and not os.path.isabs(backend["seed"]):
            backend["seed"] = os.path.join(base, backend["seed"])
cfg.setdefault("logging", {})["destination"] = "stdout"
with open(dst, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
print("telnet" if "telnet" in seen else "-", "http" if cfg.get("http") else "-")
PY
) || fail "cannot derive a test config from /etc/sipserver/sip.yaml"
read -r HAS_TELNET HAS_HTTP <<<"$CONFIG_INFO"
chown root:"$SVC_USER" "$CONFIG"
chmod 0640 "$CONFIG"
note "raw 127.0.0.1:$RAW_PORT; telnet $([ "$HAS_TELNET" = - ] && echo none || echo "127.0.0.1:$TELNET_PORT");" \
    "http $([ "$HAS_HTTP" = - ] && echo none || echo "127.0.0.1:$HTTP_PORT"); database and log in $RUN"

(cd "$RUN" && exec timeout 120 setpriv --reuid="$SVC_USER" --regid="$SVC_USER" --init-groups \
    env -i PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$RUN" \
    /usr/bin/twistd3 --nodaemon --pidfile= --logfile=- sip --config="$CONFIG") >"$RUN/daemon.log" 2>&1 &
DAEMON_PID=$!
DAEMON_CONFIG=$CONFIG
wait_port() {   # wait_port PORT: up to 30 s, failing at once if the daemon exits
    local _
    for _ in $(seq 150); do
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon exited before listening on $1"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    fail "nothing listens on 127.0.0.1:$1 after 30 s"
}
wait_port "$RAW_PORT"
[ "$HAS_TELNET" = - ] || wait_port "$TELNET_PORT"
[ "$HAS_HTTP" = - ] || wait_port "$HTTP_PORT"
TWISTD_PID=$(twistd_pid || true)
[ -n "$TWISTD_PID" ] || fail "cannot find the twistd process"
TWISTD_USER=$(ps -o user= -p "$TWISTD_PID" | tr -d ' ')
[ "$TWISTD_USER" = "$SVC_USER" ] || fail "twistd runs as $TWISTD_USER, not $SVC_USER"
note "twistd pid $TWISTD_PID runs as $TWISTD_USER: $(tr '\0' ' ' <"/proc/$TWISTD_PID/cmdline" | cut -c1-100)"

step "SIP2 over the packaged client"
sip_checks() {
    (cd "$RUN" && timeout 60 /usr/bin/python3 -I - "$RAW_PORT" "$TELNET_PORT" "$HTTP_PORT" \
        "$HAS_TELNET" "$HAS_HTTP" "$DEMO" "$@") <<'PY'
import json
import sys
import urllib.request

import sipserver
from sipserver.client import SIPClient

raw, telnet, http = (int(p) for p in sys.argv[1:4])
has_telnet, has_http, demo = sys.argv[4] != "-", sys.argv[5] != "-", sys.argv[6] == "1"
quick = "--quick" in sys.argv[7:]


def check(ok, what):
    if not ok:
        sys.exit(f"deb-smoke: FAIL: {what}")


def show(text):
    print(f"deb-smoke:   {text}")


check(sipserver.__file__.startswith("/usr/lib/python3/dist-packages/"), f"sipserver from {sipserver.__file__}")


def online(client, where):
    reply = client.sc_status()
    check(reply.code == "98", f"{where}: SC status answered {reply.code}, not 98")
    check(reply.fixed.get("online_status") == "Y", f"{where}: 98 says on-line {reply.fixed.get('online_status')!r}")
    return reply


with SIPClient("127.0.0.1", raw, timeout=10) as client:
    check(client.login("sip_sco_main", "scpass"), "raw: login sip_sco_main/scpass refused")
    reply = online(client, "raw")
    show(f"raw: 93 login OK; 98 on-line Y, AO={reply.fields.get('AO')} AM={reply.fields.get('AM')}")
    if demo and not quick:
        reply = client.patron_status("21000000000001", "1234", institution="MAIN")
        check(reply.code == "24", f"patron status answered {reply.code}, not 24")
        check(reply.fields.get("BL") == ["Y"], f"demo patron not valid: BL={reply.fields.get('BL')}")
        check(reply.fields.get("CQ") == ["Y"], f"demo patron PIN not accepted: CQ={reply.fields.get('CQ')}")
        show(f"raw: 24 for 21000000000001: AE={reply.fields.get('AE')} BL=Y CQ=Y")
if quick:
    sys.exit(0)
with SIPClient("127.0.0.1", raw, timeout=10) as client:
    check(not client.login("sip_sco_main", "wrong password"), "raw: a wrong password was accepted")
    show("raw: a wrong password is refused")
if has_telnet:
    with SIPClient("127.0.0.1", telnet, transport="telnet", timeout=10) as client:
        check(client.telnet_login("sip_telnet_main", "telnetpass"), "telnet: login sip_telnet_main refused")
        online(client, "telnet")
        show("telnet: login prompts OK; 98 on-line Y")
if has_http:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=10) as response:
        body = json.load(response)
        check(response.status == 200 and body.get("status") == "ok", f"/health: {response.status} {body}")
        show(f"http: /health 200 {body.get('status')}")
PY
}
sip_checks || fail "SIP2 checks against the packaged daemon failed"
if [ "$HAS_SIPCLIENT" = 1 ]; then
    PATRON_ARGS=()
    if [ "$DEMO" = 1 ]; then PATRON_ARGS=(--patron 21000000000001 --pin 1234); fi
    CLIENT_OUT=$(cd "$RUN" && SIPCLIENT_PASSWORD=scpass timeout 30 /usr/bin/sipclient -H 127.0.0.1 \
        -p "$RAW_PORT" -u sip_sco_main check "${PATRON_ARGS[@]}" 2>&1) \
        || fail "/usr/bin/sipclient check: $CLIENT_OUT"
    note "sipclient: $(cut -c1-110 <<<"$CLIENT_OUT")"
fi
DB_OWNER=$(stat -c %U "$RUN"/*.sqlite3 2>/dev/null | sort -u | tr '\n' ' ')
[ "$DB_OWNER" = "$SVC_USER " ] || fail "the SQLite database is owned by '${DB_OWNER}', not $SVC_USER"

step "SIGHUP (reload), then SIGTERM"
kill -HUP "$TWISTD_PID"
sleep 1
kill -0 "$TWISTD_PID" 2>/dev/null || fail "twistd died on SIGHUP"
sip_checks --quick || fail "no SIP2 answer after SIGHUP"
note "still serving after SIGHUP: $(grep -i 'reload' "$RUN/daemon.log" | tail -n 1 | cut -c1-110)"
stop_daemon TERM
case "$DAEMON_RC" in
    0 | 143) note "twistd exited with $DAEMON_RC after SIGTERM" ;;
    124) fail "twistd ran into the 120 s time limit" ;;
    *) fail "twistd exited with status $DAEMON_RC after SIGTERM" ;;
esac
if grep -q 'Traceback' "$RUN/daemon.log"; then fail "the daemon log has a traceback"; fi
if grep -q 'Unable to write to plugin cache' "$RUN/daemon.log"; then
    fail "twistd could not use $PLUGIN_CACHE (stale plugin cache: did the trigger run?)"
fi

# ---------------------------------------------------------------------------------------------------
if command -v systemd-socket-activate >/dev/null; then
    step "socket activation (systemd-socket-activate, systemd:domain=INET:index=0)"
    SOCK_CONFIG=$RUN/socket.yaml
    sed -E "s#tcp:$RAW_PORT:interface=127\.0\.0\.1#systemd:domain=INET:index=0#" "$CONFIG" \
        | /usr/bin/python3 -I -c '
import sys, yaml
cfg = yaml.safe_load(sys.stdin)
cfg["listeners"] = [l for l in cfg["listeners"] if l["endpoint"].startswith("systemd:")]
cfg.pop("http", None)
yaml.safe_dump(cfg, sys.stdout, sort_keys=False)' >"$SOCK_CONFIG"
    chown root:"$SVC_USER" "$SOCK_CONFIG"
    chmod 0640 "$SOCK_CONFIG"
    (cd "$RUN" && exec timeout 120 systemd-socket-activate -l "127.0.0.1:$RAW_PORT" --fdname=sipserver \
        setpriv --reuid="$SVC_USER" --regid="$SVC_USER" --init-groups \
        env PATH=/usr/bin:/bin LANG=C.UTF-8 HOME="$RUN" \
        /usr/bin/twistd3 --nodaemon --pidfile= --logfile=- sip --config="$SOCK_CONFIG") \
        >"$RUN/daemon.log" 2>&1 &
    DAEMON_PID=$!
    DAEMON_CONFIG=$SOCK_CONFIG
    wait_port "$RAW_PORT"   # systemd-socket-activate holds the socket; twistd starts on this connection
    sip_checks --quick || fail "no SIP2 answer over the passed socket"
    note "a socket passed by systemd-socket-activate serves SIP2 (twistd pid $(twistd_pid || echo '?'))"
    stop_daemon TERM
    case "$DAEMON_RC" in 0 | 143) ;; *) fail "socket-activated twistd exited with $DAEMON_RC" ;; esac
else
    note "systemd-socket-activate is not installed: socket activation not checked"
fi

# ---------------------------------------------------------------------------------------------------
if [ "$PURGE" = 1 ]; then
    step "apt-get remove, then purge"
    timeout 300 apt-get remove -y -qq sipserver >"$WORK/remove.log" 2>&1 || fail "apt-get remove failed"
    [ -f /etc/sipserver/sip.yaml ] || fail "remove deleted the conffile /etc/sipserver/sip.yaml"
    timeout 300 apt-get purge -y -qq sipserver >>"$WORK/remove.log" 2>&1 || fail "apt-get purge failed"
    INSTALLED_BY_US=0
    ! dpkg-query -W -f='${db:Status-Abbrev}' sipserver 2>/dev/null | grep -q '^ii' || fail "still installed"
    [ ! -e /var/lib/sipserver ] || fail "purge left /var/lib/sipserver"
    [ ! -e /etc/sipserver/sip.yaml ] || fail "purge left /etc/sipserver/sip.yaml"
    if [ -f "$PLUGIN_CACHE" ] && grep -aq sipserver_plugin "$PLUGIN_CACHE"; then
        fail "$PLUGIN_CACHE still lists sipserver_plugin after removal"
    fi
    note "purged: /var/lib/sipserver and /etc/sipserver/sip.yaml gone, plugin cache rebuilt;" \
        "user $SVC_USER kept: $(getent passwd "$SVC_USER" >/dev/null && echo yes || echo no)"
fi

step "done"
SUMMARY=$(IFS=';'; echo "${TIMINGS[*]}")
echo "deb-smoke: timings: ${SUMMARY//;/; }; total $(secs $(($(ms) - START_MS)))s"
echo "deb-smoke: OK"
