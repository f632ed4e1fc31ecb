"""A free TCP port for a test's process group, safe from the race of "bind to port 0, close,
hand the number on": the kernel gives port-0 binds and outgoing connections ports from the
ephemeral range (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by default), so a port
taken that way can be handed to another socket before the process group binds it. A port below
that range is only ever taken by a process that asks for it by number."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOW, HIGH = 20000, 32000  # below the default ephemeral range


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port below the ephemeral range that nothing listens on now."""
    first_ephemeral = ephemeral_range()[0]
    high = min(HIGH, first_ephemeral)
    picker = random.Random()  # seeded from the OS: concurrent test processes pick apart
    for _ in range(200):
        port = picker.randrange(LOW, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in [{LOW}, {high}) after 200 tries")
