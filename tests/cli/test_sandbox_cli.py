"""`dastra-kafka sandbox` through the real entry point: what it prints, that the API answers
with the printed key, that --db keeps the state across restarts, and a clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _sandbox(*args: str, cwd: Path, lines: int = 1) -> Iterator[list[str]]:
    """Start the verb on a free port; yield its first stdout lines; SIGTERM it, expecting 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dastra_kafka", "sandbox", "--port", "0", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "the sandbox printed nothing within 30 s"
        yield [process.stdout.readline().strip() for _ in range(lines)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def test_the_sandbox_verb_serves_the_printed_address_and_key(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.db"
    with _sandbox("--json", "--db", str(db), "--seed", "2", cwd=tmp_path) as (line,):
        info = json.loads(line)
        base, headers = info["base_url"], {"X-API-Key": info["api_key"]}
        assert base.startswith("http://127.0.0.1:") and info["docs"] == f"{base}/docs"
        me = httpx.get(f"{base}/me", headers=headers)
        assert me.status_code == 200 and me.json()["role"] == "API"
        requests = f"/v1/ws/{info['workspace_id']}/DataSubjectRequests"
        assert httpx.get(f"{base}{requests}", headers=headers).json()["total"] == 2  # --seed 2
        created = httpx.post(f"{base}/_sandbox/rights-requests", json={"title": "Kept"}).json()
        assert httpx.get(f"{base}/docs").status_code == 200
    with _sandbox("--json", "--db", str(db), "--no-rate-limit", cwd=tmp_path) as (line,):
        info = json.loads(line)
        kept = httpx.get(
            f"{info['base_url']}{requests}/{created['id']}",
            headers={"X-API-Key": info["api_key"]},
        )
        assert kept.status_code == 200 and kept.json()["title"] == "Kept"


def test_the_plain_output_names_the_variables(tmp_path: Path) -> None:
    with _sandbox(cwd=tmp_path, lines=4) as lines:
        names = [line.split("=", 1)[0] for line in lines]
        values = dict(line.split("=", 1) for line in lines)
        assert names == [
            "DASTRA_BASE_URL",
            "DASTRA_API_KEY",
            "DASTRA_WORKSPACE_ID",
            "DASTRA_TOKEN_URL",
        ]
        me = httpx.get(
            f"{values['DASTRA_BASE_URL']}/me", headers={"X-API-Key": values["DASTRA_API_KEY"]}
        )
        assert me.status_code == 200
