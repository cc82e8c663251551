"""What the demo is asked to do, what it saw, and whether that is right.

Consumes the options of `dastra-kafka demo` (`DemoOptions`) and what the tail, the traffic and
the hook subscriber record in a `DemoReport` (under the demo's lock), including each record read
on the event, result and dead-letter topics in a privacy mode (`scan_for_personal_data`: a
requester's e-mail or name in clear; the encrypted rights request events kept for the erasure
check). Produces the summary's checks (name, passed, detail), `passed` (the exit code) and the
`--json` summary (`as_json`).

    report = DemoReport(privacy="encrypted")
    ok = report.passed
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.settings import PayloadMode
from consumers.lag import LagSnapshot
from dastra_kafka.chaos import ChaosLog, ChaosPlan

__all__ = ["DemoOptions", "DemoReport", "as_json", "is_created", "scan_for_personal_data"]


@dataclass(frozen=True)
class DemoOptions:
    """How long and how busy the demo is."""

    duration_s: float = 60.0
    item_every_s: float = 1.5
    command_every_s: float = 2.0
    drain_timeout_s: float = 60.0
    as_json: bool = False
    run_dir: Path | None = None
    recipes: tuple[str, ...] = ()
    privacy: PayloadMode = "full"
    chaos: ChaosPlan | None = None
    # Under chaos: how long one command is retried (webhook down, 503, ?wait timed out), and
    # the drain's deadline after the last target came back.
    chaos_retry_s: float = 150.0
    chaos_drain_s: float = 240.0


@dataclass
class DemoReport:
    """What happened, and whether it is right."""

    created: dict[str, set[int]] = field(default_factory=lambda: {"rights": set(), "tasks": set()})
    events: Counter[str] = field(default_factory=Counter)  # ce_id -> times seen
    event_items: dict[str, set[int]] = field(
        default_factory=lambda: {"rights": set(), "tasks": set()}
    )
    commands: set[str] = field(default_factory=set)
    results: Counter[str] = field(default_factory=Counter)  # command id -> results seen
    recipe_results: int = 0  # results of the commands of recipes (`--recipe`)
    results_failed: int = 0
    dead_letters: int = 0
    malformed_sent: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)  # webhook-id -> deliveries
    bad_signatures: int = 0
    searches: list[int] = field(default_factory=list)  # result sizes of ?wait searches
    errors: list[str] = field(default_factory=list)
    lag: LagSnapshot | None = None
    # Privacy (`--privacy`): the mode, the requesters' e-mails by rights request id, the records
    # scanned for personal data in clear and those found with some, the encrypted rights
    # request events (id -> data) and the outcome of the erasure.
    privacy: PayloadMode = "full"
    requesters: dict[int, str] = field(default_factory=dict)
    scanned: int = 0
    in_clear: Counter[str] = field(default_factory=Counter)  # topic kind -> records
    sealed: dict[int, list[Any]] = field(default_factory=dict)
    erasure: tuple[bool, str] | None = None
    # Chaos (`--chaos`): what it did, and the traffic's retries through it.
    chaos: ChaosLog | None = None
    command_retries: int = 0  # sends repeated with the same Idempotency-Key
    wait_retries: int = 0  # `?wait` requests that timed out and were asked again
    tail_renewals: int = 0  # the demo's own reader replaced where it was (`Tail`)

    def checks(self) -> list[tuple[str, bool, str]]:
        return self._flow_checks() + self._privacy_checks() + self._chaos_checks()

    def _chaos_checks(self) -> list[tuple[str, bool, str]]:
        if self.chaos is None:
            return []
        disruptions = sum(self.chaos.kills.values()) + self.chaos.broker_restarts
        return [
            (
                "chaos: every target killed or restarted came back",
                disruptions > 0 and not self.chaos.errors,
                self.chaos.text()
                + f"; the traffic resent {self.command_retries} command(s) with their "
                f"Idempotency-Key and asked {self.wait_retries} ?wait again"
                + (f"; {'; '.join(self.chaos.errors[:2])}" if self.chaos.errors else ""),
            )
        ]

    @property
    def settled(self) -> bool:
        """Has everything sent come out at the other end?"""
        return all(ok for _name, ok, _detail in self._flow_checks())

    def _privacy_checks(self) -> list[tuple[str, bool, str]]:
        if self.privacy == "full":
            return []
        where = ", ".join(f"{n} on {kind}" for kind, n in sorted(self.in_clear.items()))
        checks = [
            (
                "no personal data in clear on the bus",
                not self.in_clear and self.scanned > 0,
                f"{self.scanned} records scanned in {self.privacy} mode; "
                + (f"a requester's e-mail or name in clear: {where}" if where else "none in clear"),
            )
        ]
        if self.erasure is not None:
            checks.append(("an erased requester is unreadable, the others are not", *self.erasure))
        return checks

    def _flow_checks(self) -> list[tuple[str, bool, str]]:
        created = len(self.created["rights"]) + len(self.created["tasks"])
        published = len(self.event_items["rights"]) + len(self.event_items["tasks"])
        missing = (self.created["rights"] - self.event_items["rights"]) | (
            self.created["tasks"] - self.event_items["tasks"]
        )
        duplicated = [i for i, n in self.events.items() if n > 1]
        no_result = self.commands - set(self.results)
        twice = [c for c in self.commands if self.results[c] > 1]
        undelivered = [ce for ce in self.events if is_created(ce) and ce not in self.deliveries]
        return [
            (
                "every created item published",
                not missing,
                f"{created - len(missing)} of the {created} items created in the app"
                + (f"; missing {sorted(missing)[:5]}" if missing else "")
                + f" ({published} created events with the commands' items)",
            ),
            ("no event published twice", not duplicated, f"{len(duplicated)} duplicated ids"),
            (
                "every command has a result",
                not no_result,
                f"{len(self.commands) - len(no_result)} of {len(self.commands)} commands",
            ),
            ("no command has two results", not twice, f"{len(twice)} with more than one"),
            (
                "every search with ?wait answered"
                + (" (retried to an answer)" if self.chaos is not None else " in time"),
                bool(self.searches) and -1 not in self.searches,
                f"{sum(1 for n in self.searches if n >= 0)} of {len(self.searches)} searches "
                f"answered (results: {self.searches[:8]})",
            ),
            (
                "malformed records dead-lettered",
                self.dead_letters >= self.malformed_sent,
                f"{self.dead_letters} dead letters for {self.malformed_sent} malformed records",
            ),
            (
                "hook subscriber received every created event",
                not undelivered and self.bad_signatures == 0,
                f"{sum(1 for ce in self.events if is_created(ce)) - len(undelivered)} delivered, "
                f"{self.bad_signatures} bad signatures",
            ),
            ("no errors in the traffic", not self.errors, "; ".join(self.errors[:3]) or "none"),
        ]

    @property
    def passed(self) -> bool:
        return all(ok for _name, ok, _detail in self.checks())


def is_created(ce_id: str) -> bool:
    return ".created:" in ce_id


# The demo's requesters: `subject<n>@example.org` "Demo" "Subject <n>", and `crm<n>@example.org`.
_PERSONAL = re.compile(rb"(?:subject|crm)[0-9]+@example\.org|Subject [0-9]+")


def scan_for_personal_data(
    report: DemoReport, kind: str, found: dict[str, bytes], value: bytes
) -> None:
    """Count a record holding a requester's e-mail or name in clear (events and results in a
    privacy mode; dead letters too when they are sealed), and keep encrypted rights request
    events for the erasure check. The caller holds the report's lock."""
    mode = report.privacy
    if mode == "full" or (kind == "dlq" and mode != "encrypted"):
        return
    report.scanned += 1
    if _PERSONAL.search(value):
        report.in_clear[kind] += 1
    if mode == "encrypted" and kind == "rights" and is_created(found.get("ce_id", b"").decode()):
        data = json.loads(value)
        report.sealed.setdefault(int(data["id"]), []).append(data)


def as_json(report: DemoReport) -> dict[str, Any]:
    return {
        "passed": report.passed,
        "checks": [{"check": n, "passed": ok, "detail": d} for n, ok, d in report.checks()],
        "created": {k: len(v) for k, v in report.created.items()},
        "events": sum(report.events.values()),
        "commands": len(report.commands),
        "results": sum(report.results.values()),
        "recipe_results": report.recipe_results,
        "dead_letters": report.dead_letters,
        "hook_deliveries": sum(report.deliveries.values()),
        "privacy": report.privacy,
        "chaos": None
        if report.chaos is None
        else {
            **report.chaos.as_json(),
            "command_retries": report.command_retries,
            "wait_retries": report.wait_retries,
            "tail_renewals": report.tail_renewals,
        },
    }
