"""Cost of one collective (all-reduce, point-to-point send) as a function of message size.

Measured collective times are far from a straight line between the small-message latency and
the large-message bandwidth: on the Spark pair, messages of a few hundred KB (a decode step's
activations at batch 64-128) sit in a poor middle. So the cost is interpolated piecewise through
the measured points, linearly in log(bytes)-log(time), and extended past the last point at the
link's large-message bandwidth. Below the first point the cost is flat (latency-bound).

Where this is wrong: between two measured points the true curve can bend (protocol switches in
NCCL, LL -> LL128 -> Simple, happen at sizes we have no point for), and a point measured on a
different topology (see the profile's notes) biases the segment around it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuner.perfmodel.sourced import Figure, FigureKind


class CollectivePoint(BaseModel):
    """One measured (or derived) collective time for one message size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes: float = Field(gt=0)
    microseconds: float = Field(gt=0)
    kind: FigureKind
    source: str
    note: str = ""


class CollectiveCurve(BaseModel):
    """Time of one collective vs message size: points, then a bandwidth past the last one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    points: tuple[CollectivePoint, ...] = Field(min_length=1)
    large_message_bandwidth_gbs: float = Field(gt=0)

    @model_validator(mode="after")
    def _sorted_and_monotonic(self) -> CollectiveCurve:
        sizes = [p.bytes for p in self.points]
        if sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
            raise ValueError("collective points must have distinct sizes in ascending order")
        times = [p.microseconds for p in self.points]
        if times != sorted(times):
            raise ValueError("a larger message cannot take less time: collective times must not decrease")
        return self

    def seconds(self, nbytes: float) -> float:
        """Time of one collective moving `nbytes` (0 bytes costs nothing: no call is made)."""
        if nbytes <= 0:
            return 0.0
        points = self.points
        if nbytes <= points[0].bytes:
            return points[0].microseconds * 1e-6
        last = points[-1]
        if nbytes >= last.bytes:
            return last.microseconds * 1e-6 + (nbytes - last.bytes) / (self.large_message_bandwidth_gbs * 1e9)
        i = bisect_left([p.bytes for p in points], nbytes)
        lo, hi = points[i - 1], points[i]
        slope = math.log(hi.microseconds / lo.microseconds) / math.log(hi.bytes / lo.bytes)
        return lo.microseconds * (nbytes / lo.bytes) ** slope * 1e-6


class LinkProfile(BaseModel):
    """A link between devices, described by its measured collective curves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    allreduce_bus_bandwidth_gbs: Figure
    p2p_bandwidth_gbs: Figure
    allreduce: tuple[CollectivePoint, ...]
    p2p: tuple[CollectivePoint, ...]

    @cached_property
    def allreduce_curve(self) -> CollectiveCurve:
        return CollectiveCurve(
            points=self.allreduce, large_message_bandwidth_gbs=self.allreduce_bus_bandwidth_gbs.value
        )

    @cached_property
    def p2p_curve(self) -> CollectiveCurve:
        return CollectiveCurve(points=self.p2p, large_message_bandwidth_gbs=self.p2p_bandwidth_gbs.value)
