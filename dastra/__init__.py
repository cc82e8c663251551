"""The Dastra REST API: an async client, its models and errors, and a local sandbox.

from dastra import DastraClient, Rule
async with DastraClient(settings.dastra) as dastra:
    me = await dastra.me()
"""

from dastra.client import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, DastraClient
from dastra.errors import (
    DastraAuthError,
    DastraConfigError,
    DastraConnectionError,
    DastraError,
    DastraNotFound,
    DastraRateLimited,
    DastraRejected,
    DastraResponseError,
    DastraRetryable,
    DastraServerError,
    DastraTimeout,
)
from dastra.filters import Rule, RuleGroup
from dastra.ratelimit import RateLimiter, shared_limiter

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "DastraAuthError",
    "DastraClient",
    "DastraConfigError",
    "DastraConnectionError",
    "DastraError",
    "DastraNotFound",
    "DastraRateLimited",
    "DastraRejected",
    "DastraResponseError",
    "DastraRetryable",
    "DastraServerError",
    "DastraTimeout",
    "RateLimiter",
    "Rule",
    "RuleGroup",
    "shared_limiter",
]
