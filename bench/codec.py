#!/usr/bin/env python3
"""Codec throughput: decode + encode round trips per second, ours against PyPI ``pysip2`` 0.1.0.

    python bench/codec.py [--seconds N] [--rounds N] [--cpu N]

Both codecs run in this one process, on one core, one thread, on the same frames. The two are
interleaved over many short rounds, each round timing the two back to back, and the median of
the per-round ratios is reported, so that a burst of noise on the machine (another process,
frequency scaling) cannot favour either side. Exits 2 when pysip2
is not installed.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpuidle import cpus_awake  # this folder, on the path as the script's own

from sipserver.sip2 import decode, encode

ENCODING = "cp850"  # the protocol's default, and pysip2's

# The 63, 64 and 12 are the byte-exact examples of the project's SIP2 reference, section 5.
FRAMES: dict[str, bytes] = {
    "63 patron info": b"6300120250115    093010  Y       AOMAIN|AA21000000000001|AC|AD1234|BP1|BQ5|AY2AZEDC8\r",
    "64 + AU list": (
        b"64              00120250115    093010000100000002000000000000AOMAIN|AA21000000000001|AEJane Doe|"
        b"BZ0010|CA0005|CB0020|BLY|CQY|BHUSD|BV2.50|CC10.00|AU31000000000001|AU31000000000002|"
        b"BEjane@example.org|AFWelcome, Jane|AY2AZC85F\r"
    ),
    # The reference's 11 has an 18-space nb due date, which pysip2 rejects; this one carries a
    # real date (and its own checksum) so that both codecs read the same bytes.
    "11 checkout": (
        b"11YN20250115    09302020250205    235900AOMAIN|AA21000000000001|AB31000000000003|AC|AD1234|"
        b"BON|BIN|AY3AZE81A\r"
    ),
    "12 checkout resp": (
        b"121NNY20250115    093020AOMAIN|AA21000000000001|AB31000000000003|AJThe Hobbit|"
        b"AH20250205    235900|CK001|AFDue 5 Feb 2025|AY3AZE149\r"
    ),
}
HEADLINE = "64 + AU list"
NOTE = "11 uses a real nb due date: pysip2 0.1.0 rejects the reference's 18-space one (we accept both)."


def ours(frame: bytes) -> bytes:
    message = decode(frame, encoding=ENCODING)
    return encode(message, encoding=ENCODING, sequence=message.sequence)


def make_theirs() -> Callable[[bytes], bytes] | None:
    try:
        import pysip2
    except ImportError:
        return None

    def theirs(frame: bytes) -> bytes:
        decoded = pysip2.decode_message(frame, encoding=ENCODING)
        return pysip2.encode_message(
            decoded.message,
            sequence_number=decoded.sequence_number,
            checksum=decoded.checksum is not None,
            encoding=ENCODING,
        )

    return theirs


def rate(codec: Callable[[bytes], bytes], frame: bytes, seconds: float) -> float:
    """Round trips per second over about ``seconds``, in batches sized to keep timer calls rare."""
    batch = 1
    while True:  # calibrate: a batch of at least ~5 ms
        start = time.perf_counter()
        for _ in range(batch):
            codec(frame)
        if time.perf_counter() - start >= 0.005:
            break
        batch *= 2
    gc.collect()
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            codec(frame)
        done += batch
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def pin(cpu: int | None) -> str:
    """Optionally pin the process to one CPU; the measurement is single-threaded either way."""
    if cpu is None:
        return "one thread"
    if not hasattr(os, "sched_setaffinity"):
        return "one thread (cannot pin on this system)"
    os.sched_setaffinity(0, {cpu})
    return f"one thread pinned to CPU {cpu}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="total time to spend measuring (default 10)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per codec and frame (default 15)")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU (default: not pinned)")
    parser.add_argument("--allow-idle", action="store_true", help="let idle CPUs halt (default: held awake)")
    args = parser.parse_args(argv)

    theirs = make_theirs()
    if theirs is None:
        print("pysip2 is not installed; install the bench extra: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    from importlib.metadata import version

    pysip2_version = version("pysip2")

    # Before timing: both codecs must reproduce every frame byte for byte.
    for name, frame in FRAMES.items():
        assert ours(frame) == frame, f"our codec changed the {name} frame: {ours(frame)!r}"
        assert theirs(frame) == frame, f"pysip2 changed the {name} frame: {theirs(frame)!r}"

    where = pin(args.cpu)
    rounds = max(1, args.rounds)
    slice_seconds = args.seconds / (rounds * len(FRAMES) * 2)
    results: dict[str, dict[str, list[float]]] = {name: {"ours": [], "pysip2": []} for name in FRAMES}
    with cpus_awake(not args.allow_idle) as idle:
        for index in range(rounds):
            for name, frame in FRAMES.items():
                # Alternate which codec goes first, so neither always runs on a warmer cache.
                pair = [("ours", ours), ("pysip2", theirs)]
                if index % 2:
                    pair.reverse()
                for label, codec in pair:
                    results[name][label].append(rate(codec, frame, slice_seconds))

    print(
        f"SIP2 codec round trips (decode + encode) per second: Python {sys.version.split()[0]}, {where}, "
        f"pysip2 {pysip2_version}, {ENCODING}, {rounds} interleaved rounds of {slice_seconds * 1000:.0f} ms"
    )
    print(idle)
    print("ours/s and pysip2/s are the best round of each; ratio is the median of the per-round ratios")
    print(f"{'frame':<18} {'bytes':>5} {'ours/s':>10} {'pysip2/s':>10} {'ratio':>7}")
    ratios = {}
    for name, frame in FRAMES.items():
        mine, other = results[name]["ours"], results[name]["pysip2"]
        # Each round timed the two codecs back to back: their ratio cancels slow drift in load.
        ratios[name] = statistics.median(a / b for a, b in zip(mine, other, strict=True))
        print(f"{name:<18} {len(frame):>5} {max(mine):>10,.0f} {max(other):>10,.0f} {ratios[name]:>6.2f}x")
    print(f"note: {NOTE}")
    print(f"ratio on the 64 frame: {ratios[HEADLINE]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
