"""Backward compatibility of JSON Schemas: can data valid under the old schema still be read?

Consumes two JSON Schemas (draft 2020-12, as `schemas/` holds them: local `$ref`s into `$defs`).
Produces the `Incompatibility`s a consumer of the committed contract would suffer from the new
one, in the spirit of Schema Registry's BACKWARD mode for JSON Schema: every instance the old
schema accepts must be accepted by the new one. Breaking:

- a property removed (consumers rely on it), or newly required;
- a narrowed type (`number` to `integer`, `string | null` to `string`, anything to `string`);
- an enum value removed (unless the new schema still accepts it, as lenient enums do);
- `additionalProperties` newly false (or newly a schema);
- a tightened constraint (`maxLength` lowered, a `pattern` added or changed, ...);
- an `anyOf`/`oneOf` alternative that no new alternative covers (reported with the closest
  new alternative's reasons).

Additive changes pass: a new optional property, a new enum value, a wider type, a loosened
constraint, a new branch. The check is conservative where a precise answer would need set algebra
on patterns or unions: it may call a harmless change breaking, never the reverse for the cases
above.

    problems = backward_incompatibilities(committed, generated)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["Incompatibility", "backward_incompatibilities"]

Schema = Mapping[str, Any] | bool

# Keywords that do not change which instances validate.
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
        "contentSchema",
        "discriminator",
    }
)
# Keywords this module reasons about; any other validation keyword that appears or changes in the
# new schema is reported as a changed constraint.
_HANDLED = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
    }
)
_ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})
_LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")
_UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")


@dataclass(frozen=True)
class Incompatibility:
    """One way the new schema rejects data the old one accepted.

    `path` locates it in an instance (`$.area.id`, `$.tags[]`, `$.*` for any other property).
    """

    path: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


def backward_incompatibilities(old: Schema, new: Schema) -> list[Incompatibility]:
    """Every breaking difference from `old` (the committed schema) to `new`, sorted by path."""
    checker = _Checker(old, new)
    found = checker.compare(old, new, "$", frozenset())
    unique = {(item.path, item.kind, item.detail): item for item in found}
    return [unique[key] for key in sorted(unique)]


class _Checker:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self._old_root = old_root
        self._new_root = new_root
        defs = new_root.get("$defs", {}) if isinstance(new_root, Mapping) else {}
        self._new_defs: Mapping[str, Any] = defs

    # --- references ------------------------------------------------------------------------

    @staticmethod
    def _pointer(root: Schema, ref: str) -> Schema:
        if not ref.startswith("#"):
            raise _UnresolvableError(ref)
        node: Any = root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise _UnresolvableError(ref)
        if not isinstance(node, (Mapping, bool)):
            raise _UnresolvableError(ref)
        return node

    def _resolve(self, schema: Schema, root: Schema, refs: list[str]) -> Schema:
        """`schema` with its `$ref` chain replaced by the target (siblings kept, they narrow)."""
        while isinstance(schema, Mapping) and "$ref" in schema:
            ref = str(schema["$ref"])
            refs.append(ref)
            target = self._pointer(root, ref)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            if isinstance(target, bool):
                if not target or not _constraints(siblings):
                    return target
                schema = siblings
            else:
                schema = {**target, **siblings}
        return schema

    # --- comparison ------------------------------------------------------------------------

    def compare(
        self, old: Schema, new: Schema, path: str, seen: frozenset[tuple[str, str]]
    ) -> list[Incompatibility]:
        old_refs: list[str] = []
        new_refs: list[str] = []
        try:
            old = self._resolve(old, self._old_root, old_refs)
            new = self._resolve(new, self._new_root, new_refs)
        except _UnresolvableError as exc:
            return [_inc(path, "unresolvable-reference", f"cannot compare through {exc.args[0]}")]
        if old_refs or new_refs:
            pair = ("|".join(old_refs), "|".join(new_refs))
            if pair in seen:
                return []  # a recursive structure already being compared
            seen = seen | {pair}

        if _accepts_everything(new) or old is False:
            return []
        if new is False:
            return [_inc(path, "type-narrowed", "the new schema rejects every value")]
        if old is True:
            return [_inc(path, "type-narrowed", "any value was accepted; now constrained")]
        assert isinstance(old, Mapping) and isinstance(new, Mapping)

        if "allOf" in old:  # data matched every member: merge them (narrower is fine)
            merged: dict[str, Any] = {k: v for k, v in old.items() if k != "allOf"}
            for member in old["allOf"]:
                resolved = self._resolve(member, self._old_root, [])
                if resolved is False:
                    return []
                if isinstance(resolved, Mapping):
                    merged.update(resolved)
            return self.compare(merged, new, path, seen)
        if "allOf" in new:  # data must match every member
            rest = {k: v for k, v in new.items() if k != "allOf"}
            found = self.compare(old, rest, path, seen) if _constraints(rest) else []
            for member in new["allOf"]:
                found += self.compare(old, member, path, seen)
            return found

        enum = _enum_of(old)
        if enum is not None:
            return self._enum_values(enum, new, path)

        old_branches = _branches(old)
        if old_branches is not None:
            rest = {k: v for k, v in old.items() if k not in ("anyOf", "oneOf")}
            found = []
            for branch in old_branches:
                resolved = self._resolve(branch, self._old_root, [])
                combined: Schema = resolved
                if isinstance(resolved, Mapping) and _constraints(rest):
                    combined = {**rest, **resolved}
                found += self.compare(combined, new, path, seen)
            return found

        new_branches = _branches(new)
        if new_branches is not None:
            rest = {k: v for k, v in new.items() if k not in ("anyOf", "oneOf")}
            outer = self.compare(old, rest, path, seen) if _constraints(rest) else []
            attempts = [self.compare(old, branch, path, seen) for branch in new_branches]
            # No alternative takes everything: report why the closest one does not.
            best = min(attempts, key=len)
            return outer + best

        return self._same_shape(old, new, path, seen)

    def _enum_values(
        self, values: list[Any], new: Mapping[str, Any], path: str
    ) -> list[Incompatibility]:
        wrapped = {"$defs": self._new_defs, "allOf": [new]}
        validator = Draft202012Validator(wrapped)
        return [
            _inc(path, "enum-value-removed", f"{value!r} is no longer accepted")
            for value in values
            if not validator.is_valid(value)
        ]

    def _same_shape(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        path: str,
        seen: frozenset[tuple[str, str]],
    ) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        old_types = _types(old)
        new_types = _types(new)
        lost = {t for t in old_types - new_types if not (t == "integer" and "number" in new_types)}
        if lost:
            was = "any" if "type" not in old else "|".join(sorted(old_types))
            found.append(
                _inc(
                    path,
                    "type-narrowed",
                    f"{was} -> {'|'.join(sorted(new_types))} "
                    f"(no longer: {', '.join(sorted(lost))})",
                )
            )
        kept = old_types & (new_types | ({"integer"} if "number" in new_types else set()))
        found += self._bounds(old, new, path)
        if kept & {"string"}:
            for keyword in ("pattern", "format"):
                if keyword in new and new.get(keyword) != old.get(keyword):
                    before = old.get(keyword, "none")
                    found.append(
                        _inc(path, "constraint-tightened", f"{keyword}: {before} -> {new[keyword]}")
                    )
        multiple = new.get("multipleOf")
        changed = multiple is not None and multiple != old.get("multipleOf")
        if kept & {"number", "integer"} and changed:
            found.append(_inc(path, "constraint-tightened", f"multipleOf: {multiple}"))
        if kept & {"array"}:
            if new.get("uniqueItems") and not old.get("uniqueItems"):
                found.append(_inc(path, "constraint-tightened", "uniqueItems added"))
            if "items" in new:
                found += self.compare(old.get("items", True), new["items"], f"{path}[]", seen)
        if kept & {"object"}:
            found += self._object(old, new, path, seen)
        for keyword in sorted(set(new) - _HANDLED - _ANNOTATIONS):
            if new[keyword] != old.get(keyword):
                found.append(_inc(path, "constraint-tightened", f"{keyword} added or changed"))
        return found

    @staticmethod
    def _bounds(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[Incompatibility]:
        found = []
        for keyword in _LOWER_BOUNDS:
            if keyword in new and (keyword not in old or new[keyword] > old[keyword]):
                found.append(
                    _inc(
                        path,
                        "constraint-tightened",
                        f"{keyword}: {old.get(keyword, 'none')} -> {new[keyword]}",
                    )
                )
        for keyword in _UPPER_BOUNDS:
            if keyword in new and (keyword not in old or new[keyword] < old[keyword]):
                found.append(
                    _inc(
                        path,
                        "constraint-tightened",
                        f"{keyword}: {old.get(keyword, 'none')} -> {new[keyword]}",
                    )
                )
        return found

    def _object(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        path: str,
        seen: frozenset[tuple[str, str]],
    ) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        old_props: Mapping[str, Any] = old.get("properties", {})
        new_props: Mapping[str, Any] = new.get("properties", {})
        old_extra: Schema = old.get("additionalProperties", True)
        new_extra: Schema = new.get("additionalProperties", True)
        for name, schema in old_props.items():
            where = f"{path}.{name}"
            if name not in new_props:
                found.append(_inc(where, "property-removed", "consumers of the old schema read it"))
            else:
                found += self.compare(schema, new_props[name], where, seen)
        old_required = set(old.get("required", []))
        for name in new.get("required", []):
            if name not in old_required:
                found.append(
                    _inc(f"{path}.{name}", "property-required", "old data may not have it")
                )
        for name, schema in new_props.items():
            if name not in old_props and not _accepts_everything(old_extra):
                # Old data could carry this name as an additional property of `old_extra`.
                found += self.compare(old_extra, schema, f"{path}.{name}", seen)
        if new_extra is False and old_extra is not False:
            found.append(
                _inc(f"{path}.*", "additional-properties-closed", "other properties now rejected")
            )
        elif new_extra is not False:
            found += self.compare(old_extra, new_extra, f"{path}.*", seen)
        return found


class _UnresolvableError(Exception):
    pass


def _inc(path: str, kind: str, detail: str) -> Incompatibility:
    return Incompatibility(path, kind, detail)


def _constraints(schema: Mapping[str, Any]) -> bool:
    return any(key not in _ANNOTATIONS for key in schema)


def _accepts_everything(schema: Schema) -> bool:
    return schema is True or (isinstance(schema, Mapping) and not _constraints(schema))


def _enum_of(schema: Mapping[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _branches(schema: Mapping[str, Any]) -> list[Schema] | None:
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            return list(schema[keyword])
    return None


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    if declared is None:
        return set(_ALL_TYPES)
    names: Iterable[str] = [declared] if isinstance(declared, str) else declared
    return set(names)
