"""What reading JSON bodies canonically costs per request, beside the fingerprint of raw bytes.

    .venv/bin/python bench/fingerprint.py [--quick]

For an order body of about 1 KiB and one of about 100 KiB (objects, strings with a
non-ASCII character, integers, decimals, booleans, nulls), the median time of one
fingerprint: ``raw_fingerprint`` (SHA-256 over the bytes, what every body cost
before) and ``fingerprint`` (the canonical form, then SHA-256), interleaved in rounds
so both see the same machine. Also the canonical form restricted to two fields
(``x-bastion-idempotency-fingerprint: [/amount, /items]``).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

import orjson

from bastion.idempotency.fingerprints import fingerprint, parse_fields, raw_fingerprint

JSON = b"application/json"


def order(size: int) -> bytes:
    """An order body of at least ``size`` bytes, spaced like a pretty-printing client."""
    items: list[dict[str, object]] = []
    while True:
        n = len(items)
        items.append(
            {
                "sku": f"SKU-{n:06d}",
                "name": "Widget \u00e9 deluxe",
                "qty": n % 7 + 1,
                "price": round(19.99 + n, 2),
                "gift": n % 2 == 0,
                "note": None,
            }
        )
        body = orjson.dumps(
            {"customer": "cus_123", "currency": "EUR", "amount": 12345, "items": items},
            option=orjson.OPT_INDENT_2,
        )
        if len(body) >= size:
            return body


def per_call_us(call: Callable[[], object], seconds: float) -> float:
    """Microseconds per call over about ``seconds``."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls * 1e6
        calls *= 2


def main() -> None:
    """Print the table."""
    quick = "--quick" in sys.argv
    rounds, seconds = (5, 0.02) if quick else (21, 0.1)
    fields = parse_fields(["/amount", "/items"])
    print("| body | raw bytes (before) | canonical | restricted to 2 fields | canonical / raw |")
    print("|---|---:|---:|---:|---:|")
    for size in (1024, 100 * 1024):
        body = order(size)
        calls: dict[str, Callable[[], object]] = {
            "raw": partial(raw_fingerprint, "POST", "/orders", b"", JSON, body),
            "canonical": partial(fingerprint, "POST", "/orders", b"", JSON, body),
            "fields": partial(fingerprint, "POST", "/orders", b"", JSON, body, fields),
        }
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                samples[name].append(per_call_us(call, seconds))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        print(
            f"| {len(body) / 1024:.1f} KiB | {medians['raw']:.1f} us | {medians['canonical']:.1f} us"
            f" | {medians['fields']:.1f} us | {medians['canonical'] / medians['raw']:.0f}x |"
        )


if __name__ == "__main__":
    main()
