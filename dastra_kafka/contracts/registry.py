"""The message contracts: what every key, value and header of every topic may hold.

Consumes the models the code itself uses (Dastra objects, commands, results, the poller's cursor
and triggers, hook subscriptions, the lag window). Produces two registries and what is derived
from them:

- `CONTRACTS`: schema name (as `topics.yaml` names it in key_schema/value_schema) -> `Contract`,
  a pydantic model or type plus a title and a description; `contract_schema(name)` gives its JSON
  Schema (draft 2020-12), the text of schemas/<name>.schema.json.
- `TOPIC_CONTRACTS`: topic -> `TopicContract`: its headers (CloudEvents binary mode, optional
  CloudEvents, dead-letter headers, none), event types, tombstones, which roles send and receive
  it, and example records.
- `validate_record(...)`: the problems of a Kafka record against the contracts of its topic.

Adding a schema is one `Contract` entry (and its name in topics.yaml); adding a topic is its
topics.yaml entry and one `TopicContract` entry. `schemas export` regenerates the files.

    problems = validate_record(catalogue, "dastra.tasks.v1", key, value, headers)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, cached_property
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from pydantic import Field, TypeAdapter
from pydantic.config import JsonDict

from bus.deadletter import (
    DLQ_ATTEMPTS,
    DLQ_COMPONENT,
    DLQ_ERROR_KIND,
    DLQ_ERROR_MESSAGE,
    DLQ_FAILED_AT,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
    DLQ_VALUE_ENCRYPTED,
    ErrorKind,
)
from bus.envelope import Headers, header_dict
from bus.privacy import PAYLOAD_HEADER, KeyRecord, event_model, private_model
from bus.records.commands import COMMAND_MODELS, CommandResult
from bus.records.event_types import EVENT_TYPES
from bus.records.idempotency import IdempotencyRecord
from bus.records.lag import LagWindowKey, LagWindowRecord
from bus.records.poller import Cursor, PollTrigger
from bus.records.privacy_audit import ErasureAudit
from bus.records.recipe_requests import REQUEST_TYPES, RecipeRequest
from bus.records.recipe_runs import Notification, RecipeRun
from bus.records.studio_recipes import STUDIO_NAME_PATTERN, StudioRecipeVersion
from bus.records.subscriptions import HookSubscription
from bus.topics import (
    ACTIONS,
    COMMAND_RESULTS,
    DEAD_LETTER,
    HOOK_SUBSCRIPTIONS,
    LAG_WINDOW,
    NOTIFICATIONS,
    POLLER_STATE,
    POLLER_TRIGGERS,
    PRIVACY_AUDIT,
    PRIVACY_KEYS,
    RECIPE_CHANGES,
    RECIPE_REQUESTS,
    RECIPE_RUNS,
    RIGHTS_REQUESTS,
    STUDIO_RECIPES,
    TASKS,
    WEBHOOK_IDEMPOTENCY,
    Compatibility,
    TopicCatalogue,
    command_topic,
)
from dastra.models import RightsRequest, Task, UserLight
from dastra_kafka.contracts._examples import EXAMPLES, RecordExample

__all__ = [
    "CONTRACTS",
    "JSON_SCHEMA_DIALECT",
    "SCHEMA_ID_PREFIX",
    "TOPIC_CONTRACTS",
    "Contract",
    "HeadersKind",
    "RecordExample",
    "Role",
    "TopicContract",
    "cloudevents_headers_schema",
    "contract_schema",
    "derived_compatibility",
    "headers_schema",
    "schema_of",
    "structured_envelope_schema",
    "topic_headers_refinement",
    "unknown_schema_names",
    "validate_record",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX = "urn:dastra-kafka:schema:"

Encoding = Literal["json", "text", "bytes"]


@dataclass(frozen=True)
class Contract:
    """One schema: a pydantic model (or any type pydantic's `TypeAdapter` takes).

    `encoding` says how a record carries it: `json` (a JSON document), `text` (UTF-8 text, keys),
    `bytes` (anything). `lenient`: enumerations document known values but take any string, and
    unknown fields are kept (Dastra's objects: the live API is newer than its spec).
    """

    name: str
    type: Any
    title: str
    description: str
    encoding: Encoding = "json"
    lenient: bool = False

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.type)


class Role(StrEnum):
    """Who sends or receives on a topic (AsyncAPI operations are grouped by these)."""

    POLLER = "poller"
    AGENTS = "agents"
    WEBHOOK = "webhook"
    HOOKS = "hooks"
    LAG_MONITOR = "lag-monitor"
    RECIPES = "recipes"
    STUDIO = "studio"
    OPERATORS = "operators"
    ANY_PRODUCER = "any-producer"
    ANY_CONSUMER = "any-consumer"

    @property
    def description(self) -> str:
        return _ROLE_DESCRIPTIONS[self]


_ROLE_DESCRIPTIONS = {
    Role.POLLER: "producers/poller: polls Dastra, publishes events and its cursor transactionally",
    Role.AGENTS: "consumers/agents (Faust): run commands against Dastra, write one result each",
    Role.WEBHOOK: "producers/webhook: the HTTP API (commands, REST hooks, Dastra's webhooks)",
    Role.HOOKS: "consumers/hooks: deliver events to REST hook subscribers (Standard Webhooks)",
    Role.LAG_MONITOR: "consumers/lag: consumer lag monitor, keeps its window on Kafka",
    Role.RECIPES: "consumers/recipes (in the worker): run recipes, events in, commands and "
    "messages out",
    Role.STUDIO: "dastra_kafka/studio: the studio's API, saves studio recipes and their audit",
    Role.OPERATORS: "people and tools: `dastra-kafka dlq replay`, inspection",
    Role.ANY_PRODUCER: "any enterprise system producing commands in its own language",
    Role.ANY_CONSUMER: "any enterprise system consuming events or results",
}

HeadersKind = Literal["cloudevents", "cloudevents-optional", "dead-letter", "none"]


@dataclass(frozen=True)
class TopicContract:
    """What a topic's records carry besides key and value schemas (those are in topics.yaml)."""

    topic: str
    message: str  # the AsyncAPI message name
    summary: str
    headers: HeadersKind
    senders: tuple[Role, ...]
    receivers: tuple[Role, ...]
    examples: tuple[RecordExample, ...]
    event_types: tuple[str, ...] = ()  # the ce_type values, when fixed
    tombstones: bool = False  # a null value deletes the key (compacted topics)
    structured: bool = False  # structured-mode CloudEvents are accepted too
    extra_required_headers: tuple[str, ...] = ()


# The roles whose code is this project: released together, they read what they wrote before.
_BRIDGE = frozenset(
    {
        Role.POLLER,
        Role.AGENTS,
        Role.WEBHOOK,
        Role.HOOKS,
        Role.LAG_MONITOR,
        Role.RECIPES,
        Role.STUDIO,
    }
)


def derived_compatibility(contract: TopicContract) -> Compatibility:
    """The compatibility a topic needs by who reads it (topics.yaml states it; a test checks
    they agree): BACKWARD when the bridge reads it (new code reads records written before),
    FORWARD when people or other systems read it with types generated from an older schema
    (`any-consumer`, `operators`), FULL when both."""
    bridge_reads = any(role in _BRIDGE for role in contract.receivers)
    others_read = any(role not in _BRIDGE for role in contract.receivers)
    if bridge_reads and others_read:
        return "FULL"
    return "BACKWARD" if bridge_reads else "FORWARD"


# --- keys ------------------------------------------------------------------------------------

EntityKey = Annotated[str, Field(pattern=r"^[0-9]+:[0-9]+$")]
CommandKey = Annotated[str, Field(min_length=1)]
CommandIdKey = Annotated[str, Field(min_length=1)]
PollerStateKey = Annotated[str, Field(pattern=r"^[0-9]+:[a-z][a-z0-9-]*$")]
SubscriptionKey = Annotated[
    str, Field(pattern=HookSubscription.model_fields["id"].metadata[0].pattern)
]
WorkspaceKey = Annotated[str, Field(pattern=r"^[0-9]+$")]
NotificationKey = Annotated[str, Field(min_length=1)]
RecipeRunKey = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*:.+$")]
StudioRecipeKey = Annotated[str, Field(pattern=STUDIO_NAME_PATTERN)]
IdempotencyKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
PrivacyKeyId = Annotated[
    str,
    Field(
        pattern=r"^(key:k_[0-9a-f]{32}|alias:s_[0-9a-f]{32}:s_[0-9a-f]{32}|erased:s_[0-9a-f]{32})$"
    ),
]
AuditIdKey = Annotated[str, Field(min_length=1)]

_LAG_KEY_CONTENT: JsonDict = {
    "oneOf": [
        {
            "type": "array",
            "prefixItems": [{"const": "window"}, {"type": "string"}, {"type": "string"}],
            "items": False,
            "minItems": 3,
            "description": '["window", consumer group, topic]',
        },
        {
            "type": "array",
            "prefixItems": [{"const": "status"}, {"type": "string"}],
            "items": False,
            "minItems": 2,
            "description": '["status", consumer group]',
        },
    ]
}

_EVENT_NOTE = (
    " The record value is the object exactly as Dastra's API returned it (camelCase field names); "
    "unknown fields are kept and enumerations may carry values newer than this schema, so "
    "consumers must tolerate both. Keyed `<workspaceId>:<id>`; CloudEvents binary mode."
    " Payload modes (PRIVACY_MODE_*; the `ce_dastrapayload` header names the mode, absent = "
    "full): `redacted` replaces personal fields by `hmac-sha256:<hex>` keyed hashes (or leaves "
    "them out); `thin` keeps ids, state and dates plus `dataref`, the Dastra API path of the "
    "object; `encrypted` replaces each personal field by an EncryptedField (AES-256-GCM with the "
    "data key of the record's data subject, see dastra.privacy-keys.v1), or by an ErasedField "
    "once the subject was erased."
)
_COMMAND_NOTE = (
    " Sent by the webhook with PRIVACY_MODE_COMMANDS=encrypted, personal fields are "
    "EncryptedFields (`ce_dastrapayload: encrypted`); the agents decrypt them."
)


def _contracts() -> dict[str, Contract]:
    entries = [
        Contract(
            "entity-key",
            EntityKey,
            "Entity key",
            "`<workspaceId>:<id>` of a Dastra object, e.g. `101:4521`: all changes of one object "
            "share a key.",
            encoding="text",
        ),
        Contract(
            "rights-request",
            event_model("rights_request", RightsRequest, UserLight),
            "Rights request",
            "A Dastra data subject rights request (DataSubjectRequestDto)." + _EVENT_NOTE,
            lenient=True,
        ),
        Contract(
            "task",
            event_model("task", Task, UserLight),
            "Task",
            "A Dastra task, an action of the action plan (TaskDto)." + _EVENT_NOTE,
            lenient=True,
        ),
        Contract(
            "command-key",
            CommandKey,
            "Command key",
            "The command's natural key (e.g. your CRM ticket id) or its id. Commands with the "
            "same key run in order; a key is strongly recommended. Key create-actor and "
            "find-or-create-actor commands by the actor, as the webhook does: `actor:` and the "
            "hex SHA-256 of `email:<e-mail, stripped and lower-cased>` (else `company:<company "
            "name, spaces collapsed, lower-cased>`, else `names:<given>/<family>`): commands for "
            "one actor then share a partition, so two workers never both create it. Key "
            "link-actor-to-processing commands `processing:<dataProcessingId, lower case>`, so "
            "that links to one processing never race.",
            encoding="text",
        ),
        *(
            Contract(
                f"command.{action}",
                private_model(f"command.{action}", model, {}),
                f"Command {action}",
                (model.__doc__ or "").strip()
                + " Dastra's DTO field names (camelCase) plus an optional `workspaceId`; "
                "unknown fields are refused. Plain JSON, or the data of a CloudEvent (binary "
                "or structured mode)." + _COMMAND_NOTE,
            )
            for action, model in COMMAND_MODELS.items()
        ),
        Contract(
            "command-id-key",
            CommandIdKey,
            "Command id",
            "The id of the command a result answers: its `ce_id`, else the `id` of a structured "
            "CloudEvent, else `<topic>/<partition>/<offset>` of the command record.",
            encoding="text",
        ),
        Contract(
            "command-result",
            CommandResult,
            "Command result",
            "The one result of a command: succeeded (with the Dastra object, or a list for a "
            "search, best match first) or failed (with the error). Keyed by command id. With "
            "PRIVACY_MODE_RESULTS the Dastra objects are redacted, thin or encrypted as on the "
            "event topics (`ce_dastrapayload` names the mode).",
        ),
        Contract(
            "original-key",
            Any,
            "Original key",
            "The key of the record that failed, byte for byte (any bytes; absent when the "
            "original had none).",
            encoding="bytes",
        ),
        Contract(
            "dead-letter",
            Any,
            "Dead letter",
            "The value of the record that failed, byte for byte: not necessarily JSON, possibly "
            "empty. The original headers are kept and the `dlq.*` headers say what failed, where "
            "and when (see the dead-letter message headers). With "
            "PRIVACY_MODE_DEAD_LETTERS=encrypted, a command's value is sealed whole: the value "
            'is `{"$enc": "aes-256-gcm", "kid", "iv", "ct"}` (additional data '
            "`dastra-kafka:v1:<kid>:$record`) and `dlq.value.encrypted` says so; `dlq replay` "
            "decrypts it.",
            encoding="bytes",
        ),
        Contract(
            "poller-state-key",
            PollerStateKey,
            "Poller state key",
            "`<workspaceId>:<resource>`, resource `rights-requests` or `tasks`.",
            encoding="text",
        ),
        Contract(
            "poller-cursor",
            Cursor,
            "Poller cursor",
            "The poller's position in one workspace and resource, written in the same "
            "transaction as the events it covers (compacted: the latest per key counts).",
        ),
        Contract(
            "subscription-key",
            SubscriptionKey,
            "Subscription key",
            "The REST hook subscription id, `hook_<32 hex digits>`.",
            encoding="text",
        ),
        Contract(
            "hook-subscription",
            HookSubscription,
            "REST hook subscription",
            "A subscriber's target URL for one event type, with its Standard Webhooks signing "
            "secret (`whsec_<base64>`). The secret lives on this topic: protect the topic with "
            "ACLs so that only the webhook service and the hooks dispatcher can read it. "
            "Compacted; a tombstone (null value) deletes the subscription.",
        ),
        Contract(
            "workspace-key",
            WorkspaceKey,
            "Workspace key",
            "A Dastra workspace id, e.g. `101`.",
            encoding="text",
        ),
        Contract(
            "poll-trigger",
            PollTrigger,
            "Poll trigger",
            "Asks the poller to poll a workspace now (sent when Dastra's own webhook announces "
            "a change), so events arrive within seconds instead of the next poll interval.",
        ),
        Contract(
            "idempotency-key",
            IdempotencyKey,
            "Idempotency scope",
            "SHA-256 (hex) of the caller's token and its Idempotency-Key header: neither the "
            "token nor the key itself is stored.",
            encoding="text",
        ),
        Contract(
            "idempotency-record",
            IdempotencyRecord,
            "Idempotency record",
            "A webhook replica's claim on an Idempotency-Key, its release, or the first answer "
            "(the command id and where the command landed). Every replica reads the topic in "
            "log order: the first claim owns the key (until its lease ends in broker time), "
            "the first answer is final.",
        ),
        Contract(
            "lag-window-key",
            Annotated[
                LagWindowKey,
                Field(
                    json_schema_extra={
                        "contentMediaType": "application/json",
                        "contentSchema": _LAG_KEY_CONTENT,
                    }
                ),
            ],
            "Lag window key",
            'JSON text: `["window", group, topic]` or `["status", group]`.',
            encoding="text",
        ),
        Contract(
            "lag-window",
            LagWindowRecord,
            "Lag window record",
            "The lag monitor's state, so a restart keeps its evaluation window: the recent "
            "samples of one group and topic, or a group's last status (compacted; a tombstone "
            "drops a window whose samples all aged out).",
        ),
        Contract(
            "privacy-key-id",
            PrivacyKeyId,
            "Privacy key record id",
            "`key:<kid>` (a data key), `alias:<subject id>:<subject id>` (two ids of one "
            "person) or `erased:<subject id>`. Subject ids are keyed hashes (HMAC-SHA256 under "
            "a key derived from the master key): they reveal no e-mail or name.",
            encoding="text",
        ),
        Contract(
            "privacy-key-record",
            KeyRecord,
            "Privacy key record",
            "A data subject's data key (AES-256, wrapped with AES-256-GCM by the master key, "
            "additional data `dastra-kafka:v1:dek:<kid>`), an alias linking two subject ids of "
            "one person, or an erasure marker. Compacted: `privacy erase` tombstones a subject's "
            "keys, which makes their encrypted fields unreadable everywhere.",
        ),
        Contract(
            "audit-id-key",
            AuditIdKey,
            "Audit id",
            "The id of an erasure (a UUID), also its `ce_id`.",
            encoding="text",
        ),
        Contract(
            "privacy-erasure",
            ErasureAudit,
            "Erasure audit event",
            "What one erasure did: which subject ids and data keys, how many tombstones per "
            "topic, how many records became unreadable, when and by whom. Carries no personal "
            "data (an e-mail is recorded as its subject id).",
        ),
        Contract(
            "notification-key",
            NotificationKey,
            "Notification key",
            "What the notification is about, e.g. the Dastra object's `<workspaceId>:<id>` (the "
            "recipe chooses; by default the key of the event that triggered it).",
            encoding="text",
        ),
        Contract(
            "notification",
            Notification,
            "Notification",
            "A message from a recipe: a one-line title, a severity, what it is about (REST hook "
            "event name, Dastra object type and id) and free details in `data`. CloudEvents "
            "binary mode; `ce_type` is chosen by the recipe, `ce_source` is "
            "`dastra-kafka://recipes/<name>`, `ce_id` is stable per run and step.",
        ),
        Contract(
            "recipe-run-key",
            RecipeRunKey,
            "Recipe run key",
            "`<recipe>:<run key>`: the recipe's name and the id of the event that triggered it "
            "(or the recipe's `once_per` value).",
            encoding="text",
        ),
        Contract(
            "recipe-run",
            RecipeRun,
            "Recipe run",
            "The progress and outcome of one recipe run: running, succeeded or failed, each "
            "finished step with its command ids (results are on dastra.command-results.v1) or "
            "published records, and the error of a failed run. Compacted: the latest per key "
            "counts; written at the start, after each step and at the end.",
        ),
        Contract(
            "studio-recipe-key",
            StudioRecipeKey,
            "Studio recipe key",
            "The studio recipe's name (lower-case letters, digits and '-').",
            encoding="text",
        ),
        Contract(
            "studio-recipe-version",
            StudioRecipeVersion,
            "Studio recipe version",
            "One version of a recipe made in the studio: the recipe document as a recipe YAML "
            "file holds it, its version number, what changed (saved, imported, enabled, "
            "disabled, deleted), the id of the token that made the change and when. Workers run "
            "the newest valid version of each; an invalid one never replaces a running one.",
        ),
        Contract(
            "recipe-request",
            RecipeRequest,
            "Recipe request",
            "A request of the studio to the workers: run a studio recipe once, for real, for a "
            "sample event (`send-once`, run key = the request's id, its `ce_id`), or retry a "
            "failed run (`retry`: the failed run's trigger is read again, its succeeded steps "
            "are read back, the failed step and those after it run again under the new run "
            "key). CloudEvents binary mode; a send-once carries the sample's data as pasted.",
        ),
    ]
    return {entry.name: entry for entry in entries}


CONTRACTS: dict[str, Contract] = _contracts()

# --- topics ----------------------------------------------------------------------------------

_EVERYONE_ELSE = (Role.HOOKS, Role.RECIPES, Role.ANY_CONSUMER)


def _topic_contracts() -> dict[str, TopicContract]:
    entries = [
        TopicContract(
            RIGHTS_REQUESTS,
            "RightsRequestEvent",
            "A rights request was created or changed in Dastra",
            "cloudevents",
            senders=(Role.POLLER,),
            receivers=_EVERYONE_ELSE,
            examples=EXAMPLES[RIGHTS_REQUESTS],
            event_types=EVENT_TYPES[RIGHTS_REQUESTS],
            extra_required_headers=("ce_time", "ce_subject"),
        ),
        TopicContract(
            TASKS,
            "TaskEvent",
            "A task was created or changed in Dastra",
            "cloudevents",
            senders=(Role.POLLER,),
            receivers=_EVERYONE_ELSE,
            examples=EXAMPLES[TASKS],
            event_types=EVENT_TYPES[TASKS],
            extra_required_headers=("ce_time", "ce_subject"),
        ),
        *(
            TopicContract(
                command_topic(action),
                "".join(part.capitalize() for part in action.split("-")) + "Command",
                f"Ask the agents to {action.replace('-', ' ')} in Dastra",
                "cloudevents-optional",
                senders=(Role.WEBHOOK, Role.RECIPES, Role.ANY_PRODUCER, Role.OPERATORS),
                receivers=(Role.AGENTS,),
                examples=EXAMPLES[command_topic(action)],
                structured=True,
            )
            for action in ACTIONS
        ),
        TopicContract(
            COMMAND_RESULTS,
            "CommandResult",
            "The outcome of one command",
            "cloudevents",
            senders=(Role.AGENTS,),
            receivers=(Role.WEBHOOK, Role.RECIPES, Role.ANY_CONSUMER),
            examples=EXAMPLES[COMMAND_RESULTS],
            event_types=EVENT_TYPES[COMMAND_RESULTS],
        ),
        TopicContract(
            DEAD_LETTER,
            "DeadLetter",
            "A record that could not be processed, kept unchanged with the reason",
            "dead-letter",
            senders=(Role.AGENTS, Role.HOOKS, Role.RECIPES),
            receivers=(Role.OPERATORS,),
            examples=EXAMPLES[DEAD_LETTER],
        ),
        TopicContract(
            POLLER_STATE,
            "PollerCursor",
            "The poller's cursor of one workspace and resource",
            "none",
            senders=(Role.POLLER,),
            receivers=(Role.POLLER,),
            examples=EXAMPLES[POLLER_STATE],
            tombstones=True,
        ),
        TopicContract(
            HOOK_SUBSCRIPTIONS,
            "HookSubscription",
            "A REST hook subscription was created (or, as a tombstone, deleted)",
            "none",
            senders=(Role.WEBHOOK, Role.HOOKS),
            receivers=(Role.HOOKS, Role.WEBHOOK),
            examples=EXAMPLES[HOOK_SUBSCRIPTIONS],
            tombstones=True,
        ),
        TopicContract(
            POLLER_TRIGGERS,
            "PollTrigger",
            "Poll a workspace now",
            "none",
            senders=(Role.WEBHOOK,),
            receivers=(Role.POLLER,),
            examples=EXAMPLES[POLLER_TRIGGERS],
        ),
        TopicContract(
            NOTIFICATIONS,
            "Notification",
            "A recipe tells people or systems about something",
            "cloudevents",
            senders=(Role.RECIPES,),
            receivers=(Role.ANY_CONSUMER, Role.RECIPES),
            examples=EXAMPLES[NOTIFICATIONS],
        ),
        TopicContract(
            RECIPE_RUNS,
            "RecipeRun",
            "The state of one recipe run, or (a tombstone: `privacy erase`) a run forgotten",
            "none",
            senders=(Role.RECIPES, Role.OPERATORS),
            receivers=(Role.RECIPES, Role.OPERATORS, Role.STUDIO),
            examples=EXAMPLES[RECIPE_RUNS],
            tombstones=True,
        ),
        TopicContract(
            STUDIO_RECIPES,
            "StudioRecipeVersion",
            "The newest version of a studio recipe, or (a tombstone) a recipe deleted",
            "none",
            senders=(Role.STUDIO,),
            receivers=(Role.RECIPES, Role.STUDIO),
            examples=EXAMPLES[STUDIO_RECIPES],
            tombstones=True,
        ),
        TopicContract(
            RECIPE_CHANGES,
            "StudioRecipeChange",
            "A change to a studio recipe (the audit trail)",
            "none",
            senders=(Role.STUDIO,),
            receivers=(Role.OPERATORS,),
            examples=EXAMPLES[RECIPE_CHANGES],
        ),
        TopicContract(
            RECIPE_REQUESTS,
            "RecipeRequest",
            "Run a studio recipe once for a sample, or retry a failed run",
            "cloudevents",
            senders=(Role.STUDIO,),
            receivers=(Role.RECIPES,),
            examples=EXAMPLES[RECIPE_REQUESTS],
            event_types=tuple(REQUEST_TYPES.values()),
        ),
        TopicContract(
            WEBHOOK_IDEMPOTENCY,
            "IdempotencyRecord",
            "The webhook's Idempotency-Key claims and first answers",
            "none",
            senders=(Role.WEBHOOK,),
            receivers=(Role.WEBHOOK,),
            examples=EXAMPLES[WEBHOOK_IDEMPOTENCY],
        ),
        TopicContract(
            PRIVACY_KEYS,
            "PrivacyKeyRecord",
            "A data key, an alias, an erasure marker, or (a tombstone) an erased key",
            "none",
            senders=(Role.POLLER, Role.AGENTS, Role.RECIPES, Role.WEBHOOK, Role.OPERATORS),
            receivers=(
                Role.POLLER,
                Role.AGENTS,
                Role.RECIPES,
                Role.WEBHOOK,
                Role.HOOKS,
                Role.ANY_CONSUMER,
            ),
            examples=EXAMPLES[PRIVACY_KEYS],
            tombstones=True,
        ),
        TopicContract(
            PRIVACY_AUDIT,
            "ErasureAudit",
            "A data subject was erased from the bus",
            "cloudevents",
            senders=(Role.OPERATORS, Role.POLLER),
            receivers=(Role.OPERATORS, Role.ANY_CONSUMER),
            examples=EXAMPLES[PRIVACY_AUDIT],
            event_types=EVENT_TYPES[PRIVACY_AUDIT],
        ),
        TopicContract(
            LAG_WINDOW,
            "LagWindowRecord",
            "The lag monitor's window or a group's status",
            "none",
            senders=(Role.LAG_MONITOR,),
            receivers=(Role.LAG_MONITOR,),
            examples=EXAMPLES[LAG_WINDOW],
            tombstones=True,
        ),
    ]
    return {entry.topic: entry for entry in entries}


TOPIC_CONTRACTS: dict[str, TopicContract] = _topic_contracts()


def unknown_schema_names(catalogue: TopicCatalogue) -> list[str]:
    """`topic: key_schema|value_schema name` for every schema topics.yaml names that no
    `Contract` defines (empty when all exist)."""
    problems = []
    for spec in catalogue:
        for role, name in (("key_schema", spec.key_schema), ("value_schema", spec.value_schema)):
            if name not in CONTRACTS:
                problems.append(f"{spec.name}: {role} {name!r} is not a known schema")
    return problems


# --- JSON Schemas ----------------------------------------------------------------------------

_LENIENT_NOTE = "Known values; any other string is accepted too (Dastra may add values)."


def _document_lenient_enums(schema: dict[str, Any]) -> None:
    for definition in schema.get("$defs", {}).values():
        if "enum" in definition:
            text = definition.get("description", "").strip()
            definition["description"] = f"{text} {_LENIENT_NOTE}".strip()


@cache
def contract_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a registered contract, as schemas/<name>.schema.json
    holds it. Raises `KeyError` for an unknown name."""
    contract = CONTRACTS[name]
    return schema_of(contract)


def _drop_null_defaults(node: Any) -> None:
    """Remove every `"default": null`: an optional property that is absent means null anyway,
    and datamodel-codegen (0.97) copies that default into the model it makes for a constrained
    alternative (`{"anyOf": [{"type": "string", "maxLength": 100}, {"type": "null"}],
    "default": null}` gives `root: str = None`), which type checkers rightly reject."""
    if isinstance(node, dict):
        if "default" in node and node["default"] is None:
            del node["default"]
        for value in node.values():
            _drop_null_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _drop_null_defaults(value)


def schema_of(contract: Contract) -> dict[str, Any]:
    """The JSON Schema of any `Contract` (registered or not: tests build modified ones)."""
    generated = contract.adapter.json_schema(mode="validation")
    _drop_null_defaults(generated)
    if contract.lenient:
        _document_lenient_enums(generated)
    generated.pop("title", None)
    generated.pop("description", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_PREFIX}{contract.name}",
        "title": contract.title,
        "description": contract.description,
        **generated,
    }


# --- headers ---------------------------------------------------------------------------------

_CE_PROPERTIES: dict[str, dict[str, Any]] = {
    "ce_specversion": {"type": "string", "const": "1.0", "description": "CloudEvents version"},
    "ce_id": {
        "type": "string",
        "minLength": 1,
        "description": "Event id; deterministic for Dastra events (the same change always has "
        "the same id), so consumers can drop duplicates. For commands: the command id.",
    },
    "ce_source": {
        "type": "string",
        "minLength": 1,
        "description": "Who produced it: `dastra://workspaces/<id>` for Dastra events",
    },
    "ce_type": {"type": "string", "minLength": 1, "description": "Event type"},
    "ce_time": {"type": "string", "format": "date-time", "description": "When it happened"},
    "ce_subject": {"type": "string", "description": "The Dastra object id, for events"},
    PAYLOAD_HEADER: {
        "type": "string",
        "description": "CloudEvents extension attribute `dastrapayload`: the payload mode of "
        "the data (full, redacted, thin, encrypted); absent means full",
    },
    "content-type": {
        "type": "string",
        "pattern": "^application/json",
        "description": "Media type of the record value (binary content mode)",
    },
    "ce_traceparent": {
        "type": "string",
        "description": "CloudEvents distributed tracing extension `traceparent`: the W3C trace "
        "context of the span that sent the record (README, Operators: tracing); absent when "
        "the sender traces nothing",
    },
    "ce_tracestate": {
        "type": "string",
        "description": "CloudEvents distributed tracing extension `tracestate`: vendor trace "
        "data that goes with `ce_traceparent`",
    },
}
_CE_REQUIRED = ["ce_specversion", "ce_id", "ce_source", "ce_type", "content-type"]

_DLQ_PROPERTIES: dict[str, dict[str, Any]] = {
    DLQ_ERROR_KIND: {
        "type": "string",
        "anyOf": [{"enum": [kind.value for kind in ErrorKind]}, {"type": "string"}],
        "description": "Why it failed. " + _LENIENT_NOTE.replace("Dastra", "new versions"),
    },
    DLQ_ERROR_MESSAGE: {
        "type": "string",
        "description": "What was wrong (never personal data: it names fields, not values)",
    },
    DLQ_ORIGINAL_TOPIC: {"type": "string", "minLength": 1},
    DLQ_ORIGINAL_PARTITION: {"type": "string", "pattern": "^[0-9]+$"},
    DLQ_ORIGINAL_OFFSET: {"type": "string", "pattern": "^[0-9]+$"},
    DLQ_FAILED_AT: {"type": "string", "format": "date-time"},
    DLQ_COMPONENT: {"type": "string", "description": "The component that gave up (agents, hooks)"},
    DLQ_ATTEMPTS: {"type": "string", "pattern": "^[0-9]+$", "description": "Attempts made"},
    DLQ_VALUE_ENCRYPTED: {
        "type": "string",
        "description": "Present (`aes-256-gcm`) when the value is the original value sealed "
        "whole with its data subject's key (PRIVACY_MODE_DEAD_LETTERS=encrypted)",
    },
}
_DLQ_REQUIRED = [
    DLQ_ERROR_KIND,
    DLQ_ERROR_MESSAGE,
    DLQ_ORIGINAL_TOPIC,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_OFFSET,
    DLQ_FAILED_AT,
]


def cloudevents_headers_schema(required: bool) -> dict[str, Any]:
    """The CloudEvents binary-mode headers (the AsyncAPI message traits); `required=False` for
    commands, which may also come as plain JSON without headers."""
    return {
        "type": "object",
        "properties": {name: dict(schema) for name, schema in _CE_PROPERTIES.items()},
        "required": list(_CE_REQUIRED) if required else [],
        "additionalProperties": {"type": "string"},
        "description": "Kafka headers (UTF-8 text): CloudEvents 1.0 Kafka protocol binding, "
        "binary content mode",
    }


def topic_headers_refinement(contract: TopicContract) -> dict[str, Any] | None:
    """What a topic adds to its CloudEvents trait (the message's own `headers`)."""
    refinement: dict[str, Any] = {}
    if contract.event_types:
        refinement["properties"] = {"ce_type": {"enum": list(contract.event_types)}}
    if contract.extra_required_headers:
        refinement["allOf"] = [{"required": list(contract.extra_required_headers)}]
    return refinement or None


def headers_schema(contract: TopicContract) -> dict[str, Any] | None:
    """The complete headers schema of a topic's records (None: headers are not part of it)."""
    if contract.headers == "none":
        return None
    if contract.headers == "dead-letter":
        return {
            "type": "object",
            "properties": {name: dict(schema) for name, schema in _DLQ_PROPERTIES.items()},
            "required": list(_DLQ_REQUIRED),
            "additionalProperties": {"type": "string"},
            "description": "The original record's headers, unchanged, plus the dlq.* headers",
        }
    schema = cloudevents_headers_schema(contract.headers == "cloudevents")
    refinement = topic_headers_refinement(contract)
    return _merge_patch(schema, refinement) if refinement else schema


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch (how AsyncAPI applies traits)."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def structured_envelope_schema(data_ref: str) -> dict[str, Any]:
    """A structured-mode CloudEvent (`application/cloudevents+json`) whose data is `data_ref`."""
    return {
        "type": "object",
        "description": "CloudEvents 1.0 structured content mode: the whole event is the value",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"type": "string", "const": "1.0"},
            "id": {"type": "string", "minLength": 1, "description": "The command id"},
            "source": {"type": "string", "minLength": 1},
            "type": {"type": "string", "minLength": 1},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string"},
            "datacontenttype": {"type": "string", "pattern": "^application/json"},
            "data": {"$ref": data_ref},
        },
    }


# --- validating records ----------------------------------------------------------------------


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        contract_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


@cache
def _headers_validator(topic: str) -> Draft202012Validator | None:
    schema = headers_schema(TOPIC_CONTRACTS[topic])
    if schema is None:
        return None
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _errors(validator: Draft202012Validator, instance: Any, what: str) -> list[str]:
    return [
        f"{what}{''.join(f'[{p!r}]' for p in error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]


def validate_record(
    catalogue: TopicCatalogue,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | Mapping[str, bytes | str],
) -> list[str]:
    """Problems of one record against the contracts of `topic` (its catalogue name, without a
    prefix): key, value and headers. An empty list means the record is valid."""
    spec = catalogue[topic]
    contract = TOPIC_CONTRACTS.get(topic)
    if contract is None:
        return [f"{topic}: no TopicContract is registered"]
    found = {name: raw.decode("utf-8", "replace") for name, raw in header_dict(headers).items()}
    problems: list[str] = []

    key_contract = CONTRACTS[spec.key_schema]
    if key_contract.encoding != "bytes":
        if key is None:
            problems.append("key: missing")
        else:
            try:
                problems += _errors(_validator(spec.key_schema), _decode(key, key_contract), "key")
            except ValueError as exc:
                problems.append(f"key: {exc}")

    validator = _headers_validator(topic)
    structured = contract.structured and found.get("content-type", "").startswith(
        "application/cloudevents"
    )
    if validator is not None and not structured:
        problems += _errors(validator, found, "headers")

    value_contract = CONTRACTS[spec.value_schema]
    if value is None:
        if not contract.tombstones and value_contract.encoding != "bytes":
            problems.append("value: null (a tombstone) on a topic without tombstones")
        return problems
    if value_contract.encoding == "bytes":
        return problems
    try:
        data = _decode(value, value_contract)
    except ValueError as exc:
        return [*problems, f"value: {exc}"]
    if structured:
        envelope = Draft202012Validator(
            structured_envelope_schema("#/$defs/data") | {"$defs": {"data": {}}},
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        problems += _errors(envelope, data, "value")
        data = data.get("data") if isinstance(data, dict) else None
    problems += _errors(_validator(spec.value_schema), data, "value")
    return problems


def _decode(raw: bytes, contract: Contract) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason})") from exc
    if contract.encoding == "text":
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from exc
