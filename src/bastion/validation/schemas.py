"""OpenAPI schemas to JSON Schema 2020-12, once, at start-up.

The translation does what an OpenAPI validator must do beyond plain JSON Schema:

- 3.0 semantics: ``nullable``, boolean ``exclusiveMinimum``/``exclusiveMaximum``,
  ``$ref`` siblings ignored.
- Direction: in a request, ``readOnly`` properties are neither required nor
  accepted; in a response, ``writeOnly`` ones.
- ``discriminator``: a ``oneOf``/``anyOf`` with a discriminator becomes an
  ``if``/``then`` chain on the discriminating property, so errors point into the
  one branch the payload names instead of "matches none of the shapes".
- Unknown fields: with ``reject_unknown_fields`` an object that declares
  ``properties`` and no ``additionalProperties`` is closed. Plain objects get
  ``additionalProperties: false``; objects built with ``allOf``/``anyOf``/``oneOf``
  get ``unevaluatedProperties: false`` at the composing level only, so members
  may still add the properties of the others.

Referenced schemas are translated lazily, once per view, into one ``$defs``
document that every operation's validator reaches through a shared registry;
recursive schemas stay references.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from bastion.validation.openapi import Description, escape_token

#: The URI under which the translated definitions are registered.
DEFS_URI = "urn:bastion:openapi"

#: How a schema is read: request closed / request with the top level open (a
#: composition member) / request fully open / response.
View = Literal["closed", "member", "open", "response"]

_COMPOSITION = ("allOf", "anyOf", "oneOf")
_CHILD_MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")
_CHILD_SINGLE = (
    "items",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "propertyNames",
)
_MEMBER_SINGLE = ("not", "if", "then", "else")
#: Keywords that never change validation; dropped to keep the compiled schemas small.
_ANNOTATIONS = frozenset(
    {
        "description",
        "example",
        "examples",
        "externalDocs",
        "xml",
        "deprecated",
        "title",
        "$comment",
        "discriminator",
        "readOnly",
        "writeOnly",
        "nullable",
        "default",
    }
)


def _child_view(view: View) -> View:
    return "closed" if view == "member" else view


def _member_view(view: View) -> View:
    return "member" if view == "closed" else view


class SchemaTranslator:
    """Translates a description's schemas; the definitions accumulate in :attr:`defs`."""

    def __init__(self, description: Description, *, reject_unknown_fields: bool) -> None:
        self.description = description
        self.reject_unknown_fields = reject_unknown_fields
        #: Translated referenced schemas, keyed by ``view:pointer``.
        self.defs: dict[str, Any] = {}
        self._pending: list[tuple[str, str, View]] = []

    def translate(self, schema: Any, at: str, view: View) -> Any:
        """The JSON Schema for the OpenAPI schema ``schema`` found at pointer ``at``."""
        if not self.reject_unknown_fields and view in ("closed", "member"):
            view = "open"
        result = self._node(schema, at, view)
        self._drain()
        return result

    def root_document(self) -> dict[str, Any]:
        """The document holding every translated definition, for the validators' registry."""
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": self.defs}

    def _drain(self) -> None:
        while self._pending:
            key, pointer, view = self._pending.pop()
            target = self.description.lookup("#" + pointer, pointer)
            self.defs[key] = self._node(target, pointer, view)

    def _ref(self, ref: Any, at: str, view: View) -> dict[str, Any]:
        target = self.description.lookup(ref, at + "/$ref")
        pointer = ref[1:]
        if isinstance(target, Mapping) and target.get("x-bastion-unknown-fields") == "allow":
            view = "open" if view != "response" else view
        key = f"{view}:{pointer}"
        if key not in self.defs:
            self.defs[key] = True  # placeholder, so a recursive schema stops here
            self._pending.append((key, pointer, view))
        return {"$ref": f"{DEFS_URI}#/$defs/{escape_token(key)}"}

    def _node(self, schema: Any, at: str, view: View) -> Any:
        if isinstance(schema, bool):
            return schema
        if not isinstance(schema, Mapping):
            raise self.description.error(at, "a schema must be a mapping or a boolean")
        if schema.get("x-bastion-unknown-fields") == "allow" and view != "response":
            view = "open"
        is_30 = self.description.is_30
        if "$ref" in schema:
            if is_30 or len(schema) == 1:
                return self._ref(schema["$ref"], at, view)  # in 3.0 the siblings of $ref are ignored
            # 3.1: the siblings apply with the reference, as a composition does, so that
            # unknown fields are judged by both together.
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**rest, "allOf": [{"$ref": schema["$ref"]}, *rest.get("allOf", ())]}
        if "discriminator" in schema and any(k in schema for k in ("oneOf", "anyOf")):
            schema = self._discriminated(schema, at)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _ANNOTATIONS or (isinstance(key, str) and key.startswith("x-")):
                continue
            key = str(key)
            where = f"{at}/{escape_token(key)}"
            if key in _CHILD_MAPS and isinstance(value, Mapping):
                out[key] = {
                    str(k): self._node(v, f"{where}/{escape_token(str(k))}", _child_view(view))
                    for k, v in value.items()
                }
            elif key in _CHILD_SINGLE or key == "additionalItems":
                if key == "items" and isinstance(value, list):
                    out["prefixItems"] = [
                        self._node(v, f"{where}/{i}", _child_view(view)) for i, v in enumerate(value)
                    ]
                else:
                    out[key] = self._node(value, where, _child_view(view))
            elif key == "prefixItems" and isinstance(value, list):
                out[key] = [self._node(v, f"{where}/{i}", _child_view(view)) for i, v in enumerate(value)]
            elif key in _COMPOSITION and isinstance(value, list):
                out[key] = [self._node(v, f"{where}/{i}", _member_view(view)) for i, v in enumerate(value)]
            elif key in _MEMBER_SINGLE:
                out[key] = self._node(value, where, _member_view(view))
            else:
                out[key] = value
        if is_30:
            self._apply_30(schema, out, at)
        self._apply_direction(schema, out, at, view)
        if view == "closed":
            self._close(schema, out, at)
        return out

    def _apply_30(self, schema: Mapping[str, Any], out: dict[str, Any], at: str) -> None:
        for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            exclusive = schema.get(flag)
            if isinstance(exclusive, bool):
                del out[flag]
                if exclusive and bound in out:
                    out[flag] = out.pop(bound)
        if schema.get("nullable") is True:
            kind = out.get("type")
            if isinstance(kind, str):
                out["type"] = [kind, "null"]
            elif isinstance(kind, list) and "null" not in kind:
                out["type"] = [*kind, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
            if kind is None:
                inner = dict(out)
                out.clear()
                out["anyOf"] = [{"type": "null"}, inner]

    def _apply_direction(self, schema: Mapping[str, Any], out: dict[str, Any], at: str, view: View) -> None:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return
        hidden = "writeOnly" if view == "response" else "readOnly"
        banned = []
        for name, sub in properties.items():
            target = sub
            if isinstance(sub, Mapping) and "$ref" in sub and hidden not in sub:
                target, _ = self.description.resolve(sub, f"{at}/properties/{escape_token(str(name))}")
            if isinstance(target, Mapping) and target.get(hidden) is True:
                banned.append(str(name))
        if not banned:
            return
        for name in banned:
            out["properties"][name] = False
        if isinstance(out.get("required"), list):
            out["required"] = [r for r in out["required"] if r not in banned]
            if not out["required"]:
                del out["required"]

    def _close(self, schema: Mapping[str, Any], out: dict[str, Any], at: str) -> None:
        if "additionalProperties" in schema or "unevaluatedProperties" in schema:
            return
        composed = any(k in out for k in (*_COMPOSITION, "if", "dependentSchemas"))
        if not composed:
            if "properties" in schema or "patternProperties" in schema:
                out["additionalProperties"] = False
            return
        declares = "properties" in schema
        for key in _COMPOSITION:
            for index, member in enumerate(schema.get(key) or ()):
                target, _ = self.description.resolve(member, f"{at}/{key}/{index}")
                if not isinstance(target, Mapping):
                    continue
                extra = target.get("additionalProperties", False)
                if extra is not False or "unevaluatedProperties" in target:
                    return  # a member admits any member: the composition is open by design
                if "properties" in target or any(k in target for k in _COMPOSITION):
                    declares = True
        if declares:
            out["unevaluatedProperties"] = False

    def _discriminated(self, schema: Mapping[str, Any], at: str) -> dict[str, Any]:
        """A discriminated ``oneOf``/``anyOf`` as an ``if``/``then`` chain on the property."""
        discriminator = schema["discriminator"]
        if not isinstance(discriminator, Mapping) or not isinstance(discriminator.get("propertyName"), str):
            raise self.description.error(at + "/discriminator", "a discriminator needs a propertyName")
        prop = discriminator["propertyName"]
        key = "oneOf" if "oneOf" in schema else "anyOf"
        members = schema[key]
        mapping: dict[str, str] = {}
        for value, target in (discriminator.get("mapping") or {}).items():
            ref = target if str(target).startswith("#") else f"#/components/schemas/{target}"
            mapping[str(value)] = ref
        for member in members:
            ref = member.get("$ref") if isinstance(member, Mapping) else None
            if ref is None:
                return dict(schema)  # an inline member cannot be named: validate the plain composition
            if ref not in mapping.values():
                mapping[ref.rsplit("/", 1)[-1]] = ref
        rest = {k: v for k, v in schema.items() if k not in (key, "discriminator")}
        required = list(rest.get("required") or [])
        if prop not in required:
            required.append(prop)
        rest["required"] = required
        branches: list[Any] = [{"properties": {prop: {"enum": list(mapping)}}}]
        for value, ref in mapping.items():
            branches.append(
                {"if": {"properties": {prop: {"const": value}}, "required": [prop]}, "then": {"$ref": ref}}
            )
        rest["allOf"] = [*rest.get("allOf", ()), *branches]
        return rest
