"""The Dastra REST API: an async client, its models and errors, and a local sandbox."""
