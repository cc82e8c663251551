"""The project's spec subset: extracted from Dastra's spec by `dastra.spec.extract`, complete
for the operations we use, and up to date with the source when the source is at hand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dastra.spec import SUBSET_FILE, load_spec
from dastra.spec.extract import OPERATIONS, extract, render

_ROOT = Path(__file__).resolve().parents[2]
_SOURCES = [
    parent / "shared" / "dastra-openapi" / "dastra-api.json"
    for parent in (_ROOT.parent, _ROOT.parent.parent)
]


def test_every_operation_and_schema_reference_is_in_the_subset() -> None:
    spec = load_spec()
    assert {f"{m.upper()} {p}" for m, p in OPERATIONS} == set(spec.operations)
    text = SUBSET_FILE.read_text(encoding="utf-8")
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in spec.schemas, name
    assert spec.match("POST", "/v1/ws/1/DataProcessings/recipients/batch") is not None
    found = spec.match("GET", "/v1/ws/1/DataProcessings/6b0407a5-700f-5ccd-9da3-ba4c1295634d")
    assert found is not None and found.path.endswith("/{id}")
    assert spec.match("DELETE", "/v1/ws/1/Tasks/1") is None


def test_the_subset_is_what_the_extractor_makes_from_dastras_spec() -> None:
    source = next((path for path in _SOURCES if path.is_file()), None)
    if source is None:
        pytest.skip("Dastra's full spec is not beside the project (../shared/dastra-openapi)")
    raw = source.read_bytes()
    expected = render(extract(json.loads(raw), hashlib.sha256(raw).hexdigest()))
    assert SUBSET_FILE.read_text(encoding="utf-8") == expected, (
        "stale subset: run python -m dastra.spec.extract " + str(source)
    )
