"""`dastra-kafka webhook` and `dastra-kafka hooks` through the real entry point: they refuse a
bad configuration with exit code 2, serve until SIGTERM and then exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from bus.localkafka import free_port
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from dastra_kafka.settings import env_prefixes
from tests.kafka_helpers import wait_for


def _env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}
    return {
        **base,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        **extra,
    }


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dastra_kafka", "--env-file", "/nonexistent", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


def test_the_webhook_needs_a_token(kafka: KafkaSettings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dastra_kafka", "--env-file", "/nonexistent", "webhook"],
        env=_env(kafka),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "WEBHOOK_TOKENS" in result.stderr


def test_webhook_and_hooks_serve_until_sigterm(
    kafka: KafkaSettings, topics: TopicCatalogue, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    webhook = _start(
        ["webhook"],
        _env(kafka, WEBHOOK_TOKENS="tok-1,tok-2", WEBHOOK_PORT=str(port)),
        tmp_path / "webhook.log",
    )
    hooks = _start(
        ["hooks"], _env(kafka, HOOKS_METRICS_PORT=str(metrics_port)), tmp_path / "hooks.log"
    )
    try:

        def answers(url: str) -> bool:
            for process, name in ((webhook, "webhook"), (hooks, "hooks")):
                assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 60, "the webhook", every=0.2)
        me = httpx.get(f"http://127.0.0.1:{port}/v1/me", headers={"X-API-Key": "tok-2"})
        assert me.status_code == 200
        wait_for(
            lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics"), 60, "hooks", every=0.2
        )
        assert (
            "dastra_hooks_subscriptions"
            in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        )
    finally:
        codes = (_stop(webhook), _stop(hooks))
    assert codes == (0, 0)
