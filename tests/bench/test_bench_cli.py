"""`tuner bench` and `tuner bench plot` end to end: exit codes, the results file, the chart."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tuner.bench import SCHEMA_VERSION, ResultSet
from tuner.cli import app

runner = CliRunner()
SMALL = ["--input-len", "16", "--output-len", "4", "--warmup", "1"]


def bench(*args: str):
    return runner.invoke(app, ["bench", *args], env={"COLUMNS": "200"})


def test_sweep_writes_a_versioned_results_file_with_its_configuration(upstream, tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    result = bench(
        "--url",
        upstream.base_url,
        "--concurrency",
        "1,3",
        "--num-requests",
        "6",
        "--slo",
        "ttft:1000",
        "-o",
        str(out),
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    assert "c=3" in result.output and "TTFT p50" in result.output
    raw = json.loads(out.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert raw["client"]["name"] == "tandem-bench" and raw["client"]["version"]
    runs = raw["runs"]
    assert [run["config"]["streams"][0]["load"]["concurrency"] for run in runs] == [1, 3]
    first = runs[0]["config"]
    assert first["endpoint"] == {
        "url": upstream.base_url,
        "model": "m",
        "api": "completions",
        "headers": {},
        "timeout_s": 600.0,
    }
    assert first["streams"][0]["workload"]["input_len"] == 16 and first["slo"]["ttft_ms"] == 1000
    assert runs[1]["overall"]["completed"] == 6
    assert ResultSet.load(out).runs[1].sweep_point == ("concurrency", 3.0)


def test_chat_api_and_mix_tag_requests(upstream, tmp_path: Path) -> None:
    out = tmp_path / "mix.json"
    result = bench(
        "--url",
        upstream.base_url,
        "--api",
        "chat",
        "--mix",
        "interactive=1,batch=2",
        "--num-requests",
        "9",
        "-o",
        str(out),
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    assert "messages" in upstream.requests[-1]
    assert set(ResultSet.load(out).runs[0].by_class) == {"interactive", "batch"}
    assert {"interactive", "batch"} <= set(upstream.classes)


def test_dead_endpoint_still_writes_results_and_exits_1(dead_url, tmp_path: Path) -> None:
    out = tmp_path / "dead.json"
    result = bench("--url", dead_url, "--model", "m", "--num-requests", "3", "-o", str(out), *SMALL)
    assert result.exit_code == 1
    assert "connection" in result.output
    assert ResultSet.load(out).runs[0].overall.errors == {"connection": 3}
    no_model = bench("--url", dead_url, "--num-requests", "3")
    assert no_model.exit_code == 1 and "pass --model" in no_model.output


def test_bad_arguments_exit_2() -> None:
    url = ["--url", "http://127.0.0.1:9/v1", "--model", "m"]
    assert bench(*url, "--concurrency", "2", "--request-rate", "1").exit_code == 2
    assert bench(*url, "--slo", "latency:5").exit_code == 2
    assert bench(*url, "--concurrency", "0").exit_code == 2
    assert bench(*url, "--workload", "huge").exit_code == 2
    assert bench(*url, "--mix", "batch=2,batch-rate=3").exit_code == 2
    assert bench("--model", "m").exit_code == 2


def test_plot_draws_one_png_from_several_result_sets(upstream, tmp_path: Path) -> None:
    for name in ("a", "b"):
        ok = bench(
            "--url",
            upstream.base_url,
            "--concurrency",
            "1,2",
            "--num-requests",
            "4",
            "--label",
            name,
            "-o",
            str(tmp_path / f"{name}.json"),
            *SMALL,
        )
        assert ok.exit_code == 0, ok.output
    chart = tmp_path / "chart.png"
    result = runner.invoke(
        app, ["bench", "plot", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(chart), "--stat", "p99"]
    )
    assert result.exit_code == 0, result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_files_that_are_not_results(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"schema_version": 99}')
    result = runner.invoke(app, ["bench", "plot", str(bogus), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert not (tmp_path / "x.png").exists()
