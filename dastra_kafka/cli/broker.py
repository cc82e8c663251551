"""`dastra-kafka broker`: run a local single-node Apache Kafka broker until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType

import typer

from bus.localkafka import (
    KAFKA_VERSION,
    LocalKafka,
    LocalKafkaError,
    LocalKafkaInterruptedError,
    LocalKafkaPortInUseError,
    ensure_jars,
    ensure_tools_jars,
)
from dastra_kafka.cli._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE, fail

__all__ = ["register"]


def broker(
    port: int | None = typer.Option(None, help="Loopback port (default: a free one)."),
    data_dir: Path | None = typer.Option(
        None, help="Keep topics and data here across restarts (default: a temporary directory)."
    ),
    heap: str = typer.Option("512m", help="Java maximum heap."),
    kafka_version: str = typer.Option(
        KAFKA_VERSION,
        "--kafka-version",
        help="Apache Kafka release from Maven Central (3.3 or later), e.g. 3.9.2 for an older "
        "cluster.",
    ),
    fetch_only: bool = typer.Option(
        False,
        "--fetch-only",
        help="Only download Kafka's jars (and, for the pinned release, its command-line tools) "
        "into the cache, then exit.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the address as JSON."),
) -> None:
    """Run Apache Kafka (KRaft, one node) on loopback; print its bootstrap address when ready.

    Ctrl-C or SIGTERM at any time (also during the first download or the start-up) stops it
    and exits 0; a taken --port exits 2; Java or Maven missing, or a failed start, exits 3.
    """

    def say(message: str) -> None:
        typer.echo(message, err=True)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    if fetch_only:
        try:
            libs = ensure_jars(progress=say, stop=stop, version=kafka_version)
            # The tests' foreign clients run the pinned release's console tools.
            tools = (
                ensure_tools_jars(progress=say, stop=stop)
                if kafka_version == KAFKA_VERSION
                else None
            )
        except LocalKafkaInterruptedError as exc:
            say(str(exc))
            return
        except LocalKafkaError as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        fetched = {"jars": str(libs), **({"tools": str(tools)} if tools is not None else {})}
        typer.echo(
            json.dumps(fetched)
            if as_json
            else f"Kafka {kafka_version} " + ", ".join(f"{k}: {v}" for k, v in fetched.items())
        )
        return

    local = LocalKafka(port=port, data_dir=data_dir, heap=heap, progress=say, version=kafka_version)
    try:
        address = local.start(stop=stop)
    except LocalKafkaInterruptedError as exc:
        say(str(exc))
        return
    except LocalKafkaPortInUseError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except LocalKafkaError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    try:
        if as_json:
            typer.echo(json.dumps({"bootstrap_servers": address, "pid": local.pid}))
        else:
            typer.echo(f"KAFKA_BOOTSTRAP_SERVERS={address}")
            say(f"Apache Kafka {kafka_version} is ready (log: {local.log_file}); Ctrl-C stops it")
        while not stop.wait(0.5):
            if not local.running:
                fail("the broker exited unexpectedly:\n" + local.log_tail(), EXIT_FAILED)
    finally:
        say("stopping the broker")
        local.stop()


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("broker")(broker)
