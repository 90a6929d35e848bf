"""The gateway's state at a glance: `GET /admin/status` (JSON, admin key: it names who uses the
gateway) and `GET /status`, a self-contained HTML page (no CDN, no external file: it works on a
box that reaches nothing) that reads the JSON every two seconds with the admin key typed into it
(kept in the browser tab's sessionStorage only). `gateway status` prints the same facts.

Facts: each replica's health, load (in flight here, running and waiting in its engine) and
whether it is frozen (gateway.freezing); each class's admitted and queued requests and its
streamed requests' TTFT and TPOT over the last minutes (gateway.recent); whether interactive
traffic spills and batch yields; and the usage ledger's last 24 hours per key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from gateway.contract.config import TRAFFIC_CLASSES
from gateway.load import LoadBoard
from gateway.model_groups import ModelGroups
from gateway.recent import RecentLatency
from gateway.usage import UsageLedger

USAGE_WINDOW_S = 24 * 3600.0


class StatusSource:
    """Where the facts are read from, at request time (nothing is kept for the page)."""

    def __init__(
        self,
        *,
        groups: ModelGroups,
        board: LoadBoard,
        frozen: Callable[[], frozenset[str]],
        recent: RecentLatency,
        ledger: UsageLedger,
    ) -> None:
        self._groups = groups
        self._board = board
        self._frozen = frozen
        self._recent = recent
        self._ledger = ledger
        self._started = time.time()

    async def facts(self) -> dict[str, Any]:
        frozen = self._frozen()
        latency = self._recent.summary()
        usage_since = time.time() - USAGE_WINDOW_S
        usage = await self._ledger.report(usage_since)
        groups = self._groups
        return {
            "model": groups.default.name,
            "models": [
                {
                    "name": group.name,
                    "aliases": group.config.aliases,
                    "replicas": sorted(group.replicas),
                    "classes": {
                        name: {"in_flight": g.in_flight, "queued": g.queued} for name, g in group.gates.items()
                    },
                    "spilling": group.router.spilling,
                    "batch_held": group.yielding.holding,
                }
                for group in groups
            ],
            "time": time.time(),
            "up_s": round(time.time() - self._started),
            "replicas": [
                {
                    "name": r.name,
                    "model": groups.by_replica[r.name].name,
                    "traffic_class": r.traffic_class,
                    "healthy": r.healthy,
                    "frozen": r.name in frozen,
                    "in_flight": r.in_flight,
                    "running": r.running,
                    "waiting": r.waiting,
                    "max_num_seqs": r.max_num_seqs,
                }
                for r in self._board.snapshot()
            ],
            "classes": {  # every model's requests of the class together
                name: {
                    "in_flight": sum(group.gates[name].in_flight for group in groups),
                    "queued": sum(group.gates[name].queued for group in groups),
                    **latency.get(name, {"streams": 0}),
                }
                for name in TRAFFIC_CLASSES
            },
            "latency_window_s": self._recent.window_s,
            "spilling": groups.spilling,
            "batch_held": groups.batch_held,
            "usage_since": usage_since,
            "usage": [
                {
                    "key": row.key,
                    "model": row.model,
                    "traffic_class": row.traffic_class,
                    "requests": row.requests,
                    "prompt_tokens": row.prompt_tokens,
                    "completion_tokens": row.completion_tokens,
                    "errors": row.errors,
                }
                for row in usage
            ],
        }


def status_routes(source: StatusSource, require_admin: Callable[[Request], object]) -> APIRouter:
    router = APIRouter()

    @router.get("/admin/status")
    async def status_json(request: Request) -> Response:
        require_admin(request)
        return Response(orjson.dumps(await source.facts()), media_type="application/json")

    @router.get("/status")
    async def status_page() -> Response:
        return HTMLResponse(STATUS_PAGE, headers={"Cache-Control": "no-store"})

    return router


STATUS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tandem status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse} td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left} .bad{color:#b00;font-weight:bold} .ok{color:#080}
#error{color:#b00} #meta{color:#666}
</style></head><body>
<h1>Tandem <span id="model"></span></h1>
<div id="meta"></div>
<p><label>admin key <input id="key" type="password" size="40" autocomplete="off"></label>
<span id="error"></span></p>
<h2>Models</h2><table id="models"></table>
<h2>Replicas</h2><table id="replicas"></table>
<h2>Classes <span id="window"></span></h2><table id="classes"></table>
<h2>Usage, last 24 hours</h2><table id="usage"></table>
<script>
"use strict";
const keyInput = document.getElementById("key");
keyInput.value = sessionStorage.getItem("tandemAdminKey") || "";
keyInput.addEventListener("change", () => { sessionStorage.setItem("tandemAdminKey", keyInput.value); refresh(); });
function cell(row, text, cls) {
  const td = document.createElement("td"); td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls; row.appendChild(td);
}
function fill(id, titles, rows) {
  const table = document.getElementById(id); table.replaceChildren();
  const head = document.createElement("tr");
  for (const t of titles) { const th = document.createElement("th"); th.textContent = t; head.appendChild(th); }
  table.appendChild(head);
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) { Array.isArray(c) ? cell(tr, c[0], c[1]) : cell(tr, c); }
    table.appendChild(tr);
  }
}
function render(s) {
  document.getElementById("model").textContent = s.models.map(m => m.name).join(", ");
  document.getElementById("meta").textContent = "up " + s.up_s + " s; " +
    (s.spilling ? "interactive spills to the batch replica; " : "") +
    (s.batch_held ? "batch yields to interactive; " : "") + "updated " + new Date(s.time * 1000).toLocaleTimeString();
  fill("models", ["model", "aliases", "replicas", "interactive in flight", "queued", "batch in flight", "queued"],
    s.models.map(m => [m.name, m.aliases.join(", ") || "-", m.replicas.join(", "),
      m.classes.interactive.in_flight, m.classes.interactive.queued, m.classes.batch.in_flight, m.classes.batch.queued]));
  fill("replicas", ["replica", "model", "class", "health", "frozen", "in flight", "running", "waiting", "max seqs"],
    s.replicas.map(r => [r.name, r.model, r.traffic_class, r.healthy ? ["healthy", "ok"] : ["down", "bad"],
      r.frozen ? "frozen" : "-", r.in_flight, r.running, r.waiting, r.max_num_seqs]));
  document.getElementById("window").textContent = "(streams of the last " + Math.round(s.latency_window_s / 60) + " min)";
  fill("classes", ["class", "in flight", "queued", "streams", "TTFT p50 ms", "TTFT p95 ms", "TPOT p50 ms", "TPOT p95 ms"],
    Object.entries(s.classes).map(([n, c]) => [n, c.in_flight, c.queued, c.streams,
      c.ttft_p50_ms, c.ttft_p95_ms, c.tpot_p50_ms, c.tpot_p95_ms]));
  fill("usage", ["key", "model", "class", "requests", "prompt tokens", "completion tokens", "errors"],
    s.usage.map(u => [u.key, u.model, u.traffic_class, u.requests, u.prompt_tokens, u.completion_tokens,
      u.errors ? [u.errors, "bad"] : 0]));
}
async function refresh() {
  const headers = keyInput.value ? {Authorization: "Bearer " + keyInput.value} : {};
  try {
    const reply = await fetch("/admin/status", {headers});
    const body = await reply.json();
    if (!reply.ok) { document.getElementById("error").textContent = body.error ? body.error.message : reply.statusText; return; }
    document.getElementById("error").textContent = "";
    render(body);
  } catch (e) { document.getElementById("error").textContent = "the gateway does not answer"; }
}
refresh();
setInterval(refresh, 2000);
</script></body></html>
"""
