"""The ``sipserver`` console command: administrative tasks next to the daemon.

``sipserver hash-password`` prints a password hash for an account; ``sipserver load --config CONFIG
DATA.yaml`` loads patrons, items, loans, holds and fees into the backend the config names;
``sipserver check --config CONFIG`` is ``twistd sip --check``. The daemon itself runs under twistd.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sipserver.accounts import passwords
from sipserver.tap import DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sipserver", description="SIP2 server administration")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("hash-password", help="print a password hash for an account's `password:` key")

    load = commands.add_parser("load", help="load a YAML data file into a backend")
    load.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="server configuration file")
    load.add_argument("--backend", "-b", help="backend name (default: the first institution's backend)")
    load.add_argument("data", help="data file (see docs/data-format.md)")

    migrate = commands.add_parser("migrate", help="bring a backend's database schema up to date")
    migrate.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="server configuration file")
    migrate.add_argument("--backend", "-b", help="backend name (default: every backend)")

    check = commands.add_parser("check", help="validate a configuration file")
    check.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="server configuration file")

    args = parser.parse_args(argv)
    if args.command == "hash-password":
        return passwords.hash_password_main([])
    if args.command == "check":
        return _check(args.config)
    if args.command == "load":
        return _run_with_backend(args.config, args.backend, "load", args.data)
    if args.command == "migrate":
        return _run_with_backend(args.config, args.backend, "migrate", None)
    return 2


def _check(path: str) -> int:
    from sipserver.tap import Options

    try:
        Options().parseOptions(["--config", path, "--check"])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _load_config(path: str) -> Any:
    from sipserver.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"sipserver: {exc}", file=sys.stderr)
        return None


def _run_with_backend(config_path: str, backend_name: str | None, action: str, data: str | None) -> int:
    """Start the named backend(s) under a reactor, do ``action``, stop them, report."""
    config = _load_config(config_path)
    if config is None:
        return 1
    if backend_name is not None and backend_name not in config.backends:
        configured = ", ".join(config.backends) or "none"
        print(
            f"sipserver: {config_path}: no backend named {backend_name!r} (configured: {configured})", file=sys.stderr
        )
        return 1
    if backend_name is not None:
        names = [backend_name]
    elif action == "load":
        names = [next(iter(config.institutions.values())).backend]
    else:
        names = list(config.backends)

    from twisted.internet import defer

    from sipserver.ils.factory import create_backend
    from sipserver.ils.interface import BackendError

    outcome = {"code": 0}

    @defer.inlineCallbacks
    def run(reactor: Any) -> Any:
        for name in names:
            options = config.backends[name]
            backend = create_backend(name, {"type": options.type, **options.options}, reactor=reactor)
            try:
                if action == "migrate":
                    migrate = getattr(backend, "migrate", None)
                    if migrate is None:
                        yield backend.start()
                        print(f"{name}: schema is current (this backend migrates on start)")
                    else:
                        version = yield migrate()
                        print(f"{name}: schema at version {version}")
                else:
                    from sipserver.ils.embedded.loader import load_file

                    assert data is not None  # the load command's argument is required
                    yield backend.start()
                    counts = yield load_file(backend, data)
                    summary = ", ".join(f"{count} {kind}" for kind, count in counts.items())
                    print(f"{name}: loaded {summary} from {data}")
            except (BackendError, ValueError, OSError) as exc:
                print(f"sipserver: {name}: {exc}", file=sys.stderr)
                outcome["code"] = 1
            finally:
                yield backend.stop()

    from twisted.internet import reactor

    def go() -> None:
        d = run(reactor)
        d.addErrback(
            lambda failure: (print(f"sipserver: {failure.getErrorMessage()}", file=sys.stderr), outcome.update(code=1))
        )
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]  # IReactorCore.run omits the reactors' argument
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
