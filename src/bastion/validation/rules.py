"""Business rules in the description: ``x-bastion-rules``, CEL expressions over ``self``.

A schema may carry a list of rules, after Kubernetes' ``x-kubernetes-validations``::

    x-bastion-rules:
      - rule: self.start < self.end
        message: must end after it starts
        code: BOOKING_DATES       # optional; RULE_FAILED by default
        field: /end               # optional; a pointer below the value, named in the entry

Each rule is compiled once, with the description, by Google's CEL runtime
(``cel-expr-python``, the C++ implementation). A rule that does not compile, that
cannot give a boolean, or whose cost could grow faster than the body stops
start-up with the rule's pointer in the description.

**Cost.** The runtime stops any evaluation after 10,000 comprehension iterations.
On top of that, :func:`cost_problem` refuses, at compile time, a comprehension
(``all``, ``exists``, ``exists_one``, ``map``, ``filter``) whose body reads
anything but its own variable, literals and numeric or boolean fields of
``self``: each iteration then costs at most the size of its own element, so a
rule costs at most its length times the size of the value, never its square.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel  # type: ignore[import-untyped]

from bastion.validation.openapi import unescape_token

#: The extension naming a schema's rules.
RULES_KEY = "x-bastion-rules"
#: The entry code of a failed rule that does not name its own.
DEFAULT_CODE = "RULE_FAILED"
#: The longest rule accepted, in characters: a rule's cost is its length times the value's size.
MAX_RULE_CHARS = 1000
#: The comprehension iterations the CEL runtime allows one evaluation (fixed by the runtime).
MAX_ITERATIONS = 10_000

_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_KEYWORDS = frozenset({"true", "false", "null", "in"})
_CONSTANT_TYPES = frozenset({"integer", "number", "boolean", "null"})
_TOKEN = re.compile(
    r"""(?P<string>(?:[rRbB]{1,2})?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<space>\s+)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
#: Runtime error texts of the CEL runtime and what the entry says of them (never the value).
_REASONS = (
    ("key not found", "a field it reads is missing"),
    ("no such key", "a field it reads is missing"),
    ("divide by zero", "it divides by zero"),
    ("modulus by zero", "it divides by zero"),
    ("overflow", "an integer overflows"),
    ("iteration budget", f"it needs more than {MAX_ITERATIONS} iterations"),
    ("no matching overload", "a value has a type the rule does not handle"),
    ("index", "it reads past the end of a list"),
    ("timestamp", "a value is not a timestamp"),
    ("duration", "a value is not a duration"),
)

#: Finds the schema of ``self.<names>`` for the cost check (``None`` when it is not declared).
Locate = Callable[[list[str]], Any]


class RuleError(Exception):
    """A rule that cannot be used: ``pointer`` in the description and the ``reason``."""

    def __init__(self, pointer: str, reason: str) -> None:
        self.pointer = pointer
        self.reason = reason
        super().__init__(f"{pointer}: {reason}")


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule: its source, what a failure says, and the CEL program."""

    source: str
    message: str
    code: str
    #: The reference tokens of ``field``, below the value's own location.
    field: tuple[str, ...]
    #: Where the rule is in the description (``/components/schemas/Booking/x-bastion-rules/0``).
    at: str
    program: Any

    def failure(self, activation: Any) -> str | None:
        """``None`` when the rule holds for the activation's ``self``; else the entry's detail."""
        try:
            result = self.program.eval(activation)
            kind = result.type()
            if kind == cel.Type.BOOL:
                return None if result.value() is True else self.message
            if kind == cel.Type.ERROR:
                return f"{self.message} (the rule could not be evaluated: {_reason(str(result))})"
        except Exception as exc:  # the runtime raises for budget and conversion failures
            return f"{self.message} (the rule could not be evaluated: {_reason(str(exc))})"
        return f"{self.message} (the rule does not give a boolean)"


def _reason(text: str) -> str:
    lowered = text.lower()
    for needle, reason in _REASONS:
        if needle in lowered:
            return reason
    return "an evaluation error"


class RuleCompiler:
    """Compiles rules in one CEL environment, where ``self`` is any JSON value."""

    def __init__(self) -> None:
        self.env = cel.NewEnv(variables={"self": cel.Type.DYN})

    def activation(self, value: Any) -> Any:
        """The bindings a rule is evaluated with: ``self`` is ``value``."""
        return self.env.Activation({"self": value})

    def compile_all(
        self, raw: Any, at: str, locate: Locate, problems: list[RuleError] | None = None
    ) -> list[Rule]:
        """The rules of a schema's ``x-bastion-rules`` value found at pointer ``at``.

        ``locate`` gives the schema ``self.a.b`` names (the reference tokens) or
        ``None``, for the cost check. Raises :class:`RuleError` for the first rule
        that cannot be used, or adds each to ``problems`` when given.
        """
        if not isinstance(raw, list):
            error = RuleError(at, f"{RULES_KEY} must be a list of {{rule, message, code, field}}")
            raw = []
            if problems is None:
                raise error
            problems.append(error)
        compiled: list[Rule] = []
        for index, entry in enumerate(raw):
            try:
                compiled.append(self.compile_one(entry, f"{at}/{index}", locate))
            except RuleError as error:
                if problems is None:
                    raise
                problems.append(error)  # the linter reports every broken rule, not the first
        return compiled

    def compile_one(self, entry: Any, at: str, locate: Locate) -> Rule:
        """One rule entry, compiled and checked; :class:`RuleError` names what is wrong."""
        if not isinstance(entry, Mapping) or not isinstance(entry.get("rule"), str):
            raise RuleError(at, "a rule needs a `rule`: a CEL expression over `self`")
        unknown = sorted(str(k) for k in entry if k not in ("rule", "message", "code", "field"))
        if unknown:
            raise RuleError(at, f"a rule has rule, message, code and field, not {', '.join(unknown)}")
        source = entry["rule"]
        if len(source) > MAX_RULE_CHARS:
            raise RuleError(at + "/rule", f"a rule may be at most {MAX_RULE_CHARS} characters long")
        message = entry.get("message", f"breaks the rule {source}")
        code = entry.get("code", DEFAULT_CODE)
        field = entry.get("field", "")
        if not isinstance(message, str) or not message:
            raise RuleError(at + "/message", "a rule's message must be a non-empty string")
        if not isinstance(code, str) or not _CODE.match(code):
            raise RuleError(at + "/code", "a rule's code must be UPPER_SNAKE_CASE, at most 64 characters")
        if not isinstance(field, str) or (field and not field.startswith("/")):
            raise RuleError(at + "/field", "a rule's field must be a JSON pointer below the value (`/end`)")
        try:
            program = self.env.compile(source)
        except Exception as exc:
            raise RuleError(
                at + "/rule", f"the rule {source!r} does not compile: {_compile_reason(exc)}"
            ) from None
        kind = program.return_type()
        if kind != cel.Type.BOOL and kind != cel.Type.DYN:
            raise RuleError(at + "/rule", f"the rule {source!r} gives {kind.name().lower()}, not a boolean")
        problem = cost_problem(source, locate)
        if problem is not None:
            raise RuleError(at + "/rule", f"the rule {source!r} {problem}")
        tokens = tuple(unescape_token(t) for t in field.split("/")[1:]) if field else ()
        return Rule(source, message, code, tokens, at, program)


def _compile_reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else "invalid expression"
    return re.sub(r"^(?:[A-Z_]+: )?(?:ERROR: )?<input>:", "at ", first)


def tokens_of(source: str) -> list[tuple[str, str]]:
    """The CEL tokens of ``source`` as ``(kind, text)``: string, number, ident or other."""
    found: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup or "other"
        if kind != "space":
            found.append((kind, match.group()))
    return found


def _closing(tokens: list[tuple[str, str]], start: int) -> tuple[int, list[int]]:
    """The index of the bracket closing the one at ``start``, and the top-level commas inside."""
    depth = 0
    commas: list[int] = []
    for index in range(start, len(tokens)):
        text = tokens[index][1]
        if text in "([{" and tokens[index][0] == "other":
            depth += 1
        elif text in ")]}" and tokens[index][0] == "other":
            depth -= 1
            if depth == 0:
                return index, commas
        elif text == "," and depth == 1:
            commas.append(index)
    return len(tokens), commas


def cost_problem(source: str, locate: Locate) -> str | None:
    """Why ``source`` could cost more than linear time in the size of ``self``; ``None`` when it cannot.

    A comprehension body may read its own variables (and those of comprehensions
    inside it), literals, and fields of ``self`` whose schema (found by
    ``locate``) is an integer, number, boolean or null. Anything else it reads
    (``self`` or one of its lists or strings, an outer comprehension's variable)
    could be as large as the body, once per element.
    """
    tokens = tokens_of(source)
    macros: list[tuple[int, int, set[str]]] = []  # (body start, body end, own variables)
    for index in range(1, len(tokens) - 1):
        kind, text = tokens[index]
        if (
            kind == "ident"
            and text in _MACROS
            and tokens[index - 1][1] == "."
            and tokens[index + 1][1] == "("
        ):
            end, commas = _closing(tokens, index + 1)
            if not commas:
                continue
            first = tokens[index + 2] if index + 2 < len(tokens) else ("other", "")
            names = {first[1]} if first[0] == "ident" else set()
            macros.append((commas[0] + 1, end, names))
    for start, end, own in macros:
        allowed = set(own)
        for inner_start, inner_end, inner_own in macros:
            if start <= inner_start and inner_end <= end:
                allowed |= inner_own
        index = start
        while index < end:
            kind, text = tokens[index]
            free = kind == "ident" and tokens[index - 1][1] != "." and text not in _KEYWORDS
            if free and index + 1 < len(tokens) and tokens[index + 1][1] == "(":
                free = False  # a function or macro name
            if free and text == "self":
                path, index = _self_path(tokens, index, end)
                if path is None or not _constant(locate(path)):
                    shown = "self" + "".join("." + p for p in path or ())
                    return (
                        f"reads {shown} inside a comprehension body: a body may read only its own "
                        "variable, literals and integer, number or boolean fields of self, so that "
                        "its cost stays linear in the size of the body"
                    )
                continue
            if free and text not in allowed:
                return (
                    f"reads {text} inside an inner comprehension body: a body may read only its own "
                    "variable, so that its cost stays linear in the size of the body"
                )
            index += 1
    return None


def _self_path(tokens: list[tuple[str, str]], index: int, end: int) -> tuple[list[str] | None, int]:
    """The field names of ``self.a.b`` at ``index``, and the index after it; ``None`` when it is
    indexed, called or bare."""
    path: list[str] = []
    index += 1
    while index + 1 < end and tokens[index][1] == "." and tokens[index + 1][0] == "ident":
        path.append(tokens[index + 1][1])
        index += 2
    after = tokens[index][1] if index < len(tokens) else ""
    if not path or after in ("(", "["):
        return None, index
    return path, index


def _constant(schema: Any) -> bool:
    """Whether a schema's values cost constant time to read: integers, numbers, booleans, null."""
    if not isinstance(schema, Mapping):
        return False
    declared = schema.get("type")
    if isinstance(declared, str):
        return declared in _CONSTANT_TYPES
    if isinstance(declared, list) and declared:
        return all(isinstance(t, str) and t in _CONSTANT_TYPES for t in declared)
    return False
