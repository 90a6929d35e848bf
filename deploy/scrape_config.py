"""Prometheus's scrape config for a plan (`gateway observability --plan P`), and where the shipped
Grafana dashboard is.

Why every target is the gateway: each engine is vLLM's own server on a free port of whichever
node Ray placed it on, chosen at start and changed when Serve restarts it; on the Spark pair the
engines listen on the nodes' cluster addresses, which a Prometheus on the team's network may not
reach at all. The gateway already knows where each replica is now (it follows a restarted one,
gateway/backends/relocating.py) and passes each engine's /metrics on unchanged at
`/metrics/engines/<replica>`. So the config names only the gateway's address and the plan's
replica names, both fixed by the plan: no file or HTTP service discovery to keep in step, and one
port to open. The cost is one extra hop per scrape (every 15 s), nothing per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.plan import ServingPlan

DASHBOARD_FILE = "tandem-dashboard.json"
GATEWAY_JOB = "tandem-gateway"
ENGINES_JOB = "tandem-engines"


def dashboard_path() -> Path:
    """The Grafana dashboard shipped with the package (deploy/observability/)."""
    return Path(__file__).parent / "observability" / DASHBOARD_FILE


def gateway_target(plan: ServingPlan) -> str:
    """host:port where a Prometheus on the gateway's machine reaches it (loopback when it listens
    everywhere); another machine's Prometheus passes `--gateway HOST:PORT`."""
    host = plan.gateway.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{plan.gateway.port}"


def scrape_config(
    plan: ServingPlan,
    *,
    gateway: str | None = None,
    interval_s: float = 15.0,
    ca_file: Path | None = None,
) -> dict[str, Any]:
    """prometheus.yml for the plan: the gateway's own /metrics, and each replica's vLLM metrics
    through it, labelled `replica`; vLLM's `model_name` label is copied to `model`, the gateway's
    name for it, so one query joins both."""
    target = gateway or gateway_target(plan)
    scheme = "https" if plan.gateway.tls is not None else "http"
    common: dict[str, Any] = {"scheme": scheme}
    if ca_file is not None:
        common["tls_config"] = {"ca_file": str(ca_file)}
    engines = [
        {"targets": [target], "labels": {"replica": r.name, "__metrics_path__": f"/metrics/engines/{r.name}"}}
        for r in plan.replicas
    ]
    return {
        "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
        "scrape_configs": [
            {"job_name": GATEWAY_JOB, **common, "static_configs": [{"targets": [target]}]},
            {
                "job_name": ENGINES_JOB,
                **common,
                "static_configs": engines,
                "metric_relabel_configs": [
                    {"source_labels": ["model_name"], "regex": "(.+)", "target_label": "model", "replacement": "$1"}
                ],
            },
        ],
    }
