"""The demo's `--chaos`: supervised services SIGKILLed and restarted, and the local broker
restarted on its data directory, on a seeded random schedule.

Consumes a `Supervisor` (the services), the `LocalKafka` broker the demo owns (its data
directory keeps its topics and its port, so clients reconnect to the same address), the targets
and a seed. Produces the disruptions, one at a time, each target down for a short random time
and then back (a service until its readiness probe answers, the broker until it answers
metadata), and a `ChaosLog`: kills per service, broker restarts, a timeline, and when the last
target came back (the demo drains after that). The order is shuffled in rounds, so every target
is hit once before any is hit twice; the same seed gives the same order and pauses.

    chaos = Chaos(supervisor, broker, ChaosPlan(seed=7), log, lock)
    chaos.start(); ...; chaos.stop()
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from bus.localkafka import LocalKafka, LocalKafkaError
from dastra_kafka.supervisor import ServiceFailedError, Supervisor

__all__ = ["BROKER", "SERVICES", "TARGETS", "Chaos", "ChaosLog", "ChaosPlan"]

SERVICES = ("poller", "worker", "webhook", "hooks")
BROKER = "broker"
TARGETS = (*SERVICES, BROKER)


@dataclass(frozen=True)
class ChaosPlan:
    """What chaos does: which targets, how often (mean seconds between disruptions, each pause
    drawn from half to one and a half times it), how long a target stays down at most, and
    how many rounds (each target once per round; None: until stopped)."""

    seed: int = 2026
    targets: tuple[str, ...] = TARGETS
    every_s: float = 8.0
    down_s: float = 2.0
    rounds: int | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.targets) - set(TARGETS))
        if self.rounds is not None and self.rounds < 1:
            raise ValueError("chaos rounds: at least one")
        if unknown or not self.targets:
            raise ValueError(
                f"chaos targets: {', '.join(unknown) or 'none given'}; "
                f"choose among {', '.join(TARGETS)}"
            )


@dataclass
class ChaosLog:
    """What chaos did (read under the caller's lock)."""

    plan: ChaosPlan
    kills: Counter[str] = field(default_factory=Counter)  # service -> SIGKILLs
    broker_restarts: int = 0
    timeline: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    last_back_at: float | None = None  # time.monotonic() when the last target was back

    def as_json(self) -> dict[str, object]:
        return {
            "seed": self.plan.seed,
            "targets": list(self.plan.targets),
            "rounds": self.plan.rounds,
            "kills": {name: self.kills[name] for name in SERVICES if name in self.plan.targets},
            "broker_restarts": self.broker_restarts,
            "timeline": list(self.timeline),
            "errors": list(self.errors),
        }

    def text(self) -> str:
        kills = ", ".join(f"{name} {n}" for name, n in sorted(self.kills.items())) or "none"
        return f"SIGKILLs: {kills}; broker restarts: {self.broker_restarts} (seed {self.plan.seed})"


class Chaos(threading.Thread):
    """Disrupts one target at a time until stopped (or its rounds are done); a disruption under
    way is finished first (the target is always back when `stop()` returns)."""

    def __init__(
        self,
        supervisor: Supervisor,
        broker: LocalKafka | None,
        log: ChaosLog,
        lock: threading.Lock,
    ) -> None:
        super().__init__(name="demo-chaos", daemon=True)
        if BROKER in log.plan.targets and broker is None:
            raise ValueError("chaos on the broker needs a broker the demo owns")
        self._supervisor = supervisor
        self._broker = broker
        self._log = log
        self._lock = lock
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    @property
    def rounds_pending(self) -> bool:
        """Has a plan with a number of rounds not finished them yet?"""
        return self._log.plan.rounds is not None and self.is_alive()

    def stop(self) -> None:
        self._halt.set()
        # A worker restart waits for its readiness (up to its 120 s probe deadline).
        self.join(300)

    def run(self) -> None:
        plan = self._log.plan
        rng = random.Random(plan.seed)
        round_: list[str] = []
        rounds = 0
        while True:
            if not round_:
                if plan.rounds is not None and rounds == plan.rounds:
                    return
                rounds += 1
                round_ = list(plan.targets)
                rng.shuffle(round_)
            if self._halt.wait(rng.uniform(0.5, 1.5) * plan.every_s):
                return
            target = round_.pop()
            down = rng.uniform(0.1, plan.down_s)
            try:
                self._disrupt(target, down)
            except (ServiceFailedError, LocalKafkaError, KeyError, OSError) as exc:
                with self._lock:
                    self._log.errors.append(f"chaos on {target}: {exc}"[:500])
                return

    def _disrupt(self, target: str, down: float) -> None:
        at = time.monotonic() - self._t0
        if target == BROKER:
            assert self._broker is not None  # checked in __init__
            address = self._broker.bootstrap_servers
            self._broker.stop()
            time.sleep(down)
            back = self._broker.start()
            if back != address:
                raise LocalKafkaError(f"the broker came back at {back}, not {address}")
            with self._lock:
                self._log.broker_restarts += 1
            what = "restarted the broker"
        else:
            self._supervisor.kill(target)
            with self._lock:
                self._log.kills[target] += 1
            time.sleep(down)
            self._supervisor.restart(target)
            what = f"SIGKILLed {target}"
        now = time.monotonic()
        back_after = now - self._t0 - at
        with self._lock:
            self._log.last_back_at = now
            self._log.timeline.append(
                f"{at:.1f} s: {what}, down {down:.1f} s, back after {back_after:.1f} s"
            )
