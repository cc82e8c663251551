"""Every error the bus raises about Kafka, in one tree.

Consumes nothing; raised by the bus modules, which translate confluent-kafka's errors at the
boundary (`raise ... from exc`, so the `KafkaError` stays on `__cause__`). Callers classify with
`isinstance`:

    BusError                       base of everything the bus raises about Kafka
    ├── KafkaUnavailableError      Kafka did not answer, refused us, or did not acknowledge a
    │   │                          record (nothing was written); also a RuntimeError
    │   ├── TailerError            a topic tailer could not start: Kafka silent, or the topic
    │   │                          is missing (every caller treats both as unavailable)
    │   └── LagUnavailableError    (consumers/lag) the lag monitor's admin requests failed
    ├── RecordTooLargeError        larger than the producer or the topic accepts: permanent;
    │                              also a ValueError
    ├── TopicMissingError          the topic does not exist (run `dastra-kafka topics apply`);
    │                              also a confluent `KafkaException` carrying a `KafkaError`
    └── ErasureError               (bus/erasure) an erasure could not read or write Kafka

The second bases are kept for callers that catch the old ones: `KafkaUnavailableError` (and so
its subclasses) is a `RuntimeError` because `dastra_kafka/demo.py` catches `RuntimeError`
around the broker, the tailers and the lag monitor; `TopicMissingError` is a `KafkaException`
(`exc.args[0]` is a `KafkaError`) because `read_to_end` raises either it or a plain
`KafkaException`, and its callers (`bus/privacy/erasure.py`, `keystore.load_ring` via the demo, the
lag window) catch `KafkaException` for both; `RecordTooLargeError` was a `ValueError` and stays
one. The CLI maps `KafkaUnavailableError` to exit 3 and `TopicMissingError` to exit 2; the
webhook answers 503 to `KafkaUnavailableError` and 413 to `RecordTooLargeError`.

    try:
        delivered = await producer.produce(topic, key=key, value=value)
    except RecordTooLargeError:
        ...  # permanent: do not retry
    except KafkaUnavailableError:
        ...  # retry later
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

__all__ = [
    "BusError",
    "KafkaUnavailableError",
    "RecordTooLargeError",
    "TailerError",
    "TopicMissingError",
]


class BusError(Exception):
    """Base of everything the bus raises about Kafka."""


class KafkaUnavailableError(BusError, RuntimeError):
    """Kafka did not answer (or refused us) in time, or did not acknowledge a record: nothing
    was written, and a record given up is never written later. Retrying later may succeed."""


class TailerError(KafkaUnavailableError):
    """A `TopicTailer` could not start: the topic is missing or Kafka did not answer in time."""


class RecordTooLargeError(BusError, ValueError):
    """The record is larger than the producer (`message.max.bytes`) or the topic
    (`max.message.bytes`) accepts: permanent, retrying cannot help. Nothing was written."""


class TopicMissingError(BusError, KafkaException):
    """The topic does not exist (run `dastra-kafka topics apply`). `topic` names it; like any
    `KafkaException`, `args[0]` is a `KafkaError` (code `UNKNOWN_TOPIC_OR_PART`)."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            KafkaError(
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                f"topic {topic} does not exist (run `dastra-kafka topics apply`)",
            )
        )
        self.topic = topic
