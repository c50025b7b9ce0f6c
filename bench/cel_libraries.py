"""The CEL libraries for ``x-bastion-rules`` compared: correctness on a rule suite, and speed.

Run it in a virtual environment holding the three candidates::

    python3 -m venv /tmp/celvenv
    /tmp/celvenv/bin/pip install common-expression-language cel-expr-python cel-python
    /tmp/celvenv/bin/python bench/cel_libraries.py

Each rule is evaluated with ``self`` bound to a JSON value; the expected outcome
is the CEL specification's: ``True``, ``False`` or ``"error"`` (an evaluation
error such as a missing key, a division by zero, an overflow or a type error).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

BOOKING = {"start": "2024-05-01", "end": "2024-05-03", "guests": 2}
ORDER = {
    "amount": 1500,
    "coupon": "SPRING",
    "currency": "EUR",
    "items": [{"sku": "A-1", "quantity": 2}, {"sku": "B-2", "quantity": 10}],
}
#: (rule, self, expected)
SUITE: list[tuple[str, Any, Any]] = [
    ("self.start < self.end", BOOKING, True),
    ("self.start < self.end", {"start": "2024-05-03", "end": "2024-05-01"}, False),
    ("self.start < self.end", {"start": "2024-05-01", "end": "2024-05-01"}, False),
    (
        "timestamp(self.s) < timestamp(self.e)",
        {"s": "2024-05-01T10:00:00+02:00", "e": "2024-05-01T09:00:00Z"},
        True,
    ),
    (
        "timestamp(self.s) < timestamp(self.e)",
        {"s": "2024-05-01T10:00:00Z", "e": "2024-05-01T09:00:00+02:00"},
        False,
    ),
    ("timestamp(self.s)", {"s": "yesterday"}, "error"),
    (
        "timestamp(self.e) - timestamp(self.s) <= duration('720h')",
        {"s": "2024-05-01T00:00:00Z", "e": "2024-05-20T00:00:00Z"},
        True,
    ),
    ("!has(self.coupon) || self.amount >= 1000", ORDER, True),
    ("!has(self.coupon) || self.amount >= 1000", {**ORDER, "amount": 10}, False),
    ("!has(self.coupon) || self.amount >= 1000", {"amount": 10}, True),
    ("has(self.items)", {}, False),
    ("self.items.all(i, i.quantity <= 10)", ORDER, True),
    ("self.items.all(i, i.quantity <= 5)", ORDER, False),
    ("self.items.exists(i, i.sku == 'B-2')", ORDER, True),
    ("self.items.exists_one(i, i.quantity > 1)", ORDER, False),
    ("self.items.map(i, i.quantity).exists(q, q == 10)", ORDER, True),
    ("size(self.items.filter(i, i.quantity > 5)) == 1", ORDER, True),
    ("self.items.all(i, i.sku.startsWith('A'))", ORDER, False),
    ("self.currency in ['EUR', 'USD']", ORDER, True),
    ("self.coupon.matches('^[A-Z]+$')", ORDER, True),
    ("self.coupon.contains('RING') && self.coupon.endsWith('G')", ORDER, True),
    ("size(self.coupon) <= 4", ORDER, False),
    ("self.missing == 1", ORDER, "error"),
    ("self.amount / self.zero > 1", {"amount": 1, "zero": 0}, "error"),
    ("self.amount % self.zero == 0", {"amount": 1, "zero": 0}, "error"),
    ("self.big + 1 > 0", {"big": 9223372036854775807}, "error"),
    ("self.big * 2 > 0", {"big": 4611686018427387904}, "error"),
    ("-self.small > 0", {"small": -9223372036854775808}, "error"),
    ("self.amount > 'x'", ORDER, "error"),
    ("self.coupon + 1 == 2", ORDER, "error"),
    ("self.amount == 1500.0", ORDER, True),
    ("double(self.amount) / 4.0 == 375.0", ORDER, True),
    ("self.items[5].sku == 'x'", ORDER, "error"),
    ("self.guests", BOOKING, "not-bool"),
]


def _cel_rust() -> tuple[Callable[[str], Any], Callable[[Any, Any], Any]]:
    import cel

    return cel.compile, lambda program, value: program.execute({"self": value})


def _cel_cpp() -> tuple[Callable[[str], Any], Callable[[Any, Any], Any]]:
    from cel_expr_python import cel

    env = cel.NewEnv(variables={"self": cel.Type.DYN})

    def run(expression: Any, value: Any) -> Any:
        result = expression.eval(data={"self": value})
        if result.type() == cel.Type.ERROR:
            raise ValueError(str(result))
        return result.value()

    return env.compile, run


def _celpy() -> tuple[Callable[[str], Any], Callable[[Any, Any], Any]]:
    import celpy

    env = celpy.Environment()
    return (lambda src: env.program(env.compile(src))), (
        lambda program, value: program.evaluate({"self": celpy.json_to_cel(value)})
    )


LIBRARIES = {
    "common-expression-language (Rust cel)": _cel_rust,
    "cel-expr-python (Google cel-cpp)": _cel_cpp,
    "cel-python (pure Python)": _celpy,
}


def _outcome(run: Callable[[Any, Any], Any], program: Any, value: Any) -> Any:
    try:
        result = run(program, value)
    except Exception:
        return "error"
    if isinstance(result, bool) or type(result).__name__ == "BoolType":
        return bool(result)
    return "not-bool"


def _per_call(action: Callable[[], Any], rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        action()
    return (time.process_time() - started) / rounds * 1e6


def _row(name: str, compile_: Callable[[str], Any], run: Callable[[Any, Any], Any], big: Any) -> str:
    wrong = []
    for rule, value, expected in SUITE:
        try:
            program = compile_(rule)
        except Exception:
            wrong.append(f"{rule} (no compile)")
            continue
        got = _outcome(run, program, value)
        if got != expected:
            wrong.append(f"{rule} -> {got}")
    source = "self.start < self.end && self.guests <= 4"
    compile_us = _per_call(lambda: compile_(source), 200)
    program = compile_(source)
    eval_us = _per_call(lambda: run(program, BOOKING), 2000)
    every = compile_("self.items.all(i, i.quantity <= 10)")
    big_ms = _per_call(lambda: run(every, big), 5) / 1000
    return (
        f"| {name} | {len(SUITE) - len(wrong)}/{len(SUITE)} | {'; '.join(wrong) or '-'} "
        f"| {compile_us:.1f} | {eval_us:.1f} | {big_ms:.1f} |"
    )


def main() -> None:
    """Print the comparison table."""
    big = {"items": [{"sku": f"S-{n}", "quantity": n % 10} for n in range(5_000)]}
    print("| library | suite correct | wrong | compile (us) | evaluate (us) | all() over 5,000 items (ms) |")
    print("|---|---|---|---|---|---|")
    for name, factory in LIBRARIES.items():
        compile_, run = factory()
        print(_row(name, compile_, run, big))


if __name__ == "__main__":
    main()
