"""The topic catalogue: `topics.yaml` loaded into frozen models.

Consumes a `topics.yaml` file. Produces a `TopicCatalogue` of `TopicSpec`s, the names code uses to
refer to topics (never literal strings elsewhere), and `TopicsFileError`s that name the file, the
topic and the field of any mistake.

    catalogue = load_catalogue(Path("topics.yaml"))
    spec = catalogue[RIGHTS_REQUESTS]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus.shipped import shipped_root

__all__ = [
    "ACTIONS",
    "COMMAND_RECORD_MAX_BYTES",
    "COMMAND_RESULTS",
    "DEAD_LETTER",
    "HOOK_SUBSCRIPTIONS",
    "LAG_WINDOW",
    "NOTIFICATIONS",
    "POLLER_STATE",
    "POLLER_TRIGGERS",
    "PRIVACY_AUDIT",
    "PRIVACY_KEYS",
    "RECIPE_CHANGES",
    "RECIPE_REQUESTS",
    "RECIPE_RUNS",
    "RECORD_MAX_BYTES",
    "RIGHTS_REQUESTS",
    "STUDIO_RECIPES",
    "TASKS",
    "WEBHOOK_IDEMPOTENCY",
    "Compatibility",
    "TopicCatalogue",
    "TopicSpec",
    "TopicsFileError",
    "command_topic",
    "default_topics_file",
    "load_catalogue",
    "resolve_topics_file",
]

RIGHTS_REQUESTS = "dastra.rights-requests.v1"
TASKS = "dastra.tasks.v1"
COMMAND_RESULTS = "dastra.command-results.v1"
DEAD_LETTER = "dastra.dead-letter.v1"
POLLER_STATE = "dastra.poller-state.v1"
HOOK_SUBSCRIPTIONS = "dastra.hook-subscriptions.v1"
POLLER_TRIGGERS = "dastra.poller-triggers.v1"
LAG_WINDOW = "dastra.lag-window.v1"
NOTIFICATIONS = "dastra.notifications.v1"
RECIPE_RUNS = "dastra.recipe-runs.v1"
STUDIO_RECIPES = "dastra.recipes.v1"
RECIPE_CHANGES = "dastra.recipe-changes.v1"
RECIPE_REQUESTS = "dastra.recipe-requests.v1"
WEBHOOK_IDEMPOTENCY = "dastra.webhook-idempotency.v1"
PRIVACY_KEYS = "dastra.privacy-keys.v1"
PRIVACY_AUDIT = "dastra.privacy-audit.v1"

# Record sizes the catalogue is built for (topics.yaml `max.message.bytes`, README "Record
# sizes"): a command topic takes a 1 MiB webhook body with its envelope and batch overhead; the
# results and dead-letter topics take a command record at that limit, encrypted whole
# (PRIVACY_MODE_DEAD_LETTERS=encrypted: base64 adds a third), plus their own headers.
# Writers and readers of those records (webhook, worker, `dlq replay`) allow as much.
COMMAND_RECORD_MAX_BYTES = 1_150_000
RECORD_MAX_BYTES = 1_600_000

ACTIONS: tuple[str, ...] = (
    "create-task",
    "create-actor",
    "create-rights-request",
    "link-actor-to-processing",
    "search-actors",
    "find-or-create-actor",
)


def command_topic(action: str) -> str:
    """The command topic of one of the six actions: `dastra.commands.<action>.v1`."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    return f"dastra.commands.{action}.v1"


CleanupPolicy = Literal["delete", "compact", "compact,delete"]
# How a topic's schemas may evolve within its version (`dastra-kafka schemas check`): BACKWARD when
# the bridge reads it (new readers, old records), FORWARD when others read what the bridge writes
# (old readers, new records), FULL when both.
Compatibility = Literal["BACKWARD", "FORWARD", "FULL"]


class TopicSpec(BaseModel):
    """One topic as `topics.yaml` declares it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    partitions: int = Field(ge=1)
    replication_factor: int = Field(ge=1)
    cleanup_policy: CleanupPolicy
    retention_ms: int = Field(ge=-1)
    personal_data: bool
    key_schema: str = Field(min_length=1)
    value_schema: str = Field(min_length=1)
    compatibility: Compatibility
    config: dict[str, str] = Field(default_factory=dict)

    def broker_configs(self) -> dict[str, str]:
        """The topic-level configs we manage on the broker."""
        configs = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        configs.update(self.config)
        return configs

    @property
    def unbounded_retention(self) -> bool:
        """Records are kept forever: no time limit, or compaction keeps the latest per key."""
        return self.retention_ms < 0 or self.cleanup_policy == "compact"


class TopicsFileError(ValueError):
    """`topics.yaml` is malformed; the message names the file, topic and field."""


class TopicCatalogue(BaseModel):
    """All topics of the product, in file order."""

    model_config = ConfigDict(frozen=True)

    path: Path
    topics: tuple[TopicSpec, ...]

    def __getitem__(self, name: str) -> TopicSpec:
        for spec in self.topics:
            if spec.name == name:
                return spec
        raise KeyError(f"topic {name!r} is not declared in {self.path}")

    def __iter__(self) -> Iterator[TopicSpec]:  # type: ignore[override]
        return iter(self.topics)

    def __len__(self) -> int:
        return len(self.topics)

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.topics]

    def with_replication_factor(self, factor: int | None) -> TopicCatalogue:
        """The same catalogue with every replication factor replaced (None: unchanged)."""
        if factor is None:
            return self
        return self.model_copy(
            update={
                "topics": tuple(
                    spec.model_copy(update={"replication_factor": factor}) for spec in self.topics
                )
            }
        )

    def with_min_insync_replicas(self, count: int | None) -> TopicCatalogue:
        """The same catalogue with `min.insync.replicas=count` in every topic's configs (None:
        unchanged). A topic with fewer replicas than `count` would refuse every `acks=all`
        write (NOT_ENOUGH_REPLICAS): that is a `ValueError` naming them.

            catalogue.with_replication_factor(3).with_min_insync_replicas(2)
        """
        if count is None:
            return self
        short = [spec.name for spec in self.topics if spec.replication_factor < count]
        if short:
            raise ValueError(
                f"KAFKA_MIN_INSYNC_REPLICAS={count} is more than the replication factor of "
                f"{', '.join(short)}: every write with acks=all would be refused; lower it or "
                "raise KAFKA_REPLICATION_FACTOR"
            )
        return self.model_copy(
            update={
                "topics": tuple(
                    spec.model_copy(
                        update={"config": {**spec.config, "min.insync.replicas": str(count)}}
                    )
                    for spec in self.topics
                )
            }
        )


_DEFAULTABLE = {"replication_factor", "cleanup_policy", "retention_ms", "personal_data"}


def default_topics_file() -> Path:
    """The shipped `topics.yaml`: the checkout's, or the installed wheel's (`bus/shipped.py`)."""
    return shipped_root() / "topics.yaml"


def resolve_topics_file(configured: Path) -> Path:
    """The catalogue a process reads for SERVICE_TOPICS_FILE: the file itself when it is absolute
    or exists from the working directory, else the shipped one (the default `topics.yaml`, run
    from anywhere)."""
    if configured.is_absolute() or configured.is_file():
        return configured
    return default_topics_file()


def load_catalogue(path: Path) -> TopicCatalogue:
    """Load and validate `topics.yaml`; raise `TopicsFileError` naming file, topic and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopicsFileError(f"{path}: cannot read the topic catalogue: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopicsFileError(f"{path}{where}: not valid YAML: {problem}") from exc
    if not isinstance(document, Mapping):
        raise TopicsFileError(f"{path}: expected a mapping with 'defaults' and 'topics'")
    unknown = set(document) - {"defaults", "topics"}
    if unknown:
        raise TopicsFileError(f"{path}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise TopicsFileError(f"{path}: 'defaults' must be a mapping")
    bad_defaults = set(defaults) - _DEFAULTABLE
    if bad_defaults:
        raise TopicsFileError(
            f"{path}: defaults: unknown field(s) {', '.join(sorted(bad_defaults))}; "
            f"allowed: {', '.join(sorted(_DEFAULTABLE))}"
        )
    entries = document.get("topics")
    if not isinstance(entries, list) or not entries:
        raise TopicsFileError(f"{path}: 'topics' must be a non-empty list")

    specs: list[TopicSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise TopicsFileError(f"{path}: topics[{index}]: expected a mapping")
        label = str(entry.get("name") or f"topics[{index}]")
        merged: dict[str, Any] = {**defaults, **entry}
        try:
            spec = TopicSpec.model_validate(merged)
        except ValidationError as exc:
            raise TopicsFileError(_describe(path, label, exc)) from exc
        if spec.name in seen:
            raise TopicsFileError(f"{path}: topic {spec.name}: name: duplicate topic name")
        seen.add(spec.name)
        specs.append(spec)
    return TopicCatalogue(path=path, topics=tuple(specs))


def _describe(path: Path, label: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(entry)"
        if error["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        elif error["type"] == "missing":
            problems.append(f"{field}: required field is missing")
        else:
            problems.append(f"{field}: {error['msg']} (got {error.get('input')!r})")
    return f"{path}: topic {label}: " + "; ".join(problems)
