"""One Kafka error tree (bus/errors.py) and one header normaliser (bus/envelope.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

import bus.errors
from bus.envelope import header_dict, header_pairs, record_headers
from bus.errors import (
    BusError,
    KafkaUnavailableError,
    RecordTooLargeError,
    TailerError,
    TopicMissingError,
)
from bus.privacy.erasure import ErasureError
from consumers.lag import LagUnavailableError

_PACKAGES = ("bus", "producers", "consumers", "dastra_kafka")


def _modules() -> list[ModuleType]:
    modules = []
    for package in _PACKAGES:
        root = importlib.import_module(package)
        modules.append(root)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if not info.name.endswith("__main__"):  # runs the CLI
                modules.append(importlib.import_module(info.name))
    return modules


def _exception_classes() -> set[type[BaseException]]:
    return {
        value
        for module in _modules()
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__.split(".")[0] in _PACKAGES
    }


# --- the tree --------------------------------------------------------------------------------


def test_every_name_of_bus_errors_is_a_bus_error() -> None:
    for name in bus.errors.__all__:
        assert issubclass(getattr(bus.errors, name), BusError), name


@pytest.mark.parametrize(
    "error",
    [
        KafkaUnavailableError,
        TailerError,
        RecordTooLargeError,
        TopicMissingError,
        ErasureError,
        LagUnavailableError,
    ],
)
def test_errors_about_kafka_are_bus_errors(error: type[Exception]) -> None:
    assert issubclass(error, BusError)


def test_there_is_one_kafka_unavailable_error() -> None:
    classes = _exception_classes()
    assert [c for c in classes if c.__name__ == "KafkaUnavailableError"] == [KafkaUnavailableError]
    assert not [c for c in classes if c.__name__ == "KafkaUnreachableError"]
    # Where the duplicates were: the producer, the poller, the admin helpers.
    import bus.admin
    import bus.producer
    import producers.poller

    assert bus.producer.KafkaUnavailableError is KafkaUnavailableError
    assert producers.poller.KafkaUnavailableError is KafkaUnavailableError
    assert bus.admin.KafkaUnavailableError is KafkaUnavailableError
    assert not hasattr(bus.admin, "KafkaUnreachableError")


def test_what_means_kafka_unavailable_is_a_kafka_unavailable_error() -> None:
    assert issubclass(TailerError, KafkaUnavailableError)
    assert issubclass(LagUnavailableError, KafkaUnavailableError)
    # Siblings: the CLI gives each its own exit code, the webhook its own status.
    for error in (TopicMissingError, RecordTooLargeError, ErasureError):
        assert not issubclass(error, KafkaUnavailableError)


def test_the_old_bases_are_kept_for_their_callers() -> None:
    assert issubclass(KafkaUnavailableError, RuntimeError)
    assert issubclass(TailerError, RuntimeError)
    assert issubclass(LagUnavailableError, RuntimeError)
    assert issubclass(ErasureError, RuntimeError)
    assert issubclass(RecordTooLargeError, ValueError)
    assert not issubclass(RecordTooLargeError, RuntimeError)
    assert issubclass(TopicMissingError, KafkaException)
    assert not issubclass(TopicMissingError, RuntimeError)


def test_topic_missing_carries_a_kafka_error_like_any_kafka_exception() -> None:
    exc = TopicMissingError("dastra.tasks.v1")
    assert exc.topic == "dastra.tasks.v1"
    error = exc.args[0]
    assert isinstance(error, KafkaError)
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert error.str() == ("topic dastra.tasks.v1 does not exist (run `dastra-kafka topics apply`)")
    with pytest.raises(KafkaException):
        raise exc


def test_erasure_error_keeps_its_flag() -> None:
    exc = ErasureError("could not read", unreachable=True)
    assert exc.unreachable and str(exc) == "could not read"


# --- the header normaliser -------------------------------------------------------------------

PAIRS = [("ce_id", b"1"), ("X-Trace", "t\u00e9"), ("empty", None), ("ce_id", b"2"), ("b", b"")]


def test_header_pairs_keeps_names_order_and_repeats() -> None:
    assert header_pairs(PAIRS) == [
        ("ce_id", b"1"),
        ("X-Trace", "t\u00e9".encode()),
        ("ce_id", b"2"),
        ("b", b""),
    ]


@pytest.mark.parametrize("empty", [None, [], {}, ()])
def test_no_headers_are_no_pairs(empty: object) -> None:
    assert header_pairs(empty) == []
    assert header_dict(empty) == {}


def test_a_dict_of_headers_is_normalised_too() -> None:
    headers = {"Content-Type": "application/json", "none": None, "raw": b"\xff"}
    assert header_pairs(headers) == [("Content-Type", b"application/json"), ("raw", b"\xff")]
    assert header_dict(headers) == {"content-type": b"application/json", "raw": b"\xff"}


def test_header_dict_lowercases_and_the_last_repeat_wins() -> None:
    assert header_dict(PAIRS) == {"ce_id": b"2", "x-trace": "t\u00e9".encode(), "b": b""}
    assert header_dict([("A", b"1"), ("a", b"2")]) == {"a": b"2"}
    # Case kept, last wins: what callers that need the exact names build from header_pairs.
    assert dict(header_pairs([("A", b"1"), ("a", b"2"), ("A", b"3")])) == {"A": b"3", "a": b"2"}


def test_header_values_are_not_decoded() -> None:
    # Bytes stay bytes (undecodable ones too); callers decode with their own error handling.
    assert header_dict([("x", b"\xff\xfe")])["x"].decode("utf-8", "replace") == "\ufffd\ufffd"


def test_record_headers_of_a_consumed_record() -> None:
    assert record_headers(Message(topic="t", headers=[("a", b"1"), ("a", None)])) == [
        ("a", b"1"),
        ("a", None),
    ]
    assert record_headers(Message(topic="t")) == []
    assert header_pairs(record_headers(Message(topic="t", headers=[("a", None)]))) == []
