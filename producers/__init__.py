"""Producers: the change poller (Dastra -> Kafka) and the webhook service (HTTP -> Kafka)."""
