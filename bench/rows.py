"""What `python -m bench` shows: the benchmarks it runs and the rows of BENCHMARKS.md.

Consumes a benchmark's JSON document (`python -m bench.<name>`); produces, per row, a `Cell`:
the figure, its baseline from the same run, the ratio, and whether issue 20's goal is met.

    cell = evaluate(ROWS[3], {"wait": json.loads(output)})
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BENCHMARKS", "ROWS", "Benchmark", "Cell", "Row", "evaluate", "polling_limit"]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark module, run as `python -m bench.<name> [args] [--smoke]`."""

    name: str
    about: str
    args: tuple[str, ...] = ()


# In the order they run; the long quiet spell last but one, the CPU-only one last.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("webhook", "webhook commands and hook delivery"),
    Benchmark("wait", "the ?wait round trip of a search"),
    Benchmark("agents", "the command agents"),
    Benchmark("poller", "the poller's backfill and trigger latency"),
    Benchmark("lag_refresh", "one lag refresh over 500 partitions"),
    Benchmark("push", "the trigger with Dastra's webhook pushing a poll"),
    Benchmark("quiet", "the trigger after a quiet spell"),
    Benchmark("privacy", "payload modes (CPU only)"),
)


@dataclass(frozen=True)
class Cell:
    """A row's evaluation: what it measured, its baseline, the ratio, whether the goal is met
    (None: no goal, or not measured)."""

    figure: str
    baseline: str
    ratio: float | None
    ratio_of: str
    met: bool | None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One line of the table. `benchmark` None: not measured (`reason` says why)."""

    what: str
    goal: str
    benchmark: str | None
    evaluate: Callable[[dict[str, Any]], Cell] | None = None
    reason: str = ""
    issue_row: bool = True


# --- the rows ------------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _s(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _le(value: Any, limit: float) -> bool:
    return value is not None and value <= limit


def _webhook(keyed: bool, ratio_goal: float, p99_goal: float) -> Callable[[dict[str, Any]], Cell]:
    def evaluate(doc: dict[str, Any]) -> Cell:
        commands = doc["commands"]
        run = commands["webhook_with_idempotency_key" if keyed else "webhook"]
        base = commands["baseline_bare_fastapi"]
        ratio = commands["ratio_rps_keyed" if keyed else "ratio_rps"]
        limit = ""
        if _le(p99_goal, base["p99_ms"]):
            # A measured limit, not a guess: the bare endpoint itself is over the goal here.
            limit = (
                f"; the bare endpoint's own p99 ({_ms(base['p99_ms'])}) is over the "
                f"{p99_goal:g} ms goal on this machine (server and load generator share its "
                "cores), so the goal cannot be met here; ours adds "
                f"{_ms(run['p99_ms'] - base['p99_ms'])} to it"
            )
        return Cell(
            figure=f"{run['requests_per_s']:.0f} req/s, p50 {_ms(run['p50_ms'])}, "
            f"p99 {_ms(run['p99_ms'])}{limit}",
            baseline=f"bare FastAPI 202: {base['requests_per_s']:.0f} req/s, "
            f"p99 {_ms(base['p99_ms'])}",
            ratio=ratio,
            ratio_of="req/s",
            met=ratio is not None and ratio >= ratio_goal and _le(run["p99_ms"], p99_goal),
            values={"run": run, "baseline": base, "connections": commands["connections"]},
        )

    return evaluate


def _agents_paced(doc: dict[str, Any]) -> Cell:
    paced = doc["paced_latency"]
    direct = paced["baseline_direct_create_task"]
    p50, p99 = paced["p50_produce_to_result_s"] * 1000, paced["p99_produce_to_result_s"] * 1000
    latency_ms = doc["sandbox_latency_s"] * 1000
    # The issue's measure: the pipeline's p99 minus Dastra's injected latency.
    overhead = p99 - latency_ms
    return Cell(
        figure=f"{paced['rate_per_s']:.0f}/s: p50 {_ms(p50)}, p99 {_ms(p99)} "
        f"(overhead p99 {_ms(overhead)})",
        baseline=f"POST Tasks direct: p50 {_ms(direct['p50_ms'])}, p99 {_ms(direct['p99_ms'])}",
        ratio=paced["ratio_p99"],
        ratio_of="p99",
        met=overhead <= 100,
        values={"overhead_p99_ms": round(overhead, 2), "paced": paced},
    )


def _wait(doc: dict[str, Any]) -> Cell:
    trip, base = doc["round_trip"], doc["baseline_direct_search"]
    statuses = trip["statuses"]
    other = {k: v for k, v in statuses.items() if k != "200"}
    return Cell(
        figure=f"{doc['rate_per_s']:.0f}/s: p50 {_ms(trip['p50_ms'])}, p99 {_ms(trip['p99_ms'])}"
        + (f" ({sum(other.values())} not 200: {other})" if other else ""),
        baseline=f"GET Actors direct: p50 {_ms(base['p50_ms'])}, p99 {_ms(base['p99_ms'])}",
        ratio=doc["ratio_p99"],
        ratio_of="p99",
        met=not other and _le(trip["p50_ms"], 100) and _le(trip["p99_ms"], 250),
        values={"round_trip": trip, "baseline": base},
    )


def _poller_trigger(doc: dict[str, Any]) -> Cell:
    latency = doc["trigger_latency"]
    base = latency["baseline_triggered"]
    return Cell(
        figure=f"p50 {_s(latency['p50_s'])}, p99 {_s(latency['p99_s'])} "
        f"({latency['items']} items, {latency['lost']} lost)",
        baseline=f"trigger record after each creation: p50 {_s(base['p50_s'])}, "
        f"p99 {_s(base['p99_s'])}",
        ratio=latency["ratio_p99"],
        ratio_of="p99",
        met=latency["lost"] == 0 and _le(latency["p99_s"], 2.0),
        values={"trigger_latency": latency},
    )


def _slow(summary: dict[str, Any], over_s: float) -> str:
    """`, k of n over X s` when the samples are listed and some are that slow."""
    samples = summary.get("samples_s") or []
    slow = sum(1 for x in samples if x > over_s)
    return f" ({slow} of {len(samples)} over {over_s:g} s)" if slow else ""


# Issue 20's quiet-hour goal: p99 <= 2 s while the poller uses <= 25 % of Dastra's 500/min.
_QUIET_P99_S = 2.0
_QUIET_SHARE = 0.25


def polling_limit(doc: dict[str, Any]) -> dict[str, Any]:
    """What the budget gives one workspace on a key of its own, from a bench.quiet document:
    the run's idle interval divided by its workspaces per key (a key shared by W workspaces
    polls each every W times that)."""
    return {
        "idle_interval_one_workspace_s": round(
            doc["idle_interval_s"] * doc["keys"] / doc["workspaces"], 2
        ),
        "budget_share": doc["settings"]["idle_budget_share"],
    }


def _quiet(doc: dict[str, Any]) -> Cell:
    latency, base = doc["trigger_latency"], doc["baseline_triggered"]
    share = doc["budget_share"]
    limit = polling_limit(doc)
    per_key = doc["workspaces"] // doc["keys"]
    keys = "its own API key each" if per_key == 1 else f"{per_key} workspaces per API key"
    if base["p50_s"] is not None and base["p50_s"] > _QUIET_P99_S:
        why = (
            " No poll interval can meet the goal in this run: the triggered baseline's own p50 "
            f"({_s(base['p50_s'])}) is over 2 s."
        )
    else:
        one = limit["idle_interval_one_workspace_s"]
        why = (
            f" Within {limit['budget_share']:.0%} of a key, one workspace is polled every "
            f"{one:.2f} s and a key shared by W workspaces polls each every W x {one:.2f} s: "
            "for more than one workspace per key, Dastra's webhook pushing a poll is the way "
            "(next row)."
        )
    return Cell(
        figure=f"after {doc['quiet_s'] / 60:.1f} min: p50 {_s(latency['p50_s'])}, "
        f"p99 {_s(latency['p99_s'])} ({latency['count']} workspaces, {keys}, "
        f"{doc['missing']} missing); idle interval {doc['idle_interval_s']:.2f} s, "
        f"{doc['requests_per_minute_per_key']:.0f} requests/min = {share:.1%} of a key's "
        f"budget.{why}",
        baseline=f"trigger record after each creation: p50 {_s(base['p50_s'])}, "
        f"p99 {_s(base['p99_s'])}{_slow(base, 1.0)}",
        ratio=doc["ratio_p99"],
        ratio_of="p99",
        # The share as the row prints it (0.1 %): the budget plans exactly 25 %, and a cycle
        # in flight at either end of the measured spell counts.
        met=doc["missing"] == 0
        and _le(latency["p99_s"], _QUIET_P99_S)
        and round(share, 3) <= _QUIET_SHARE,
        values={
            "trigger_latency": latency,
            "baseline": base,
            "budget_share": share,
            "polling_limit": limit,
        },
    )


def _push(doc: dict[str, Any]) -> Cell:
    latency, base = doc["trigger_latency"], doc["baseline_triggered"]
    return Cell(
        figure=f"p50 {_s(latency['p50_s'])}, p99 {_s(latency['p99_s'])} "
        f"({latency['count']} items in {doc['workspaces']} workspaces at "
        f"{doc['rate_per_s']:g}/s, {doc['missing']} missing, poll interval "
        f"{doc['poll_interval_s']:.0f} s)",
        baseline=f"trigger record after each creation: p50 {_s(base['p50_s'])}, "
        f"p99 {_s(base['p99_s'])}",
        ratio=doc["ratio_p99"],
        ratio_of="p99",
        met=doc["missing"] == 0 and _le(latency["p99_s"], 0.5),
        values={"trigger_latency": latency, "baseline": base},
    )


def _backfill(doc: dict[str, Any]) -> Cell:
    backfill = doc["backfill"]
    ratio = backfill["ratio_to_fetch_only"]
    return Cell(
        figure=f"{backfill['items']} items at {backfill['events_per_s']:.0f} events/s "
        f"({backfill['backfill_list_requests']} list requests)",
        baseline=f"the same pages without Kafka: {backfill['baseline_fetch_items_per_s']:.0f} "
        f"items/s ({backfill['baseline_list_requests']} requests)",
        ratio=ratio,
        ratio_of="items/s",
        met=ratio is not None and ratio >= 0.8,
        values={"backfill": backfill},
    )


def _agents_burst(doc: dict[str, Any]) -> Cell:
    free = doc["rate_limit_off"]
    return Cell(
        figure=f"{free['commands']} commands at {free['commands_per_s']:.0f}/s",
        baseline=f"concurrency ideal {free['concurrency_ideal_per_s']:.0f}/s (not measured)",
        ratio=free["ratio_to_concurrency_ideal"],
        ratio_of="commands/s",
        met=None,
    )


def _agents_limited(doc: dict[str, Any]) -> Cell:
    limited = doc["rate_limited"]
    return Cell(
        figure=f"{limited['commands']} commands, {limited['sustained_commands_per_s']:.2f}/s "
        f"sustained, {limited['failed']} failed, {limited['sandbox_429_answers']} x 429",
        baseline=f"the key's limit {limited['limit_per_s']:.2f}/s (Dastra's 500/min)",
        ratio=limited["share_of_limit_overall"],
        ratio_of="commands/s",
        met=None,
    )


def _hooks(doc: dict[str, Any]) -> Cell:
    lifted, default = doc["hooks"]["rate_limit_lifted"], doc["hooks"]["default_settings"]
    return Cell(
        figure=f"{lifted['deliveries_per_s']:.0f}/s limit lifted; at the default 25/s: "
        f"{default['deliveries_per_s']:.1f}/s, {default['dead_lettered']} dead-lettered, "
        f"{default['missing']} missing",
        baseline=f"the configured {default['rate_per_s_limit']:.0f}/s",
        ratio=default["share_of_limit"],
        ratio_of="deliveries/s at the default",
        met=None,
    )


def _lag(doc: dict[str, Any]) -> Cell:
    steady, bare = doc["refresh_steady"], doc["bare_admin_calls"]
    return Cell(
        figure=f"{doc['partitions']} partitions: p50 {_ms(steady['p50_ms'])}",
        baseline=f"the bare AdminClient calls: p50 {_ms(bare['p50_ms'])}",
        ratio=doc["ratio_steady_to_bare_p50"],
        ratio_of="p50",
        met=None,
    )


def _privacy(doc: dict[str, Any]) -> Cell:
    us = doc["us_per_object"]
    return Cell(
        figure=f"encrypted {us['encrypted']:.0f} µs, redacted {us['redacted']:.0f} µs per object",
        baseline=f"full (unchanged) {us['full']:.0f} µs",
        ratio=doc["ratio_to_full"]["encrypted"],
        ratio_of="encrypted",
        met=None,
    )


ROWS: tuple[Row, ...] = (
    Row(
        "webhook `POST /v1/commands/create-task`, 16 connections",
        "ratio ≥ 0.6, p99 ≤ 40 ms",
        "webhook",
        _webhook(keyed=False, ratio_goal=0.6, p99_goal=40),
    ),
    Row(
        "the same with a fresh `Idempotency-Key` per request",
        "ratio ≥ 0.4, p99 ≤ 60 ms",
        "webhook",
        _webhook(keyed=True, ratio_goal=0.4, p99_goal=60),
    ),
    Row(
        "agents at a steady 40 commands/s, Dastra answering in 50 ms: produce → result",
        "overhead (p99 - 50 ms) ≤ 100 ms",
        "agents",
        _agents_paced,
    ),
    Row(
        "`?wait` round trip of a search (webhook → worker → Dastra 50 ms → answer), 20 req/s",
        "p50 ≤ 100 ms, p99 ≤ 250 ms",
        "wait",
        _wait,
    ),
    Row(
        "trigger latency, polling only, right after a 20 000-item backfill",
        "p99 ≤ 2 s",
        "poller",
        _poller_trigger,
    ),
    Row(
        "trigger latency, polling only, one item after 10 minutes of quiet",
        "p99 ≤ 2 s with ≤ 25 % of Dastra's request budget",
        "quiet",
        _quiet,
    ),
    Row(
        "trigger latency with Dastra's webhook pushing a poll",
        "p99 ≤ 0.5 s",
        "push",
        _push,
    ),
    Row(
        "poller backfill vs fetching the same pages without Kafka",
        "ratio ≥ 0.8",
        "poller",
        _backfill,
    ),
    Row(
        "agents, a burst with the rate limit off",
        "",
        "agents",
        _agents_burst,
        issue_row=False,
    ),
    Row(
        "agents against Dastra's 500/min",
        "",
        "agents",
        _agents_limited,
        issue_row=False,
    ),
    Row("REST hook delivery to one fast subscriber", "", "webhook", _hooks, issue_row=False),
    Row("lag monitor: one refresh", "", "lag_refresh", _lag, issue_row=False),
    Row("payload modes: encoding a rights request", "", "privacy", _privacy, issue_row=False),
)


def evaluate(row: Row, results: dict[str, Any]) -> Cell | str:
    """The row's cell, or why there is none (not measured, the benchmark failed or was not
    run)."""
    if row.benchmark is None or row.evaluate is None:
        return row.reason
    doc = results.get(row.benchmark)
    if doc is None:
        return f"not run (`python -m bench.{row.benchmark}`)"
    if "error" in doc:
        return f"failed: {doc['error']}"
    return row.evaluate(doc)
