"""Shared fixtures: the session broker (never an in-memory stand-in), uuid-named topics and
groups, and a clean environment for every test."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.localkafka import KAFKA_VERSION, LocalKafka, free_port, use_port_range
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue, default_topics_file, load_catalogue
from dastra.sandbox import SandboxServer
from dastra.sandbox.settings import SandboxSettings
from dastra.settings import DastraSettings
from dastra_kafka.settings import env_prefixes
from tests.kafka_helpers import create_catalogue_topics, delete_topics, unique

# Read before the autouse fixture below clears KAFKA_* for each test.
_EXTERNAL_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
# The Kafka release of the session broker (`make test-kafka-3.9` runs the guarantee tests on an
# older cluster); the pinned one by default.
_BROKER_VERSION = os.environ.get("KAFKA_TEST_VERSION") or KAFKA_VERSION
_KAFKA_IMAGE = f"apache/kafka:{_BROKER_VERSION}"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


# Each test process (one per pytest-xdist worker: gw0, gw1...) picks its ports from its own
# range below the kernel's ephemeral ports (32768 and up), so no worker, and no client's outgoing
# connection, takes a port another one has just picked and not yet bound. The ranges of one test
# session lie in a slot that the session holds with a lock file, so two sessions run at once on
# one machine (two checkouts, a CI job beside a developer) never share ports either; with every
# slot taken, ports come from the kernel as before.
_FIRST_TEST_PORT = 10_000
_PORTS_PER_SLOT = 4_500  # five slots between 10 000 and 32 499
_SLOTS = 5
_SLOT_ENV = "PYTEST_DASTRA_KAFKA_PORT_SLOT"  # set by the controller, read by its workers
_slot_lock: list[int] = []  # the lock file held for the session (closed at exit)


def _take_port_slot() -> int | None:
    for slot in range(_SLOTS):
        path = Path(tempfile.gettempdir()) / f"dastra-kafka-test-ports-{slot}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _slot_lock.append(fd)
        return slot
    return None


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist (3.x) hands out the files with the most tests first unless told not to,
    # whatever the collection order: keep ours (see _FILE_SECONDS below; the controller's
    # scheduler reads the option).
    if getattr(config.option, "loadscopereorder", False):
        config.option.loadscopereorder = False
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:  # the controller, or a run without workers: take a slot for the session
        slot = _take_port_slot()
        if slot is None:
            return
        os.environ[_SLOT_ENV] = str(slot)
    elif _SLOT_ENV not in os.environ:
        return
    slot = int(os.environ[_SLOT_ENV])
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker.removeprefix("gw")) if worker and worker.startswith("gw") else 0
    size = _PORTS_PER_SLOT // workers
    first = _FIRST_TEST_PORT + slot * _PORTS_PER_SLOT + index * size
    use_port_range(first, first + size - 1)


# What each of the longest test files took in a measured `make test` (3 workers on 2 cores,
# 2026-12-03, seconds, setup included). Under `--dist loadfile` the files are handed to the
# workers in collection order, so they are collected longest first: no long file then starts
# last and runs on alone while the other workers sit idle. Refresh the figures from
# `--durations=0` when a file grows or shrinks a lot; a file not listed counts as short. Only
# the order changes.
_FILE_SECONDS = {
    "tests/producers/test_poller.py": 240,
    "tests/producers/test_poller_processes.py": 150,
    "tests/test_demo_chaos.py": 145,
    "tests/test_demo.py": 150,
    "tests/bench/test_bench_smoke.py": 165,
    "tests/consumers/test_agents.py": 115,
    "tests/dastra_kafka/test_acls.py": 114,
    "tests/cli/test_topics_cli.py": 102,
    "tests/consumers/test_hooks_lag.py": 102,
    "tests/producers/test_webhook_outage.py": 91,
    "tests/test_packaging.py": 85,
    "tests/producers/test_webhook.py": 82,
    "tests/dastra_kafka/test_shared_budget.py": 78,
    "tests/bus/test_oauthbearer.py": 68,
    "tests/privacy/test_logs.py": 65,
    "tests/consumers/recipes/test_e2e.py": 63,
    "tests/privacy/test_retention.py": 55,
    "tests/consumers/test_agents_crash.py": 54,
    "tests/cli/test_recipes_cli.py": 52,
    "tests/consumers/test_hooks.py": 49,
    "tests/bus/test_localkafka.py": 48,
    "tests/foreign/test_actor_race.py": 48,
    "tests/privacy/test_bus_privacy.py": 48,
    "tests/producers/test_webhook_worker.py": 48,
    "tests/consumers/recipes/test_leader.py": 43,
    "tests/dastra_kafka/test_settings.py": 42,
    "tests/dastra/test_sandbox.py": 41,
    "tests/dastra/test_doctor.py": 39,
    "tests/test_offline_pages.py": 38,
    "tests/dastra/test_client_sandbox.py": 33,
    "tests/dastra_kafka/test_studio_page.py": 31,
    "tests/producers/test_webhook_schema.py": 31,
    "tests/dastra_kafka/contracts/test_generated_types.py": 30,
    "tests/consumers/test_agents_failures.py": 29,
    "tests/consumers/test_agents_workspaces.py": 28,
    "tests/consumers/recipes/test_studio_worker.py": 24,
    "tests/consumers/test_agents_strict.py": 23,
    "tests/consumers/recipes/test_studio_requests.py": 22,
    "tests/privacy/test_recipe_privacy.py": 21,
    "tests/cli/test_broker_cli.py": 20,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `--dist loadfile` (make test) each file runs on one worker, in the order files are
    collected: the longest go first."""

    def seconds(item: pytest.Item) -> int:
        return _FILE_SECONDS.get(item.path.relative_to(PROJECT_ROOT).as_posix(), 0)

    items.sort(key=seconds, reverse=True)  # stable: within a file, and among the others, kept


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _container_broker() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = free_port()
    container = (
        DockerContainer(_KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        )
        .waiting_for(LogMessageWaitStrategy("Kafka Server started"))
    )
    with container:
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set; else a container if a Docker engine answers; else a
    local broker from Apache Kafka's jars."""
    if _EXTERNAL_BOOTSTRAP:
        yield _EXTERNAL_BOOTSTRAP
    elif _docker_engine_answers():
        yield from _container_broker()
    else:
        with LocalKafka(version=_BROKER_VERSION) as broker:
            yield broker.bootstrap_servers


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(env_prefixes()):
            monkeypatch.delenv(name)


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaSettings:
    """Kafka settings for one test: the session broker and a uuid topic/group prefix."""
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("t") + ".")


@pytest.fixture(scope="session")
def catalogue() -> TopicCatalogue:
    return load_catalogue(default_topics_file())


@pytest.fixture
def topics(kafka: KafkaSettings, catalogue: TopicCatalogue) -> Iterator[TopicCatalogue]:
    """Every catalogue topic, created under the test's prefix and deleted afterwards."""
    names = create_catalogue_topics(kafka, catalogue)
    yield catalogue
    delete_topics(kafka, names)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One Dastra sandbox (uvicorn on a free loopback port, rate limit on) for the session."""
    with SandboxServer(SandboxSettings()) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The session sandbox, reset to its seeded state (no faults, zero call counts, default
    rate limits and token lifetime): a fresh Dastra for each test, for the price of one call."""
    sandbox_server.admin.reset()
    return sandbox_server


@pytest.fixture
def dastra_settings(sandbox: SandboxServer) -> DastraSettings:
    """DastraSettings pointing at the reset sandbox with its X-API-Key."""
    return sandbox.dastra_settings()
