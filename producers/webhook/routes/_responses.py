"""OpenAPI `responses=` entries shared by the webhook's routers (problem bodies, 401, 503)."""

from typing import Any

from producers.webhook.models import Problem

__all__ = ["AUTH_ERRORS", "PROBLEM", "UNAVAILABLE"]

PROBLEM: dict[str, Any] = {"model": Problem}
UNAVAILABLE: dict[str, Any] = {
    "model": Problem,
    "description": "Kafka did not acknowledge: nothing was written; retry after Retry-After",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown token"},
}
