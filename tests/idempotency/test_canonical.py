"""The canonical form of JSON bodies and the fingerprints built on it (no server, no store)."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.idempotency.canonical import (
    MAX_DEPTH,
    NotCanonical,
    canonical,
    canonical_number,
    canonical_value,
    nesting_depth,
)
from bastion.idempotency.fingerprints import (
    fingerprint,
    is_json,
    raw_fingerprint,
)

JSON = b"application/json"


def fp(body: bytes, content_type: bytes = JSON, fields: Any = None) -> str:
    return fingerprint("POST", "/orders", b"", content_type, body, fields)


def raw(body: bytes, content_type: bytes = JSON) -> str:
    return raw_fingerprint("POST", "/orders", b"", content_type, body)


# -- a JSON model with its own notion of "the same value" ------------------------------------

keys = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
strings = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, strings)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)


def model(value: Any) -> Any:
    """A hashable reading of a value in which equal JSON values are equal and nothing else is
    (``True`` is not ``1``, ``1`` is ``1.0``, ``-0`` is ``0``)."""
    if value is None or isinstance(value, bool):
        return ("lit", value)
    if isinstance(value, int | Decimal):
        if not value:
            return ("num", 0)
        sign, digits, exponent = Decimal(value).as_tuple()
        text = "".join(map(str, digits)).lstrip("0")
        stripped = text.rstrip("0")
        assert isinstance(exponent, int)
        return ("num", sign, stripped, exponent + len(text) - len(stripped))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list):
        return ("arr", tuple(model(v) for v in value))
    return ("obj", frozenset((k, model(v)) for k, v in value.items()))


def spell_number(value: int | Decimal, rnd: random.Random) -> str:
    """One of the many spellings of a number's value."""
    sign, digits, exponent = Decimal(value).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).lstrip("0")
    if not text:  # zero: a JSON number has no leading zeros
        return ("-" if sign else "") + rnd.choice(["0", "0.0", "0.000", "0e7", "0E-2", "0.0e+3"])
    zeros = rnd.randint(0, 3)
    text += "0" * zeros
    exponent -= zeros
    if rnd.random() < 0.3 and exponent < 0 and -exponent < len(text):
        text = text[:exponent] + "." + text[exponent:]  # a decimal point instead of an exponent
        exponent = 0
    out = ("-" if sign else "") + text
    if exponent or rnd.random() < 0.3:
        out += rnd.choice("eE") + rnd.choice(["", "+"] if exponent >= 0 else [""]) + str(exponent)
    return out


def spell_string(text: str, rnd: random.Random) -> str:
    """A JSON string for ``text`` with some characters written as escapes."""
    out = ['"']
    for char in text:
        if char in '"\\' or ord(char) < 0x20 or rnd.random() < 0.3:
            if ord(char) > 0xFFFF:
                high, low = divmod(ord(char) - 0x10000, 0x400)
                out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}")
            else:
                out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def spell(value: Any, rnd: random.Random) -> str:
    """One spelling of ``value``: members in any order, any whitespace, escapes, number forms."""

    def gap() -> str:
        return "".join(rnd.choice(" \t\r\n") for _ in range(rnd.randint(0, 2)))

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return spell_number(value, rnd)
    if isinstance(value, str):
        return spell_string(value, rnd)
    if isinstance(value, list):
        return "[" + gap() + ("," + gap()).join(spell(v, rnd) + gap() for v in value) + "]"
    members = list(value.items())
    rnd.shuffle(members)
    inner = ("," + gap()).join(spell_string(k, rnd) + gap() + ":" + gap() + spell(v, rnd) for k, v in members)
    return "{" + gap() + inner + gap() + "}"


def leaf_paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, list):
        return [at] + [p for i, v in enumerate(value) for p in leaf_paths(v, (*at, i))]
    if isinstance(value, dict):
        return [at] + [p for k, v in value.items() for p in leaf_paths(v, (*at, k))]
    return [at]


def replace_at(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[head] = replace_at(value[head], tuple(rest), new)
    return copy


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(values, st.randoms(use_true_random=False))
def test_any_respelling_of_a_value_has_its_fingerprint(value: Any, rnd: random.Random) -> None:
    first, second = spell(value, rnd), spell(value, rnd)
    assert fp(first.encode()) == fp(second.encode()), (first, second)
    assert canonical(first.encode()) == canonical(second.encode())


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_any_change_of_a_value_gives_another_fingerprint(value: Any, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(leaf_paths(value)))
    changed = replace_at(value, path, data.draw(values))
    rnd = data.draw(st.randoms(use_true_random=False))
    same = model(changed) == model(value)
    assert (fp(spell(value, rnd).encode()) == fp(spell(changed, rnd).encode())) is same


@settings(max_examples=300, deadline=None)
@given(numbers, numbers, st.randoms(use_true_random=False))
def test_numbers_compare_by_their_exact_value(a: Any, b: Any, rnd: random.Random) -> None:
    assert canonical_number(spell_number(a, rnd)) == canonical_number(spell_number(a, rnd))
    same = Decimal(a) == Decimal(b)
    assert (canonical_number(spell_number(a, rnd)) == canonical_number(spell_number(b, rnd))) is same


@settings(max_examples=200, deadline=None)
@given(values, st.randoms(use_true_random=False))
def test_the_canonical_form_is_its_own_canonical_form(value: Any, rnd: random.Random) -> None:
    text = canonical(spell(value, rnd).encode())
    assert text is not None
    assert canonical(text) == text  # so no raw body can ever share a canonical body's fingerprint


@settings(max_examples=200, deadline=None)
@given(values)
def test_nesting_depth_is_exact(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, list | dict):
            children = v.values() if isinstance(v, dict) else v
            return 1 + max((depth(c) for c in children), default=0)
        return 0

    body = spell({"[": ["]]]", '{\\"', value]}, random.Random(0)).encode()
    assert nesting_depth(body) == 2 + depth(value)


# -- the canonical form, spelled out ---------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(numbers, st.randoms(use_true_random=False))
def test_the_quick_paths_write_numbers_as_the_general_rule_does(value: Any, rnd: random.Random) -> None:
    text = spell_number(value, rnd)
    assert canonical(f"[{text}]".encode()) == f"[{canonical_number(text)}]".encode()


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("1", "1"),
        ("1.0", "1"),
        ("1e0", "1"),
        ("10e-1", "1"),
        ("100", "100"),
        ("1E+2", "100"),
        ("2.50", "2.5"),
        ("-0", "0"),
        ("-0.0e-7", "0"),
        ("0.001", "0.001"),
        ("0.000001", "0.000001"),
        ("0.0000001", "1e-7"),
        ("-1.5e-3", "-0.0015"),
        ("19.99", "19.99"),
        ("1e20", "100000000000000000000"),
        ("1e21", "1e+21"),
        ("1000000000000000000000", "1e+21"),
        ("-1.25e-10", "-1.25e-10"),
        ("1e400", "1e+400"),
        ("123456789012345678901234567890123", "1.23456789012345678901234567890123e+32"),
        ("9007199254740993", "9007199254740993"),
    ],
)
def test_number_forms(text: str, form: str) -> None:
    assert canonical_number(text) == form


def test_the_documented_form() -> None:
    body = b'{ "b" : [1.0, "\\u00e9", true, null], "a": {"y": -0, "x": "\\n\\"/"} }'
    assert canonical(body) == '{"a":{"x":"\\n\\"/","y":0},"b":[1,"é",true,null]}'.encode()
    # Members sort by code point (U+FFFF before U+10000; JCS's UTF-16 order has them the other way).
    assert canonical('{"\U00010000": 1, "\uffff": 2}'.encode()) == '{"\uffff":2,"\U00010000":1}'.encode()


def test_a_body_in_canonical_form_keeps_the_fingerprint_it_always_had() -> None:
    assert fp(b'{"amount":1200,"item":"book"}') == raw(b'{"amount":1200,"item":"book"}')
    assert fp(b'{"item":"book","amount":1200}') == raw(b'{"amount":1200,"item":"book"}')


def test_huge_integers_stay_exact() -> None:
    # 2**53 + 1 is the first integer a double cannot hold.
    assert fp(b'{"n": 9007199254740993}') != fp(b'{"n": 9007199254740992}')
    assert fp(b'{"n": 1' + b"0" * 400 + b"1}") != fp(b'{"n": 1' + b"0" * 401 + b"}")
    assert fp(b'{"n": 0.30000000000000000001}') != fp(b'{"n": 0.3}')


# -- hostile inputs --------------------------------------------------------------------------


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_deep_nesting_takes_the_raw_bytes_without_recursing(opening: bytes) -> None:
    closing = b"]" if opening == b"[" else b"}"
    for depth in (MAX_DEPTH + 1, 10_000, 200_000):
        body = opening * depth + b"1" + closing * depth
        assert canonical(body) is None
        assert fp(body) == raw(body)
    shallow = opening * MAX_DEPTH + b"1" + closing * MAX_DEPTH
    assert canonical(shallow) is not None


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    body = b'{"a": "' + b"[" * 1000 + b'", "b": ["]]]]\\"[[["]}'
    assert nesting_depth(body) == 2
    assert canonical(body) is not None


def test_deep_nesting_cost_is_linear() -> None:
    # CPU time of 8x the body stays well under 8x squared: no quadratic step.
    def cost(n: int) -> float:
        body = b"[" * n + b"]" * n
        start = time.process_time()
        for _ in range(5):
            fp(body)
        return time.process_time() - start

    small, large = cost(50_000), cost(400_000)
    assert large < max(small, 0.005) * 8 * 4


def test_big_exponents_are_exact_and_bounded() -> None:
    assert fp(b"[1e400]") == fp(b"[10e399]") != fp(b"[1e401]")
    assert fp(b"[1e400]") != raw(b"[1e400]")
    long_exponent = b"[1e" + b"9" * 21 + b"]"
    assert canonical(long_exponent) is None and fp(long_exponent) == raw(long_exponent)
    assert canonical(b"[1e" + b"0" * 50 + b"1]") == b"[10]"  # leading zeros are not digits that count


@pytest.mark.parametrize(
    "body",
    [
        b"[NaN]",
        b"[Infinity]",
        b"[-Infinity]",
        b'{"a": 1, "a": 2}',
        b'[{"a": {"b": 1, "b": 1}}]',
        b'{"a": "\xff"}',
        b"\xef\xbb\xbf{}",
        b'["\\ud800"]',
        b'{"a": 1',
        b'{"a": 1} {}',
        b"[01]",
        b"[1.]",
        b'["tab\there"]',
    ],
)
def test_bodies_without_a_canonical_form_count_by_their_bytes(body: bytes) -> None:
    assert canonical(body) is None
    assert fp(body) == raw(body)


def test_repeated_member_names_never_share_a_fingerprint_with_either_reading() -> None:
    repeated = fp(b'{"a": 1, "a": 2}')
    assert repeated != fp(b'{"a": 1}')  # the reading that keeps the first
    assert repeated != fp(b'{"a": 2}')  # the reading that keeps the last
    assert repeated != fp(b'{"a": 2, "a": 1}')
    assert repeated != fp(b'{"a":1,"a":2}')  # byte for byte, like any body with no canonical form


def test_colons_that_only_look_escaped_do_not_hide_or_invent_a_repeated_name() -> None:
    # "\\u003a" is a backslash and "u003a", not a colon: the quick count is fooled, the exact
    # reading is not.
    assert canonical(b'{"a": "\\\\u003a", "b": 1}') == b'{"a":"\\\\u003a","b":1}'
    assert canonical(b'{"a": "\\\\u003a", "a": 1}') is None
    assert canonical(b'{"a": "\\u003a", "b": {"c": 1, "c": 1}}') is None
    assert canonical(b'{"\\u003a": ":"}') == b'{":":":"}'


def test_a_byte_order_mark_is_another_request() -> None:
    assert fp(b"\xef\xbb\xbf{}") != fp(b"{}")


@pytest.mark.parametrize(
    ("content_type", "json_body"),
    [
        (b"application/json", True),
        (b"Application/JSON; charset=UTF-8", True),
        (b'application/json; charset="utf-8"', True),
        (b"application/merge-patch+json", True),
        (b"application/problem+json", True),
        (b"application/json; charset=latin-1", False),
        (b"text/plain", False),
        (b"text/json", False),
        (b"", False),
        (b"application/x-www-form-urlencoded", False),
    ],
)
def test_which_content_types_are_read_as_json(content_type: bytes, json_body: bool) -> None:
    assert is_json(content_type) is json_body
    same = fp(b'{"b":1,"a":2}', content_type) == fp(b'{"a":2, "b":1}', content_type)
    assert same is json_body


def test_the_content_type_still_counts() -> None:
    assert fp(b"{}", b"application/json") != fp(b"{}", b"application/merge-patch+json")


def test_top_level_scalars_have_a_form_too() -> None:
    assert canonical_value(b" null ") is None
    assert fp(b" null ") == fp(b"null") == raw(b"null")
    assert fp(b"1.0") == fp(b"1") != fp(b'"1"')
    with pytest.raises(NotCanonical):
        canonical_value(b"")
