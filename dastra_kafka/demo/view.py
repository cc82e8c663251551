"""The demo's terminal output.

Consumes the `DemoReport` (under the demo's lock), the supervisor (services that died), the lag
monitor, the traffic and the chaos. Produces the rich live view while the traffic flows (and
chaos disrupts) and while the last results drain, which ends the chaos and the traffic
(`watch`), and the summary: the chaos timeline and the table of checks (`summary`).

    watch(options, report, lock, stop, supervisor, monitor, traffic, chaos, urls, console)
    summary(report, console)
"""

from __future__ import annotations

import threading
import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from consumers.lag import LagMonitor, LagUnavailableError
from dastra_kafka.chaos import Chaos
from dastra_kafka.demo.report import DemoOptions, DemoReport, is_created
from dastra_kafka.demo.traffic import Traffic
from dastra_kafka.supervisor import Supervisor

__all__ = ["summary", "watch"]


def _view(
    report: DemoReport,
    lock: threading.Lock,
    urls: dict[str, str],
    started: float,
    duration: float,
) -> Group:
    with lock:
        flow = Table(title="what flows", expand=True)
        flow.add_column("")
        flow.add_column("count", justify="right")
        created = len(report.created["rights"]) + len(report.created["tasks"])
        published = len(report.event_items["rights"]) + len(report.event_items["tasks"])
        rows = [
            ("items created in Dastra (sandbox)", created),
            ("created events on Kafka", published),
            ("updated events on Kafka", sum(1 for ce in report.events if not is_created(ce))),
            ("commands sent through the webhook", len(report.commands)),
            ("results", sum(report.results.values())),
            ("  of which failed", report.results_failed),
            ("results of recipe commands (--recipe)", report.recipe_results),
            ("dead letters", report.dead_letters),
            ("hook deliveries (signature verified)", sum(report.deliveries.values())),
        ]
        if report.chaos is not None:
            rows += [
                ("chaos: services SIGKILLed", sum(report.chaos.kills.values())),
                ("chaos: broker restarts", report.chaos.broker_restarts),
                ("commands resent (same Idempotency-Key)", report.command_retries),
                ("?wait asked again", report.wait_retries),
            ]
        for name, value in rows:
            flow.add_row(name, str(value))
        lag = Table(title="consumer lag", expand=True)
        for column in ("group", "status", "lag", "time lag"):
            lag.add_column(column)
        if report.lag is not None:
            for group in report.lag.groups:
                lag.add_row(
                    group.group,
                    str(group.status),
                    str(group.lag),
                    f"{group.max_time_lag_s:.1f} s",
                )
    links = "  ".join(f"{name}: {url}" for name, url in urls.items())
    remaining = max(0.0, duration - (time.monotonic() - started))
    return Group(
        Panel(links, title=f"dastra-kafka demo: {remaining:.0f} s left (Ctrl-C ends it early)"),
        flow,
        lag,
    )


def summary(report: DemoReport, console: Console) -> None:
    table = Table(title="summary")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for name, ok, detail in report.checks():
        table.add_row(name, "[green]PASS[/]" if ok else "[red]FAIL[/]", detail)
    if report.chaos is not None:
        console.print(f"chaos (seed {report.chaos.plan.seed}):")
        for line in report.chaos.timeline:
            console.print(f"  {line}")
    console.print(table)


def watch(
    options: DemoOptions,
    report: DemoReport,
    lock: threading.Lock,
    stop: threading.Event,
    supervisor: Supervisor,
    monitor: LagMonitor,
    traffic: Traffic,
    chaos: Chaos | None,
    urls: dict[str, str],
    console: Console,
) -> None:
    """The live view while traffic flows (and chaos disrupts), then while the last results
    drain: under chaos, for up to `chaos_drain_s` after the last target came back."""
    started = time.monotonic()
    with Live(console=console, auto_refresh=False, transient=options.as_json) as live:
        # With a number of chaos rounds, the traffic flows until they are done too.
        while not stop.is_set() and (
            time.monotonic() - started < options.duration_s
            or (chaos is not None and chaos.rounds_pending)
        ):
            dead = supervisor.dead()
            if dead:
                with lock:
                    report.errors.append(f"service(s) exited: {', '.join(dead)}")
                break
            try:
                snapshot = monitor.refresh()
            except LagUnavailableError:
                snapshot = None
            with lock:
                report.lag = snapshot or report.lag
            live.update(_view(report, lock, urls, started, options.duration_s), refresh=True)
            stop.wait(1.0)
        drain_s = options.drain_timeout_s
        if chaos is not None:
            live.update(
                _view(report, lock, {**urls, "chaos": "bringing the last target back"}, started, 0),
                refresh=True,
            )
            chaos.stop()  # the last target is back when it returns
            drain_s = max(drain_s, options.chaos_drain_s)
        traffic.stop()
        _drain(report, lock, drain_s, live, urls, started)
    dead = supervisor.dead()
    with lock:
        if dead and not any(e.startswith("service(s) exited") for e in report.errors):
            report.errors.append(f"service(s) exited while draining: {', '.join(dead)}")


def _drain(
    report: DemoReport,
    lock: threading.Lock,
    timeout: float,
    live: Live,
    urls: dict[str, str],
    started: float,
) -> None:
    """Wait (with a deadline) until everything sent has come out at the other end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            settled = report.settled
        live.update(
            _view(report, lock, {**urls, "draining": "waiting for the last results"}, started, 0),
            refresh=True,
        )
        if settled:
            return
        time.sleep(0.5)
