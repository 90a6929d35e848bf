"""HTTP/1.1 keep-alive race: does a client lose requests on connections the gateway closes?

A client keeps an idle connection for its own keep-alive expiry (httpx, and so the openai SDK:
5 s) and reuses it for the next request. If the server closes idle connections after the same time
(uvicorn's default, 5 s), a request sent just under 5 s after the last answer can meet the
server's close: the client gets a reset and no answer (httpx: `ReadError`). The gateway keeps idle
connections longer than clients do (gateway/server.py, KEEP_ALIVE_S), so it should lose none.

Starts the gateway alone in front of the fake upstream (benchmarks/soak.py), then --connections
clients, each on one connection, send short streams with idle gaps spread over the last 30 ms
before --expiry-s. Prints what every request got.

    .venv/bin/python benchmarks/keepalive_race.py [--connections 24] [--requests 7] [--expiry-s 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import Counter
from pathlib import Path

import httpx
from reliability import auth_headers, stream_chat
from soak import gateway_alone

WINDOW_S = 0.030


async def one_connection(url: str, model: str, index: int, requests: int, expiry_s: float, seen: Counter) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=expiry_s)
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth_headers(), limits=limits) as http:
        for i in range(requests):
            outcome = await stream_chat(http, model, "interactive", max_tokens=2)
            seen[outcome.error or str(outcome.status)] += 1
            step = (index * requests + i) % 40 / 40  # gaps spread over the window, differing per connection
            await asyncio.sleep(expiry_s - WINDOW_S + (WINDOW_S - 0.001) * step)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=24)
    parser.add_argument("--requests", type=int, default=7, help="Requests per connection.")
    parser.add_argument("--expiry-s", type=float, default=5.0, help="The client's keep-alive expiry.")
    args = parser.parse_args()
    seen: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="keepalive-") as tmp, gateway_alone(1.0, Path(tmp)) as (url, model):

        async def run() -> None:
            clients = (
                one_connection(url, model, k, args.requests, args.expiry_s, seen) for k in range(args.connections)
            )
            await asyncio.gather(*clients)

        asyncio.run(run())
    lost = sum(n for outcome, n in seen.items() if outcome != "200")
    print(
        f"{sum(seen.values())} requests, idle gaps within {WINDOW_S * 1000:.0f} ms under {args.expiry_s:g} s: {dict(seen)}"
    )
    print(f"{'no request lost' if not lost else f'{lost} requests lost'}")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
