"""The supervisor tells a service killed on purpose (`kill`, the demo's `--chaos`) from one that
exits on its own, and `restart` brings a killed service back as a new process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from dastra_kafka.supervisor import Service, ServiceFailedError, Supervisor

_SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _until_dead(supervisor: Supervisor, name: str) -> list[str]:
    deadline = time.monotonic() + 30
    while name not in supervisor.dead():
        assert time.monotonic() < deadline, f"{name} never counted as exited"
        time.sleep(0.05)
    return supervisor.dead()


def test_a_killed_service_is_not_a_failure_until_it_is_restarted(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as supervisor:
        supervisor.start(Service("sleeper", _SLEEPER))
        first = supervisor.pid("sleeper")
        supervisor.kill("sleeper")
        assert supervisor.dead() == []
        supervisor.restart("sleeper")
        assert supervisor.pid("sleeper") != first
        assert supervisor.dead() == []
        with pytest.raises(ServiceFailedError, match="already running"):
            supervisor.start(Service("sleeper", _SLEEPER))


def test_a_service_that_exits_on_its_own_is_a_failure(tmp_path: Path) -> None:
    quick = [sys.executable, "-c", "import time; time.sleep(0.5)"]
    with Supervisor(tmp_path) as supervisor:
        supervisor.start(Service("quitter", quick))
        supervisor.start(Service("sleeper", _SLEEPER))
        supervisor.kill("sleeper")
        supervisor.restart("sleeper")  # a restarted service that exits counts again
        assert _until_dead(supervisor, "quitter") == ["quitter"]
