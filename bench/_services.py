"""The services a benchmark runs as subprocesses: the sandbox, a worker, the webhook.

Each is a context manager that starts `dastra-kafka <verb>` with only the variables it is given
(none of the caller's `KAFKA_*`/`DASTRA_*`/... leak in), waits until it answers, yields its
address, and stops it (SIGTERM, then SIGKILL) on exit. Logs go to files in `workdir`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bus.localkafka import free_port
from bus.settings import KafkaSettings
from dastra_kafka.settings import env_prefixes

__all__ = ["base_env", "process", "sandbox", "stop", "webhook", "worker"]

_SCRIPT = Path(sys.executable).with_name("dastra-kafka")


def stop(process: subprocess.Popen[bytes], within: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `within` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def base_env() -> dict[str, str]:
    """This process's environment without the project's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}


@contextlib.contextmanager
def process(
    argv: list[str], env: dict[str, str], port: int, log: Path | None = None
) -> Iterator[str]:
    """Run `argv` until it accepts TCP connections on `port`; yields its http address."""
    out = log.open("wb") if log is not None else None
    child = subprocess.Popen(
        argv,
        env={**base_env(), **env},
        stdout=out or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if out else subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"{argv[:3]} exited with {child.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{argv[:3]} did not listen on {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(child, 15)
        if out is not None:
            out.close()


@contextlib.contextmanager
def sandbox(workdir: Path) -> Iterator[dict[str, Any]]:
    """`dastra-kafka sandbox --json`; yields its JSON line (base_url, api_key, workspace_id)."""
    port = free_port()
    log = (workdir / "sandbox.log").open("wb")
    child = subprocess.Popen(
        [str(_SCRIPT), "--env-file", "/nonexistent", "sandbox", "--port", str(port), "--json"],
        env={**base_env(), "SERVICE_LOG_LEVEL": "warning"},
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        info: dict[str, Any] = json.loads(child.stdout.readline())
        yield info
    finally:
        stop(child)
        log.close()


@contextlib.contextmanager
def worker(
    kafka: KafkaSettings, sandbox: dict[str, Any], workdir: Path, **env: str
) -> Iterator[str]:
    """`dastra-kafka worker` against `sandbox`, until its /ready answers 200."""
    port = free_port()
    log = (workdir / f"worker-{port}.log").open("wb")
    child = subprocess.Popen(
        [str(_SCRIPT), "--env-file", "/nonexistent", "worker"],
        env={
            **base_env(),
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "DASTRA_BASE_URL": sandbox["base_url"],
            "DASTRA_API_KEY": sandbox["api_key"],
            "DASTRA_WORKSPACE_ID": str(sandbox["workspace_id"]),
            "WORKER_WEB_PORT": str(port),
            "WORKER_APP_ID": f"bench-agents-{port}",
            "WORKER_DATA_DIR": str(workdir / "faust"),
            "SERVICE_LOG_LEVEL": "warning",
            **env,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"the worker exited; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker was not ready within 60 s; see {log.name}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(child)
        log.close()


def webhook(
    kafka: KafkaSettings, token: str, log: Path | None = None, **env: str
) -> contextlib.AbstractContextManager[str]:
    """`dastra-kafka webhook` on a free port, accepting `token`."""
    port = free_port()
    variables = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "WEBHOOK_TOKENS": token,
        "SERVICE_LOG_LEVEL": "warning",
        **env,
    }
    argv = [str(_SCRIPT), "--env-file", "/nonexistent", "webhook", "--port", str(port)]
    return process(argv, variables, port, log)
