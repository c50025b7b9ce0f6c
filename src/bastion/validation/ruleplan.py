"""Where ``x-bastion-rules`` apply in a body, and their evaluation after the schema check.

Every rule of a description is compiled once (:class:`RulePlans`), wherever it is,
so a broken rule stops start-up even in a schema no operation uses. Each body
schema then gets a plan: the tree of the places its rules apply, reached through
``properties``, ``additionalProperties``, ``items``, ``prefixItems``, ``$ref``
and ``allOf``, pruned to the branches that lead to a rule. A rule under ``oneOf``,
``anyOf``, ``not``, ``if``/``then``/``else`` or the other applicators is refused at
compile time: which branch a value took is not known after the check, and a rule
that sometimes applies is worse than one moved up to the composing schema.

Evaluation walks the body along the plan only (an object's members are looked up
by the plan's property names unless the plan has ``additionalProperties``), so it
visits each value at most once per schema that applies there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from bastion.validation import errors
from bastion.validation.openapi import escape_token, follow_local_ref
from bastion.validation.rules import RULES_KEY, Rule, RuleCompiler, RuleError

_DATA_MEMBERS = frozenset({"example", "examples", "default", "enum", "const"})
#: Applicators under which a rule is refused, with the reason's wording.
_REFUSED = (
    "oneOf",
    "anyOf",
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "dependentSchemas",
    "propertyNames",
    "contains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
)
_MAX_REF_HOPS = 64


def _lookup(document: Mapping[str, Any], ref: Any) -> tuple[Any, str] | None:
    # The description's own reading of a ``$ref`` (percent-decoding included).
    return follow_local_ref(document, ref)


def _resolve(document: Mapping[str, Any], node: Any, at: str) -> tuple[Any, str]:
    """``node`` with a chain of bare ``$ref`` followed (a ``$ref`` with siblings stays)."""
    for _ in range(_MAX_REF_HOPS):
        if not (isinstance(node, Mapping) and "$ref" in node and len(node) == 1):
            break
        found = _lookup(document, node["$ref"])
        if found is None:
            return None, at
        node, at = found
    return node, at


def field_schema(document: Mapping[str, Any], schema: Any, names: list[str]) -> Any:
    """The schema of ``self.<names>`` for a value of ``schema``, through properties, ``$ref`` and
    ``allOf``; ``None`` when it is not declared."""
    current: list[Any] = [schema]
    for name in names:
        following: list[Any] = []
        for candidate in _flatten(document, current):
            properties = candidate.get("properties")
            if isinstance(properties, Mapping) and name in properties:
                following.append(properties[name])
        if not following:
            return None
        current = following
    flat = list(_flatten(document, current))
    return flat[0] if len(flat) == 1 else _typed_alike(flat)


def _typed_alike(schemas: list[Mapping[str, Any]]) -> Any:
    typed = [s for s in schemas if "type" in s]
    return typed[0] if typed else None


def _flatten(document: Mapping[str, Any], schemas: list[Any]) -> Iterator[Mapping[str, Any]]:
    """The schemas and, recursively, their ``$ref`` targets and ``allOf`` members (bounded)."""
    pending = list(schemas)
    seen = 0
    while pending and seen < 256:
        schema, _ = _resolve(document, pending.pop(), "")
        seen += 1
        if not isinstance(schema, Mapping):
            continue
        yield schema
        if "$ref" in schema:
            found = _lookup(document, schema["$ref"])
            if found is not None:
                pending.append(found[0])
        members = schema.get("allOf")
        if isinstance(members, list):
            pending.extend(members)


def rule_sites(document: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema of ``document`` that carries ``x-bastion-rules``, with its pointer.

    Each container is visited once, however many times it is reached: a YAML alias shares
    one object between places (nine aliases of nine aliases would be 9^9 visits otherwise),
    and one that contains itself would never end.
    """
    stack: list[tuple[Any, str]] = [(document, "")]
    visited: set[int] = set()
    while stack:
        node, at = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, Mapping):
            if RULES_KEY in node:
                yield at, node
            for key, value in node.items():
                if key not in _DATA_MEMBERS and isinstance(value, Mapping | list):
                    stack.append((value, f"{at}/{escape_token(str(key))}"))
        elif isinstance(node, list):
            stack.extend((value, f"{at}/{index}") for index, value in enumerate(node))


@dataclass(eq=False, slots=True)
class Node:
    """The rules of one schema, and the schemas that apply below it (or beside it, ``also``)."""

    rules: list[Rule]
    properties: dict[str, list[Node]] = field(default_factory=dict)
    additional: list[Node] = field(default_factory=list)
    items: list[Node] = field(default_factory=list)
    prefix: list[list[Node]] = field(default_factory=list)
    also: list[Node] = field(default_factory=list)

    def children(self) -> Iterator[Node]:
        """Every node this one leads to."""
        for nodes in self.properties.values():
            yield from nodes
        yield from self.additional
        yield from self.items
        for nodes in self.prefix:
            yield from nodes
        yield from self.also


class RulePlans:
    """Every rule of a description compiled once, and the plans of the body schemas.

    Raises :class:`~bastion.validation.rules.RuleError` for the first rule that
    cannot be used (or adds each to ``problems`` when given), and :meth:`plan` for a
    rule where it would not be applied.
    """

    def __init__(self, document: Mapping[str, Any], problems: list[RuleError] | None = None) -> None:
        self.document = document
        self.compiler = RuleCompiler()
        #: The compiled rules by the pointer of the schema carrying them.
        self.rules: dict[str, list[Rule]] = {}
        for at, schema in rule_sites(document):
            self.rules[at] = self.compiler.compile_all(
                schema[RULES_KEY], f"{at}/{RULES_KEY}", partial(field_schema, document, schema), problems
            )
        self._nodes: dict[str, Node] = {}
        self._reaches: dict[str, bool] = {}

    def plan(self, schema: Any, at: str) -> RulePlan | None:
        """The plan for bodies of ``schema`` (at pointer ``at``); ``None`` when no rule applies."""
        if not self.rules:
            return None
        root = self._node(schema, at)
        live = self._live(root)
        if root not in live:
            return None
        for node in live:
            # A declared property stays, empty, so additionalProperties never applies to it.
            node.properties = {k: _keep(v, live) for k, v in node.properties.items()}
            node.additional = _keep(node.additional, live)
            node.items = _keep(node.items, live)
            node.prefix = [_keep(v, live) for v in node.prefix]
            node.also = _keep(node.also, live)
        return RulePlan(root, self.compiler)

    def _node(self, schema: Any, at: str) -> Node:
        schema, at = _resolve(self.document, schema, at)
        known = self._nodes.get(at)
        if known is not None:
            return known
        node = Node(self.rules.get(at, []))
        self._nodes[at] = node
        if not isinstance(schema, Mapping):
            return node
        if "$ref" in schema:
            found = _lookup(self.document, schema["$ref"])
            if found is not None:
                node.also.append(self._node(*found))
        for name, sub in _mapping(schema.get("properties")).items():
            node.properties[str(name)] = [self._node(sub, f"{at}/properties/{escape_token(str(name))}")]
        if isinstance(schema.get("additionalProperties"), Mapping):
            node.additional = [self._node(schema["additionalProperties"], f"{at}/additionalProperties")]
        items = schema.get("items")
        if isinstance(items, Mapping):
            node.items = [self._node(items, f"{at}/items")]
        elif isinstance(items, list):
            node.prefix = [[self._node(s, f"{at}/items/{i}")] for i, s in enumerate(items)]
        if isinstance(schema.get("prefixItems"), list):
            prefix = schema["prefixItems"]
            node.prefix = [[self._node(s, f"{at}/prefixItems/{i}")] for i, s in enumerate(prefix)]
        for index, member in enumerate(schema.get("allOf") or ()):
            node.also.append(self._node(member, f"{at}/allOf/{index}"))
        for key in _REFUSED:
            if key in schema and self._has_rules(schema[key], f"{at}/{key}"):
                raise RuleError(
                    f"{at}/{key}",
                    f"{RULES_KEY} under {key} is not applied: which branch a value took is not "
                    "known after the schema check; put the rule on the schema holding "
                    f"{key}, or compose with allOf",
                )
        return node

    def _has_rules(self, schema: Any, at: str) -> bool:
        """Whether a rule sits in ``schema`` or anything it reaches."""
        stack: list[tuple[Any, str]] = [(schema, at)]
        seen: set[str] = set()
        # Each container once (see rule_sites).
        visited: set[int] = set()
        while stack:
            node, where = stack.pop()
            if id(node) in visited:
                continue
            visited.add(id(node))
            if isinstance(node, Mapping) and "$ref" in node:
                found = _lookup(self.document, node["$ref"])
                if found is not None and found[1] not in seen:
                    seen.add(found[1])
                    stack.append(found)
            if isinstance(node, Mapping):
                if RULES_KEY in node:
                    return True
                for key, value in node.items():
                    if key not in _DATA_MEMBERS and isinstance(value, Mapping | list):
                        stack.append((value, f"{where}/{escape_token(str(key))}"))
            elif isinstance(node, list):
                stack.extend((value, f"{where}/{i}") for i, value in enumerate(node))
        return False

    def _live(self, root: Node) -> set[Node]:
        """The nodes reachable from ``root`` that lead to a rule."""
        reachable: list[Node] = []
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            reachable.append(node)
            stack.extend(node.children())
        live = {node for node in reachable if node.rules}
        changed = True
        while changed:
            changed = False
            for node in reachable:
                if node not in live and any(child in live for child in node.children()):
                    live.add(node)
                    changed = True
        return live


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _keep(nodes: list[Node], live: set[Node]) -> list[Node]:
    return [node for node in nodes if node in live]


def _expand(nodes: list[Node]) -> list[Node]:
    """``nodes`` and every node ``also`` applying at the same place, each once."""
    out: list[Node] = []
    seen: set[int] = set()
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        stack.extend(reversed(node.also))
    return out


@dataclass(slots=True)
class RulePlan:
    """The rules of one body schema, ready to evaluate on bodies that passed the schema check."""

    root: Node
    compiler: RuleCompiler

    def evaluate(self, value: Any, limit: int) -> list[dict[str, Any]]:
        """The entries of the rules ``value`` breaks, sorted, at most ``limit``."""
        entries: list[dict[str, Any]] = []
        stack: list[tuple[Any, tuple[str | int, ...], list[Node]]] = [(value, (), [self.root])]
        while stack and len(entries) < limit:
            current, path, nodes = stack.pop()
            nodes = _expand(nodes)
            self._check(current, path, nodes, entries)
            # Reversed, so values are visited in document order and a cut keeps the first ones.
            if isinstance(current, dict):
                stack.extend(reversed(list(_members(current, path, nodes))))
            elif isinstance(current, list):
                stack.extend(reversed(list(_elements(current, path, nodes))))
        entries.sort(key=errors.sort_key)
        return entries[:limit]

    def _check(
        self, value: Any, path: tuple[str | int, ...], nodes: list[Node], entries: list[dict[str, Any]]
    ) -> None:
        activation: Any = None
        for node in nodes:
            for rule in node.rules:
                if activation is None:
                    try:
                        activation = self.compiler.activation(value)
                    except Exception:  # a value the runtime cannot hold (an integer past 64 bits)
                        activation = False
                detail = (
                    rule.failure(activation)
                    if activation is not False
                    else f"{rule.message} (the rule could not be evaluated: a value is out of its range)"
                )
                if detail is not None:
                    entries.append(_entry(rule, path, detail))


def _members(
    value: dict[str, Any], path: tuple[str | int, ...], nodes: list[Node]
) -> Iterator[tuple[Any, tuple[str | int, ...], list[Node]]]:
    if any(node.additional for node in nodes):
        for key, child in value.items():
            below: list[Node] = []
            for node in nodes:
                below.extend(node.properties.get(key, node.additional))
            if below:
                yield child, (*path, key), below
        return
    wanted: dict[str, list[Node]] = {}
    for node in nodes:
        for name, below in node.properties.items():
            if below and name in value:
                wanted.setdefault(name, []).extend(below)
    for name, below in wanted.items():
        yield value[name], (*path, name), below


def _elements(
    value: list[Any], path: tuple[str | int, ...], nodes: list[Node]
) -> Iterator[tuple[Any, tuple[str | int, ...], list[Node]]]:
    if not any(node.items or node.prefix for node in nodes):
        return
    for index, child in enumerate(value):
        below = [
            n for node in nodes for n in (node.prefix[index] if index < len(node.prefix) else node.items)
        ]
        if below:
            yield child, (*path, index), below


def _entry(rule: Rule, path: tuple[str | int, ...], detail: str) -> dict[str, Any]:
    where = [p if isinstance(p, int) else errors.cut(p) for p in (*path, *rule.field)]
    pointer = "".join("/" + escape_token(str(p)) for p in where)
    return {
        "code": rule.code,
        "in": "body",
        "pointer": errors.cut(pointer),
        "field": errors.cut(errors.field_name(where)),
        "detail": detail,
        "rule": rule.source,
    }
