"""Free loopback ports, so that every run starts its own servers and touches no one else's."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ports are picked below the range the kernel hands to outgoing connections (and to a bind to
# port 0): a port from that range, free when picked, can be taken by any process's connection
# before the server it was picked for binds it, as happened to an API of the chaos drill while
# the other database's slow tier ran beside it.
LOWEST = 10000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default start of that range; macOS and Windows start theirs higher.
EPHEMERAL_FROM = 32768
# Not the `random` module's generator: a drill seeds that one, and two drills with one seed,
# side by side, would pick the same ports.
_picker = random.SystemRandom()


def free_port() -> int:
    below = ephemeral_from()
    for _ in range(1000):
        port = _picker.randrange(LOWEST, below)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {LOWEST} and {below}")


def ephemeral_from() -> int:
    try:
        start = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_FROM
    return start if start > LOWEST + 1000 else EPHEMERAL_FROM
