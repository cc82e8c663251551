"""The entry point's tracing set-up (`dastra_kafka/tracing.py`): nothing installed without
OTEL_EXPORTER_OTLP_ENDPOINT; with it, spans exported over OTLP/HTTP and flushed at the end."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from bus.tracing import sending
from dastra_kafka.settings import load_settings
from dastra_kafka.tracing import TracingSettings, traced
from tests.kafka_helpers import wait_for
from tests.tracing_support import OtlpReceiver, fresh_tracing_globals


def test_without_an_endpoint_no_sdk_is_installed() -> None:
    with fresh_tracing_globals():
        before = trace.get_tracer_provider()
        with traced(TracingSettings(), "worker"):
            assert trace.get_tracer_provider() is before
            with sending("t") as span:
                assert not span.is_recording()


def test_the_settings_tree_reads_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "bridge-worker")
    settings = load_settings(env_file=None).tracing
    assert settings.exporter_otlp_endpoint == "http://collector:4318"
    assert settings.service_name == "bridge-worker"


def test_with_an_endpoint_spans_are_exported_and_flushed_at_the_end() -> None:
    with OtlpReceiver() as receiver, fresh_tracing_globals():
        with traced(TracingSettings(exporter_otlp_endpoint=receiver.endpoint + "/"), "poller"):
            assert isinstance(trace.get_tracer_provider(), TracerProvider)
            with sending("dastra.tasks.v1") as span:
                assert span.is_recording()
        # The batch processor's 5 s interval has not passed: the shutdown flushed the span.
        wait_for(lambda: bool(receiver.spans()), 10, "the exported span")
        [exported] = receiver.spans()
    assert exported.name == "send dastra.tasks.v1" and exported.kind == "PRODUCER"
    assert exported.service == "dastra-kafka-poller"
