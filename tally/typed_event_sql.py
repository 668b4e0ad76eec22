"""Generate the database's typed-event checks from schema/typed_event.schema.json.

The JSON Schema is the one definition of the typed event. The database does
not interpret it at run time (that cost a query per object and per field):
this module turns it into straight-line PL/pgSQL, one function per object
kind, written between two marker lines of the validation migration. A test
regenerates the block and compares it with the file, so the two never drift.

    python -m tally.typed_event_sql          # rewrite the block in the migration
    python -m tally.typed_event_sql --check  # exit 1 if the block is stale

Supported keywords (all the schema uses): type (one or a list), enum, const,
minLength, maxLength, minimum, maximum, properties, required,
additionalProperties: false, items, maxItems, and the top-level allOf rules
that tie each event type to its object key.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tally.paths import MIGRATIONS, ROOT

SCHEMA_FILE = ROOT / "schema" / "typed_event.schema.json"
MIGRATION = MIGRATIONS / "20261129090500_create_typed_event_validation.sql"
BEGIN = "-- generated:begin (python -m tally.typed_event_sql; do not edit by hand)"
END = "-- generated:end"

JSON = dict[str, Any]


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_array(values: list[str]) -> str:
    return "array[" + ", ".join(sql_text(v) for v in values) + "]::text[]"


@dataclass
class Function:
    """One generated checker: `tally.<name>(p jsonb, p_path text) returns text`."""

    name: str
    body: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"create function tally.{self.name}(p jsonb, p_path text) returns text",
            "language plpgsql",
            "immutable",
            "as $$",
            "declare",
            "  v jsonb;",
            "  v_problem text;",
            "  i integer;",
            "begin",
            *("  " + line for line in self.body),
            "  return null;",
            "end;",
            "$$;",
            "",
            f"revoke all on function tally.{self.name}(jsonb, text)"
            " from public, anon, authenticated;",
        ]
        return "\n".join(lines)


class Generator:
    def __init__(self, schema: JSON) -> None:
        self.schema = schema
        self.functions: list[Function] = []

    def object_function(
        self, name: str, spec: JSON, unchecked: frozenset[str] = frozenset()
    ) -> str:
        """Emit a checker for an object schema (but its ``unchecked`` keys); return its name."""
        function = Function(name)
        self.functions.append(function)
        body = function.body
        body.append("if jsonb_typeof(p) is distinct from 'object' then")
        body.append(
            "  return p_path || ': expected object, got ' || coalesce(jsonb_typeof(p), 'nothing');"
        )
        body.append("end if;")
        properties: JSON = spec.get("properties", {})
        if spec.get("additionalProperties") is False:
            known = sql_array(sorted(properties))
            body.append(f"if (p - {known}) <> '{{}}'::jsonb then")
            body.append(
                "  return p_path || '.' || (select left(k, 80) from"
                f" jsonb_object_keys(p - {known}) as k order by k limit 1)"
                " || ': unexpected field';"
            )
            body.append("end if;")
        required = set(spec.get("required", []))
        for key, prop in properties.items():
            if key not in unchecked:
                body.extend(self.property_checks(name, key, prop, key in required))
        return name

    def property_checks(self, owner: str, key: str, prop: JSON, required: bool) -> Iterator[str]:
        path = f"p_path || {sql_text('.' + key)}"
        yield f"v := p -> {sql_text(key)};"
        if required:
            yield f"if v is null then return {path} || ': required'; end if;"
            yield from self.value_checks(owner, key, prop, path)
        else:
            yield "if v is not null then"
            yield from ("  " + line for line in self.value_checks(owner, key, prop, path))
            yield "end if;"

    def value_checks(self, owner: str, key: str, prop: JSON, path: str) -> Iterator[str]:
        types = self.types_of(prop)
        nullable = "null" in types
        checks = list(self.non_null_checks(owner, key, prop, types - {"null"}, path))
        if nullable:
            yield "if jsonb_typeof(v) <> 'null' then"
            yield from ("  " + line for line in checks)
            yield "end if;"
        else:
            yield from checks

    @staticmethod
    def types_of(prop: JSON) -> set[str]:
        if "const" in prop:
            return {json_type(prop["const"])}
        if "enum" in prop:
            return {json_type(v) for v in prop["enum"]}
        kind = prop["type"]
        return set(kind if isinstance(kind, list) else [kind])

    def non_null_checks(
        self, owner: str, key: str, prop: JSON, types: set[str], path: str
    ) -> Iterator[str]:
        wanted = " or ".join(sorted(types))
        conditions = []
        for kind in sorted(types):
            if kind == "integer":
                conditions.append("(jsonb_typeof(v) = 'number' and (v::text)::numeric % 1 = 0)")
            else:
                conditions.append(f"jsonb_typeof(v) = {sql_text(kind)}")
        yield f"if not ({' or '.join(conditions)}) then"
        yield (
            f"  return {path} || {sql_text(': expected ' + wanted + ', got ')} || jsonb_typeof(v);"
        )
        yield "end if;"
        if "const" in prop:
            literal = sql_text(json.dumps(prop["const"]))
            yield f"if v <> {literal}::jsonb then"
            yield f"  return {path} || {sql_text(': must be ' + json.dumps(prop['const']))};"
            yield "end if;"
        if "enum" in prop:
            allowed = [v for v in prop["enum"] if v is not None]
            literal = sql_text(json.dumps(allowed))
            yield f"if not {literal}::jsonb @> jsonb_build_array(v) then"
            yield (
                f"  return {path} || ': ' || left(v::text, 80)"
                f" || {sql_text(' is not one of ' + ', '.join(map(str, allowed)))};"
            )
            yield "end if;"
        if "minLength" in prop or "maxLength" in prop:
            low, high = prop.get("minLength", 0), prop.get("maxLength", 2**31 - 1)
            yield (
                "if jsonb_typeof(v) = 'string'"
                f" and length(v #>> '{{}}') not between {low} and {high} then"
            )
            yield f"  return {path} || ': length out of range';"
            yield "end if;"
        if "minimum" in prop or "maximum" in prop:
            low, high = prop.get("minimum"), prop.get("maximum")
            bounds = []
            if low is not None:
                bounds.append(f"(v::text)::numeric < {low}")
            if high is not None:
                bounds.append(f"(v::text)::numeric > {high}")
            yield f"if jsonb_typeof(v) = 'number' and ({' or '.join(bounds)}) then"
            yield f"  return {path} || ': out of range';"
            yield "end if;"
        if "object" in types and "properties" in prop:
            child = self.object_function(f"{owner}__{key}", prop)
            yield "if jsonb_typeof(v) = 'object' then"
            yield f"  v_problem := tally.{child}(v, {path});"
            yield "  if v_problem is not null then return v_problem; end if;"
            yield "end if;"
        if "array" in types:
            yield from self.array_checks(owner, key, prop, path)

    def array_checks(self, owner: str, key: str, prop: JSON, path: str) -> Iterator[str]:
        if "maxItems" in prop:
            yield (
                f"if jsonb_typeof(v) = 'array' and jsonb_array_length(v) > {prop['maxItems']} then"
            )
            yield f"  return {path} || ': too many items';"
            yield "end if;"
        items = prop.get("items")
        if not items:
            return
        child = self.object_function(f"{owner}__{key}_item", items)
        yield "if jsonb_typeof(v) = 'array' then"
        yield "  for i in 0 .. jsonb_array_length(v) - 1 loop"
        yield f"    v_problem := tally.{child}(v -> i, {path} || '[' || i || ']');"
        yield "    if v_problem is not null then return v_problem; end if;"
        yield "  end loop;"
        yield "end if;"

    def object_keys(self) -> list[tuple[list[str], str]]:
        """(event types, object key) from the top-level allOf rules."""
        pairs = []
        for rule in self.schema.get("allOf", []):
            kinds = rule["if"]["properties"].get("type", {}).get("enum")
            if kinds:
                pairs.append((kinds, rule["then"]["required"][0]))
        return pairs

    def object_key_function(self) -> str:
        cases = "\n".join(
            f"    when p_type in ({', '.join(sql_text(t) for t in kinds)}) then {sql_text(key)}"
            for kinds, key in self.object_keys()
        )
        return "\n".join(
            [
                "-- Which object key an event type carries.",
                "create function tally.typed_object_key(p_type text) returns text",
                "language sql",
                "immutable",
                "as $$",
                "  select case",
                cases,
                "  end;",
                "$$;",
                "",
                "revoke all on function tally.typed_object_key(text)"
                " from public, anon, authenticated;",
            ]
        )

    def generate(self) -> str:
        top = self.schema
        keys = self.object_key_names()
        # The envelope checker knows the object keys but leaves them to the
        # object checkers: which one must be there depends on the type.
        self.object_function("typed_envelope_problem", top, unchecked=frozenset(keys))
        for key in keys:
            self.object_function(f"typed_{key}_problem", top["properties"][key])
        parts = [f.render() for f in self.functions]
        parts += [self.object_key_function(), self.object_dispatch_function()]
        return "\n\n".join(parts)

    def object_dispatch_function(self) -> str:
        cases = "\n".join(
            f"    when {sql_text(key)} then tally.typed_{key}_problem(p, p_path)"
            for key in self.object_key_names()
        )
        return "\n".join(
            [
                "-- The checker of one object key.",
                "create function tally.typed_object_problem(p_key text, p jsonb, p_path text)",
                "returns text",
                "language sql",
                "immutable",
                "as $$",
                "  select case p_key",
                cases,
                "  end;",
                "$$;",
                "",
                "revoke all on function tally.typed_object_problem(text, jsonb, text)",
                "  from public, anon, authenticated;",
            ]
        )

    def object_key_names(self) -> list[str]:
        return [key for _, key in self.object_keys()]


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def generated_block() -> str:
    schema = json.loads(SCHEMA_FILE.read_text())
    return f"{BEGIN}\n\n{Generator(schema).generate()}\n\n{END}"


def splice(migration: str, block: str) -> str:
    start, end = migration.index(BEGIN), migration.index(END) + len(END)
    return migration[:start] + block + migration[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the migration is stale")
    args = parser.parse_args(argv)
    current = MIGRATION.read_text()
    wanted = splice(current, generated_block())
    if args.check:
        if wanted != current:
            print(
                f"{MIGRATION.name} is stale: run python -m tally.typed_event_sql", file=sys.stderr
            )
            return 1
        return 0
    MIGRATION.write_text(wanted)
    print(f"rewrote the generated block of {MIGRATION.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
