"""Ray Serve on a local head that the test owns (deploy.stack.start_local_head), for the deploy
tests that run deployments on real Ray without a whole stack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def local_serve(num_cpus: int = 2) -> Iterator[None]:
    ray = pytest.importorskip("ray")
    from ray import serve

    from deploy.stack import start_local_head

    start_local_head(num_cpus=num_cpus)
    try:
        serve.start(proxy_location="Disabled")
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
