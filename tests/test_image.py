"""The image's environment, without Docker: the ENV values the Dockerfile sets (parsed from the
file) plus a compose service's own environment make a real service (`dastra-kafka lag serve`
against the session broker) write JSON lines, one object per line, to stderr."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from bus.localkafka import free_port
from dastra_kafka.settings import env_prefixes
from tests.consumers.agents_support import SCRIPT
from tests.kafka_helpers import unique, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _image_env() -> dict[str, str]:
    """The variables the Dockerfile's ENV instructions set (`ENV A=1 B=2` or `ENV A 1`)."""
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    found: dict[str, str] = {}
    for line in lines:
        words = line.split(None, 1)
        if len(words) < 2 or words[0].upper() != "ENV":
            continue
        tokens = shlex.split(words[1], comments=True)
        if tokens and "=" not in tokens[0]:
            found[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            name, _, value = token.partition("=")
            found[name] = value
    return found


def _service_env(name: str) -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {k: str(v) for k, v in compose["services"][name].get("environment", {}).items()}


def test_the_image_asks_for_json_logs() -> None:
    assert _image_env().get("SERVICE_LOG_JSON") == "true"


def test_a_service_with_the_image_environment_logs_json_lines(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = free_port()
    prefix = unique("image") + "."
    base = {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}
    env = {
        **base,
        **_image_env(),
        **_service_env("lag"),
        # The session broker instead of compose's, and a free port instead of 8090.
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LAG_PORT": str(port),
        # No topics under this prefix: the monitor logs, with its fields, that its window
        # topic is missing (one of our own structured events, besides uvicorn's).
        "KAFKA_TOPIC_PREFIX": prefix,
    }
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(SCRIPT), "--env-file", "/nonexistent", "lag", "serve"],
            env=env,
            cwd=tmp_path,  # the image's WORKDIR holds nothing of ours either
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def serving() -> bool:
        assert process.poll() is None, stderr.read_text(errors="replace")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(serving, 60, "lag serve answering", every=0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    assert lines, "the service wrote nothing to stderr"
    records: list[dict[str, Any]] = []
    for line in lines:
        record = json.loads(line)  # every line, whoever logged it (ours, uvicorn, aiokafka)
        assert isinstance(record, dict), line
        records.append(record)
    assert all({"event", "level", "timestamp"} <= set(record) for record in records)
    # Our own events keep their fields as JSON keys.
    [missing] = [r for r in records if r["event"].startswith("lag window topic missing")]
    assert missing["level"] == "warning" and missing["topic"] == prefix + "dastra.lag-window.v1"
