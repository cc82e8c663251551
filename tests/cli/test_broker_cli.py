"""`dastra-kafka broker` through the real entry point: the printed address answers, SIGTERM
stops the broker and exits 0 (also before it was ready), a taken --port exits 2."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.kafka_helpers import wait_for

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17")

_ROOT = Path(__file__).resolve().parents[2]


def _broker(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dastra_kafka", "broker", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(
    process: subprocess.Popen[str], timeout: float = 60, data: Path | None = None
) -> tuple[int, str, str]:
    """The exit code and output; a CLI still running after `timeout` is killed, and so is the
    Java broker it started on `data` (in its own session, it would outlive the CLI)."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
            for pid in _processes_mentioning(str(data)) if data is not None else []:
                os.kill(pid, signal.SIGKILL)
    return process.returncode, out, err


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if text in cmdline:
            found.append(int(entry.name))
    return found


def test_the_broker_verb_prints_a_working_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = _broker("--json", "--data-dir", str(data), cwd=tmp_path)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "the broker printed nothing within 120 s"
        info = json.loads(process.stdout.readline())
        address, pid = info["bootstrap_servers"], info["pid"]
        assert address.startswith("127.0.0.1:")
        metadata = AdminClient({"bootstrap.servers": address}).list_topics(timeout=10)
        assert len(metadata.brokers) == 1
        process.send_signal(signal.SIGTERM)
    finally:
        code, _, err = _finish(process, data=data)
    assert code == 0, err
    assert "stopping the broker" in err
    assert _gone(pid)  # the Java broker went with it
    with socket.socket() as sock:  # and its port is free again
        sock.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))


def test_sigterm_during_start_up_stops_it_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = _broker("--data-dir", str(data), cwd=tmp_path)
    try:
        # server.properties is written once the jars are there, before Java starts.
        wait_for(lambda: (data / "server.properties").is_file(), 60, "start-up to begin")
        process.send_signal(signal.SIGTERM)
    finally:
        code, out, err = _finish(process, data=data)
    assert code == 0, err
    assert out == ""  # no address: it never became ready
    assert "stopped before the broker was" in err
    assert _processes_mentioning(str(data)) == []  # no Java process left on that directory


def test_a_taken_port_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code, out, err = _finish(_broker("--port", str(port), cwd=tmp_path))
    assert code == 2
    assert out == ""
    assert f"port {port} on 127.0.0.1 is already in use" in err
