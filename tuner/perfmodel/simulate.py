"""Discrete-event simulation of mixed traffic over co-resident replicas, routed by the gateway's policy.

Interactive users run a closed loop (request, wait for the answer, think, repeat); batch work
arrives at a Poisson rate or in bursts. Each request passes the gateway's own pure functions,
imported from gateway.contract.router (admission per class, then `route` over a snapshot of every
replica's load), and runs on a replica modelled as vLLM's continuous batching: up to
max_running sequences, each cycle advancing every running sequence one token while the first
waiting prompts are prefilled in chunks that share the max_num_batched_tokens budget left
beside the decode tokens (as vLLM's scheduler packs them). A cycle's length comes from the same
step model as `predict`; co-resident replicas share the GPUs like processes time-sliced on one
device: while another replica runs a cycle, a cycle progresses slower by the factor measured for
its role (tuner.perfmodel.coresidence: 2.23x for an interactive step beside a decode, 2.59x beside
a prefill; a batch engine keeps 0.48x of its decode speed), and a cycle in progress speeds up or
slows down the moment the other replica goes idle or busy. With gpu_arbitration "freeze" the
gateway's own arbitration (gateway.contract.freezing.arbitrate) freezes the batch replica while
interactive work runs beside it: its cycle in progress ends, no next one starts until the freeze
ends (settle time, starvation bound), and nothing of its work is lost. A replica can fail mid-run (its requests fail; the policy must route around
it) and come back. Batch admission follows the gateway's batch yielding (gateway.contract.yielding.batch_yield:
held while interactive work is active, re-evaluated on every arrival and completion and at the
moment the state says it changes). The run is seeded and bounded in simulated time.

    simulate(scenario, policy_settings, seed) -> SimResult
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from gateway.contract.admission import ClassLoad, admit
from gateway.contract.config import TRAFFIC_CLASSES, ClassLimits, RoutingSettings, TrafficClass
from gateway.contract.freezing import Arbitration, ReplicaWork, arbitrate
from gateway.contract.percentiles import percentile_or_none
from gateway.contract.policy import ReplicaLoad, RequestFeatures
from gateway.contract.router import PolicyState, Route, route
from gateway.contract.yielding import YieldState, batch_limits, batch_yield
from tuner.perfmodel.architecture import resolve_model
from tuner.perfmodel.coresidence import DEFAULT as DEFAULT_CORESIDENCE
from tuner.perfmodel.coresidence import load_coresidence
from tuner.perfmodel.engine import EngineSettings, load_engine
from tuner.perfmodel.hardware import load_hardware
from tuner.perfmodel.predict import Layout, ReplicaModel, build_replica
from tuner.workloads import Workload

# ---- scenario ---------------------------------------------------------------------------------------


class SimReplica(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    traffic_class: TrafficClass
    layout: Layout
    settings: EngineSettings = EngineSettings(gpu_memory_utilization=0.45)
    accepts_priority: bool = False
    long_prefill_token_threshold: int | None = Field(
        None, ge=1, description="Most prompt tokens one request prefills in a cycle (vLLM's argument); None: no cap."
    )
    held_running: int | None = Field(
        None,
        ge=1,
        description="While batch yielding holds (chat around, and its settle after), step at most this many of the "
        "running sequences, oldest first; the others keep their KV cache and wait. An idealised control (vLLM "
        "has none at runtime) that bounds the decode step a chat request can land on; None: every running one.",
    )


class InteractiveLoad(BaseModel):
    """Closed-loop users: each sends a streamed chat, waits for it, thinks, and sends again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(8, ge=0)
    think_time_s: float = Field(2.0, ge=0, description="Mean of an exponential think time.")
    shape: Workload = Workload(input_len=256, output_len=256)


class BatchLoad(BaseModel):
    """Batch requests: Poisson arrivals at `rate_per_s`, plus `burst_size` at once every `burst_every_s`
    from `burst_start_s` on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_per_s: float = Field(0.0, ge=0)
    burst_size: int = Field(0, ge=0)
    burst_every_s: float = Field(60.0, gt=0)
    burst_start_s: float = Field(0.0, ge=0, description="When the first burst lands (e.g. on traffic already running).")
    shape: Workload = Workload(input_len=2048, output_len=128)


class ReplicaFailure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replica: str
    at_s: float = Field(ge=0)
    recover_at_s: float | None = None


class ClassSLO(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: float = Field(gt=0)
    tpot_ms: float = Field(gt=0)


def _default_slo() -> dict[TrafficClass, ClassSLO]:
    """Each class's SLO unless the scenario sets one (a function, so the dict's keys are typed)."""
    return {"interactive": ClassSLO(ttft_ms=1000, tpot_ms=100), "batch": ClassSLO(ttft_ms=60_000, tpot_ms=1000)}


class Scenario(BaseModel):
    """What runs where, what traffic arrives, for how long, and what breaks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "gpt-oss-120b"
    hardware: str = "dgx-spark-pair"
    engine: str = "vllm"
    replicas: tuple[SimReplica, ...] = (
        SimReplica(name="interactive", traffic_class="interactive", layout=Layout(tp=2)),
        SimReplica(name="batch", traffic_class="batch", layout=Layout(pp=2)),
    )
    co_resident: bool = Field(
        True, description="The replicas share the same GPUs and slow each other when both are busy."
    )
    coresidence: str = Field(
        DEFAULT_CORESIDENCE, description="How much they slow each other: a measurement set in data/coresidence/."
    )
    interactive: InteractiveLoad = InteractiveLoad()
    batch: BatchLoad = BatchLoad(rate_per_s=0.5)
    duration_s: float = Field(300.0, gt=0, le=86_400)
    failures: tuple[ReplicaFailure, ...] = ()
    slo: dict[TrafficClass, ClassSLO] = Field(default_factory=_default_slo)


# ---- results ----------------------------------------------------------------------------------------


class ClassResult(BaseModel):
    completed: int
    failed: int
    rejected: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    output_tok_s: float
    goodput_req_s: float
    """Completed requests per second that met both SLOs of their class."""
    spilled: int


class SimResult(BaseModel):
    policy: str
    seed: int
    duration_s: float
    classes: dict[TrafficClass, ClassResult]
    replica_busy_fraction: dict[str, float]
    class_busy_fraction: dict[TrafficClass, float]
    """Per class, the busiest replica serving it: how much of the run it had work."""
    batch_held_fraction: float = 0.0
    """Share of the run during which batch admissions were held for interactive work."""
    batch_frozen_fraction: float = 0.0
    """Share of the run during which a batch replica was frozen (gpu_arbitration "freeze"; the
    largest over batch replicas)."""
    forced_resumes: int = 0
    """Freezes ended by the starvation bound (freeze_max_s) while interactive work went on."""
    batch_step_p50_ms: float | None = None
    batch_step_p99_ms: float | None = None
    """The batch replicas' cycles as they ran (co-residence slowdown included): a freeze takes
    effect when the one in flight ends, so these bound what a chat request landing on one waits."""


# ---- simulation ---------------------------------------------------------------------------------------


def replica_models(scenario: Scenario) -> dict[str, ReplicaModel]:
    """The perf model of each of the scenario's replicas, for the shape of the class it serves."""
    arch, hardware, engine = (
        resolve_model(scenario.model),
        load_hardware(scenario.hardware),
        load_engine(scenario.engine),
    )
    shapes = {"interactive": scenario.interactive.shape, "batch": scenario.batch.shape}
    return {
        r.name: build_replica(arch, hardware, r.layout, shapes[r.traffic_class], r.settings, engine)
        for r in scenario.replicas
    }


@dataclass(slots=True)
class _Request:
    id: int
    traffic_class: TrafficClass
    shape: Workload
    arrived: float
    user: int | None = None
    prefilled: int = 0
    generated: int = 0
    first_token_at: float | None = None
    finished_at: float | None = None
    spilled: bool = False

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - self.arrived) * 1e3

    @property
    def tpot_ms(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None or self.shape.output_len <= 1:
            return None
        return (self.finished_at - self.first_token_at) * 1e3 / (self.shape.output_len - 1)


@dataclass(slots=True)
class _Replica:
    spec: SimReplica
    model: ReplicaModel
    healthy: bool = True
    waiting: deque[_Request] = field(default_factory=deque)
    running: list[_Request] = field(default_factory=list)
    cycle_end: float | None = None
    cycle_id: int = 0
    cycle_chunks: tuple[tuple[_Request, int], ...] = ()
    """The prompt chunks the cycle in progress prefills."""
    cycle_requests: tuple[_Request, ...] = ()
    """The running sequences the cycle in progress steps (all of them unless `held_running` caps it)."""
    slowdown: float = 1.0
    """The contention factor the cycle in progress runs at now."""
    cycle_start: float = 0.0
    cycle_seconds: list[float] = field(default_factory=list)
    """How long each finished cycle took."""
    busy_since: float | None = None
    busy_total: float = 0.0

    def snapshot(self) -> ReplicaLoad:
        return ReplicaLoad(
            name=self.spec.name,
            traffic_class=self.spec.traffic_class,
            in_flight=len(self.running) + len(self.waiting),
            running=len(self.running),
            waiting=len(self.waiting),
            max_num_seqs=self.model.max_running,
            healthy=self.healthy,
            accepts_priority=self.spec.accepts_priority,
        )


class _Simulation:
    def __init__(self, scenario: Scenario, settings: RoutingSettings, seed: int) -> None:
        self.scenario, self.settings, self.seed = scenario, settings, seed
        self.rng = random.Random(seed)
        self.policy_rng = random.Random(seed + 1)
        self.state = PolicyState()
        self.yield_state = YieldState()
        self.held_total = 0.0
        self.now = 0.0
        self.events: list[tuple[float, int, str, object]] = []
        self.order = itertools.count()
        self.ids = itertools.count()
        self.coresidence = load_coresidence(scenario.coresidence) if scenario.co_resident else None
        self.arbitration = Arbitration()
        self.frozen_total: dict[str, float] = {}
        self.forced_resumes = 0
        models = replica_models(scenario)
        self.replicas = {r.name: _Replica(r, models[r.name]) for r in scenario.replicas}
        self.in_flight: dict[TrafficClass, int] = dict.fromkeys(TRAFFIC_CLASSES, 0)
        self.gateway_queue: dict[TrafficClass, deque[_Request]] = {c: deque() for c in TRAFFIC_CLASSES}
        self.done: dict[TrafficClass, list[_Request]] = {c: [] for c in TRAFFIC_CLASSES}
        self.failed: dict[TrafficClass, int] = dict.fromkeys(TRAFFIC_CLASSES, 0)
        self.rejected: dict[TrafficClass, int] = dict.fromkeys(TRAFFIC_CLASSES, 0)

    # -- event plumbing
    def at(self, time: float, kind: str, payload: object = None) -> None:
        heapq.heappush(self.events, (time, next(self.order), kind, payload))

    def run(self) -> SimResult:
        s = self.scenario
        for user in range(s.interactive.users):
            self.at(self.rng.uniform(0, max(s.interactive.think_time_s, 1e-3)), "interactive", user)
        if s.batch.rate_per_s > 0:
            self.at(self.rng.expovariate(s.batch.rate_per_s), "batch_arrival")
        if s.batch.burst_size > 0:
            self.at(s.batch.burst_start_s, "batch_burst")
        for failure in s.failures:
            self.at(failure.at_s, "fail", failure.replica)
            if failure.recover_at_s is not None:
                self.at(failure.recover_at_s, "recover", failure.replica)
        while self.events and self.events[0][0] <= s.duration_s:
            self.now, _, kind, payload = heapq.heappop(self.events)
            getattr(self, f"_on_{kind}")(payload)
        return self._result()

    # -- arrivals
    def _on_interactive(self, user: int) -> None:
        self._arrive(_Request(next(self.ids), "interactive", self.scenario.interactive.shape, self.now, user=user))

    def _on_batch_arrival(self, _: object) -> None:
        self._arrive(_Request(next(self.ids), "batch", self.scenario.batch.shape, self.now))
        self.at(self.now + self.rng.expovariate(self.scenario.batch.rate_per_s), "batch_arrival")

    def _on_batch_burst(self, _: object) -> None:
        for _ in range(self.scenario.batch.burst_size):
            self._arrive(_Request(next(self.ids), "batch", self.scenario.batch.shape, self.now))
        self.at(self.now + self.scenario.batch.burst_every_s, "batch_burst")

    def _arrive(self, request: _Request) -> None:
        cls = request.traffic_class
        if cls == "interactive":
            self._update_yield(arriving=1)
        verdict = admit(ClassLoad(self.in_flight[cls], len(self.gateway_queue[cls])), self._limits(cls))
        if verdict == "run":
            self._dispatch(request)
        elif verdict == "queue":
            self.gateway_queue[cls].append(request)
        else:
            self.rejected[cls] += 1
            self._user_again(request)

    def _dispatch(self, request: _Request) -> None:
        features = (
            RequestFeatures(endpoint="chat", stream=True, max_tokens=request.shape.output_len)
            if request.traffic_class == "interactive"
            else RequestFeatures(endpoint="completions", stream=False, prompts=2, max_tokens=request.shape.output_len)
        )
        snapshot = [r.snapshot() for r in self.replicas.values()]
        decision, self.state = route(
            features, request.traffic_class, snapshot, self.settings, self.state, self.policy_rng
        )
        if not isinstance(decision, Route):
            self.failed[request.traffic_class] += 1
            self._user_again(request)
            return
        request.spilled = decision.spilled
        self.in_flight[request.traffic_class] += 1
        replica = self.replicas[decision.replica]
        replica.waiting.append(request)
        if request.traffic_class == "interactive":
            self._update_freeze()
        self._kick(replica)

    # -- replicas
    def _busy(self, replica: _Replica) -> bool:
        return replica.cycle_end is not None

    def _kick(self, replica: _Replica) -> None:
        """Start a cycle if the replica is idle and has work."""
        if self._busy(replica) or not replica.healthy:
            return
        while replica.waiting and len(replica.running) < replica.model.max_running:
            replica.running.append(replica.waiting.popleft())
        if not replica.running or replica.spec.name in self.arbitration.frozen:  # frozen: no next step
            if replica.busy_since is not None:
                replica.busy_total += self.now - replica.busy_since
                replica.busy_since = None
            self._rebalance()  # idle now: the others run alone
            return
        if replica.busy_since is None:
            replica.busy_since = self.now
        stepping = self._stepping(replica)
        decoding = [r for r in stepping if r.prefilled >= r.shape.input_len]
        room = max(1, replica.model.max_num_batched_tokens - len(decoding))
        per_request = replica.spec.long_prefill_token_threshold or room
        chunks: list[tuple[_Request, int]] = []
        for request in stepping:
            if room and request.prefilled < request.shape.input_len:
                chunk = min(room, per_request, request.shape.input_len - request.prefilled)
                chunks.append((request, chunk))
                room -= chunk
        prefill = sum(chunk for _, chunk in chunks)
        reached = sum(r.prefilled + chunk for r, chunk in chunks) / len(chunks) if chunks else 0.0
        context = sum(r.shape.input_len + r.generated for r in decoding) / len(decoding) if decoding else 0.0
        seconds = replica.model.cycle_seconds(len(decoding), context, prefill, reached, max(len(chunks), 1))
        replica.cycle_chunks, replica.cycle_requests = tuple(chunks), tuple(stepping)
        replica.cycle_start = self.now
        replica.slowdown = self._slowdown(replica)
        self._schedule_cycle(replica, self.now + seconds * replica.slowdown)
        self._rebalance()

    def _stepping(self, replica: _Replica) -> list[_Request]:
        """The running sequences the next cycle steps: the oldest `held_running` while batch yielding
        holds (its settle included), every one otherwise."""
        cap = replica.spec.held_running
        if cap is None or not self.yield_state.holding:
            return replica.running
        return replica.running[:cap]

    def _slowdown(self, replica: _Replica) -> float:
        """The measured co-residence factor (tuner.perfmodel.coresidence) while another replica
        runs a cycle: by this replica's role, its own cycle's and the others' prefill."""
        others = [o for o in self.replicas.values() if o is not replica and self._busy(o)]
        if self.coresidence is None or not others:
            return 1.0
        other_prefill = any(o.cycle_chunks for o in others)
        return self.coresidence.slowdown(replica.spec.traffic_class, bool(replica.cycle_chunks), other_prefill)

    def _schedule_cycle(self, replica: _Replica, end: float) -> None:
        replica.cycle_end = end
        replica.cycle_id += 1
        self.at(end, "cycle", (replica.spec.name, replica.cycle_id))

    def _rebalance(self) -> None:
        """Re-time every cycle in progress whose contention changed: the work left is kept, the
        speed it is done at follows whether another replica is busy now."""
        for replica in self.replicas.values():
            if replica.cycle_end is None:
                continue
            slowdown = self._slowdown(replica)
            if slowdown != replica.slowdown:
                work_left = (replica.cycle_end - self.now) / replica.slowdown
                replica.slowdown = slowdown
                self._schedule_cycle(replica, self.now + work_left * slowdown)

    def _on_cycle(self, payload: tuple[str, int]) -> None:
        name, cycle_id = payload
        replica = self.replicas[name]
        if cycle_id != replica.cycle_id or not replica.healthy:
            return  # the replica failed, or the cycle was re-timed, after this event was set
        replica.cycle_end = None
        replica.cycle_seconds.append(self.now - replica.cycle_start)
        chunks = {id(request): chunk for request, chunk in replica.cycle_chunks}
        finished = []
        for request in replica.cycle_requests:
            if id(request) in chunks:
                request.prefilled += chunks[id(request)]
                if request.prefilled >= request.shape.input_len:
                    request.generated, request.first_token_at = 1, self.now
            elif request.prefilled >= request.shape.input_len:
                request.generated += 1
            if request.generated >= request.shape.output_len:
                replica.running.remove(request)
                finished.append(request)
        # Finished only once the whole cycle is counted: a finish lets queued work in, which may
        # start this replica's next cycle, and that one must see every sequence's new state.
        for request in finished:
            self._finish(request, ok=True)
        self._kick(replica)

    def _finish(self, request: _Request, ok: bool) -> None:
        cls = request.traffic_class
        self.in_flight[cls] -= 1
        if ok:
            request.finished_at = self.now
            self.done[cls].append(request)
        else:
            self.failed[cls] += 1
        self._user_again(request)
        self._grant(cls)
        if cls == "interactive":
            self._update_yield()
            self._update_freeze()

    def _limits(self, cls: TrafficClass) -> ClassLimits:
        limits = self.settings.limits[cls]
        return batch_limits(limits, self.settings, self.yield_state) if cls == "batch" else limits

    def _grant(self, cls: TrafficClass) -> None:
        """Dispatch queued requests of the class while it is under its (current) limit."""
        while self.gateway_queue[cls] and admit(ClassLoad(self.in_flight[cls], 0), self._limits(cls)) == "run":
            self._dispatch(self.gateway_queue[cls].popleft())

    def _update_yield(self, arriving: int = 0) -> None:
        """Re-evaluate batch yielding now (with `arriving` interactive requests about to be admitted);
        batch admissions follow the new limit, and a timer is set for when the state would change
        by itself."""
        active = self.in_flight["interactive"] + len(self.gateway_queue["interactive"]) + arriving
        state = batch_yield(active, self.now, self.settings, self.yield_state)
        if state == self.yield_state:
            return
        if self.yield_state.holding and not state.holding:
            self.held_total += self.now - self.yield_state.since
        self.yield_state = state
        change = state.next_change(self.settings)
        if change is not None:
            self.at(max(change, self.now), "yield_check")
        self._grant("batch")

    def _on_yield_check(self, _: object) -> None:
        self._update_yield()

    def _update_freeze(self) -> None:
        """Re-evaluate GPU arbitration (gateway.contract.freezing, the gateway's own function) over the
        interactive requests on each replica. A replica frozen now finishes the cycle in progress
        and starts no other (vLLM's pause takes effect after the current step); one resumed starts
        its next cycle at once. A timer is set for when the state would change by itself."""
        if self.settings.arbitration.mode != "freeze" and not self.arbitration.holds:
            return
        group = "shared" if self.scenario.co_resident else None
        work = [
            ReplicaWork(
                name,
                r.spec.traffic_class,
                group,
                sum(q.traffic_class == "interactive" for q in itertools.chain(r.running, r.waiting)),
            )
            for name, r in self.replicas.items()
        ]
        state = arbitrate(work, self.now, self.settings, self.arbitration)
        if state == self.arbitration:
            return
        for name, hold in self.arbitration.holds:
            after = state.of(name)
            if hold.holding and not after.holding:
                self.frozen_total[name] = self.frozen_total.get(name, 0.0) + self.now - hold.since
                self.forced_resumes += after.forced
        resumed = self.arbitration.frozen - state.frozen
        self.arbitration = state
        change = state.next_change(self.settings)
        if change is not None:
            self.at(max(change, self.now), "freeze_check")
        for name in resumed:
            self._kick(self.replicas[name])

    def _on_freeze_check(self, _: object) -> None:
        self._update_freeze()

    def _user_again(self, request: _Request) -> None:
        if request.user is not None:
            think = (
                self.rng.expovariate(1 / self.scenario.interactive.think_time_s)
                if self.scenario.interactive.think_time_s
                else 0.0
            )
            self.at(self.now + think, "interactive", request.user)

    def _on_fail(self, name: str) -> None:
        replica = self.replicas[name]
        replica.healthy = False
        replica.cycle_end = None
        replica.cycle_id += 1
        if replica.busy_since is not None:
            replica.busy_total += self.now - replica.busy_since
            replica.busy_since = None
        lost = replica.running + list(replica.waiting)
        replica.running, replica.waiting = [], deque()
        for request in lost:
            self._finish(request, ok=False)
        self._rebalance()

    def _on_recover(self, name: str) -> None:
        self.replicas[name].healthy = True

    # -- results
    def _result(self) -> SimResult:
        duration = self.scenario.duration_s
        classes = {}
        for cls in TRAFFIC_CLASSES:
            done = self.done[cls]
            slo = self.scenario.slo[cls]
            ttfts = [t for r in done if (t := r.ttft_ms) is not None]
            tpots = [t for r in done if (t := r.tpot_ms) is not None]
            good = sum(1 for r in done if (r.ttft_ms or 0.0) <= slo.ttft_ms and (r.tpot_ms or 0.0) <= slo.tpot_ms)
            classes[cls] = ClassResult(
                completed=len(done),
                failed=self.failed[cls],
                rejected=self.rejected[cls],
                ttft_p50_ms=percentile_or_none(ttfts, 50),
                ttft_p99_ms=percentile_or_none(ttfts, 99),
                tpot_p50_ms=percentile_or_none(tpots, 50),
                tpot_p99_ms=percentile_or_none(tpots, 99),
                output_tok_s=sum(r.shape.output_len for r in done) / duration,
                goodput_req_s=good / duration,
                spilled=sum(r.spilled for r in done),
            )
        for replica in self.replicas.values():
            if replica.busy_since is not None:
                replica.busy_total += duration - replica.busy_since
                replica.busy_since = None
        if self.yield_state.holding:
            self.held_total += duration - self.yield_state.since
        for name, hold in self.arbitration.holds:
            if hold.holding:
                self.frozen_total[name] = self.frozen_total.get(name, 0.0) + duration - hold.since
        busy = {n: r.busy_total / duration for n, r in self.replicas.items()}
        batch_steps = [
            1e3 * t for r in self.replicas.values() if r.spec.traffic_class == "batch" for t in r.cycle_seconds
        ]
        return SimResult(
            policy=self.settings.policy,
            seed=self.seed,
            duration_s=duration,
            classes=classes,
            replica_busy_fraction=busy,
            class_busy_fraction={
                cls: max((busy[n] for n, r in self.replicas.items() if r.spec.traffic_class == cls), default=0.0)
                for cls in TRAFFIC_CLASSES
            },
            batch_held_fraction=self.held_total / duration,
            batch_frozen_fraction=max(self.frozen_total.values(), default=0.0) / duration,
            forced_resumes=self.forced_resumes,
            batch_step_p50_ms=percentile_or_none(batch_steps, 50),
            batch_step_p99_ms=percentile_or_none(batch_steps, 99),
        )


def simulate(scenario: Scenario, policy_settings: RoutingSettings | None = None, seed: int = 0) -> SimResult:
    """Run the scenario once under the routing settings (policy name included); same seed, same result."""
    return _Simulation(scenario, policy_settings or RoutingSettings(), seed).run()
