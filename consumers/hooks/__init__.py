"""REST hook dispatcher (`dastra-kafka hooks`): Dastra events POSTed to their subscribers.

Consumes `dastra.rights-requests.v1` and `dastra.tasks.v1`, in one consumer group per
subscription (`<HOOKS_GROUP>.<subscription id>`: each subscription's position is stored in
Kafka), and the whole compacted `dastra.hook-subscriptions.v1` (every dispatcher reads every
subscription). Produces, for each event and each matching subscription, an HTTPS POST of
`{"id", "type", "timestamp", "workspace_id", "data"}` (data = the Dastra object in the payload
mode of its topic, plus `payload_mode` when that is not full; an `encrypted` payload is
decrypted when this process has PRIVACY_MASTER_KEY, erased subjects' fields as
`{"$erased": true}`, and delivered as it is otherwise) signed per Standard Webhooks
(`webhook-id` = the event's `ce_id`, stable across retries); tombstones on
`dastra.hook-subscriptions.v1` for subscribers that answer 410 Gone; and
`dastra.dead-letter.v1` records for what is really undeliverable (see `delivery`).

Each subscription reads at its own pace with a bounded read-ahead (`HOOKS_BUFFER_MAX`), its
own workers (`HOOKS_CONCURRENCY`), rate limit and backoff: a slow, failing or rate-limited
subscriber falls behind and catches up, and never delays another. Its position advances only
past events whose delivery ended: at-least-once per subscription; receivers drop repeats by
`webhook-id`.

    async with HookDispatcher(settings.kafka, settings.hooks) as dispatcher:
        await dispatcher.run(stop=stop_event)
"""

from consumers.hooks.dispatcher import HookDispatcher

__all__ = ["HookDispatcher"]
