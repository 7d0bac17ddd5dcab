#!/usr/bin/env python3
"""Start-up cost of reading the files: the config and a data file, against reading their YAML alone.

    python bench/config.py [--accounts 2000] [--patrons 2000] [--items 5000] [--rounds 9] [--tree DIR]

A consortium's config may hold thousands of accounts, and ``sipserver load`` reads data files of
thousands of records; both are validated whole before anything starts. The script writes one such
config and one such data file in a temporary folder, then times, best of ``--rounds``:

* ``yaml``: ``yaml.load`` of the config with PyYAML's SafeLoader, the floor any YAML reader pays;
* ``config``: ``load_config`` (read and validate), and ``validate``: ``parse_config`` alone;
* ``data``: ``read_data_file`` (read and validate the data file), and ``data-yaml`` its floor.

Each figure is printed with its ratio to its YAML floor, measured in the same process. ``--tree DIR``
also measures another checkout (``git archive <commit> | tar -x -C DIR``) in a child process,
rounds interleaved with this tree's, and prints this tree's time over the other's: an A/B of two
versions in one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HASH = "scrypt$16384$8$1$c2FsdGZvcnRlc3Rpbmc=$" + "A" * 43 + "="


def config_text(accounts: int) -> str:
    lines = [
        "server: {name: bench, lockout: {failures: 5}}",
        "logging: {level: info}",
        "listeners:",
        "  - {name: raw, transport: raw, endpoint: 'tcp:6001:interface=127.0.0.1'}",
        "  - {name: telnet, transport: telnet, endpoint: 'tcp:6023:interface=127.0.0.1', terminator: CRLF}",
        "institutions:",
        "  MAIN:",
        "    backend: db",
        "    library_name: Bench Library",
        "    policy: {timeout: 10, retries: 2}",
        "    branches:",
        "      MAIN: {locations: [MAIN-DESK1, MAIN-SORTER]}",
        "      EAST: {locations: [EAST-DESK1]}",
        "profiles:",
        "  econtent: {patron_fields: [PA, PB, PC], hide: [BD, BE, BF]}",
        "accounts:",
    ]
    for i in range(accounts):
        lines += [
            f"  - login: sip_sco_{i}",
            f"    password: '{HASH}'",
            "    institution: MAIN",
            f"    location: DESK{i}",
            "    branch: MAIN" if i % 2 else "    branch: EAST",
            f"    allow_from: [10.{i // 256 % 256}.{i % 256}.0/24, '::1/128']",
            "    permissions: [patron, checkout, checkin, renew, item_status]",
            "    profile: econtent" if i % 3 == 0 else "    terminator: CRLF",
            "    expires: 2030-12-31",
        ]
    lines += ["backends:", "  db: {type: sqlite, path: bench.sqlite3, seed: data.yaml}"]
    return "\n".join(lines) + "\n"


def data_text(patrons: int, items: int) -> str:
    lines = ["rules:", "  default: {loan_days: 21, max_items_out: 10, fee_limit: '5.00'}", "patrons:"]
    for i in range(patrons):
        lines.append(
            f"  - {{barcode: '2{i:013d}', pin: '{i % 10000:04d}', name: 'Patron {i}', email: p{i}@example.org,"
            f" home_library: MAIN, expires: 2030-12-31, blocked: {'true' if i % 50 == 0 else 'false'}}}"
        )
    lines.append("items:")
    for i in range(items):
        lines.append(
            f"  - {{barcode: '3{i:013d}', title: 'Title {i}', author: 'Author {i % 97}', owner: MAIN,"
            f" media_type: {'dvd' if i % 7 == 0 else 'book'}, price: '{10 + i % 40}.99'}}"
        )
    lines.append("loans:")
    for i in range(min(patrons, items) // 4):
        lines.append(f"  - {{patron: '2{i:013d}', item: '3{i:013d}', due_in_days: {i % 30 - 10}}}")
    lines.append("fees:")
    for i in range(patrons // 10):
        lines.append(f"  - {{patron: '2{i:013d}', type: overdue, amount: '1.25'}}")
    return "\n".join(lines) + "\n"


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


def measure(folder: Path, rounds: int) -> dict[str, float]:
    """This interpreter's figures (run with the tree to measure first on ``sys.path``)."""
    import yaml

    from sipserver.config import load_config, parse_config
    from sipserver.ils.embedded.loader import read_data_file

    config, data = str(folder / "sip.yaml"), str(folder / "data.yaml")
    loaded = load_config(config)
    assert len(loaded.accounts) > 0, "the config did not load"
    raw = yaml.load(Path(config).read_text(), Loader=yaml.SafeLoader)
    now = datetime.datetime(2024, 6, 3, 10, 0)
    return {
        "yaml": best(lambda: yaml.load(Path(config).read_text(), Loader=yaml.SafeLoader), rounds),
        "config": best(lambda: load_config(config), rounds),
        "validate": best(lambda: parse_config(raw, config), rounds),
        "data-yaml": best(lambda: yaml.load(Path(data).read_text(), Loader=yaml.SafeLoader), rounds),
        "data": best(lambda: read_data_file(data, now), rounds),
    }


def child(tree: Path, folder: Path, rounds: int) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
        " import config as bench; from pathlib import Path;"
        " print(json.dumps(bench.measure(Path(sys.argv[3]), int(sys.argv[4]))))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tree), str(Path(__file__).resolve().parent), str(folder), str(rounds)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=tree,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--patrons", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=9, help="timings per figure; the best counts (default 9)")
    parser.add_argument("--ab-rounds", type=int, default=5, help="interleaved runs of each tree with --tree")
    parser.add_argument("--tree", type=Path, help="another checkout to compare with, in the same run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sip-bench-config-") as name:
        folder = Path(name)
        (folder / "sip.yaml").write_text(config_text(args.accounts))
        (folder / "data.yaml").write_text(data_text(args.patrons, args.items))
        print(f"config: {args.accounts} accounts; data: {args.patrons} patrons, {args.items} items")
        if args.tree is None:
            figures = measure(folder, args.rounds)
            print(f"{'figure':<10} {'ms':>9} {'x yaml':>7}")
            for name_, floor in (("yaml", "yaml"), ("config", "yaml"), ("validate", "yaml"),
                                 ("data-yaml", "data-yaml"), ("data", "data-yaml")):  # fmt: skip
                print(f"{name_:<10} {figures[name_] * 1000:9.1f} {figures[name_] / figures[floor]:7.2f}")
            return 0
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        for i in range(args.ab_rounds):
            pair = (ROOT, args.tree) if i % 2 == 0 else (args.tree, ROOT)
            for tree in pair:
                (ours if tree == ROOT else theirs).append(child(tree, folder, args.rounds))
        print(f"{'figure':<10} {'this ms':>9} {'other ms':>9} {'this/other':>10}")
        for key in ("yaml", "config", "validate", "data-yaml", "data"):
            mine, other = min(f[key] for f in ours), min(f[key] for f in theirs)
            ratio = statistics.median(a[key] / b[key] for a, b in zip(ours, theirs, strict=True))
            print(f"{key:<10} {mine * 1000:9.1f} {other * 1000:9.1f} {ratio:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
