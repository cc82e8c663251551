"""`privacy erase` with Kafka unreachable: one clear line and exit 3, quickly, without
librdkafka's connection chatter."""

from __future__ import annotations

from tests.privacy.support import MASTER_KEY, run_cli


def test_erase_with_kafka_unreachable_fails_fast_and_quietly() -> None:
    result = run_cli(
        "privacy",
        "erase",
        "--subject",
        "someone@example.org",
        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "PRIVACY_MASTER_KEY": MASTER_KEY},
        timeout=60,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "could not reach Kafka at 127.0.0.1:1 within 5 s" in result.stderr
    assert "|FAIL|" not in result.stderr and len(result.stderr.splitlines()) <= 3, result.stderr
    assert "someone@example.org" not in result.stdout + result.stderr
