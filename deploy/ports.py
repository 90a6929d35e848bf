"""Free TCP ports, for servers Tandem starts itself (engines, gateways under test, benchmarks)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at `host` now; the OS picks it (there is a small window before the
    caller binds it, which is fine for one machine's own processes)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
