"""Least privilege: a broker with Kafka's authorizer, one SASL user per role holding only the
ACLs `dastra_kafka.acls` lists for it, and the roles run against it; a role missing one ACL
fails with an error naming the missing permission."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from pydantic import SecretStr

from bus.hooks.settings import HooksSettings
from bus.localkafka import LocalKafka, free_port
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, TopicCatalogue
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from dastra_kafka.acls import AclRole, AclRule, acl_bindings, markdown_table, role_acls
from dastra_kafka.settings import Settings, env_prefixes
from producers.webhook.settings import WebhookSettings
from tests.consumers.agents_support import SCRIPT, WorkerProcess
from tests.consumers.hooks_support import DispatcherThread, subscribe
from tests.kafka_helpers import consume, unique, wait_for
from tests.producers.conftest import LOOPBACK, TOKEN, start_webhook, stop_webhook

_ADMIN = ("admin", "admin-secret")


def _user(role: AclRole) -> str:
    return role.value.replace("-", "_")


# A role, the ACL taken away from it, and what its command line runs.
_SHORT: list[tuple[AclRole, AclRule, tuple[str, ...]]] = [
    (
        AclRole.POLLER,
        AclRule("TRANSACTIONAL_ID", "dastra-poller-", "PREFIXED", "WRITE"),
        ("poller", "--once"),
    ),
    (
        AclRole.POLLER,
        AclRule("TOPIC", "dastra.tasks.v1", "LITERAL", "WRITE"),
        ("poller", "--once", "--from", "beginning"),
    ),
    (
        AclRole.TOPICS_APPLY,
        AclRule("TOPIC", "dastra.tasks.v1", "LITERAL", "ALTER_CONFIGS"),
        ("topics", "apply"),
    ),
    (
        AclRole.LAG,
        AclRule("GROUP", "dastra", "PREFIXED", "DESCRIBE"),
        ("lag", "--group", "{prefix}dastra-hooks"),
    ),
    (
        AclRole.DLQ_REPLAY,
        AclRule("TOPIC", "dastra.dead-letter.v1", "LITERAL", "READ"),
        ("dlq", "replay"),
    ),
    (
        AclRole.WORKER,
        AclRule("GROUP", "dastra-agents", "LITERAL", "READ"),
        ("worker",),
    ),
    (
        AclRole.HOOKS,
        AclRule("GROUP", "dastra-hooks.", "PREFIXED", "READ"),
        ("hooks",),
    ),
    (
        AclRole.WEBHOOK,
        AclRule("TOPIC", "dastra.command-results.v1", "LITERAL", "READ"),
        ("webhook", "--port", "{port}"),
    ),
    (
        AclRole.PRIVACY_ERASE,
        AclRule("TOPIC", "dastra.privacy-audit.v1", "LITERAL", "WRITE"),
        ("privacy", "erase", "--subject", "jeanne@example.org"),
    ),
]

# One user per role, and one per "missing one ACL" check.
_USERS = {
    _ADMIN[0]: _ADMIN[1],
    **{_user(role): f"{_user(role)}-secret" for role in AclRole},
    **{f"short{n}": f"short{n}-secret" for n in range(len(_SHORT))},
}


@pytest.fixture(scope="module")
def acl_broker() -> Iterator[LocalKafka]:
    with LocalKafka(sasl_users=_USERS, authorizer=True, quick_jit=True) as broker:
        yield broker


@pytest.fixture(scope="module")
def prefix() -> str:
    return unique("acl") + "."


def _as(broker: LocalKafka, user: str, prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=user,
        sasl_password=_USERS[user],  # type: ignore[arg-type]
        topic_prefix=prefix,
    )


def _everything(principal: str) -> AclBindingFilter:
    return AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        principal,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def _granted(admin: AdminClient, principal: str) -> int:
    return len(admin.describe_acls(_everything(principal)).result(timeout=30))


def _grant(broker: LocalKafka, prefix: str, principal: str, rules: tuple[AclRule, ...]) -> None:
    """Create the bindings and wait until the broker's authorizer holds them all."""
    admin = AdminClient(_as(broker, _ADMIN[0], prefix).confluent_config())
    for future in admin.create_acls(acl_bindings(rules, principal)).values():
        future.result(timeout=30)
    wait_for(lambda: _granted(admin, principal) == len(rules), 30, f"{principal}'s ACLs")


def _rules(role: AclRole, kafka: KafkaSettings, catalogue: TopicCatalogue) -> tuple[AclRule, ...]:
    return role_acls(role, Settings(kafka=kafka), catalogue)


@pytest.fixture(scope="module")
def granted(acl_broker: LocalKafka, prefix: str, catalogue: TopicCatalogue) -> None:
    """Each role's user holds exactly its listed ACLs."""
    for role in AclRole:
        rules = _rules(role, _as(acl_broker, _user(role), prefix), catalogue)
        _grant(acl_broker, prefix, f"User:{_user(role)}", rules)


def _env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}
    assert kafka.sasl_password is not None
    return {
        **base,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
        "KAFKA_SASL_MECHANISM": str(kafka.sasl_mechanism),
        "KAFKA_SASL_USERNAME": str(kafka.sasl_username),
        "KAFKA_SASL_PASSWORD": kafka.sasl_password.get_secret_value(),
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        **extra,
    }


def _cli(kafka: KafkaSettings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(SCRIPT), "--env-file", "/nonexistent", *args],
            env=_env(kafka, **env),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"`dastra-kafka {' '.join(args)}` hung for 90 s:\n{output[-3000:]}")


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def applied(acl_broker: LocalKafka, prefix: str, granted: None) -> None:
    """`topics apply` as the topics-apply user creates the catalogue under the prefix."""
    _ok(_cli(_as(acl_broker, "topics_apply", prefix), "topics", "apply", "--json"))


def test_the_readme_lists_the_acls_the_code_derives(catalogue: TopicCatalogue) -> None:
    settings = Settings()
    table = markdown_table({r: role_acls(r, settings, catalogue) for r in AclRole})
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert table in readme, "README's ACL table is stale: run `dastra-kafka acls --markdown`"


def test_each_role_runs_with_only_its_acls(
    acl_broker: LocalKafka,
    prefix: str,
    applied: None,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    def kafka(role: AclRole) -> KafkaSettings:
        return _as(acl_broker, _user(role), prefix)

    admin = _as(acl_broker, _ADMIN[0], prefix)
    # topics apply again: nothing to change, and the check reads every config it manages.
    _ok(_cli(kafka(AclRole.TOPICS_APPLY), "topics", "apply", "--json"))
    # The poller: one cycle, events and cursor in one transaction.
    sandbox.admin.create_rights_request(title="least privilege")
    sandbox.admin.create_task(label="least privilege")
    summary = json.loads(
        _ok(
            _cli(
                kafka(AclRole.POLLER),
                "poller",
                "--once",
                "--from",
                "beginning",
                "--json",
                **sandbox.env(),
            )
        )
    )
    assert summary["events"] == {str(sandbox.workspace_id): 2}, summary
    # The webhook accepts a command and a REST hook subscription, the hook dispatcher sees it,
    # the worker answers the command.
    webhook = start_webhook(
        kafka(AclRole.WEBHOOK),
        WebhookSettings(tokens=[SecretStr(TOKEN)], kafka_timeout_s=10.0),
        HooksSettings(allow_networks=LOOPBACK),
        DastraSettings(workspace_id=sandbox.workspace_id),
    )
    try:
        hook = webhook.client.post(
            "/v1/hooks", json={"event": "task.created", "target_url": "https://127.0.0.1:9/h"}
        )
        assert hook.status_code == 201, hook.text
        with DispatcherThread(kafka(AclRole.HOOKS), HooksSettings(allow_networks=LOOPBACK)) as d:
            wait_for(lambda: d.knows(hook.json()["id"]), 30, "the dispatcher knows the hook")
        answer = webhook.client.post("/v1/commands/search-actors", json={"q": "nobody"})
        assert answer.status_code == 202, answer.text
        command_id = answer.json()["command_id"]
    finally:
        stop_webhook(webhook)
    worker = WorkerProcess(
        kafka(AclRole.WORKER),
        sandbox,
        tmp_path,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME=_user(AclRole.WORKER),
        KAFKA_SASL_PASSWORD=_USERS[_user(AclRole.WORKER)],
    )
    with worker:
        results = consume(admin, admin.topic(COMMAND_RESULTS), expected=1, timeout=60)
        assert [r.key for r in results] == [command_id.encode()]
    # The lag monitor sees the worker's group.
    lag = json.loads(_ok(_cli(kafka(AclRole.LAG), "lag", "--json")))
    assert admin.topic("dastra-agents") in json.dumps(lag)
    # dlq replay and privacy erase read and write only what they are allowed.
    _ok(_cli(kafka(AclRole.DLQ_REPLAY), "dlq", "replay", "--json"))
    _ok(
        _cli(
            kafka(AclRole.PRIVACY_ERASE),
            "privacy",
            "erase",
            "--subject",
            "jeanne@example.org",
            "--json",
            PRIVACY_MASTER_KEY=base64.b64encode(bytes(32)).decode(),
        )
    )


@pytest.mark.parametrize(
    "case", range(len(_SHORT)), ids=[f"{r}-{m.describe()}" for r, m, _ in _SHORT]
)
def test_a_role_missing_one_acl_fails_naming_it(
    acl_broker: LocalKafka,
    prefix: str,
    applied: None,
    catalogue: TopicCatalogue,
    sandbox: SandboxServer,
    tmp_path: Path,
    case: int,
) -> None:
    role, missing, argv = _SHORT[case]
    user = f"short{case}"
    kafka = _as(acl_broker, user, prefix)
    missing = AclRule(
        missing.resource_type, prefix + missing.name, missing.pattern_type, missing.operation
    )
    rules = _rules(role, kafka, catalogue)
    assert missing in rules
    _grant(acl_broker, prefix, f"User:{user}", tuple(r for r in rules if r != missing))
    sandbox.admin.create_task(label="least privilege")
    if role is AclRole.HOOKS:
        # A subscription whose reader's group the dispatcher will be refused (this case must
        # not depend on one an earlier test left).
        subscribe(_as(acl_broker, _ADMIN[0], prefix), "https://127.0.0.1:9/h")

    result = _cli(
        kafka,
        *(arg.format(prefix=prefix, port=free_port()) for arg in argv),
        **sandbox.env(),
        PRIVACY_MASTER_KEY=base64.b64encode(bytes(32)).decode(),
        WORKER_WEB_PORT=str(free_port()),
        WEBHOOK_TOKENS=TOKEN,
        WORKER_DATA_DIR=str(tmp_path / "faust-data"),
    )

    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert "not authorized" in result.stderr, result.stderr
    # ALTER_CONFIGS implies DESCRIBE_CONFIGS, the request that fails first.
    operation = missing.operation.replace("ALTER_CONFIGS", "DESCRIBE_CONFIGS")
    assert f"{operation} on {missing.resource_type.lower().replace('_', ' ')} " in result.stderr
    assert missing.name in result.stderr, result.stderr


def test_acls_apply_creates_exactly_the_listed_bindings(
    acl_broker: LocalKafka, prefix: str, catalogue: TopicCatalogue
) -> None:
    admin = _as(acl_broker, _ADMIN[0], prefix)
    principal = f"User:{unique('ops')}"
    out = _ok(_cli(admin, "acls", "--role", "dlq-replay", "--principal", principal, "--apply"))
    assert f"--allow-principal {principal}" in out and "--transactional-id" not in out
    client = AdminClient(admin.confluent_config())
    found = client.describe_acls(_everything(principal)).result(timeout=30)
    created = {
        (b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name) for b in found
    }
    expected = {
        (r.resource_type, r.name, r.pattern_type, r.operation)
        for r in _rules(AclRole.DLQ_REPLAY, admin, catalogue)
    }
    assert created == expected
