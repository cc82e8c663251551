"""Smoke check of every benchmark: each runs at its smallest settings (`--smoke`) against the
session broker, completes, and every table row it feeds reports a finite ratio. No timing is
asserted: the figures of a smoke run mean nothing (`make bench` measures)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import report, rows

_MEASURED = {row.benchmark for row in rows.ROWS if row.benchmark is not None}


@pytest.mark.parametrize("benchmark", rows.BENCHMARKS, ids=lambda b: b.name)
def test_benchmark_runs_and_reports_a_ratio(
    benchmark: rows.Benchmark, kafka_bootstrap: str, tmp_path: Path
) -> None:
    doc = report.run_benchmark(benchmark, bootstrap=kafka_bootstrap, smoke=True, logdir=tmp_path)
    log = (tmp_path / f"{benchmark.name}.log").read_text(errors="replace")
    assert "error" not in doc, f"{doc['error']}\n{log[-3000:]}"
    fed = [row for row in rows.ROWS if row.benchmark == benchmark.name]
    assert fed, f"no row of BENCHMARKS.md shows {benchmark.name}"
    for row in fed:
        cell = rows.evaluate(row, {benchmark.name: doc})
        assert isinstance(cell, rows.Cell), cell
        assert cell.ratio is not None and math.isfinite(cell.ratio), (row.what, doc)
        assert cell.baseline and cell.figure
    # The markdown table carries the ratio of each of its rows.
    document = {
        "generated_at": "now",
        "command": "test",
        "smoke": True,
        "seconds": doc["seconds"],
        "note": "",
        "machine": {"cpus": 2, "system": "test", "load_average": {"start": [0], "end": [0]}},
        "results": {benchmark.name: doc},
    }
    table = report.markdown(document)
    for row in fed:
        line = next(x for x in table.splitlines() if x.startswith(f"| {row.what} |"))
        cell = rows.evaluate(row, {benchmark.name: doc})
        assert isinstance(cell, rows.Cell)
        assert f"{cell.ratio:.2f}" in line, line


def test_merge_measures_one_benchmark_again_and_keeps_the_others(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    results, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    common = ["--smoke", "--results", str(results), "--markdown", str(markdown)]
    with pytest.raises(SystemExit) as refused:  # nothing to merge into yet
        report.main(["--only", "privacy", "--merge", *common])
    assert refused.value.code == 2
    assert report.main(["--only", "privacy", *common]) == 0
    first = json.loads(results.read_text())
    # Another benchmark measured earlier: kept as it was.
    earlier = {"seconds": 1.0, "marker": "earlier"}
    results.write_text(json.dumps(first | {"results": first["results"] | {"other": earlier}}))
    with pytest.raises(SystemExit) as refused:  # a full run never merges into a smoke one
        report.main(["--only", "privacy", "--merge", "--results", str(results)])
    assert refused.value.code == 2
    assert report.main(["--only", "privacy", "--merge", "--note", "after the fix", *common]) == 0
    merged = json.loads(results.read_text())
    assert merged["results"]["other"] == earlier
    assert merged["results"]["privacy"] != first["results"]["privacy"]
    assert "error" not in merged["results"]["privacy"]
    assert merged["generated_at"] == first["generated_at"]
    [update] = merged["updates"]
    assert update["benchmarks"] == ["privacy"] and update["note"] == "after the fix"
    assert "after the fix" not in update["command"]  # the note is shown on its own
    assert "Measured again since: `privacy` by `python -m bench --only privacy --merge" in (
        markdown.read_text()
    )


def test_every_benchmark_feeds_a_row_and_every_issue_row_is_there() -> None:
    assert {b.name for b in rows.BENCHMARKS} == _MEASURED
    issue_rows = [row for row in rows.ROWS if row.issue_row]
    assert len(issue_rows) == 8
    assert [row.what for row in issue_rows if row.benchmark is None] == []


def test_a_webhook_goal_below_the_bare_baseline_says_it_is_a_limit_of_the_machine() -> None:
    def doc(base_p99: float) -> dict[str, object]:
        run = {"requests_per_s": 500.0, "p50_ms": 20.0, "p99_ms": 70.0}
        base = {"requests_per_s": 800.0, "p50_ms": 10.0, "p99_ms": base_p99}
        return {
            "commands": {
                "webhook": run,
                "webhook_with_idempotency_key": run,
                "baseline_bare_fastapi": base,
                "ratio_rps": 0.625,
                "ratio_rps_keyed": 0.625,
                "connections": 16,
            }
        }

    plain = rows.ROWS[0]
    assert plain.evaluate is not None
    over = plain.evaluate(doc(base_p99=57.0))
    assert over.met is False
    assert "cannot be met here; ours adds 13 ms" in over.figure
    under = plain.evaluate(doc(base_p99=30.0))
    assert under.met is False and "cannot be met" not in under.figure  # ours is what is slow


def test_the_quiet_row_says_when_the_triggered_baseline_itself_is_over_the_goal() -> None:
    """No negative interval: when the triggered pipeline's own p50 is over 2 s, the row says
    that no poll interval could meet the goal in that run; otherwise it says the idle interval
    the budget gives one workspace, and W workspaces sharing a key."""

    def doc(base_p50: float, p99: float = 1.9, share: float = 0.2502) -> dict[str, object]:
        latency = {"p50_s": 1.1, "p99_s": p99, "count": 20}
        return {
            "quiet_s": 600.0,
            "workspaces": 20,
            "keys": 20,
            "idle_interval_s": 1.92,
            "settings": {"interval_max_s": 1.0, "idle_budget_share": 0.25},
            "trigger_latency": latency,
            "baseline_triggered": {"p50_s": base_p50, "p99_s": 44.6, "count": 20},
            "missing": 0,
            "ratio_p99": 0.34,
            "requests_per_minute_per_key": 125.1,
            "budget_share": share,
        }

    quiet = next(row for row in rows.ROWS if row.evaluate is not None and "quiet" in row.what)
    assert quiet.evaluate is not None
    slow = quiet.evaluate(doc(base_p50=14.7, p99=15.4))
    assert slow.met is False
    assert "triggered baseline's own p50 (14.70 s) is over 2 s" in slow.figure
    assert "-" not in slow.figure.split("missing")[1]  # no negative figure
    fast = quiet.evaluate(doc(base_p50=0.1))
    assert fast.met is True  # 25.02 % is the 25.0 % the row prints
    assert "one workspace is polled every 1.92 s and a key shared by W " in fast.figure
    assert quiet.evaluate(doc(base_p50=0.1, p99=2.1)).met is False
    assert quiet.evaluate(doc(base_p50=0.1, share=0.26)).met is False
