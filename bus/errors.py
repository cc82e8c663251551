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
    ├── KafkaAuthorizationError    no ACL lets this principal do it: names the operation and
    │                              the topic, group or transactional id (`dastra-kafka acls`
    │                              lists each role's); permanent; also a `KafkaException`
    └── ErasureError               (bus/erasure) an erasure could not read or write Kafka

The second bases are kept for callers that catch the old ones: `KafkaUnavailableError` (and so
its subclasses) is a `RuntimeError` because `dastra_kafka/demo/` catches `RuntimeError`
around the broker, the tailers and the lag monitor; `TopicMissingError` is a `KafkaException`
(`exc.args[0]` is a `KafkaError`) because `read_to_end` raises either it or a plain
`KafkaException`, and its callers (`bus/privacy/erasure.py`, `keystore.load_ring` via the demo, the
lag window) catch `KafkaException` for both; `RecordTooLargeError` was a `ValueError` and stays
one. The CLI maps `KafkaUnavailableError` to exit 3 and `TopicMissingError` to exit 2; the
webhook answers 503 to `KafkaUnavailableError` and 413 to `RecordTooLargeError`.
`KafkaAuthorizationError` exits 2 (a configuration to fix, not an outage).

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
    "KafkaAuthorizationError",
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


class KafkaAuthorizationError(BusError, KafkaException):
    """Kafka refused `operation` (READ, WRITE, DESCRIBE, ...) on `resource` (`topic`, `group`,
    `transactional id`, `cluster`) `name` to this principal: no ACL allows it. Permanent until
    an operator grants it; `str()` says which, `args[0]` is a `KafkaError`.

        raise KafkaAuthorizationError("topic", "dastra.tasks.v1", "WRITE")
    """

    def __init__(self, resource: str, name: str, operation: str) -> None:
        code = {
            "topic": KafkaError.TOPIC_AUTHORIZATION_FAILED,
            "group": KafkaError.GROUP_AUTHORIZATION_FAILED,
            "transactional id": KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        }.get(resource, KafkaError.CLUSTER_AUTHORIZATION_FAILED)
        self.message = (
            f"not authorized: {operation} on {resource} {name} (no Kafka ACL allows it to this "
            "principal; `dastra-kafka acls --role <role>` lists what each role needs)"
        )
        super().__init__(KafkaError(code, self.message))
        self.resource = resource
        self.name = name
        self.operation = operation

    def __str__(self) -> str:
        return self.message

    @classmethod
    def from_error(
        cls,
        error: KafkaError | None,
        *,
        topic: str | None = None,
        topic_operation: str = "READ",
        group: str | None = None,
        group_operation: str = "DESCRIBE",
    ) -> KafkaAuthorizationError | None:
        """What an authorization `error` of a request on `topic` (or `group`) means, naming the
        operation the caller attempted; None for any other error.

            if (denied := KafkaAuthorizationError.from_error(info.error, topic=t)) is not None:
                raise denied
        """
        if error is None:
            return None
        code = error.code()
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED and topic is not None:
            return cls("topic", topic, topic_operation)
        if code == KafkaError.GROUP_AUTHORIZATION_FAILED and group is not None:
            return cls("group", group, group_operation)
        return None
