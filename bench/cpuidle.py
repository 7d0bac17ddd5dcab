"""Keep the CPUs out of their idle states while a benchmark measures.

On the development VM (Firecracker, the ``haltpoll`` cpuidle driver) a virtual CPU with nothing
to run halts, and the host then gives its time to other work. A run that leaves one CPU mostly
idle (the server on CPU 0, the light generator on CPU 1) lost 9 to 38 % of the CPUs' time to
steal on 2026-12-02, against 1 to 8 % for a run that kept both busy, which skews every one-CPU
figure and every ratio between a one-CPU and a two-CPU run. A PM QoS request of zero latency,
held through ``/dev/cpu_dma_latency`` as tuned's latency-performance profile and cyclictest do,
makes an idle CPU poll instead of halting; it ends when the file is closed, so nothing outlives
the benchmark. Opening the file needs root; without it the run goes on and says so.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

PM_QOS = "/dev/cpu_dma_latency"


@contextmanager
def cpus_awake(enabled: bool = True) -> Iterator[str]:
    """Hold the CPUs out of idle states inside the block; yields a line saying what was done."""
    if not enabled:
        yield "CPU idle states: left to the kernel (--allow-idle)"
        return
    try:
        fd = os.open(PM_QOS, os.O_WRONLY)
    except OSError as e:
        yield f"CPU idle states: left to the kernel ({PM_QOS}: {e.strerror}; it needs root)"
        return
    try:
        os.write(fd, struct.pack("=i", 0))
        yield f"CPU idle states: none while measuring ({PM_QOS} held at 0: an idle CPU polls instead of halting)"
    finally:
        os.close(fd)
