"""Contract tooling of the application shell: what every topic's records look like, checked.

`registry` (one contract per schema name and per topic, record validation), `schemagen` (the
JSON Schemas, AsyncAPI document and docs/topics.md, as bytes, and their drift check), `compat`
(what a new schema breaks for the consumers of the committed one), `_examples` (the records the
schemas and docs show).
"""
