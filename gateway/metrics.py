"""Prometheus metrics of one gateway: requests, errors, latency and token usage per traffic class,
replica and, when auth.per_key_metrics is on, API key (by name); every series also carries the
model's public name (`model`: the replica's model for a series by replica, '-' for an answer no
model gave, such as an unknown model's 404, where the gateway serves several), so one Prometheus can
hold several models and Tandem endpoints and join them with their engines' vLLM metrics (which say
`model_name`). Each app has its own registry,
so several gateways (tests) can live in one process. Gauges that mirror live state (in-flight, queues, health) are read from the
LoadBoard and the class gates at scrape time, costing nothing per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.load import LoadBoard
from gateway.model_groups import ModelGroups
from gateway.recent import RecentLatency

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
# vLLM's own inter-token buckets (vllm/v1/metrics/loggers.py), so the two histograms compare bucket by bucket
_INTER_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


@dataclass(frozen=True, eq=False)  # eq=False: the registry keys collectors by identity
class LiveState(Collector):
    """Where the live gauges are read from, at scrape time."""

    board: LoadBoard
    groups: ModelGroups

    def collect(self) -> Iterable[Metric]:
        replicas = self.board.snapshot()
        families = {
            "in_flight": GaugeMetricFamily(
                "tandem_gateway_replica_in_flight",
                "Requests this gateway has in flight on the replica",
                labels=["replica"],
            ),
            "running": GaugeMetricFamily(
                "tandem_gateway_replica_running", "Engine's running requests (last poll)", labels=["replica"]
            ),
            "waiting": GaugeMetricFamily(
                "tandem_gateway_replica_waiting", "Engine's waiting requests (last poll)", labels=["replica"]
            ),
            "healthy": GaugeMetricFamily(
                "tandem_gateway_replica_healthy", "1 while the replica answers", labels=["replica"]
            ),
        }
        for r in replicas:
            families["in_flight"].add_metric([r.name], r.in_flight)
            families["running"].add_metric([r.name], r.running)
            families["waiting"].add_metric([r.name], r.waiting)
            families["healthy"].add_metric([r.name], 1.0 if r.healthy else 0.0)
        yield from families.values()
        admitted = GaugeMetricFamily(
            "tandem_gateway_class_in_flight",
            "Admitted requests per model and traffic class",
            labels=["model", "traffic_class"],
        )
        queued = GaugeMetricFamily(
            "tandem_gateway_class_queued", "Requests waiting for a class slot", labels=["model", "traffic_class"]
        )
        spilling = GaugeMetricFamily(
            "tandem_gateway_spilling", "1 while interactive traffic spills to the batch replica", labels=["model"]
        )
        held = GaugeMetricFamily(
            "tandem_gateway_batch_held",
            "1 while batch admissions yield to interactive work (routing.yielding.fraction)",
            labels=["model"],
        )
        for group in self.groups:
            for name, gate in group.gates.items():
                admitted.add_metric([group.name, name], gate.in_flight)
                queued.add_metric([group.name, name], gate.queued)
            spilling.add_metric([group.name], group.router.spilling)
            held.add_metric([group.name], group.yielding.holding)
        yield from (admitted, queued, spilling, held)


class _Buckets:
    """One label set's inter-token histogram: a count per bucket (the last is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_INTER_TOKEN_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(_INTER_TOKEN_BUCKETS, seconds)] += 1  # first bound >= seconds: Prometheus' le
        self.total += seconds


class InterTokenLatency(Collector):
    """tandem_gateway_inter_token_latency_seconds, by class and replica: observed once per streamed
    event, so kept as plain counts (about 0.5 us an event here, against 2 us for prometheus_client's
    Histogram.observe with its locks) and turned into a histogram at scrape time. Observed and
    scraped on the gateway's one event loop, hence no lock."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Buckets] = {}

    def __call__(self, traffic_class: str, replica: str) -> _Buckets:
        series = self._series.get((traffic_class, replica))
        if series is None:
            series = self._series[(traffic_class, replica)] = _Buckets()
        return series

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "tandem_gateway_inter_token_latency_seconds",
            "Streamed requests: time between consecutive events sent to the client (one event per engine "
            "step, usually one token)",
            labels=["traffic_class", "replica"],
        )
        bounds = [*(str(float(b)) for b in _INTER_TOKEN_BUCKETS), "+Inf"]
        for labels, series in list(self._series.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, series.counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric(list(labels), cumulative, series.total)
        yield family


class _Children:
    """A metric's labelled children, looked up once per label set: prometheus_client's own
    `labels()` validates and locks on every call, which costs more than the gateway's routing.
    Bounded by the label sets that exist (endpoints, classes, replicas, statuses, key names)."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(*labels)
        return child


UNLABELLED_KEY = "-"
"""The `key` label of every series while per-key metrics are off (auth.per_key_metrics)."""


class GatewayMetrics:
    """The gateway's metrics. `per_key`: label requests and tokens with the key's name; off, every
    series carries the key label '-', because /metrics answers without a key and per-key series
    would tell anyone who uses the gateway, and how much."""

    def __init__(self, live: LiveState, *, per_key: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.per_key = per_key
        self._groups = live.groups
        self._no_model = live.groups.default.name if len(live.groups.groups) == 1 else UNLABELLED_KEY
        r = self.registry

        def counter(name: str, doc: str, labels: list[str]) -> _Children:
            return _Children(Counter(name, doc, labels, registry=r))

        def histogram(name: str, doc: str, labels: list[str], buckets: Sequence[float]) -> _Children:
            return _Children(Histogram(name, doc, labels, buckets=buckets, registry=r))

        self._requests = counter(
            "tandem_gateway_requests",
            "Requests answered, by endpoint, class, replica ('-' when the gateway answered itself), status, key",
            ["endpoint", "traffic_class", "replica", "status", "key"],
        )
        self.errors = counter(
            "tandem_gateway_errors", "Error answers, by status and origin (gateway or upstream)", ["status", "origin"]
        )
        self.retries = counter(
            "tandem_gateway_retries", "Requests sent again after a replica failed before answering", ["replica"]
        )
        self.deadlines = counter(
            "tandem_gateway_deadlines",
            "Requests ended by a deadline (gateway.deadlines): first_token, idle or total; a queue "
            "timeout is a 429 in tandem_gateway_errors",
            ["traffic_class", "kind"],
        )
        self.disconnects = counter(
            "tandem_gateway_client_disconnects", "Clients gone before the answer ended", ["traffic_class"]
        )
        self.ttft = histogram(
            "tandem_gateway_time_to_first_token_seconds",
            "Streamed requests: request received to first event sent",
            ["traffic_class", "replica"],
            _LATENCY_BUCKETS,
        )
        self.inter_token = InterTokenLatency()
        r.register(self.inter_token)
        self.latency = histogram(
            "tandem_gateway_request_seconds",
            "Request received to answer complete",
            ["traffic_class", "replica"],
            _LATENCY_BUCKETS,
        )
        self.queue_wait = histogram(
            "tandem_gateway_queue_seconds",
            "Time waiting for a class slot",
            ["model", "traffic_class"],
            _LATENCY_BUCKETS,
        )
        self.overhead = histogram(
            "tandem_gateway_added_seconds",
            "Gateway time before the request leaves for the replica (parse, auth, classify, route), queue wait excluded",
            ["traffic_class", "replica"],
            _OVERHEAD_BUCKETS,
        )
        self.tokens = counter(
            "tandem_gateway_tokens",
            "Tokens used, by API key name, model, class and kind (prompt or completion)",
            ["key", "model", "traffic_class", "kind"],
        )
        r.register(live)
        self.recent = RecentLatency()  # the last minutes' streams, for the status page (gateway.status)

    def requests(self, endpoint: str, traffic_class: str, replica: str, status: str, key: str) -> Any:
        """The request counter's child for these labels (the key's name only when per_key is on)."""
        return self._requests(endpoint, traffic_class, replica, status, key if self.per_key else UNLABELLED_KEY)

    def count_usage(self, key: str, model: str, traffic_class: str, usage: Mapping[str, object]) -> None:
        key = key if self.per_key else UNLABELLED_KEY
        for kind in ("prompt", "completion"):
            value = usage.get(f"{kind}_tokens")
            if isinstance(value, int) and value > 0:
                self.tokens(key, model, traffic_class, kind).inc(value)

    def render(self) -> bytes:
        return generate_latest(_ModelLabelled(self.registry, self._groups, self._no_model))


@dataclass(frozen=True, eq=False)
class _ModelLabelled(Collector):
    """The registry with a `model` label on every sample, added at scrape time where a series
    does not carry one: its replica's model, else `no_model`. The per-request call sites keep
    their labels; a series by replica never needs the model passed along."""

    registry: CollectorRegistry
    groups: ModelGroups
    no_model: str

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            family.samples = [
                s if "model" in s.labels else s._replace(labels={**s.labels, "model": self._model(s.labels)})
                for s in family.samples
            ]
            yield family

    def _model(self, labels: Mapping[str, str]) -> str:
        group = self.groups.by_replica.get(labels.get("replica", ""))
        return self.no_model if group is None else group.name
