"""The contract files: valid JSON Schemas and AsyncAPI, complete, with examples that validate, and
no drift from the models the code uses."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator
from pydantic import Field, create_model
from referencing import Registry, Resource

from bus.envelope import dumps
from bus.topics import TopicCatalogue
from dastra.models import Task
from dastra_kafka.contracts.registry import (
    CONTRACTS,
    JSON_SCHEMA_DIALECT,
    SCHEMA_ID_PREFIX,
    TOPIC_CONTRACTS,
    Contract,
    headers_schema,
    validate_record,
)
from dastra_kafka.contracts.schemagen import (
    ASYNCAPI_FILE,
    DOCS_FILE,
    breaking_changes,
    committed_files,
    drift,
    generate,
    schema_compatibility,
    schema_path,
)
from tests.conftest import PROJECT_ROOT

# The task contract's model: dastra.models.Task whose personal fields may also be encrypted or
# erased (bus/privacy/ payload modes).
TaskEvent: type[Task] = CONTRACTS["task"].type

ASYNCAPI_TOOLS = PROJECT_ROOT / "tools" / "asyncapi"
ASYNCAPI_SPEC = ASYNCAPI_TOOLS / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"


@pytest.fixture(scope="module")
def generated(catalogue: TopicCatalogue) -> dict[str, bytes]:
    return generate(catalogue)


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / ASYNCAPI_FILE).read_text())
    return document


def _committed_schemas() -> dict[str, dict[str, Any]]:
    return {path: json.loads(content) for path, content in committed_files(PROJECT_ROOT).items()}


# --- the files -------------------------------------------------------------------------------


def test_committed_files_match_what_the_code_generates(generated: dict[str, bytes]) -> None:
    problems = drift(PROJECT_ROOT, generated)
    assert not problems, "\n".join(p.summary() for p in problems) + (
        "\nrun `dastra-kafka schemas export`"
    )


def test_generation_is_deterministic(
    catalogue: TopicCatalogue, generated: dict[str, bytes]
) -> None:
    assert generate(catalogue) == generated


def test_every_key_and_value_of_topics_yaml_has_a_schema_file(catalogue: TopicCatalogue) -> None:
    for spec in catalogue:
        assert (PROJECT_ROOT / schema_path(spec.key_schema)).is_file(), spec.name
        assert (PROJECT_ROOT / schema_path(spec.value_schema)).is_file(), spec.name
        assert spec.name in TOPIC_CONTRACTS


@pytest.mark.parametrize("path", sorted(committed_files(PROJECT_ROOT)))
def test_every_schema_is_a_valid_2020_12_schema_with_id_title_and_description(path: str) -> None:
    schema = json.loads((PROJECT_ROOT / path).read_text())
    Draft202012Validator.check_schema(schema)
    name = Path(path).name.removesuffix(".schema.json")
    assert schema["$schema"] == JSON_SCHEMA_DIALECT
    assert schema["$id"] == SCHEMA_ID_PREFIX + name
    assert schema["title"] and schema["description"]


def test_dastra_objects_are_lenient_and_commands_strict() -> None:
    schemas = _committed_schemas()
    task = schemas[schema_path("task")]
    assert task["additionalProperties"] is True
    state = task["properties"]["state"]["anyOf"]
    assert {"$ref": "#/$defs/TaskState"} in state and {"type": "string"} in state
    assert "Open" in task["$defs"]["TaskState"]["enum"]
    assert "any other string" in task["$defs"]["TaskState"]["description"]

    validator = Draft202012Validator(task, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert validator.is_valid({"id": 1, "state": "Paused", "brandNewField": {"x": 1}})
    assert not validator.is_valid({"id": "one"})

    command = Draft202012Validator(schemas[schema_path("command.create-task")])
    assert command.is_valid({"label": "Call back", "priority": "High"})
    assert not command.is_valid({"label": "Call back", "priority": "Urgent"})
    assert not command.is_valid({"label": "Call back", "labelTypo": "x"})
    assert not command.is_valid({"priority": "High"})


# --- examples --------------------------------------------------------------------------------


def _examples() -> list[tuple[str, Any]]:
    return [
        pytest.param(topic, example, id=f"{topic}:{example.name}")
        for topic, contract in TOPIC_CONTRACTS.items()
        for example in contract.examples
    ]


@pytest.mark.parametrize(("topic", "example"), _examples())
def test_every_example_validates_against_its_topic_and_parses_with_the_models(
    catalogue: TopicCatalogue, topic: str, example: Any
) -> None:
    key = None if example.key is None else example.key.encode()
    value = None if example.value is None else dumps(example.value)
    assert validate_record(catalogue, topic, key, value, dict(example.headers)) == []
    spec = catalogue[topic]
    if example.value is not None:
        CONTRACTS[spec.value_schema].adapter.validate_python(example.value)
    if example.key is not None:
        CONTRACTS[spec.key_schema].adapter.validate_python(example.key)


def test_every_topic_has_an_example() -> None:
    for topic, contract in TOPIC_CONTRACTS.items():
        assert any(e.value is not None for e in contract.examples), topic


def test_validate_record_finds_bad_keys_values_and_headers(catalogue: TopicCatalogue) -> None:
    example = TOPIC_CONTRACTS["dastra.tasks.v1"].examples[0]
    headers = dict(example.headers)
    value = dumps(example.value)
    assert validate_record(catalogue, "dastra.tasks.v1", b"918", value, headers) == [
        "key: '918' does not match '^[0-9]+:[0-9]+$'"
    ]
    missing = {k: v for k, v in headers.items() if k != "ce_type"}
    assert validate_record(catalogue, "dastra.tasks.v1", b"101:918", value, missing) == [
        "headers: 'ce_type' is a required property"
    ]
    wrong_type = {**headers, "ce_type": "eu.dastra.rights_request.created"}
    assert (
        "is not one of"
        in validate_record(catalogue, "dastra.tasks.v1", b"101:918", value, wrong_type)[0]
    )
    bad_time = {**headers, "ce_time": "yesterday"}
    assert validate_record(catalogue, "dastra.tasks.v1", b"101:918", value, bad_time) == [
        "headers['ce_time']: 'yesterday' is not a 'date-time'"
    ]
    assert validate_record(catalogue, "dastra.tasks.v1", b"101:918", b'{"id": "x"}', headers) == [
        "value['id']: 'x' is not of type 'integer'"
    ]
    assert validate_record(catalogue, "dastra.tasks.v1", b"101:918", b"{", headers) == [
        "value: not JSON (Expecting property name enclosed in double quotes)"
    ]
    assert validate_record(catalogue, "dastra.tasks.v1", b"101:918", None, headers) == [
        "value: null (a tombstone) on a topic without tombstones"
    ]
    # Dead letters keep any bytes; compacted topics take tombstones.
    dlq_headers = dict(TOPIC_CONTRACTS["dastra.dead-letter.v1"].examples[0].headers)
    assert validate_record(catalogue, "dastra.dead-letter.v1", None, b"\xff", dlq_headers) == []
    assert validate_record(catalogue, "dastra.dead-letter.v1", None, b"x", {}) != []
    assert validate_record(catalogue, "dastra.poller-state.v1", b"101:tasks", None, {}) == []


def test_structured_and_plain_commands_validate(catalogue: TopicCatalogue) -> None:
    topic = "dastra.commands.search-actors.v1"
    data = {"companyName": "Salesforce"}
    assert validate_record(catalogue, topic, b"k", dumps(data), {}) == []
    envelope = {"specversion": "1.0", "id": "c1", "source": "urn:x", "type": "t", "data": data}
    structured = {"content-type": "application/cloudevents+json; charset=UTF-8"}
    assert validate_record(catalogue, topic, b"k", dumps(envelope), structured) == []
    bad = {**envelope, "data": {"companyName": "Salesforce", "limit": 0}}
    assert validate_record(catalogue, topic, b"k", dumps(bad), structured) == [
        "value['limit']: 0 is less than the minimum of 1"
    ]
    no_id = {k: v for k, v in envelope.items() if k != "id"}
    assert validate_record(catalogue, topic, b"k", dumps(no_id), structured) == [
        "value: 'id' is a required property"
    ]


# --- AsyncAPI --------------------------------------------------------------------------------


def _asyncapi_validator() -> Draft7Validator:
    if not ASYNCAPI_SPEC.is_file():
        pytest.fail(f"{ASYNCAPI_SPEC} is missing: run `make asyncapi-tools`")
    spec = json.loads(ASYNCAPI_SPEC.read_text())
    registry: Registry[Any] = Registry().with_resource(spec["$id"], Resource.from_contents(spec))
    return Draft7Validator(spec, registry=registry.crawl())


def test_asyncapi_validates_against_the_official_asyncapi_3_json_schema(
    asyncapi: dict[str, Any],
) -> None:
    validator = _asyncapi_validator()
    errors = [
        f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(asyncapi)
    ]
    assert errors == []
    broken = copy.deepcopy(asyncapi)
    broken["channels"]["tasks"]["bindings"]["kafka"]["partitions"] = 0
    del broken["info"]["version"]
    assert len(list(validator.iter_errors(broken))) == 2


def _parse_with_asyncapi_parser(path: Path) -> tuple[int, dict[str, Any]]:
    script = ASYNCAPI_TOOLS / "validate.cjs"
    if not (ASYNCAPI_TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("the AsyncAPI parser is missing: run `make asyncapi-tools`")
    result = subprocess.run(
        ["node", str(script), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode in (0, 1), result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def test_asyncapi_passes_the_asyncapi_parser(asyncapi: dict[str, Any], tmp_path: Path) -> None:
    code, report = _parse_with_asyncapi_parser(PROJECT_ROOT / ASYNCAPI_FILE)
    assert (code, report) == (0, {"errors": [], "warnings": []})
    # The parser does reject a document whose operation names a message of another channel.
    broken = copy.deepcopy(asyncapi)
    broken["operations"]["pollerSendTasks"]["messages"].append(
        {"$ref": "#/channels/deadLetter/messages/DeadLetter"}
    )
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    code, report = _parse_with_asyncapi_parser(tmp_path / "broken.yaml")
    assert code == 1
    assert [e["code"] for e in report["errors"]] == [
        "asyncapi3-operation-messages-from-referred-channel"
    ]


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        result[key] = _merge_patch(result.get(key), value)
    return result


def _resolve(document: dict[str, Any], node: Any) -> Any:
    if isinstance(node, dict) and "$ref" in node and len(node) == 1:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return target
    return node


def test_every_asyncapi_message_has_examples_that_validate(asyncapi: dict[str, Any]) -> None:
    components = asyncapi["components"]
    for channel in asyncapi["channels"].values():
        topic = channel["address"]
        for reference in channel["messages"].values():
            message = _resolve(asyncapi, reference)
            assert message["examples"], message["name"]
            headers: dict[str, Any] | None = message.get("headers")
            for trait in message.get("traits", []):
                headers = _merge_patch(_resolve(asyncapi, trait)["headers"], headers or {})
            if message.get("traits"):
                # The trait plus the message's refinement is exactly what the code validates.
                assert headers == headers_schema(TOPIC_CONTRACTS[topic])
            payload = Draft7Validator(
                {"components": components, "allOf": [message["payload"]]},
                format_checker=Draft7Validator.FORMAT_CHECKER,
            )
            key = Draft7Validator(message["bindings"]["kafka"]["key"])
            for example in message["examples"]:
                where = f"{message['name']}/{example['name']}"
                assert list(payload.iter_errors(example["payload"])) == [], where
                if headers is not None:
                    assert Draft7Validator(headers).is_valid(example.get("headers", {})), where
                match = example["summary"].rsplit("(key `", 1)
                if len(match) == 2:
                    assert key.is_valid(match[1].removesuffix("`)")), where


def test_asyncapi_describes_every_topic_with_bindings_and_roles(
    asyncapi: dict[str, Any], catalogue: TopicCatalogue
) -> None:
    channels = {c["address"]: c for c in asyncapi["channels"].values()}
    assert set(channels) == set(catalogue.names)
    for spec in catalogue:
        binding = channels[spec.name]["bindings"]["kafka"]
        assert binding["partitions"] == spec.partitions
        assert binding["topicConfiguration"] == {
            "cleanup.policy": spec.cleanup_policy.split(","),
            "retention.ms": spec.retention_ms,
        }
    operations = asyncapi["operations"]
    assert operations["pollerSendRightsRequests"]["action"] == "send"
    assert operations["agentsReceiveCommandsCreateTask"]["action"] == "receive"
    assert operations["anyProducerSendCommandsSearchActors"]["action"] == "send"
    assert operations["agentsSendDeadLetter"]["action"] == "send"
    assert operations["hooksReceiveTasks"]["action"] == "receive"
    assert operations["webhookSendHookSubscriptions"]["action"] == "send"
    assert operations["lagMonitorReceiveLagWindow"]["action"] == "receive"
    trait = asyncapi["components"]["messageTraits"]["cloudEvents"]["headers"]
    assert {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"} <= set(
        trait["properties"]
    )
    assert set(asyncapi["components"]["securitySchemes"]) == {
        "saslPlain",
        "saslScramSha256",
        "saslScramSha512",
        "mutualTls",
        "oauthBearer",
    }


def test_the_reference_lists_every_topic(catalogue: TopicCatalogue) -> None:
    text = (PROJECT_ROOT / DOCS_FILE).read_text()
    for spec in catalogue:
        assert f"\n## {spec.name}\n" in text
    assert "docs/topics.md" in (PROJECT_ROOT / "README.md").read_text()


# --- drift and compatibility with a model changed in-process ---------------------------------


def _with_task(model: type[Task]) -> dict[str, Contract]:
    contracts = dict(CONTRACTS)
    original = contracts["task"]
    contracts["task"] = Contract(
        original.name, model, original.title, original.description, lenient=True
    )
    return contracts


def test_a_model_changed_without_regeneration_is_drift_and_a_new_required_field_breaks(
    catalogue: TopicCatalogue,
) -> None:
    changed = create_model("Task", __base__=TaskEvent, riskScore=(int, Field(ge=0)))
    files = generate(catalogue, contracts=_with_task(changed))

    problems = drift(PROJECT_ROOT, files)
    assert {p.path for p in problems} == {schema_path("task"), ASYNCAPI_FILE, DOCS_FILE}
    task_drift = next(p for p in problems if p.path == schema_path("task"))
    assert '+      "title": "Riskscore",' in task_drift.diff  # a readable diff summary

    breaking = breaking_changes(
        committed_files(PROJECT_ROOT), files, schema_compatibility(catalogue)
    )
    assert list(breaking) == [schema_path("task")]
    assert [(i.path, i.kind) for i in breaking[schema_path("task")]] == [
        ("$.riskScore", "property-required")
    ]


def test_an_additive_model_change_is_drift_but_not_breaking(catalogue: TopicCatalogue) -> None:
    changed = create_model("Task", __base__=TaskEvent, risk_score=(int | None, None))
    files = generate(catalogue, contracts=_with_task(changed))
    assert schema_path("task") in {p.path for p in drift(PROJECT_ROOT, files)}
    assert (
        breaking_changes(committed_files(PROJECT_ROOT), files, schema_compatibility(catalogue))
        == {}
    )


def test_a_narrowed_enum_breaks(catalogue: TopicCatalogue) -> None:
    contracts = dict(CONTRACTS)
    original = contracts["hook-subscription"]
    schema_type = create_model(
        "HookSubscription",
        __base__=original.type,
        event=(str, Field(pattern=r"^task\.")),
    )
    contracts["hook-subscription"] = Contract(
        original.name, schema_type, original.title, original.description
    )
    breaking = breaking_changes(
        committed_files(PROJECT_ROOT),
        generate(catalogue, contracts),
        schema_compatibility(catalogue),
    )
    kinds = {(i.path, i.kind) for i in breaking[schema_path("hook-subscription")]}
    assert ("$.event", "enum-value-removed") in kinds
