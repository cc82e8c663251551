"""The local broker: start, stop, restart with a data directory, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bus.localkafka import (
    LocalKafka,
    LocalKafkaError,
    LocalKafkaInterruptedError,
    LocalKafkaPortInUseError,
    cache_dir,
    ensure_jars,
)
from bus.settings import KafkaSettings
from tests.kafka_helpers import consume, unique

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17")


def test_restart_with_the_same_data_dir_keeps_topics_and_data(tmp_path: Path) -> None:
    topic = unique("keep")
    with LocalKafka(data_dir=tmp_path, quick_jit=True) as broker:
        first_address = broker.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": first_address})
        admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=30)
        producer = Producer({"bootstrap.servers": first_address, "enable.idempotence": True})
        for i in range(10):
            producer.produce(topic, key=str(i), value=f"v{i}")
        assert producer.flush(30) == 0
        pid = broker.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)  # the process is gone after a clean stop

    with LocalKafka(data_dir=tmp_path, quick_jit=True) as broker:
        records = consume(
            KafkaSettings(bootstrap_servers=broker.bootstrap_servers), topic, expected=10
        )
        assert sorted(r.value for r in records if r.value) == sorted(
            f"v{i}".encode() for i in range(10)
        )


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(LocalKafkaPortInUseError, match=f"port {port} .* already in use"):
            LocalKafka(port=port).start()


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError, match="'java' was not found"):
        LocalKafka().start()


def test_missing_maven_is_a_clear_error_when_jars_must_be_fetched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "java").symlink_to(shutil.which("java") or "/usr/bin/java")
    monkeypatch.setenv("PATH", str(fake_bin))
    with pytest.raises(LocalKafkaError, match="'mvn' was not found"):
        ensure_jars(cache=tmp_path / "empty-cache")


def test_a_partial_download_is_detected_and_fetched_again(tmp_path: Path) -> None:
    libs = ensure_jars()
    cache = tmp_path / "cache"
    shutil.copytree(libs.parent, cache / libs.parent.name)
    broken = cache / libs.parent.name / "libs"
    victim = sorted(broken.glob("kafka-clients-*.jar"))[0]
    victim.write_bytes(victim.read_bytes()[:1000])  # truncated, as by an interrupted copy

    repaired = ensure_jars(cache=cache)

    manifest = json.loads((repaired.parent / "COMPLETE.json").read_text())
    assert repaired.joinpath(victim.name).stat().st_size == manifest["jars"][victim.name]
    assert manifest["jars"][victim.name] == (libs / victim.name).stat().st_size


def test_the_cache_is_per_user_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASTRA_KAFKA_CACHE", "/somewhere/else")
    assert cache_dir() == Path("/somewhere/else")
    monkeypatch.delenv("DASTRA_KAFKA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert cache_dir() == Path("/xdg/dastra-kafka")


def _fake_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    """A PATH with the real java and an `mvn` running `script`; returns the calls log."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "java").symlink_to(shutil.which("java") or "/usr/bin/java")
    calls = tmp_path / "mvn-calls"
    mvn = fake_bin / "mvn"
    mvn.write_text(f"#!/bin/sh\necho $$ >> {calls}\n{script}\n")
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:/usr/bin:/bin")
    return calls


def test_maven_ended_by_ctrl_c_is_a_stop_not_a_retry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _fake_maven(tmp_path, monkeypatch, "kill -INT $$; sleep 5; exit 130")
    cache = tmp_path / "cache"
    with pytest.raises(LocalKafkaInterruptedError, match="interrupted"):
        ensure_jars(cache=cache)
    assert len(calls.read_text().split()) == 1  # not retried
    assert not list(cache.glob(".download-*")) and not list(cache.glob("kafka_*"))


def test_a_stop_event_ends_a_running_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_maven(tmp_path, monkeypatch, "exec sleep 60")
    stop = threading.Event()
    stop.set()
    with pytest.raises(LocalKafkaInterruptedError, match="stopped"):
        ensure_jars(cache=tmp_path / "cache", stop=stop)
    (pid,) = (int(p) for p in calls.read_text().split())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # Maven was stopped and reaped, not left behind


def test_a_stop_event_before_readiness_ends_the_start_up(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    broker = LocalKafka(data_dir=tmp_path, quick_jit=True)
    with pytest.raises(LocalKafkaInterruptedError, match="before the broker was started"):
        broker.start(stop=stop)
    assert not broker.running and broker.pid is None
    assert not (tmp_path / "kraft-logs").exists()  # not even formatted
