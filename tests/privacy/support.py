"""Helpers of the privacy tests: distinctive seeded people, a scan of every record of every
topic, the CLI as a subprocess, a webhook service with privacy settings."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bus.hooks.settings import HooksSettings
from bus.settings import KafkaSettings, PrivacySettings
from dastra.settings import DastraSettings
from dastra_kafka.settings import env_prefixes
from producers.webhook import WebhookService, create_app
from producers.webhook.settings import WebhookSettings
from tests.kafka_helpers import read_all
from tests.producers.webhook_support import ServerThread

__all__ = [
    "HASH_KEY",
    "MASTER_KEY",
    "TOKEN",
    "Person",
    "PrivateWebhook",
    "Service",
    "json_of",
    "kafka_env",
    "leaks",
    "privacy",
    "run_cli",
    "scan_topics",
]

MASTER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
HASH_KEY = "privacy-tests-hash-key-" + secrets.token_hex(8)
TOKEN = "tok-privacy-0123456789"
SCRIPT = Path(sys.executable).with_name("dastra-kafka")


def privacy(**values: Any) -> PrivacySettings:
    """Privacy settings with the tests' keys."""
    return PrivacySettings(master_key=SecretStr(MASTER_KEY), hash_key=SecretStr(HASH_KEY), **values)


@dataclass(frozen=True)
class Person:
    """A data subject with values found nowhere else (so a scan cannot match by chance)."""

    tag: str

    @classmethod
    def new(cls) -> Person:
        return cls(secrets.token_hex(3))

    @property
    def given(self) -> str:
        return f"Zorglubine{self.tag}"

    @property
    def family(self) -> str:
        return f"Quaxwell{self.tag}"

    @property
    def email(self) -> str:
        return f"Zq.{self.tag}@Privacy-Test.example"

    @property
    def phone(self) -> str:
        digits = int(self.tag, 16) % 10**6
        return f"+33 7 {digits:06d} 11"

    @property
    def address(self) -> str:
        return f"{self.tag} rue du Zorglub"

    def raw_values(self) -> list[str]:
        """What must never appear in clear: e-mail (any case), names, phone, address."""
        return [
            self.email.lower(),
            self.given.lower(),
            self.family.lower(),
            self.phone.lower(),
            self.address.lower(),
        ]

    def request_fields(self) -> dict[str, Any]:
        return {
            "title": f"Access request from {self.given} {self.family}",
            "email": self.email,
            "givenName": self.given,
            "familyName": self.family,
            "phoneNumber": self.phone,
            "address": self.address,
            "message": f"Please call {self.given} on {self.phone}",
        }


def leaks(people: Iterable[Person], texts: Iterable[tuple[str, bytes | str | None]]) -> list[str]:
    """`where: value` for every raw personal value of `people` found in `texts`."""
    wanted = [(person, value) for person in people for value in person.raw_values()]
    found = []
    for where, text in texts:
        if text is None:
            continue
        lowered = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).lower()
        found += [f"{where}: {value}" for _person, value in wanted if value in lowered]
    return found


def scan_topics(
    kafka: KafkaSettings, names: Iterable[str]
) -> Iterator[tuple[str, bytes | str | None]]:
    """Key, value and headers of every record physically on each topic (aborted transactions
    included: read_uncommitted)."""
    for name in names:
        for record in read_all(kafka, kafka.topic(name), read_committed=False):
            where = f"{name}/{record.partition}/{record.offset}"
            yield f"{where} key", record.key
            yield f"{where} value", record.value
            for header, value in record.headers.items():
                yield f"{where} header {header}", value


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`dastra-kafka ...` in a clean environment plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}
    return subprocess.run(
        [str(SCRIPT), "--env-file", "/nonexistent", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def kafka_env(kafka: KafkaSettings) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "PRIVACY_MASTER_KEY": MASTER_KEY,
        "PRIVACY_HASH_KEY": HASH_KEY,
    }


class PrivateWebhook:
    """The webhook service in this process (a server thread) with privacy settings."""

    def __init__(
        self,
        kafka: KafkaSettings,
        hooks: HooksSettings,
        dastra: DastraSettings,
        settings: PrivacySettings,
    ) -> None:
        self.service = WebhookService(
            kafka,
            WebhookSettings(tokens=[SecretStr(TOKEN)], wait_max_s=25),
            hooks,
            dastra,
            registry=CollectorRegistry(),
            privacy=settings,
        )
        self.server = ServerThread(create_app(self.service)).start()
        self.client = httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=40
        )

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def json_of(value: bytes | None) -> Any:
    return None if value is None else json.loads(value)


class Service:
    """A `dastra-kafka <verb>` subprocess writing stdout and stderr to a log file; every stop
    has a SIGKILL deadline."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_file = log_dir / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SCRIPT), "--env-file", "/nonexistent", *args],
                env={**base, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.log()}")
        return True

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, within: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode
