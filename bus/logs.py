"""Structured logging, configured once at the entry point.

Consumes the service settings (level, JSON or console). Produces structlog loggers that write to
stderr and route the standard library's logging (Faust, uvicorn, httpx) through the same output.
Log lines carry ids, topics, partitions and offsets, never personal data or secrets.

    configure_logging(settings.service)
    log = structlog.get_logger(__name__)
"""

from __future__ import annotations

import logging
import sys

import structlog
import structlog.tracebacks

from bus.settings import ServiceSettings

__all__ = ["configure_logging"]


def _json_tracebacks(service: ServiceSettings) -> list[structlog.typing.Processor]:
    """In JSON mode, exceptions as structured tracebacks, again without local variables."""
    if not service.log_json:
        return []
    transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    return [structlog.processors.ExceptionRenderer(transformer)]


def configure_logging(service: ServiceSettings) -> None:
    """Send structlog and stdlib logging to stderr at `service.log_level`."""
    level = getattr(logging, service.log_level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if service.log_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            # Tracebacks without local variables: they would print commands' personal data.
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_json_tracebacks(service),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; URLs can carry search terms (e-mails).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # At DEBUG, aiokafka (under Faust) logs whole requests and responses, record bytes included
    # (FetchResponse message_set, ProduceRequest), and httpcore logs request details: never
    # below INFO, whatever SERVICE_LOG_LEVEL says.
    for chatty in ("aiokafka", "kafka", "httpcore"):
        logging.getLogger(chatty).setLevel(max(level, logging.INFO))
