"""dastra-kafka: the event-driven bridge between Dastra and Apache Kafka."""

__all__ = ["__version__"]

__version__ = "0.1.0"
