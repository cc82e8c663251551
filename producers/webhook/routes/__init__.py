"""The webhook's routes, one router per concern; `producers.webhook.app` includes them in order.

- `auth`: the token dependency every authenticated route takes (`Authorization: Bearer` or
  `X-API-Key`);
- `probes`: `/healthz`, `/readyz`, `/metrics`, `/v1/me`;
- `commands`: `POST /v1/commands/{action}` (produces `dastra.commands.<action>.v1`, `?wait`);
- `hooks`: `/v1/hooks` (REST hook subscriptions on `dastra.hook-subscriptions.v1`, samples);
- `dastra`: `POST /v1/dastra/webhook` (Dastra's signed push: a trigger on
  `dastra.poller-triggers.v1`).

Each module builds its `APIRouter` from the process's `WebhookService` (`router(service, ...)`).
No `from __future__ import annotations` in these modules: FastAPI reads the route signatures,
whose dependencies and limits are names local to each `router()`.
"""
