"""The privacy of the bus end to end, on the real broker and the sandbox: the poller, the real
worker (`dastra-kafka worker`, results and dead letters encrypted), the webhook (commands
encrypted) and the hook dispatcher. In `redacted` and `thin` mode no record of any topic, no
hook delivery and no sample holds a seeded person's e-mail, name, phone or address; thin events
resolve through the Dastra API; in `encrypted` mode `privacy erase` makes a subject's records
unreadable everywhere (and tombstones them on compacted topics) while others still decrypt;
the automatic erasure of a closed Erasure request; the worker's log holds no personal data."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from bus.envelope import dumps
from bus.hooks.settings import HooksSettings
from bus.privacy import (
    Decryptor,
    Encryptor,
    MasterKey,
    keyed_hash,
    resolve_dataref,
    subject_of,
)
from bus.privacy.keystore import load_ring
from bus.settings import KafkaSettings
from bus.settings import PrivacySettings as _PrivacySettings
from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    PRIVACY_AUDIT,
    PRIVACY_KEYS,
    RIGHTS_REQUESTS,
    TASKS,
    TopicCatalogue,
    command_topic,
    load_catalogue,
)
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from dastra_kafka.contracts.registry import validate_record
from producers.poller import Poller, PollSummary
from producers.poller.settings import PollerSettings
from tests.consumers.agents_support import WorkerProcess
from tests.consumers.hooks_support import DispatcherThread
from tests.kafka_helpers import create_catalogue_topics, delete_topics, read_all, unique, wait_for
from tests.privacy.support import (
    HASH_KEY,
    MASTER_KEY,
    Person,
    PrivateWebhook,
    json_of,
    kafka_env,
    leaks,
    privacy,
    run_cli,
    scan_topics,
)
from tests.producers.conftest import LOOPBACK
from tests.producers.webhook_support import ServerThread, Subscriber, TLSFiles, make_tls

# A compacted topic of tomorrow (recipe runs, say) holding sealed data: erasure tombstones it.
EXTRA = "dastra.test-compacted.v1"
_EXTRA_ENTRY = f"""
  - name: {EXTRA}
    description: A compacted topic that holds sealed personal data (erasure test).
    partitions: 1
    cleanup_policy: compact
    retention_ms: -1
    personal_data: false
    key_schema: entity-key
    value_schema: task
    compatibility: FULL
"""
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def topics_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("topics") / "topics.yaml"
    path.write_text((Path(__file__).parents[2] / "topics.yaml").read_text() + _EXTRA_ENTRY)
    return path


@pytest.fixture(scope="module")
def cat(topics_file: Path) -> TopicCatalogue:
    return load_catalogue(topics_file)


@pytest.fixture(scope="module")
def bus(kafka_bootstrap: str, cat: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("priv") + ".")
    names = create_catalogue_topics(kafka, cat)
    yield kafka
    delete_topics(kafka, names)


@pytest.fixture(scope="module")
def dastra(sandbox_server: SandboxServer) -> SandboxServer:
    """The session sandbox, reset once for this module (ids keep growing across its tests)."""
    sandbox_server.admin.reset()
    sandbox_server.admin.configure(rate_limit=False)
    return sandbox_server


@pytest.fixture(scope="module")
def worker(
    bus: KafkaSettings, dastra: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    env = {
        "PRIVACY_MASTER_KEY": MASTER_KEY,
        "PRIVACY_HASH_KEY": HASH_KEY,
        "PRIVACY_MODE_RESULTS": "encrypted",
        "PRIVACY_MODE_DEAD_LETTERS": "encrypted",
        "SERVICE_LOG_LEVEL": "debug",
    }
    with WorkerProcess(bus, dastra, tmp_path_factory.mktemp("worker"), **env) as process:
        yield process


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def hooks(tls_files: TLSFiles) -> HooksSettings:
    return HooksSettings(allow_networks=LOOPBACK, ca_file=tls_files.ca, backoff_s=0.05)


@pytest.fixture(scope="module")
def api(
    bus: KafkaSettings, dastra: SandboxServer, hooks: HooksSettings, worker: WorkerProcess
) -> Iterator[PrivateWebhook]:
    webhook = PrivateWebhook(
        bus,
        hooks,
        DastraSettings(workspace_id=dastra.workspace_id),
        privacy(mode_commands="encrypted"),
    )
    yield webhook
    webhook.close()


@pytest.fixture
def subscriber(tls_files: TLSFiles) -> Iterator[tuple[Subscriber, ServerThread]]:
    recorder = Subscriber()
    with ServerThread(recorder, certfile=tls_files.cert, keyfile=tls_files.key) as server:
        yield recorder, server


def _poll(
    bus: KafkaSettings, cat: TopicCatalogue, dastra: SandboxServer, settings: _PrivacySettings
) -> PollSummary:
    async def cycle() -> PollSummary:
        async with DastraClient(dastra.dastra_settings()) as client:
            poller = Poller(
                bus,
                PollerSettings(start_from="beginning"),
                cat,
                client,
                workspaces=[dastra.workspace_id],
                privacy=settings,
            )
            return await poller.run(max_cycles=1)

    summary = asyncio.run(cycle())
    assert not summary.errors.get(dastra.workspace_id), summary.as_json()
    return summary


def _events(bus: KafkaSettings, topic: str, object_id: int) -> list[dict[str, Any]]:
    """The events of one Dastra object (key `<workspaceId>:<id>`), oldest first."""
    return [
        {"headers": record.headers, "data": json_of(record.value)}
        for record in read_all(bus, bus.topic(topic))
        if record.key is not None and record.key.split(b":")[1] == str(object_id).encode()
    ]


def _deliveries(recorder: Subscriber, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in recorder.accepted(path)]


def _everything(bus: KafkaSettings, cat: TopicCatalogue) -> list[tuple[str, Any]]:
    return list(scan_topics(bus, [spec.name for spec in cat]))


def _refused_command(dastra: SandboxServer, api: PrivateWebhook, person: Person) -> str:
    """A create-rights-request command Dastra refuses once: its id (it is dead-lettered)."""
    dastra.admin.inject_fault(
        "/v1/ws/*/DataSubjectRequests",
        method="POST",
        status=400,
        body={"errors": {"Email": ["refused"]}},
        times=1,
    )
    refused = api.client.post(
        "/v1/commands/create-rights-request?wait=25",
        json={**person.request_fields(), "purposes": ["Erasure"]},
    )
    assert refused.status_code == 422, refused.text
    return refused.headers["command-id"]


def _run_pipeline(
    mode: str,
    bus: KafkaSettings,
    cat: TopicCatalogue,
    dastra: SandboxServer,
    api: PrivateWebhook,
    hooks: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
    settings: _PrivacySettings,
) -> tuple[Person, Person, dict[str, Any], list[tuple[str, Any]]]:
    """Seed a person in Dastra, send another through the webhook and the worker, let one
    command fail, publish, deliver to a hook. Returns both people, the seeded request and
    every text the run left (records, hook deliveries, samples)."""
    seeded, sent = Person.new(), Person.new()
    admin = dastra.admin
    request = admin.create_rights_request(**seeded.request_fields(), purposes=["Access"])
    admin.create_task(
        label="Send the access report",
        descriptionHtml=f"<p>Call {seeded.given} {seeded.family} on {seeded.phone}</p>",
        objectType="DataSubject",
        objectId=str(request["id"]),
    )
    client = api.client
    created = client.post(
        "/v1/commands/create-rights-request?wait=25",
        json={**sent.request_fields(), "purposes": ["Access"]},
    )
    assert created.status_code == 200, created.text
    assert created.json()["email"] == sent.email  # the webhook decrypts the encrypted result
    _refused_command(dastra, api, seeded)

    recorder, server = subscriber
    hook = client.post(
        "/v1/hooks",
        json={
            "event": "rights_request.created",
            "target_url": f"https://localhost:{server.port}/{mode}",
        },
    ).json()
    hooks_now = hooks.model_copy(update={"group": unique("hooks")})
    with DispatcherThread(bus, hooks_now, settings) as dispatcher:
        wait_for(lambda: dispatcher.knows(hook["id"]), 15, "the subscription")
        _poll(bus, cat, dastra, settings)
        wait_for(
            lambda: any(
                d["data"]["id"] == request["id"] for d in _deliveries(recorder, f"/{mode}")
            ),
            30,
            "the hook delivery of the seeded request",
        )
    client.delete(f"/v1/hooks/{hook['id']}")
    samples = client.get("/v1/hooks/samples/rights_request.created?limit=50")
    assert samples.status_code == 200
    texts = _everything(bus, cat)
    texts += [(f"hook {r.path}", r.body) for r in recorder.at(f"/{mode}")]
    texts.append(("samples", samples.text))
    return seeded, sent, request, texts


@pytest.mark.parametrize("mode", ["redacted", "thin"])
def test_no_raw_personal_data_on_any_topic_delivery_or_sample(
    mode: str,
    bus: KafkaSettings,
    cat: TopicCatalogue,
    dastra: SandboxServer,
    worker: WorkerProcess,
    api: PrivateWebhook,
    hooks: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    settings = privacy(mode_rights_requests=mode, mode_tasks=mode)
    seeded, sent, request, texts = _run_pipeline(
        mode, bus, cat, dastra, api, hooks, subscriber, settings
    )
    assert leaks([seeded, sent], texts) == []

    [event] = _events(bus, RIGHTS_REQUESTS, request["id"])
    assert event["headers"]["ce_dastrapayload"] == mode.encode()
    data = event["data"]
    recorder, _server = subscriber
    [delivered] = [d for d in _deliveries(recorder, f"/{mode}") if d["data"]["id"] == request["id"]]
    assert delivered["payload_mode"] == mode and delivered["data"] == data
    if mode == "redacted":
        # Consumers can still join and count on the pseudonyms.
        assert data["email"] == keyed_hash(seeded.email, HASH_KEY.encode(), email=True)
        assert data["state"] == "Open" and data["purposes"] == ["Access"]
    else:
        assert (
            data["dataref"] == f"/v1/ws/{dastra.workspace_id}/DataSubjectRequests/{request['id']}"
        )
        assert "email" not in data and "title" not in data

        async def resolve() -> dict[str, Any]:
            async with DastraClient(dastra.dastra_settings()) as client:
                return await resolve_dataref(client, data["dataref"])

        full = asyncio.run(resolve())
        assert full["email"] == seeded.email and full["phoneNumber"] == seeded.phone
        tasks = [json_of(r.value) for r in read_all(bus, bus.topic(TASKS))]
        attached = [t for t in tasks if t.get("objectId") == str(request["id"])]
        assert attached and all("dataref" in t and "descriptionHtml" not in t for t in attached)
    assert leaks([seeded, sent], [("worker log", worker.log_file.read_text())]) == []


def test_encrypted_mode_erasure_by_email_and_automatic_erasure(
    bus: KafkaSettings,
    cat: TopicCatalogue,
    topics_file: Path,
    dastra: SandboxServer,
    worker: WorkerProcess,
    api: PrivateWebhook,
    hooks: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    settings = privacy(mode_rights_requests="encrypted", mode_tasks="encrypted", auto_erase=True)
    erased, kept, request, _texts = _run_pipeline(
        "encrypted", bus, cat, dastra, api, hooks, subscriber, settings
    )
    admin = dastra.admin
    # The same person as an actor: its result is sealed with the actor's key, linked by e-mail.
    actor = api.client.post(
        "/v1/commands/find-or-create-actor?wait=25",
        json={"givenName": erased.given, "familyName": erased.family, "email": erased.email},
    )
    assert actor.status_code == 200 and actor.json()["email"] == erased.email, actor.text
    other = admin.create_rights_request(**kept.request_fields(), purposes=["Erasure"])
    refused_erased = _refused_command(dastra, api, erased)
    refused_kept = _refused_command(dastra, api, kept)
    _poll(bus, cat, dastra, settings)
    recorder, _server = subscriber
    [delivered] = [
        d for d in _deliveries(recorder, "/encrypted") if d["data"]["id"] == request["id"]
    ]
    # The dispatcher has the master key: subscribers get the fields decrypted.
    assert delivered["payload_mode"] == "encrypted" and delivered["data"]["email"] == erased.email
    # On the bus: ciphertext only, for everyone (the records of `kept` too).
    assert leaks([erased, kept], _everything(bus, cat)) == []

    def sample_of(request_id: int) -> dict[str, Any]:
        samples = api.client.get("/v1/hooks/samples/rights_request.created?limit=100").json()
        [sample] = [s for s in samples if s["data"]["id"] == request_id]
        return sample

    # The webhook has the master key too: samples are decrypted.
    assert sample_of(request["id"])["data"]["email"] == erased.email

    master = MasterKey(base64.b64decode(MASTER_KEY))
    before = Decryptor(master, load_ring(bus))
    [event] = _events(bus, RIGHTS_REQUESTS, request["id"])
    assert before.open(event["data"]).data["email"] == erased.email

    # A record of a compacted topic sealed with the subject's key (as a recipe run would be).
    batch = Encryptor(master, before.ring, "test").batch()
    planted = batch.seal(
        "rights_request",
        {"id": request["id"], "email": erased.email},
        subject_of("rights_request", request, dastra.workspace_id),
    )
    assert batch.records == []  # the subject's key exists: it is reused
    producer = Producer(bus.confluent_config())
    producer.produce(bus.topic(EXTRA), key=f"1:{request['id']}".encode(), value=dumps(planted))
    assert producer.flush(10) == 0

    env = {**kafka_env(bus), "SERVICE_TOPICS_FILE": str(topics_file)}
    dry = run_cli(
        "privacy", "erase", "--subject", erased.email.upper(), "--dry-run", "--json", env=env
    )
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dryRun"] and plan["keyIds"] and plan["auditId"] is None
    done = run_cli(
        "privacy", "erase", "--subject", erased.email, "--by", "dpo-ticket-42", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(report["keyIds"]) == sorted(plan["keyIds"])
    unreadable = report["unreadableRecords"]
    for topic in (
        RIGHTS_REQUESTS,
        TASKS,
        COMMAND_RESULTS,
        DEAD_LETTER,
        EXTRA,
        command_topic("create-rights-request"),
    ):
        assert unreadable[topic] >= 1, (topic, unreadable)
    assert report["tombstones"][EXTRA] == 1
    assert leaks([erased], [("erase output", done.stdout + done.stderr)]) == []

    # Tombstones reached the compacted topics: every key of the subject, and the planted record.
    latest: dict[bytes, bytes | None] = {}
    for record in read_all(bus, bus.topic(PRIVACY_KEYS)):
        assert record.key is not None
        latest[record.key] = record.value
    for kid in report["keyIds"]:
        assert latest[f"key:{kid}".encode()] is None
    extra = read_all(bus, bus.topic(EXTRA))
    assert extra[-1].key == f"1:{request['id']}".encode() and extra[-1].value is None

    # A decoder loading the keys now: the subject's records read as erased, others decrypt.
    after = Decryptor(master, load_ring(bus))
    opened = after.open(event["data"])
    assert opened.is_erased and opened.data["email"] == {"$erased": True}
    assert leaks([erased], [("opened", json.dumps(opened.data))]) == []
    [kept_event] = _events(bus, RIGHTS_REQUESTS, other["id"])
    still = after.open(kept_event["data"])
    assert not still.is_erased and still.data["email"] == kept.email
    results = [json_of(r.value) for r in read_all(bus, bus.topic(COMMAND_RESULTS))]
    theirs = [r for r in results if r["result"] and _has_kid(r["result"], report["keyIds"])]
    assert theirs and all(after.open(r["result"]).is_erased for r in theirs)

    # Running readers follow the key topic: the webhook's samples show the fields erased.
    wait_for(
        lambda: sample_of(request["id"])["data"]["email"] == {"$erased": True},
        15,
        "the erasure to reach the webhook",
    )
    assert sample_of(other["id"])["data"]["email"] == kept.email

    # The audit event: what, where, when, by whom; no personal data.
    audits = [r for r in read_all(bus, bus.topic(PRIVACY_AUDIT))]
    [audit] = [json_of(r.value) for r in audits if r.key == report["auditId"].encode()]
    assert audit["by"] == "dpo-ticket-42" and audit["trigger"] == "manual"
    assert sorted(audit["key_ids"]) == sorted(report["keyIds"])
    assert audit["unreadable_records"][RIGHTS_REQUESTS] >= 1
    assert leaks([erased], [("audit", json.dumps(audit))]) == []

    # Sealed dead letters: the erased subject's cannot be replayed any more; the other one is
    # decrypted and re-published, and the agents run it (Dastra no longer refuses it).
    replay = run_cli("dlq", "replay", "--kind", "dastra-rejected", "--json", env=env)
    assert replay.returncode == 0, replay.stderr
    outcomes = {r["commandId"]: r["outcome"] for r in json.loads(replay.stdout)["records"]}
    assert outcomes[refused_erased] == "erased" and outcomes[refused_kept] == "replayed"

    def replayed_result() -> list[dict[str, Any]]:
        return [
            json_of(r.value)
            for r in read_all(bus, bus.topic(COMMAND_RESULTS))
            if r.key == refused_kept.encode() and "dastra.replay.id" in r.headers
        ]

    wait_for(replayed_result, 30, "the replayed command's result")
    [again] = replayed_result()
    assert again["status"] == "succeeded", again
    now = Decryptor(master, load_ring(bus))
    assert now.open(again["result"]).data["email"] == kept.email

    # Automatic erasure: the other request is closed in Dastra with purpose Erasure.
    admin.update_rights_request(other["id"], state="Closed")
    _poll(bus, cat, dastra, settings)
    autos = [json_of(r.value) for r in read_all(bus, bus.topic(PRIVACY_AUDIT))]
    [auto] = [a for a in autos if a["trigger"] == "auto"]
    assert auto["request"]["rights_request_id"] == other["id"] and auto["key_ids"]
    final = Decryptor(master, load_ring(bus))
    for event in _events(bus, RIGHTS_REQUESTS, other["id"]):
        assert final.open(event["data"]).data["email"] == {"$erased": True}
    assert leaks([erased, kept], [("worker log", worker.log_file.read_text())]) == []

    # Every record of every mode this module produced conforms to its topic's contract.
    problems = []
    for spec in cat:
        if spec.name == EXTRA:
            continue
        for record in read_all(bus, bus.topic(spec.name)):
            found = validate_record(cat, spec.name, record.key, record.value, record.headers)
            problems += [f"{spec.name}/{record.partition}/{record.offset}: {p}" for p in found]
    assert problems == []


def _has_kid(data: Any, kids: list[str]) -> bool:
    text = json.dumps(data)
    return any(kid in text for kid in kids)
