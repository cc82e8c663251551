"""Compatibility of JSON Schemas by role: can the readers of a topic still read its records?

Consumes two JSON Schemas (draft 2020-12, as `schemas/` holds them: local `$ref`s into `$defs`):
the committed one (old) and the one the code generates now (new), and the topic's compatibility.
Produces the `Incompatibility`s its readers would suffer, in the spirit of Schema Registry's modes
for JSON Schema:

- BACKWARD (the bridge reads the topic: commands, its own state): every instance the OLD schema
  accepts must be accepted by the NEW one (new readers read old data). Breaking: a property removed
  (consumers rely on it) or newly required; a narrowed type (`number` to `integer`, `string | null`
  to `string`); an enum value removed, or an enum where there was none (unless the new schema still
  accepts the value, as lenient enums do); `additionalProperties` newly false (or newly a schema);
  a tightened constraint (`maxLength` lowered, a `pattern` added or changed, ...).
- FORWARD (the bridge writes it, others read it with types generated from the old schema): every
  instance the NEW schema accepts must be accepted by the OLD one (old readers read new data).
  Breaking: a widened type (`id` made nullable, `integer` to `number`); a new value of a closed
  enum, or an enum dropped; a required property made optional; a property added where the old
  schema is closed (`additionalProperties: false`), or the model opened; a loosened constraint.
  A property the new schema removes or adds to an open model passes: old readers ignore unknown
  fields, and an optional one they may miss.
- FULL: both.

An `anyOf`/`oneOf` alternative that no alternative on the other side covers is reported with the
closest alternative's reasons. Lenient enums (`anyOf: [known values, any string]`) take any string
on both sides, so a known value may come or go. The check is conservative where a precise answer
would need set algebra on patterns or unions: it may call a harmless change breaking, never the
reverse for the cases above.

    problems = incompatibilities(committed, generated, "FULL")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from bus.topics import Compatibility

__all__ = [
    "Incompatibility",
    "backward_incompatibilities",
    "forward_incompatibilities",
    "incompatibilities",
]

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
# Keywords this module reasons about; any other validation keyword that differs is reported as a
# changed constraint.
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
_OBJECT_KEYWORDS = frozenset(
    {"properties", "required", "additionalProperties", "minProperties", "maxProperties"}
)
_ALL_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})
_NUMBERS = frozenset({"number", "integer"})
_BOUND_TYPES: dict[str, frozenset[str]] = {
    "minLength": frozenset({"string"}),
    "maxLength": frozenset({"string"}),
    "minItems": frozenset({"array"}),
    "maxItems": frozenset({"array"}),
    "minProperties": frozenset({"object"}),
    "maxProperties": frozenset({"object"}),
    "minimum": _NUMBERS,
    "maximum": _NUMBERS,
    "exclusiveMinimum": _NUMBERS,
    "exclusiveMaximum": _NUMBERS,
}
_LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")
_UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")

# The same difference seen from each side: BACKWARD kind -> FORWARD kind.
_FORWARD_KIND = {
    "type-narrowed": "type-widened",
    "enum-value-removed": "enum-value-added",
    "enum-added": "enum-removed",
    "constraint-tightened": "constraint-loosened",
    "property-removed": "property-added",
    "property-required": "property-no-longer-required",
    "additional-properties-closed": "additional-properties-opened",
    "unresolvable-reference": "unresolvable-reference",
}


@dataclass(frozen=True)
class Incompatibility:
    """One way the new schema breaks a reader.

    `path` locates it in an instance (`$.area.id`, `$.tags[]`, `$.*` for any other property);
    `rule` is BACKWARD (new readers, old data) or FORWARD (old readers, new data).
    """

    path: str
    kind: str
    detail: str
    rule: str = "BACKWARD"

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


def backward_incompatibilities(old: Schema, new: Schema) -> list[Incompatibility]:
    """What `new` rejects of the data `old` (the committed schema) accepted, sorted by path."""
    return _unique(_Checker(old, new, forward=False).compare(old, new, "$", frozenset()))


def forward_incompatibilities(old: Schema, new: Schema) -> list[Incompatibility]:
    """What readers of `old` (the committed schema) reject of the data `new` allows."""
    return _unique(_Checker(new, old, forward=True).compare(new, old, "$", frozenset()))


def incompatibilities(
    old: Schema, new: Schema, compatibility: Compatibility
) -> list[Incompatibility]:
    """The breaking differences from `old` to `new` under a topic's compatibility mode."""
    found: list[Incompatibility] = []
    if compatibility in ("BACKWARD", "FULL"):
        found += backward_incompatibilities(old, new)
    if compatibility in ("FORWARD", "FULL"):
        found += forward_incompatibilities(old, new)
    return _unique(found)


def _unique(found: list[Incompatibility]) -> list[Incompatibility]:
    unique = {(item.path, item.kind, item.detail, item.rule): item for item in found}
    return [unique[key] for key in sorted(unique)]


class _Checker:
    """Is every instance valid under the `data` schema valid under the `reader` schema?

    BACKWARD: data = old, reader = new. FORWARD: data = new, reader = old. Kinds and details
    are worded from the side of the one whose schema changed (old -> new)."""

    def __init__(self, data_root: Schema, reader_root: Schema, *, forward: bool) -> None:
        self._data_root = data_root
        self._reader_root = reader_root
        self._forward = forward
        defs = reader_root.get("$defs", {}) if isinstance(reader_root, Mapping) else {}
        self._reader_defs: Mapping[str, Any] = defs

    def _inc(self, path: str, kind: str, backward: str, forward: str) -> Incompatibility:
        if self._forward:
            return Incompatibility(path, _FORWARD_KIND[kind], forward, "FORWARD")
        return Incompatibility(path, kind, backward, "BACKWARD")

    def _change(self, data_side: object, reader_side: object) -> str:
        """`old -> new`, whichever side each one is."""
        if self._forward:
            return f"{reader_side} -> {data_side}"
        return f"{data_side} -> {reader_side}"

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
        self, data: Schema, reader: Schema, path: str, seen: frozenset[tuple[str, str]]
    ) -> list[Incompatibility]:
        data_refs: list[str] = []
        reader_refs: list[str] = []
        try:
            data = self._resolve(data, self._data_root, data_refs)
            reader = self._resolve(reader, self._reader_root, reader_refs)
        except _UnresolvableError as exc:
            text = f"cannot compare through {exc.args[0]}"
            return [self._inc(path, "unresolvable-reference", text, text)]
        if data_refs or reader_refs:
            pair = ("|".join(data_refs), "|".join(reader_refs))
            if pair in seen:
                return []  # a recursive structure already being compared
            seen = seen | {pair}

        if _accepts_everything(reader) or data is False:
            return []
        if reader is False:
            return [
                self._inc(
                    path,
                    "type-narrowed",
                    "the new schema rejects every value",
                    "the old schema rejected every value",
                )
            ]
        if data is True:
            return [
                self._inc(
                    path,
                    "type-narrowed",
                    "any value was accepted; now constrained",
                    "any value is accepted now; old readers took only some",
                )
            ]
        assert isinstance(data, Mapping) and isinstance(reader, Mapping)

        if "allOf" in data:  # data matched every member: merge them (narrower is fine)
            merged: dict[str, Any] = {k: v for k, v in data.items() if k != "allOf"}
            for member in data["allOf"]:
                resolved = self._resolve(member, self._data_root, [])
                if resolved is False:
                    return []
                if isinstance(resolved, Mapping):
                    merged.update(resolved)
            return self.compare(merged, reader, path, seen)
        if "allOf" in reader:  # data must match every member
            rest = {k: v for k, v in reader.items() if k != "allOf"}
            found = self.compare(data, rest, path, seen) if _constraints(rest) else []
            for member in reader["allOf"]:
                found += self.compare(data, member, path, seen)
            return found

        enum = _enum_of(data)
        if enum is not None:
            return self._enum_values(enum, reader, path)

        data_branches = _branches(data)
        if data_branches is not None:
            rest = {k: v for k, v in data.items() if k not in ("anyOf", "oneOf")}
            found = []
            for branch in data_branches:
                resolved = self._resolve(branch, self._data_root, [])
                combined: Schema = resolved
                if isinstance(resolved, Mapping) and _constraints(rest):
                    combined = {**rest, **resolved}
                found += self.compare(combined, reader, path, seen)
            return found

        reader_branches = _branches(reader)
        if reader_branches is not None:
            rest = {k: v for k, v in reader.items() if k not in ("anyOf", "oneOf")}
            outer = self.compare(data, rest, path, seen) if _constraints(rest) else []
            attempts = [self.compare(data, branch, path, seen) for branch in reader_branches]
            # No alternative takes everything: report why the closest one does not.
            best = min(attempts, key=len)
            return outer + best

        return self._same_shape(data, reader, path, seen)

    def _enum_values(
        self, values: list[Any], reader: Mapping[str, Any], path: str
    ) -> list[Incompatibility]:
        wrapped = {"$defs": self._reader_defs, "allOf": [reader]}
        validator = Draft202012Validator(wrapped)
        return [
            self._inc(
                path,
                "enum-value-removed",
                f"{value!r} is no longer accepted",
                f"{value!r} is new; readers of the old schema reject it",
            )
            for value in values
            if not validator.is_valid(value)
        ]

    def _same_shape(
        self,
        data: Mapping[str, Any],
        reader: Mapping[str, Any],
        path: str,
        seen: frozenset[tuple[str, str]],
    ) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        data_types = _types(data)
        reader_types = _types(reader)
        lost = {
            t
            for t in data_types - reader_types
            if not (t == "integer" and "number" in reader_types)
        }
        if lost:
            data_text = "any" if "type" not in data else "|".join(sorted(data_types))
            reader_text = "any" if "type" not in reader else "|".join(sorted(reader_types))
            change = self._change(data_text, reader_text)
            lost_text = ", ".join(sorted(lost))
            found.append(
                self._inc(
                    path,
                    "type-narrowed",
                    f"{change} (no longer: {lost_text})",
                    f"{change} (readers of the old schema reject: {lost_text})",
                )
            )
        kept = data_types & (reader_types | ({"integer"} if "number" in reader_types else set()))
        reader_enum = _enum_of(reader)
        if reader_enum is not None:
            values = ", ".join(repr(v) for v in reader_enum)
            found.append(
                self._inc(
                    path,
                    "enum-added",
                    f"only {values} accepted now",
                    f"readers of the old schema accept only {values}",
                )
            )
        found += self._bounds(data, reader, path, kept)
        if kept & {"string"}:
            for keyword in ("pattern", "format"):
                if keyword in reader and reader.get(keyword) != data.get(keyword):
                    change = self._change(data.get(keyword, "none"), reader[keyword])
                    found.append(
                        self._inc(
                            path,
                            "constraint-tightened",
                            f"{keyword}: {change}",
                            f"{keyword}: {change}",
                        )
                    )
        multiple = reader.get("multipleOf")
        changed = multiple is not None and multiple != data.get("multipleOf")
        if kept & {"number", "integer"} and changed:
            change = self._change(data.get("multipleOf", "none"), multiple)
            found.append(
                self._inc(
                    path, "constraint-tightened", f"multipleOf: {change}", f"multipleOf: {change}"
                )
            )
        if kept & {"array"}:
            if reader.get("uniqueItems") and not data.get("uniqueItems"):
                found.append(
                    self._inc(
                        path, "constraint-tightened", "uniqueItems added", "uniqueItems dropped"
                    )
                )
            if "items" in reader:
                found += self.compare(data.get("items", True), reader["items"], f"{path}[]", seen)
        # A reader without `type` and object keywords (the siblings of an `anyOf`, say
        # `{"maxLength": 250}`) says nothing about objects: no property of the data is "removed".
        if kept & {"object"} and ("type" in reader or _OBJECT_KEYWORDS & set(reader)):
            found += self._object(data, reader, path, seen)
        for keyword in sorted(set(reader) - _HANDLED - _ANNOTATIONS):
            if reader[keyword] != data.get(keyword):
                found.append(
                    self._inc(
                        path,
                        "constraint-tightened",
                        f"{keyword} added or changed",
                        f"{keyword} dropped or changed",
                    )
                )
        return found

    def _bounds(
        self, data: Mapping[str, Any], reader: Mapping[str, Any], path: str, kept: set[str]
    ) -> list[Incompatibility]:
        found = []
        for keyword in (*_LOWER_BOUNDS, *_UPPER_BOUNDS):
            if keyword not in reader or not kept & _BOUND_TYPES[keyword]:
                continue  # e.g. a maxLength beside an anyOf binds no object alternative
            lower = keyword in _LOWER_BOUNDS
            before = data.get(keyword)
            if before is None or (reader[keyword] > before if lower else reader[keyword] < before):
                text = f"{keyword}: {self._change(data.get(keyword, 'none'), reader[keyword])}"
                found.append(self._inc(path, "constraint-tightened", text, text))
        return found

    def _object(
        self,
        data: Mapping[str, Any],
        reader: Mapping[str, Any],
        path: str,
        seen: frozenset[tuple[str, str]],
    ) -> list[Incompatibility]:
        found: list[Incompatibility] = []
        data_props: Mapping[str, Any] = data.get("properties", {})
        reader_props: Mapping[str, Any] = reader.get("properties", {})
        data_extra: Schema = data.get("additionalProperties", True)
        reader_extra: Schema = reader.get("additionalProperties", True)
        for name, schema in data_props.items():
            where = f"{path}.{name}"
            if name in reader_props:
                found += self.compare(schema, reader_props[name], where, seen)
            elif not self._forward:
                # Valid or not, consumers of the old schema read the property.
                found.append(
                    self._inc(where, "property-removed", "consumers of the old schema read it", "")
                )
            elif reader_extra is False:
                found.append(
                    self._inc(
                        where, "property-removed", "", "the old schema refuses other properties"
                    )
                )
            else:  # a new property: old readers see it as one of their additional properties
                found += self.compare(schema, reader_extra, where, seen)
        data_required = set(data.get("required", []))
        for name in reader.get("required", []):
            if name not in data_required:
                found.append(
                    self._inc(
                        f"{path}.{name}",
                        "property-required",
                        "old data may not have it",
                        "new data may not have it; readers of the old schema require it",
                    )
                )
        for name, schema in reader_props.items():
            if name not in data_props and not _accepts_everything(data_extra):
                # The data could carry this name as one of its additional properties.
                found += self.compare(data_extra, schema, f"{path}.{name}", seen)
        if reader_extra is False and data_extra is not False:
            found.append(
                self._inc(
                    f"{path}.*",
                    "additional-properties-closed",
                    "other properties now rejected",
                    "other properties allowed now; readers of the old schema reject them",
                )
            )
        elif reader_extra is not False:
            found += self.compare(data_extra, reader_extra, f"{path}.*", seen)
        return found


class _UnresolvableError(Exception):
    pass


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
