"""How late a generating CPU engine serves its own HTTP server: a pause sent 5 chunks into a stream.

    flock /tmp/tandem-heavy.lock .venv/bin/python benchmarks/engine_stall.py [--trials 5] [--tokens 2000]

Starts the demo stack (deploy/plans/cpu-demo.yaml). For each replica, each trial: wait until the
engine is idle, stream a chat answer of --tokens tokens (EOS ignored) through the gateway, and once
5 lines have arrived send Tandem's pause (/tandem/pause) straight to the engine. Prints how long the
pause took to be answered, and whether it froze the answer mid-way or came after its end; the
engine is resumed after each trial. A baseline in the same run: the same pause sent to the idle
engine. Why it matters: aborts and /metrics wait in the same queue as the pause, so this is how
late a client's disconnect reaches a busy engine on this machine (tests/stack/stack_support.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from deploy.plan import load_plan, shipped_plan
from deploy.stack import running_stack
from gateway.engine_pause import PAUSE_PATH, RESUME_PATH


def metric(root: str, name: str) -> float:
    text = httpx.get(f"{root}/metrics", timeout=120).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def idle(root: str) -> None:
    while metric(root, "vllm:num_requests_running") + metric(root, "vllm:num_requests_waiting"):
        time.sleep(0.2)


def timed_pause(root: str) -> float:
    start = time.monotonic()
    httpx.post(f"{root}{PAUSE_PATH}", params={"lease_s": 120, "seq": time.time_ns()}, timeout=120).raise_for_status()
    return time.monotonic() - start


def resume(root: str) -> None:
    httpx.post(f"{root}{RESUME_PATH}", params={"seq": time.time_ns()}, timeout=120).raise_for_status()


def trial(base_url: str, model: str, replica: str, root: str, tokens: int) -> tuple[float, float]:
    """(seconds the pause took, tokens made when it was served) for one stream."""
    idle(root)
    before = metric(root, "vllm:generation_tokens_total")
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "write a long story"}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", f"{base_url}/chat/completions", json=body, headers={"X-Tandem-Class": replica}) as reply,
    ):
        lines = reply.iter_lines()
        for _ in range(5):
            next(lines)
        took = timed_pause(root)
        time.sleep(1.5)  # the step in flight when the pause came lands
        made = metric(root, "vllm:generation_tokens_total") - before
    resume(root)
    return took, made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=2000)
    args = parser.parse_args()
    with running_stack(load_plan(shipped_plan("cpu-demo"))) as deployed:
        for replica, url in sorted(deployed.replica_urls.items()):
            assert url is not None, f"{replica} has no URL (http data path expected)"
            root = url.removesuffix("/v1")
            idle(root)
            baseline = [timed_pause(root) for _ in range(3)]
            resume(root)
            results = [trial(deployed.base_url, deployed.model, replica, root, args.tokens) for _ in range(args.trials)]
            late = [took for took, _ in results]
            after_end = sum(made >= args.tokens for _, made in results)
            print(
                f"{replica}: pause to an idle engine {statistics.median(baseline):.3f} s (median of 3); "
                f"5 lines into a {args.tokens}-token stream {min(late):.2f}-{max(late):.2f} s "
                f"(median {statistics.median(late):.2f} s, {statistics.median(late) / statistics.median(baseline):.0f}x); "
                f"served after the answer's end in {after_end} of {len(results)} trials"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
