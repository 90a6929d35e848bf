"""Mixed traffic: interactive users and a batch stream hitting the endpoint at the same time.

This is the traffic Tandem exists for, so the routing evaluation and the tuner drive it.
The text form used on the command line::

    interactive=N[:WORKLOAD],batch=M[:WORKLOAD]        # batch: M concurrent requests (closed loop)
    interactive=N[:WORKLOAD],batch-rate=R[:WORKLOAD]   # batch: R requests/s (Poisson arrivals)

``interactive=N`` is N closed-loop users, one request in flight each, waiting
``think_time_s`` between requests. WORKLOAD is a preset name (tuner/workloads.py); without
it a class uses the run's default workload. Either class may be left out.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tuner.bench.config import ClosedLoop, OpenLoop, TrafficStream, WorkloadSpec, _Model


class MixSpec(_Model):
    interactive_users: int = Field(default=0, ge=0)
    interactive_workload: str | None = None
    think_time_s: float = Field(default=0.0, ge=0.0)
    batch_concurrency: int | None = Field(default=None, ge=1)
    batch_rate: float | None = Field(default=None, gt=0)
    batch_workload: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MixSpec:
        if self.batch_concurrency is not None and self.batch_rate is not None:
            raise ValueError("give the batch stream a concurrency (batch=M) or a rate (batch-rate=R), not both")
        if not self.interactive_users and self.batch_concurrency is None and self.batch_rate is None:
            raise ValueError("a mix needs interactive users or a batch stream")
        return self

    @classmethod
    def parse(cls, text: str, *, think_time_s: float = 0.0) -> MixSpec:
        values: dict[str, object] = {"think_time_s": think_time_s}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, rest = part.partition("=")
            amount, _, workload = rest.partition(":")
            if not sep or not amount:
                raise ValueError(f"bad mix part {part!r}: expected e.g. interactive=4 or batch=32")
            if key == "interactive":
                values |= {"interactive_users": int(amount), "interactive_workload": workload or None}
            elif key == "batch":
                values |= {"batch_concurrency": int(amount), "batch_workload": workload or None}
            elif key == "batch-rate":
                values |= {"batch_rate": float(amount), "batch_workload": workload or None}
            else:
                raise ValueError(f"bad mix part {part!r}: classes are interactive, batch, batch-rate")
        return cls(**values)

    def streams(self, default_workload: WorkloadSpec) -> list[TrafficStream]:
        def shape(preset: str | None) -> WorkloadSpec:
            if preset is None:
                return default_workload
            return WorkloadSpec.from_preset(
                preset, range_ratio=default_workload.range_ratio, ignore_eos=default_workload.ignore_eos
            )

        streams: list[TrafficStream] = []
        if self.interactive_users:
            streams.append(
                TrafficStream(
                    traffic_class="interactive",
                    workload=shape(self.interactive_workload),
                    load=ClosedLoop(concurrency=self.interactive_users, think_time_s=self.think_time_s),
                )
            )
        if self.batch_concurrency is not None:
            batch_load: ClosedLoop | OpenLoop = ClosedLoop(concurrency=self.batch_concurrency)
        elif self.batch_rate is not None:
            batch_load = OpenLoop(request_rate=self.batch_rate)
        else:
            return streams
        streams.append(TrafficStream(traffic_class="batch", workload=shape(self.batch_workload), load=batch_load))
        return streams
