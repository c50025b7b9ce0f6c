"""The canonical form of a JSON request body, for fingerprints that follow what the body means.

Two bodies with one canonical form are the same request: key order, insignificant
whitespace, the spelling of a number (``1``, ``1.0``, ``1e0``) and the spelling of a
string (``"\\u00e9"``, ``"é"``) do not count. The form is specified in
``docs/idempotency.md`` ("Same key, same request?"); in short:

- objects: members sorted by name in Unicode code point order, ``{"a":1,"b":2}``;
- arrays: in their order, ``[1,2]``; no whitespace anywhere;
- strings: the decoded text as UTF-8, escaping only ``"``, ``\\`` and the controls
  (``\\b \\f \\n \\r \\t``, the others ``\\u00xx``), as RFC 8785 (JCS) does;
- numbers: the exact decimal value, never a binary double, written as ECMAScript
  writes numbers (as JCS does): ``1``, ``1.0``, ``10e-1`` are ``1``; ``1E2`` is ``100``;
  ``2.50`` is ``2.5``; ``-0`` is ``0``; ``1e21`` is ``1e+21``; ``0.0000001`` is
  ``1e-7``; ``9007199254740993`` and ``1e400`` stay what they are;
- ``true``, ``false``, ``null`` as they are.

A body has no canonical form (:func:`canonical_value` raises :class:`NotCanonical`,
and the fingerprint takes its raw bytes, as for any other body) when it is not one JSON text
in UTF-8 without a byte order mark, when an object repeats a member name (no single
reading: a parser keeping the first value and one keeping the last see two requests),
when it nests deeper than :data:`MAX_DEPTH`, when it has ``NaN`` or ``Infinity``,
a lone surrogate escape, or a number whose exponent has more than
:data:`MAX_EXPONENT_DIGITS` digits. Nothing here recurses in Python and the parser
never goes deeper than :data:`MAX_DEPTH`, so a hostile body costs time linear in its
size and never a ``RecursionError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import orjson

#: The deepest nesting of arrays and objects given a canonical form. Deeper bodies are
#: fingerprinted by their bytes (the validation guard's ``max_json_depth``, 32 by
#: default, rejects them first where a body schema is declared).
MAX_DEPTH = 128

#: The most digits (after leading zeros) a number's exponent may have: past it the
#: exponent is not worked out (its arithmetic would no longer be cheap) and the body
#: is fingerprinted by its bytes.
MAX_EXPONENT_DIGITS = 20

#: Every byte but the four brackets and the quote, deleted to leave the nesting skeleton.
_NOT_SKELETON = bytes(b for b in range(256) if b not in b'[]{}"')
#: Braces read as brackets: only the depth counts.
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
#: The depth step of each skeleton byte: +1 opens, -1 closes.
_STEP = tuple(1 if b == 0x5B else -1 if b == 0x5D else 0 for b in range(256))
#: A JSON number, in groups: sign, integer part, fraction digits, exponent.
_NUMBER = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?")


class NotCanonical(ValueError):
    """The body has no canonical form; its fingerprint is taken over its bytes."""


#: The value a JSON pointer finds nothing at (a missing member or index).
ABSENT: Any = object()


def canonical_number(text: str) -> str:
    """The canonical spelling of the JSON number ``text``: its exact decimal value, written the
    way ECMAScript (and so RFC 8785) writes a number, without ever going through a double."""
    match = _NUMBER.fullmatch(text)
    if match is None:  # the parser only hands over JSON numbers
        raise NotCanonical(f"not a JSON number: {text[:32]!r}")
    sign, whole, fraction, exponent = match.groups()
    fraction = fraction or ""
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return "0"  # 0, -0, 0.0, 0e5: zero has no sign
    power = 0
    if exponent:
        magnitude = exponent.lstrip("+-").lstrip("0") or "0"
        if len(magnitude) > MAX_EXPONENT_DIGITS:
            raise NotCanonical("a number's exponent is too long")
        power = -int(magnitude) if exponent[0] == "-" else int(magnitude)
    significand = digits.rstrip("0")
    size = len(significand)
    # The value is 0.<significand> x 10^point (ECMAScript's n is point, its k is size).
    point = power + len(digits) - len(fraction)
    if size <= point <= 21:
        return sign + significand + "0" * (point - size)
    if 0 < point <= 21:
        return sign + significand[:point] + "." + significand[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + significand
    mantissa = significand[0] + ("." + significand[1:] if size > 1 else "")
    return f"{sign}{mantissa}e{'+' if point > 1 else '-'}{abs(point - 1)}"


def _integer(text: str) -> orjson.Fragment:
    # A JSON integer has no leading zeros: up to 21 digits it is already canonical (but -0).
    if len(text) <= 21 and text != "-0":
        return orjson.Fragment(text)
    return orjson.Fragment(canonical_number(text))


def _number(text: str) -> orjson.Fragment:
    # Most decimals have no exponent and are written the way the general rule writes them,
    # but for trailing zeros in the fraction: a quicker way to the same text.
    if "e" not in text and "E" not in text:
        whole, _, fraction = text.partition(".")
        fraction = fraction.rstrip("0")
        if whole != "0" and whole != "-0":
            if len(whole) <= 21:  # at most 21 digits before the point (20 with a sign)
                return orjson.Fragment(whole + "." + fraction if fraction else whole)
        elif fraction and len(fraction) - len(fraction.lstrip("0")) < 6:
            return orjson.Fragment(whole + "." + fraction)
    return orjson.Fragment(canonical_number(text))


def _constant(name: str) -> Any:
    raise NotCanonical(f"{name} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise NotCanonical("an object repeats a member name")
    return members


#: The standard library's C scanner with hooks: every number reaches :func:`canonical_number`
#: (or its quicker paths) as its text, never as a float.
_DECODER = json.JSONDecoder(parse_int=_integer, parse_float=_number, parse_constant=_constant)
#: The same, and every object reaches :func:`_object` as its list of members, repeats included.
_EXACT_DECODER = json.JSONDecoder(
    parse_int=_integer, parse_float=_number, parse_constant=_constant, object_pairs_hook=_object
)


def nesting_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in JSON ``body`` (brackets inside strings do not count).

    Exact for a valid JSON text; for any other, a number the parser never goes deeper
    than before it finds the error. Linear in the body and all in C (``bytes`` methods
    and ``itertools``), so it is safe on any input.
    """
    # Escaped backslashes, then escaped quotes, go first: every quote left delimits a string.
    skeleton = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_BRACES_AS_BRACKETS, _NOT_SKELETON)
    # Adjacent quotes are an empty string, or one string's end and the next one's start with
    # no bracket between them: dropping them keeps every bracket outside strings.
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:  # a string holds brackets: keep what lies between strings
        skeleton = b"".join(skeleton.split(b'"')[::2])
    # Each round drops the innermost arrays and objects (the deepest are among them) in C,
    # which leaves far fewer brackets for the running sum below.
    depth = 0
    for _ in range(2):
        shorter = skeleton.replace(b"[]", b"")
        if len(shorter) == len(skeleton):
            break
        skeleton = shorter
        depth += 1
    return depth + max(0, max(accumulate(map(_STEP.__getitem__, skeleton)), default=0))


def read(body: bytes) -> tuple[Any, bytes]:
    """The parsed value of JSON ``body`` (its numbers as canonical fragments) and its canonical
    text; :class:`NotCanonical` when the body has none (see the module's docstring)."""
    # Fewer brackets than the bound cannot nest deeper than it: most bodies stop here.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nesting_depth(body) > MAX_DEPTH:
        raise NotCanonical(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotCanonical("the body is not UTF-8") from None
    # A byte order mark is not JSON (RFC 8259 section 8.1), and the decoder would skip none.
    if text[:1] == "\ufeff":
        raise NotCanonical("the body starts with a byte order mark")
    value = _decode(_DECODER, text)
    try:
        form = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # a lone surrogate escape such as "\ud800"
        raise NotCanonical("a string is not Unicode text") from None
    if _may_repeat_names(body, form):
        _decode(_EXACT_DECODER, text)  # raises NotCanonical at a repeated name
    return value, form


def _decode(decoder: json.JSONDecoder, text: str) -> Any:
    try:
        return decoder.decode(text)
    except NotCanonical:
        raise
    except ValueError as exc:  # json.JSONDecodeError
        raise NotCanonical(str(exc)) from None


def _may_repeat_names(body: bytes, form: bytes) -> bool:
    """Whether an object in ``body`` may repeat a member name (``False`` is certain).

    The decoder keeps the last of repeated members, silently. Every member has one colon
    outside strings in the body and in the canonical form alike, and every colon inside a
    string of the form is in the body too (as ``:`` or ``\\u003a``, counted here as one,
    which may count too many). So a body without repeated names has no fewer colons than
    its form, and one with a repeated name has more: the validation guard's test, linear
    and in C; only a body that fails it is decoded again, member by member.
    """
    colons = body.count(b":")
    if b"\\" in body:
        colons += body.count(b"\\u003a") + body.count(b"\\u003A")
    return colons != form.count(b":")


def canonical_value(body: bytes) -> Any:
    """The parsed value of JSON ``body``, its numbers as canonical fragments; raises
    :class:`NotCanonical` when the body has no canonical form (see the module's docstring)."""
    return read(body)[0]


def canonical(body: bytes) -> bytes | None:
    """The canonical text of JSON ``body``, or ``None`` when it has none."""
    try:
        return read(body)[1]
    except NotCanonical:
        return None


def resolve(value: Any, tokens: Sequence[str]) -> Any:
    """What the pointer ``tokens`` finds in ``value``; :data:`ABSENT` when nothing is there."""
    for token in tokens:
        if isinstance(value, dict):
            value = value.get(token, ABSENT)
            if value is ABSENT:
                return ABSENT
        elif isinstance(value, list):
            # RFC 6901: an index is 0 or digits without a leading zero; "-" names nothing.
            if not (token.isdigit() and token.isascii()) or (len(token) > 1 and token[0] == "0"):
                return ABSENT
            index = int(token) if len(token) < 10 else len(value)
            if index >= len(value):
                return ABSENT
            value = value[index]
        else:
            return ABSENT
    return value


def selection(value: Any, pointers: Sequence[Sequence[str]]) -> bytes:
    """The canonical text of the fields ``pointers`` select in a value from :func:`read`: one
    array with, per pointer in order, ``[value]`` when it is present and ``[]`` when it is
    absent (so a missing field and ``null`` differ)."""
    chosen = [[] if (found := resolve(value, tokens)) is ABSENT else [found] for tokens in pointers]
    return orjson.dumps(chosen, option=orjson.OPT_SORT_KEYS)
