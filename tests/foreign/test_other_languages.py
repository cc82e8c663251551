"""Consumers in other stacks read everything the project writes: KafkaJS (no codec plugin
installed) with the CloudEvents JS SDK parses every event, command result and dead letter as a
binary-mode CloudEvent; aiokafka without its compression extras (cramjam blocked) reads them
too. Both fail on the codecs they lack (lz4, snappy, zstd), so the project's default codec is
held to what they read."""

from __future__ import annotations

import json
import subprocess
import sys

from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER
from tests.foreign.conftest import READ_TOPICS
from tests.foreign.support import KafkaJSReader
from tests.kafka_helpers import read_all, unique


def _ids(kafka: KafkaSettings, topic: str) -> list[str]:
    return sorted(r.headers["ce_id"].decode() for r in read_all(kafka, kafka.topic(topic)))


def test_kafkajs_parses_every_event_result_and_dead_letter_as_a_cloudevent(
    fkafka: KafkaSettings, kafkajs: KafkaJSReader, traffic: dict[str, int]
) -> None:
    report = kafkajs.read(traffic)

    assert report["error"] is None, report["error"]
    assert report["ok"] and report["exit"] == 0, report
    for topic in READ_TOPICS:
        seen = report["topics"][fkafka.topic(topic)]
        assert seen["invalid"] == [], (topic, seen["invalid"])
        assert seen["modes"] == {"binary": traffic[topic]}, (topic, seen["modes"])
        assert sorted(seen["ids"]) == _ids(fkafka, topic), topic
    assert report["topics"][fkafka.topic(DEAD_LETTER)]["types"] == ["eu.dastra.command.create-task"]


# A -c script: aiokafka as a team would install it (`pip install aiokafka`, no extras). cramjam
# (its lz4, snappy and zstd codecs) is importable in this environment, so a meta-path finder
# refuses it first: aiokafka then has gzip (the standard library's) and no other codec.
_PLAIN_AIOKAFKA = r"""
import asyncio, importlib.abc, json, sys

class _NoExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cramjam" or name.startswith("cramjam."):
            raise ImportError(f"{name} is not installed (aiokafka without extras)")
        return None

sys.meta_path.insert(0, _NoExtras())

from aiokafka import AIOKafkaConsumer

async def main(bootstrap, group, expected, timeout):
    consumer = AIOKafkaConsumer(
        *expected,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen = {topic: [] for topic in expected}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(len(seen[t]) < n for t, n in expected.items()) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    headers = dict(record.headers)
                    json.loads(record.value)
                    seen[tp.topic].append(headers["ce_id"].decode())
    finally:
        await consumer.stop()
    print(json.dumps({"cramjam_loaded": "cramjam" in sys.modules, "seen": seen}))

asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])))
"""


def test_aiokafka_without_extras_reads_what_the_project_writes(
    fkafka: KafkaSettings, traffic: dict[str, int]
) -> None:
    expected = {fkafka.topic(topic): count for topic, count in traffic.items()}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _PLAIN_AIOKAFKA,
            fkafka.bootstrap_servers,
            unique("plain-aiokafka"),
            json.dumps(expected),
            "30",
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report["cramjam_loaded"] is False
    for topic in READ_TOPICS:
        assert sorted(report["seen"][fkafka.topic(topic)]) == _ids(fkafka, topic), topic
