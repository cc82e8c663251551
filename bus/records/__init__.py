"""Every wire model of the bus, and nothing else: what the records on the topics hold.

`commands` (the six commands and their results), `poller` (cursor and poll triggers),
`idempotency` (the webhook's Idempotency-Key records), `lag` (the lag monitor's window),
`subscriptions` (REST hook subscriptions) and `recipe_runs` (recipe runs and notifications).
The erasure audit event is `privacy_audit`; the key topic's records (data keys, aliases, erasure
markers) live with the crypto that needs them, in `bus.privacy.crypto`.
"""
