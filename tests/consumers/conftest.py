"""The hook dispatcher tests share the webhook tests' fixtures (local CA, loopback-admitting
hook settings, a running webhook)."""

from tests.producers.conftest import (
    hooks_settings,
    tls,
    webhook,
    webhook_dastra,
    webhook_settings,
)

__all__ = ["hooks_settings", "tls", "webhook", "webhook_dastra", "webhook_settings"]
