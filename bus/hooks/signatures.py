"""Webhook signatures: Standard Webhooks (what we send) and Dastra's (what we receive).

Consumes a secret, a message id, a timestamp and the raw body. Produces the Standard Webhooks
headers (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">` keyed by the base64-decoded `whsec_` secret), and verifies
`Dastra-Signature` (base64 HMAC-SHA256 of the raw body, keyed by the webhook's validation key)
in constant time.

    headers = standard_webhook_headers("whsec_...", "dastra:12:task.created:345", body)
    ok = verify_dastra_signature(key, body, request.headers.get("Dastra-Signature"))
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

__all__ = [
    "dastra_signature",
    "sign_standard_webhook",
    "standard_webhook_headers",
    "verify_dastra_signature",
]

_PREFIX = "whsec_"


def _secret_key(secret: str) -> bytes:
    encoded = secret.removeprefix(_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from exc


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>`: the symmetric Standard Webhooks signature of one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_webhook_headers(
    secret: str, msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (a fresh timestamp per attempt;
    the id stays the same across retries)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_standard_webhook(secret, msg_id, stamp, body),
    }


def dastra_signature(key: str, body: bytes) -> str:
    """base64(HMAC-SHA256(raw body, key)): what Dastra sends in `Dastra-Signature`."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def verify_dastra_signature(key: str, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body` (constant-time comparison)."""
    if not header:
        return False
    return hmac.compare_digest(dastra_signature(key, body).encode(), header.strip().encode())
