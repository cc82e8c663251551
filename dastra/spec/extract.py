"""Extract the subset of Dastra's OpenAPI spec that this project uses.

Consumes Dastra's full OpenAPI 3.0 document (`dastra-api.json`, from Dastra's GitBook docs).
Produces `dastra/spec/dastra-api-subset.json`: the operations listed in `OPERATIONS`, the
component schemas they reach (transitively), the security schemes, and the source's sha256, so
that the project stands alone. Nothing is rewritten: every kept object is byte-for-byte
Dastra's (the JSON Schema conversion happens at load time, in `dastra.spec`).

    python -m dastra.spec.extract ../shared/dastra-openapi/dastra-api.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["OPERATIONS", "SUBSET_FILE", "extract", "main", "render"]

SUBSET_FILE = Path(__file__).with_name("dastra-api-subset.json")

# (method, path) of every operation the client calls or the sandbox serves.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("get", "/status"),
    ("get", "/me"),
    ("get", "/rate-limiting-state"),
    ("get", "/v1/WorkSpaces"),
    ("get", "/v1/WorkSpaces/{id}"),
    ("get", "/v1/TenantUsers"),
    ("get", "/v1/ws/{workspaceId}/Areas"),
    ("get", "/v1/ws/{workspaceId}/DataSubjectRequests"),
    ("post", "/v1/ws/{workspaceId}/DataSubjectRequests"),
    ("get", "/v1/ws/{workspaceId}/DataSubjectRequests/{id}"),
    ("get", "/v1/ws/{workspaceId}/Tasks"),
    ("post", "/v1/ws/{workspaceId}/Tasks"),
    ("get", "/v1/ws/{workspaceId}/Tasks/{id}"),
    ("get", "/v1/ws/{workspaceId}/Actors"),
    ("post", "/v1/ws/{workspaceId}/Actors"),
    ("get", "/v1/ws/{workspaceId}/Actors/{id}"),
    ("get", "/v1/ws/{workspaceId}/DataProcessings"),
    ("get", "/v1/ws/{workspaceId}/DataProcessings/{id}"),
    ("post", "/v1/ws/{workspaceId}/DataProcessings/recipients/batch"),
    ("get", "/v1/WebHookUrls"),
    ("post", "/v1/WebHookUrls"),
    ("get", "/v1/WebHookUrls/{id}"),
    ("put", "/v1/WebHookUrls/{id}"),
    ("delete", "/v1/WebHookUrls/{id}"),
)

_REF_PREFIX = "#/components/schemas/"


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF_PREFIX):
                found.add(value[len(_REF_PREFIX) :])
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def extract(spec: dict[str, Any], source_sha256: str) -> dict[str, Any]:
    """The subset document of `spec` for `OPERATIONS`."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in OPERATIONS:
        try:
            operation = spec["paths"][path][method]
        except KeyError:
            raise KeyError(f"{method.upper()} {path} is not in the source spec") from None
        paths.setdefault(path, {})[method] = operation
    all_schemas: dict[str, Any] = spec["components"]["schemas"]
    keep: set[str] = set()
    pending = _refs(paths)
    while pending:
        name = pending.pop()
        if name in keep:
            continue
        keep.add(name)
        pending |= _refs(all_schemas[name]) - keep
    return {
        "openapi": spec["openapi"],
        "info": {
            **spec["info"],
            "x-subset-of": "dastra-api.json (Dastrateam/dastra-doc, .gitbook/assets)",
            "x-source-sha256": source_sha256,
            "x-extracted-by": "python -m dastra.spec.extract",
        },
        "servers": spec.get("servers", []),
        "paths": paths,
        "components": {
            "schemas": {name: all_schemas[name] for name in sorted(keep)},
            "securitySchemes": spec["components"].get("securitySchemes", {}),
        },
        "security": spec.get("security", []),
    }


def render(subset: dict[str, Any]) -> str:
    """The subset as written to disk (stable, reviewable diffs)."""
    return json.dumps(subset, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="Dastra's full dastra-api.json")
    parser.add_argument("-o", "--output", type=Path, default=SUBSET_FILE)
    parser.add_argument("--check", action="store_true", help="exit 1 if the output is stale")
    args = parser.parse_args(argv)
    raw = args.source.read_bytes()
    text = render(extract(json.loads(raw), hashlib.sha256(raw).hexdigest()))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: re-run python -m dastra.spec.extract", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
