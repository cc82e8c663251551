"""`python -m bench`: run every benchmark, then write one JSON document and BENCHMARKS.md.

Consumes each benchmark's JSON document (the stdout of `python -m bench.<name>`, run as a
subprocess against one shared broker: KAFKA_BOOTSTRAP_SERVERS, else a local one started here).
Produces `bench/results.json` (every benchmark's document, the rows of `bench/rows.py`
evaluated, the machine's load) and `BENCHMARKS.md` (one row per line of issue 20's table, then
the other benchmarks: figure, its baseline from the same run, the ratio, the goal, met or not).

    .venv/bin/python -m bench                  # every benchmark at full size (about 20 minutes)
    .venv/bin/python -m bench --smoke          # the smallest settings (about a minute)
    .venv/bin/python -m bench --only wait,quiet --json   # the JSON document on stdout
    .venv/bin/python -m bench --only quiet --merge       # measure one again, keep the others
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.rows import BENCHMARKS, ROWS, Benchmark, Cell, Row, evaluate
from bus.localkafka import LocalKafka
from dastra_kafka.settings import env_prefixes

__all__ = ["main", "markdown", "run_benchmark"]

_ROOT = Path(__file__).resolve().parent.parent
_console = Console(stderr=True)


# --- running -------------------------------------------------------------------------------------


def _env(bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}
    return {**env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}


def run_benchmark(
    benchmark: Benchmark, *, bootstrap: str, smoke: bool, logdir: Path
) -> dict[str, Any]:
    """Run one benchmark to its end; its JSON document, or `{"error": ...}` when it failed
    (its stderr is in `logdir/<name>.log`)."""
    log = logdir / f"{benchmark.name}.log"
    argv = [sys.executable, "-m", f"bench.{benchmark.name}", *benchmark.args]
    if smoke:
        argv.append("--smoke")
    started = time.monotonic()
    with log.open("wb") as err:
        done = subprocess.run(
            argv, cwd=_ROOT, env=_env(bootstrap), stdout=subprocess.PIPE, stderr=err, check=False
        )
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        return {"error": f"exit {done.returncode}: {' '.join(tail)[:300]}", "seconds": seconds}
    try:
        doc: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return {"error": "its output is not one JSON document", "seconds": seconds}
    doc["seconds"] = seconds
    return doc


@contextlib.contextmanager
def _broker() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    with LocalKafka() as broker:
        yield broker.bootstrap_servers


def _run_all(chosen: list[Benchmark], smoke: bool, logdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=_console) as progress:
        starting = progress.add_task("starting a broker", total=1)
        with _broker() as bootstrap:
            progress.update(starting, description="broker ready", completed=1)
            tasks = {
                b.name: progress.add_task(f"[dim]{b.name}: {b.about}", total=1, start=False)
                for b in chosen
            }
            for benchmark in chosen:
                task = tasks[benchmark.name]
                progress.start_task(task)
                running = f"[bold]{benchmark.name}[/]: {benchmark.about}"
                progress.update(task, description=running)
                if not _console.is_terminal:  # a log, not a live display: one line per step
                    _console.print(f"{time.strftime('%H:%M:%S')} {running}")
                doc = run_benchmark(benchmark, bootstrap=bootstrap, smoke=smoke, logdir=logdir)
                results[benchmark.name] = doc
                state = "[red]failed" if "error" in doc else "[green]done"
                finished = f"{state}[/] {benchmark.name} in {doc['seconds']:.0f} s"
                progress.update(task, completed=1, description=finished)
                progress.stop_task(task)
                if not _console.is_terminal:
                    _console.print(f"{time.strftime('%H:%M:%S')} {finished}")
    return results


# --- writing -------------------------------------------------------------------------------------


def _ratio_text(cell: Cell) -> str:
    if cell.ratio is None or not math.isfinite(cell.ratio):
        return "n/a"
    return f"{cell.ratio:.2f} ({cell.ratio_of})"


def _met_text(met: bool | None) -> str:
    return {True: "met", False: "not met", None: "-"}[met]


def _table(rows: list[Row], results: dict[str, Any], with_goal: bool) -> list[str]:
    head = ["what", "figure", "baseline (same run)", "ratio"]
    if with_goal:
        head += ["goal", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cell = evaluate(row, results)
        if isinstance(cell, str):
            values = [row.what, cell, "-", "-"] + ([row.goal, "not measured"] if with_goal else [])
        else:
            values = [row.what, cell.figure, cell.baseline, _ratio_text(cell)]
            if with_goal:
                values += [row.goal, _met_text(cell.met)]
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    return lines


def _load(values: list[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def markdown(document: dict[str, Any]) -> str:
    """BENCHMARKS.md from the JSON document `main` writes."""
    results = document["results"]
    machine = document["machine"]
    load = machine["load_average"]
    settings = (
        "smoke settings: the figures only show that each benchmark runs"
        if document["smoke"]
        else "full settings"
    )
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{document['command']}` on {document['generated_at']} ({settings}), in "
        f"{document['seconds'] / 60:.1f} minutes on a {machine['cpus']}-CPU {machine['system']} "
        f"machine; load average (1, 5, 15 min) {_load(load['start'])} at the start, "
        f"{_load(load['end'])} at the end.",
        "",
    ]
    if document.get("note"):
        lines += [document["note"], ""]
    for update in document.get("updates", []):
        again = ", ".join(f"`{name}`" for name in update["benchmarks"])
        lines += [
            f"Measured again since: {again} by `{update['command']}` on {update['at']}, in "
            f"{update['seconds'] / 60:.1f} minutes; load average "
            f"{_load(update['load_average']['start'])} at the start, "
            f"{_load(update['load_average']['end'])} at the end."
            + (f" {update['note']}" if update.get("note") else ""),
            "",
        ]
    lines += [
        "Each figure has its baseline measured in the same run, on the same machine, and the "
        "ratio of the two (what it is a ratio of in brackets). Where the machine is shared "
        "the figures vary from run to run; the ratio is the number to compare. "
        "`bench/results.json` holds every benchmark's full output; "
        "`.venv/bin/python -m bench --help` runs them again (`make bench`).",
        "",
        "## Issue 20's table",
        "",
        *_table([r for r in ROWS if r.issue_row], results, with_goal=True),
        "",
        "## The other benchmarks",
        "",
        *_table([r for r in ROWS if not r.issue_row], results, with_goal=False),
        "",
        "## Each benchmark",
        "",
        "| benchmark | time | command |",
        "|---|---|---|",
    ]
    for benchmark in BENCHMARKS:
        doc = results.get(benchmark.name)
        if doc is None:
            continue
        smoke = " --smoke" if document["smoke"] else ""
        state = f"{doc['seconds']:.0f} s" + (" (failed)" if "error" in doc else "")
        lines.append(f"| {benchmark.about} | {state} | `python -m bench.{benchmark.name}{smoke}` |")
    return "\n".join(lines) + "\n"


def _command(argv: list[str]) -> str:
    """The command line as BENCHMARKS.md shows it: without `--note`'s text (shown on its own)."""
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            shown.append(arg)
    return " ".join(["python -m bench", *shown])


def _rows_json(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in ROWS:
        cell = evaluate(row, results)
        entry: dict[str, Any] = {"what": row.what, "goal": row.goal, "benchmark": row.benchmark}
        if isinstance(cell, str):
            entry |= {"measured": False, "reason": cell}
        else:
            entry |= {
                "measured": True,
                "figure": cell.figure,
                "baseline": cell.baseline,
                "ratio": cell.ratio,
                "ratio_of": cell.ratio_of,
                "met": cell.met,
            }
        out.append(entry)
    return out


def _print_summary(results: dict[str, Any]) -> None:
    table = Table(title="Issue 20's table")
    for name in ("what", "figure", "ratio", "met"):
        table.add_column(name)
    for row in ROWS:
        if not row.issue_row:
            continue
        cell = evaluate(row, results)
        if isinstance(cell, str):
            table.add_row(row.what, cell[:80], "-", "[dim]not measured")
        else:
            colour = {True: "green", False: "red", None: "dim"}[cell.met]
            met = f"[{colour}]{_met_text(cell.met)}"
            table.add_row(row.what, cell.figure, _ratio_text(cell), met)
    _console.print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, write the results; exit status 1 when one of them failed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the smallest settings of each")
    parser.add_argument("--only", help="comma-separated benchmarks: " + ", ".join(
        b.name for b in BENCHMARKS))  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the JSON document on stdout")
    parser.add_argument("--results", type=Path, default=_ROOT / "bench" / "results.json")
    parser.add_argument("--markdown", type=Path, default=_ROOT / "BENCHMARKS.md")
    parser.add_argument("--note", default="", help="a paragraph for BENCHMARKS.md (the load)")
    parser.add_argument(
        "--render", action="store_true", help="only write --markdown again from --results"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the --only benchmarks in --results (the others are kept, and "
        "BENCHMARKS.md says which were measured again, when)",
    )
    args = parser.parse_args(argv)
    if args.merge:
        if not args.only or not args.results.exists():
            parser.error("--merge needs --only and an existing --results file")
        if json.loads(args.results.read_text())["smoke"] != args.smoke:
            parser.error(f"--merge: {args.results} was measured with other settings (--smoke)")
    if args.render:
        args.markdown.write_text(markdown(json.loads(args.results.read_text())))
        _console.print(f"wrote {args.markdown} from {args.results}")
        return 0
    names = [b.name for b in BENCHMARKS]
    wanted = args.only.split(",") if args.only else names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose among {', '.join(names)}")
    chosen = [b for b in BENCHMARKS if b.name in wanted]
    load_start = [round(x, 2) for x in os.getloadavg()]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as tmp:
        results = _run_all(chosen, args.smoke, Path(tmp))
        failed = [name for name, doc in results.items() if "error" in doc]
        for name in failed:
            _console.print(f"[red]{name}[/]: {results[name]['error']}")
            _console.print((Path(tmp) / f"{name}.log").read_text(errors="replace")[-3000:])
    command = _command(argv if argv is not None else sys.argv[1:])
    seconds = round(time.monotonic() - began, 1)
    load = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if args.merge:
        document = json.loads(args.results.read_text())
        document["results"] |= results
        document.setdefault("updates", []).append(
            {
                "at": now,
                "command": command,
                "benchmarks": list(results),
                "seconds": seconds,
                "load_average": load,
                "note": args.note,
            }
        )
        document["rows"] = _rows_json(document["results"])
    else:
        document = {
            "generated_at": now,
            "command": command,
            "smoke": args.smoke,
            "seconds": seconds,
            "note": args.note,
            "machine": {
                "cpus": os.cpu_count(),
                "system": f"{platform.system()} {platform.machine()}",
                "python": platform.python_version(),
                "load_average": load,
            },
            "rows": _rows_json(results),
            "results": results,
        }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    args.markdown.write_text(markdown(document))
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        _print_summary(document["results"])
        _console.print(f"wrote {args.results} and {args.markdown}")
    return 1 if failed else 0
