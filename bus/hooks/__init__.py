"""What the webhook and the hook dispatcher share: subscriptions, payloads, signatures, egress."""
