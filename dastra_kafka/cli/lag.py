"""`dastra-kafka lag [--json] [--watch] [--check]` and `dastra-kafka lag serve`: consumer lag of
the project's groups (or `--group G`, `--all`) as a table, JSON, a live view, a health check, or
an HTTP server with /metrics, /api/lag and a web page."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import TYPE_CHECKING

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bus.records.lag import Status
from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    fail,
    settings_of,
)
from dastra_kafka.settings import Settings

if TYPE_CHECKING:  # the monitor (aiokafka) is imported when a lag verb runs, not by --help
    from consumers.lag import GroupLag, GroupSelection, LagMonitor, LagSnapshot

__all__ = ["register"]

_app = typer.Typer(
    help="Consumer lag per group and partition: offsets, time lag, Burrow-style status.",
    invoke_without_command=True,
)


class Threshold(StrEnum):
    OK = "OK"
    WARN = "WARN"
    REWIND = "REWIND"
    STALL = "STALL"
    STOP = "STOP"


_COLOURS = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.REWIND: "magenta",
    Status.STALL: "red",
    Status.STOP: "bold red",
    Status.NOTFOUND: "bold red",
}


def _selection(settings: Settings, groups: list[str], all_groups: bool) -> GroupSelection:
    if groups and all_groups:
        fail("--group and --all exclude each other", EXIT_BAD_INPUT)
    from consumers.lag import GroupSelection

    return GroupSelection.of(settings.kafka, settings.lag, groups, all_groups)


def _open(settings: Settings, selection: GroupSelection) -> LagMonitor:
    from consumers.lag import LagMonitor, LagUnavailableError

    monitor = LagMonitor(settings.kafka, settings.lag, selection)
    try:
        monitor.open()
    except LagUnavailableError as exc:
        fail(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}", EXIT_UNAVAILABLE)
    return monitor


def _refresh(settings: Settings, monitor: LagMonitor) -> LagSnapshot:
    from bus.errors import KafkaAuthorizationError
    from consumers.lag import LagUnavailableError

    try:
        return monitor.refresh()
    except LagUnavailableError as exc:
        fail(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}", EXIT_UNAVAILABLE)
    except KafkaAuthorizationError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


@_app.callback(invoke_without_command=True)
def lag(
    ctx: typer.Context,
    groups: list[str] = typer.Option(
        [], "--group", "-g", help="A group to watch (repeatable). Default: the project's groups."
    ),
    all_groups: bool = typer.Option(False, "--all", help="Watch every consumer group."),
    partitions: bool = typer.Option(False, "--partitions", "-p", help="One row per partition."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    watch: bool = typer.Option(False, "--watch", help="Refresh in place until Ctrl-C."),
    check: bool = typer.Option(
        False, "--check", help="Exit 1 when a group's status is worse than --threshold."
    ),
    threshold: Threshold = typer.Option(
        Threshold.WARN, "--threshold", help="The worst status --check tolerates."
    ),
) -> None:
    """Show the lag of the project's consumer groups (names starting with KAFKA_TOPIC_PREFIX +
    "dastra"), or of --group G / --all. Exit codes: 0 ok, 1 --check failed, 2 bad input,
    3 Kafka unreachable."""
    if ctx.invoked_subcommand is not None:
        return
    if watch and check:
        fail("--watch and --check exclude each other", EXIT_BAD_INPUT)
    settings = settings_of(ctx)
    selection = _selection(settings, groups, all_groups)
    monitor = _open(settings, selection)
    try:
        if watch:
            _watch(settings, monitor, as_json, partitions)
            return
        snapshot = _refresh(settings, monitor)
    finally:
        monitor.close()
    if as_json:
        typer.echo(json.dumps(snapshot.to_dict(), indent=2))
    else:
        Console().print(_render(snapshot, partitions))
    if check:
        limit = Status(threshold.value).code
        bad = [g for g in snapshot.groups if g.status.code > limit]
        if bad:
            for g in bad:
                typer.echo(f"{g.group}: {g.status.value}: {g.reason}", err=True)
            raise typer.Exit(EXIT_FAILED)


def _watch(settings: Settings, monitor: LagMonitor, as_json: bool, partitions: bool) -> None:
    interval = settings.lag.refresh_interval_s
    try:
        if as_json:
            while True:
                snapshot = _refresh(settings, monitor)
                typer.echo(json.dumps(snapshot.to_dict(), separators=(",", ":")))
                time.sleep(interval)
        with Live(Text("reading lag..."), auto_refresh=False, transient=False) as live:
            while True:
                snapshot = _refresh(settings, monitor)
                live.update(_render(snapshot, partitions), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        return


@_app.command("serve")
def serve(
    ctx: typer.Context,
    groups: list[str] = typer.Option([], "--group", "-g", help="A group to watch (repeatable)."),
    all_groups: bool = typer.Option(False, "--all", help="Watch every consumer group."),
    host: str | None = typer.Option(None, help="Listen address (default SERVICE_HOST)."),
    port: int | None = typer.Option(None, help="Port (default LAG_PORT)."),
) -> None:
    """Serve /metrics (kafka-lag-exporter names), /api/lag and a live web page."""
    import uvicorn

    from consumers.lag import LagMonitor
    from consumers.lag.web import create_app

    settings = settings_of(ctx)
    selection = _selection(settings, groups, all_groups)
    monitor = LagMonitor(settings.kafka, settings.lag, selection)
    web = create_app(monitor, settings.lag)
    uvicorn.run(
        web,
        host=host or settings.service.host,
        port=port or settings.lag.port,
        log_config=None,
        access_log=False,
    )


# --- rendering ---------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds // 60:.0f}m {seconds % 60:02.0f}s"
    if seconds < 172_800:
        return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:02.0f}m"
    return f"{seconds / 86_400:.1f} d"


def _status(status: Status) -> Text:
    return Text(status.value, style=_COLOURS[status])


def _render(snapshot: LagSnapshot, partitions: bool) -> Group | Table | Text:
    when = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    title = f"consumer lag at {when} ({snapshot.selection}; {snapshot.poll_ms:.0f} ms)"
    if not snapshot.groups:
        return Text(f"{title}: no consumer groups found")
    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("group", "left"),
        ("status", "left"),
        ("state", "left"),
        ("members", "right"),
        ("partitions", "right"),
        ("lag", "right"),
        ("max time lag", "right"),
        ("why", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for g in snapshot.groups:
        table.add_row(
            g.group,
            _status(g.status),
            g.state.lower(),
            str(len(g.members)),
            str(len(g.partitions)),
            f"{g.lag:,}",
            _age(g.max_time_lag_s),
            g.reason,
        )
    if not partitions:
        return table
    return Group(table, *(_partition_table(g) for g in snapshot.groups if g.partitions))


def _partition_table(g: GroupLag) -> Table:
    table = Table(title=g.group, title_justify="left")
    for column in ("topic", "partition", "committed", "log end", "lag", "time lag", "status"):
        table.add_column(column, justify="left" if column in ("topic", "status") else "right")
    table.add_column("owner")
    table.add_column("why")
    for p in g.partitions:
        table.add_row(
            p.topic,
            str(p.partition),
            "-" if p.committed is None else f"{p.committed:,}",
            "-" if p.log_end is None else f"{p.log_end:,}",
            "-" if p.lag is None else f"{p.lag:,}",
            _age(p.time_lag_s),
            _status(p.status),
            p.host or p.client_id or "-",
            p.reason,
        )
    return table


def register(app: typer.Typer) -> None:
    """Add this verb group to the `dastra-kafka` command line."""
    app.add_typer(_app, name="lag")
