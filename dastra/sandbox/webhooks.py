"""Dastra's webhooks, as the sandbox sends them: registered URLs and signed deliveries.

Consumes registrations (`/v1/WebHookUrls`, `WebHookUrlCreationDto`) and the sandbox's own
creations (`notify`: a rights request or a task was created). Produces `WebHookUrlDto`s and, for
each subscribed URL, one `POST` of `{webhookId, signatureUrl, userId, eventType, eventName, data,
date}` signed as Dastra signs it: header `Dastra-Signature` = base64(HMAC-SHA256(raw body, the
webhook's `signatureKey`)). Deliveries run on the event loop in their own tasks, never inside the
API call that caused them; a delivery that does not get a 2xx within `timeout_s` counts as an
error (`nbErrors`, `errorMessage`, `dateLastError`), there is no retry and no replay, and a URL
with more than 5 errors is blocked (`inError`) until it is saved again (`PUT`), as Dastra does.
Logs nothing: target URLs and bodies stay out of logs.

    hooks = SandboxWebhooks(delay_s=0.0)
    dto = hooks.create({"url": url, "workSpaceId": 1, "subscribedEvents": ["TaskCreation"]})
    hooks.notify(1, "TaskCreation", task, user_id=2)      # inside the running event loop
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from dastra.sandbox.state import NotFoundError, format_date

__all__ = ["BLOCK_AFTER_ERRORS", "EVENT_NAMES", "SandboxWebhooks", "sign"]

# "The webhook is blocked after more than 5 errors" (Dastra's webhook documentation).
BLOCK_AFTER_ERRORS = 5
EVENT_NAMES = {
    "DataSubjectCreation": "New data subject request",
    "TaskCreation": "New task",
}


def sign(key: str, body: bytes) -> str:
    """`Dastra-Signature`: base64(HMAC-SHA256(raw body, key))."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


class SandboxWebhooks:
    """The registered webhook URLs of the sandbox's tenant and their deliveries. One event loop
    owns it: `notify` is called from the API routes; `aclose` ends pending deliveries."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._delay_s = delay_s
        self._timeout_s = timeout_s
        self._transport = transport
        self._hooks: dict[int, dict[str, Any]] = {}
        self._next_id = 1
        self._pending: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.delivered = 0
        self.failed = 0

    # --- registrations (WebHookUrls) ---------------------------------------------------------

    def reset(self) -> None:
        self._hooks.clear()
        self._next_id = 1
        self.delivered = 0
        self.failed = 0

    def listed(self, ws: int | None) -> list[dict[str, Any]]:
        return [
            dict(h) for h in self._hooks.values() if ws is None or h["workSpaceId"] in (ws, None)
        ]

    def get(self, hook_id: int) -> dict[str, Any]:
        hook = self._hooks.get(hook_id)
        if hook is None:
            raise NotFoundError(f"webhook {hook_id} not found")
        return dict(hook)

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        hook_id = self._next_id
        self._next_id += 1
        self._hooks[hook_id] = {
            "id": hook_id,
            "url": body["url"],
            "workSpaceId": body.get("workSpaceId"),
            "subscribedEvents": list(body.get("subscribedEvents") or []),
            "signatureKey": str(uuid.uuid4()),
            "inError": False,
            "nbErrors": 0,
            "errorMessage": None,
            "dateLastError": None,
        }
        return dict(self._hooks[hook_id])

    def update(self, hook_id: int, body: Mapping[str, Any]) -> None:
        """Save a webhook again: new URL and events, same key; errors cleared (unblocked)."""
        hook = self._hooks.get(hook_id)
        if hook is None:
            raise NotFoundError(f"webhook {hook_id} not found")
        hook.update(
            url=body["url"],
            workSpaceId=body.get("workSpaceId"),
            subscribedEvents=list(body.get("subscribedEvents") or []),
            inError=False,
            nbErrors=0,
            errorMessage=None,
            dateLastError=None,
        )

    def delete(self, hook_id: int) -> None:
        if self._hooks.pop(hook_id, None) is None:
            raise NotFoundError(f"webhook {hook_id} not found")

    # --- deliveries --------------------------------------------------------------------------

    def notify(self, ws: int, event: str, data: Mapping[str, Any], *, user_id: int) -> int:
        """Schedule one delivery per webhook subscribed to `event` in `ws` (not blocked);
        returns how many. Must run inside the event loop; never waits for a delivery."""
        targets = [
            h
            for h in self._hooks.values()
            if event in h["subscribedEvents"]
            and h["workSpaceId"] in (ws, None)
            and not h["inError"]
        ]
        if not targets:
            return 0
        loop = asyncio.get_running_loop()
        for hook in targets:
            body = json.dumps(
                {
                    "webhookId": hook["id"],
                    "signatureUrl": None,
                    "userId": user_id,
                    "eventType": event,
                    "eventName": EVENT_NAMES.get(event, event),
                    "data": data,
                    "date": format_date(datetime.now(UTC)),
                },
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode()
            task = loop.create_task(
                self._deliver(hook["id"], hook["url"], hook["signatureKey"], body)
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return len(targets)

    async def _deliver(self, hook_id: int, url: str, key: str, body: bytes) -> None:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)  # Dastra's queue: deliveries lag
        if self._http is None:
            self._http = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        error: str | None = None
        try:
            answer = await self._http.post(
                url,
                content=body,
                headers={"Content-Type": "application/json", "Dastra-Signature": sign(key, body)},
                timeout=self._timeout_s,
            )
            if not answer.is_success:
                error = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        self._record(hook_id, error)

    def _record(self, hook_id: int, error: str | None) -> None:
        hook = self._hooks.get(hook_id)
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        if hook is None:
            return
        hook["nbErrors"] += 1
        hook["errorMessage"] = error
        hook["dateLastError"] = format_date(datetime.now(UTC))
        hook["inError"] = hook["nbErrors"] > BLOCK_AFTER_ERRORS

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the HTTP client."""
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
