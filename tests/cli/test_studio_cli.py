"""`dastra-kafka studio` through the real entry point: it refuses to start without a token
(exit 2), serves the studio's API with X-API-Key auth until SIGTERM, then exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from bus.localkafka import free_port
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from tests.cli.test_webhook_cli import _env, _start, _stop
from tests.kafka_helpers import wait_for


def test_the_studio_needs_a_token(kafka: KafkaSettings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dastra_kafka", "--env-file", "/nonexistent", "studio"],
        env=_env(kafka),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "STUDIO_TOKENS" in result.stderr


def test_the_studio_serves_until_sigterm(
    kafka: KafkaSettings, topics: TopicCatalogue, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "studio.log"
    studio = _start(["studio"], _env(kafka, STUDIO_READ_TOKENS="ro-1", STUDIO_PORT=str(port)), log)
    url = f"http://127.0.0.1:{port}/studio/api/recipes"
    try:

        def answers() -> bool:
            assert studio.poll() is None, log.read_text()
            try:
                return httpx.get(url, headers={"X-API-Key": "ro-1"}, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 60, "the studio", every=0.2)
        listed = httpx.get(url, headers={"X-API-Key": "ro-1"}).json()["recipes"]
        assert {entry["source"] for entry in listed} == {"shipped"}
        assert httpx.get(url, headers={"X-API-Key": "nope"}).status_code == 401
    finally:
        code = _stop(studio)
    assert code == 0
