"""The shipped dashboards (issue 25): `gateway observability --plan P` writes a scrape config that a
real Prometheus (Debian's `prometheus` package) runs against a gateway over two fake vLLM engines,
and every panel of the Grafana dashboard gets data from it; the gateway's own series carry the
`model` label and an inter-token-latency histogram; every vLLM metric a panel reads exists in the
installed vLLM."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fake_upstream import FakeUpstream
from typer.testing import CliRunner

from deploy.cli import app
from deploy.plan import load_plan
from deploy.ports import free_port
from deploy.scrape_config import dashboard_path
from gateway.contract.config import GatewayConfig
from gateway.metrics import InterTokenLatency
from gateway.server import GatewayThread, start_in_thread

PLAN = Path(__file__).parents[2] / "deploy" / "plans" / "cpu-demo.yaml"
DEADLINE_S = 120.0


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard, Grafana's variables filled in as
    Grafana would for 'all models' and a short range."""
    dashboard = json.loads(dashboard_path().read_text())
    return [
        (panel["title"], target["expr"].replace("$model", ".+").replace("$__rate_interval", "1m"))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(dashboard_path().read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(graphs) >= 15
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert all(t["refId"] and t["expr"] for t in panel["targets"]), panel["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "model"}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed here")
def test_every_vllm_metric_a_panel_reads_is_one_vllm_exports() -> None:
    """The fake engine serves what the panels ask; this keeps the panels honest about real vLLM."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.submodule_search_locations
    source = (Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics" / "loggers.py").read_text()
    exported = set(re.findall(r'name="(vllm:[a-z0-9_]+)"', source))
    used = {name for _, expr in panel_queries() for name in re.findall(r"vllm:[a-z0-9_]+", expr)}
    assert used
    for name in used:
        base = re.sub(r"(_total|_bucket|_sum|_count)$", "", name)
        assert base in exported, f"{name}: not a metric of the installed vLLM"


def test_the_scrape_config_comes_from_the_plan(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["observability", "--plan", str(PLAN), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    plan = load_plan(PLAN)
    assert jobs["tandem-gateway"]["static_configs"] == [{"targets": [f"127.0.0.1:{plan.gateway.port}"]}]
    engines = jobs["tandem-engines"]["static_configs"]
    assert [e["labels"]["replica"] for e in engines] == [r.name for r in plan.replicas]
    assert all(e["labels"]["__metrics_path__"] == f"/metrics/engines/{e['labels']['replica']}" for e in engines)
    assert (tmp_path / dashboard_path().name).read_text() == dashboard_path().read_text()


@pytest.fixture
def gateway_over_fake_engines(tmp_path: Path) -> Iterator[GatewayThread]:
    """A gateway whose replicas have the plan's names, over fake engines serving vLLM's metrics."""
    plan = load_plan(PLAN)
    with contextlib.ExitStack() as stack:
        engines = {
            r.name: stack.enter_context(
                FakeUpstream(model=plan.models[0].name, serving_metrics=True, token_delay_s=0.01).running()
            )
            for r in plan.replicas
        }
        config = GatewayConfig.model_validate(
            {
                "model": plan.models[0].name,
                "replicas": [
                    {
                        "name": r.name,
                        "traffic_class": r.traffic_class,
                        "model": plan.models[0].name,
                        "base_url": engines[r.name].base_url,
                    }
                    for r in plan.replicas
                ],
                "settings": {"batches": {"data_dir": str(tmp_path / "data")}},
            }
        )
        gateway = start_in_thread(config)
        stack.callback(gateway.stop)
        yield gateway


def test_the_gateway_labels_its_series_with_the_model_and_passes_engine_metrics_on(
    gateway_over_fake_engines: GatewayThread,
) -> None:
    root = gateway_over_fake_engines.base_url.removesuffix("/v1")
    _stream_one(gateway_over_fake_engines.base_url, "interactive")
    own = httpx.get(f"{root}/metrics", timeout=10).text
    assert 'tandem_gateway_inter_token_latency_seconds_count{model="tandem-demo",replica="interactive"' in own
    series = [line for line in own.splitlines() if line and not line.startswith("#")]
    assert series and all('model="tandem-demo"' in line for line in series)
    engine = httpx.get(f"{root}/metrics/engines/interactive", timeout=10)
    assert (
        engine.status_code == 200 and 'vllm:generation_tokens_total{engine="0",model_name="tandem-demo"}' in engine.text
    )
    unknown = httpx.get(f"{root}/metrics/engines/nope", timeout=10)
    assert unknown.status_code == 404 and "interactive" in unknown.json()["error"]["message"]


def test_the_inter_token_histogram_counts_as_prometheus_buckets_do() -> None:
    """le is inclusive, buckets cumulative, +Inf holds everything; read back by Prometheus' own parser."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    histogram = InterTokenLatency()
    registry = CollectorRegistry()
    registry.register(histogram)
    for gap in (0.01, 0.03, 20.0):
        histogram("interactive", "tp").observe(gap)
    (family,) = text_string_to_metric_families(generate_latest(registry).decode())
    values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert values[("tandem_gateway_inter_token_latency_seconds_bucket", "0.01")] == 1
    assert values[("tandem_gateway_inter_token_latency_seconds_bucket", "0.025")] == 1
    assert values[("tandem_gateway_inter_token_latency_seconds_bucket", "0.05")] == 2
    assert values[("tandem_gateway_inter_token_latency_seconds_bucket", "10.0")] == 2
    assert values[("tandem_gateway_inter_token_latency_seconds_bucket", "+Inf")] == 3
    assert values[("tandem_gateway_inter_token_latency_seconds_count", None)] == 3
    assert values[("tandem_gateway_inter_token_latency_seconds_sum", None)] == pytest.approx(20.04)


def _stream_one(base_url: str, traffic_class: str, model: str = "tandem-demo") -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"X-Tandem-Class": traffic_class}
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, headers=headers, timeout=30) as answer:
        answer.read()


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="needs Debian's `prometheus` (apt-get install prometheus)"
)
def test_every_panel_gets_data_from_a_real_prometheus(gateway_over_fake_engines: GatewayThread, tmp_path: Path) -> None:
    base_url = gateway_over_fake_engines.base_url
    address = base_url.removeprefix("http://").removesuffix("/v1")
    out = tmp_path / "observability"
    made = CliRunner().invoke(
        app, ["observability", "--plan", str(PLAN), "--gateway", address, "--interval", "1", "--out", str(out)]
    )
    assert made.exit_code == 0, made.output
    port = free_port()
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={out / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    stop = threading.Event()

    def traffic() -> None:  # both classes, and one error answer per round, until the panels are checked
        while not stop.is_set():
            for traffic_class in ("interactive", "batch"):
                _stream_one(base_url, traffic_class)
            _stream_one(base_url, "interactive", model="no-such-model")
            stop.wait(0.3)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        empty = _wait_for_every_panel(f"http://127.0.0.1:{port}", panel_queries())
    finally:
        stop.set()
        sender.join(30)
        prometheus.terminate()
        prometheus.wait(30)
    log = (tmp_path / "prometheus.log").read_text()[-2000:]
    assert not empty, f"panels without data after {DEADLINE_S:.0f} s: {empty}\nprometheus log tail:\n{log}"


def _wait_for_every_panel(prometheus_url: str, queries: list[tuple[str, str]]) -> list[str]:
    """Ask Prometheus every query until each returns a finite value; the ones still empty at the
    deadline (title and query)."""
    pending = dict(enumerate(queries))
    deadline = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < deadline:
        for index, (_, expr) in list(pending.items()):
            if _has_finite_value(prometheus_url, expr):
                del pending[index]
        time.sleep(1)
    return [f"{title}: {expr}" for title, expr in pending.values()]


def _has_finite_value(prometheus_url: str, expr: str) -> bool:
    try:
        answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    except httpx.HTTPError:
        return False  # not listening yet
    if answer.status_code != 200:
        assert answer.status_code != 400, f"Prometheus refused {expr}: {answer.text}"
        return False
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return any(math.isfinite(float(series["value"][1])) for series in result)
