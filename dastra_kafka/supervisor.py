"""Supervised child processes for the demo (and anything else that runs the stack locally).

Consumes service definitions (argv, environment, a readiness probe). Produces running processes,
each in its own process group with its output in a log file, started in order and stopped in
reverse order: SIGTERM, then SIGKILL after a deadline, so nothing ever hangs on shutdown.
`kill(name)` SIGKILLs a service on purpose (the demo's `--chaos`) and `restart(name)` starts it
again: a killed service is not reported by `dead()` until it is restarted, so only a service
that exits on its own counts as a failure. The methods may be called from several threads.

    with Supervisor(run_dir) as supervisor:
        supervisor.start(Service("poller", [...], env, ready=lambda: True))
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["Service", "ServiceFailedError", "Supervisor"]


# A child's log must say why it ended: unbuffered output keeps the lines written just before a
# crash, and the fault handler writes the Python stack of a fatal signal (SIGSEGV, SIGABRT) there.
_CRASH_VISIBLE = {"PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}


class ServiceFailedError(RuntimeError):
    """A service exited or did not become ready; the message carries the end of its log."""


@dataclass(frozen=True)
class Service:
    """A child process: its name, command line, environment and readiness probe."""

    name: str
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 90.0
    stop_timeout_s: float = 15.0


@dataclass
class _Running:
    service: Service
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False  # by `kill()`, on purpose: not a failure


class Supervisor:
    """Starts services in order, watches them, stops them in reverse order."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._running: list[_Running] = []
        self._lock = threading.Lock()  # `_running`: the demo's watch and chaos threads share it

    def __enter__(self) -> Supervisor:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def log_of(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def start(self, service: Service) -> None:
        """Start `service` and wait until its probe answers (or fail with its log tail)."""
        with self._lock:
            if any(r.service.name == service.name for r in self._running):
                raise ServiceFailedError(f"{service.name} is already running")
        self._launch(service, replacing=None)

    def kill(self, name: str) -> None:
        """SIGKILL `name` (its whole process group) on purpose and wait until it is gone."""
        with self._lock:
            running = self._find(name)
            running.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGKILL)
        running.process.wait(timeout=30)

    def restart(self, name: str) -> None:
        """Start `name` again (after `kill`, or stop it first) and wait until it is ready."""
        with self._lock:
            running = self._find(name)
            running.killed = True
        _terminate(running)
        self._launch(running.service, replacing=running)

    def _find(self, name: str) -> _Running:
        for running in self._running:
            if running.service.name == name:
                return running
        raise KeyError(name)

    def _launch(self, service: Service, replacing: _Running | None) -> None:
        log = self.log_of(service.name)
        with log.open("ab") as out:
            process = subprocess.Popen(
                service.argv,
                env={**os.environ, **_CRASH_VISIBLE, **service.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        running = _Running(service, process, log)
        with self._lock:
            if replacing is not None and replacing in self._running:
                self._running[self._running.index(replacing)] = running  # keeps the stop order
            else:
                self._running.append(running)
        deadline = time.monotonic() + service.ready_timeout_s
        while True:
            if process.poll() is not None:
                raise ServiceFailedError(
                    f"{service.name} exited with code {process.returncode}:\n"
                    + self.tail(service.name)
                )
            if service.ready is None or _probe(service.ready):
                return
            if time.monotonic() > deadline:
                raise ServiceFailedError(
                    f"{service.name} was not ready after {service.ready_timeout_s:.0f} s:\n"
                    + self.tail(service.name)
                )
            time.sleep(0.2)

    def dead(self) -> list[str]:
        """Names of services that exited on their own (not those `kill()` ended)."""
        with self._lock:
            return [
                r.service.name
                for r in self._running
                if not r.killed and r.process.poll() is not None
            ]

    def pid(self, name: str) -> int:
        with self._lock:
            return self._find(name).process.pid

    def tail(self, name: str, lines: int = 25) -> str:
        path = self.log_of(name)
        if not path.is_file():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, name: str) -> None:
        with self._lock:
            found = [r for r in self._running if r.service.name == name]
            for running in found:
                self._running.remove(running)
        for running in found:
            _terminate(running)

    def stop_all(self) -> None:
        """SIGTERM every service, newest first; SIGKILL what outlives its deadline."""
        while True:
            with self._lock:
                if not self._running:
                    return
                running = self._running.pop()
            _terminate(running)


def _probe(ready: Callable[[], bool]) -> bool:
    try:
        return ready()
    except Exception:  # a probe that cannot connect yet simply says "not ready"
        return False


def _terminate(running: _Running) -> None:
    process = running.process
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=running.service.stop_timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
