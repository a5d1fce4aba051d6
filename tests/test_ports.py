"""Ports for the servers a run starts: free, and out of the way of outgoing connections."""

from __future__ import annotations

import socket

from stack.ports import LOWEST, ephemeral_from, free_port


def test_a_picked_port_is_free_and_below_the_range_of_outgoing_connections() -> None:
    picked = {free_port() for _ in range(20)}
    assert all(LOWEST <= port < ephemeral_from() for port in picked)
    assert len(picked) > 1  # drawn, not one fixed port that two runs would share
    for port in picked:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
