"""Request validation: bastion against openapi-core, jsonschema and fastjsonschema, in one run.

bastion and openapi-core validate the whole request (route, parameters, body)
against the same OpenAPI description; jsonschema and fastjsonschema can only
check the body against its schema, so their rows are body-only (a lower bound
of what a request validator built on them would cost). The last part times
loading and compiling the Stripe description.

    .venv/bin/python bench/validation.py [--quick]

Times are medians of several batches on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema
import orjson
import yaml
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

from bastion.asgi import SCOPE_KEY, RequestContext
from bastion.config import load_config
from bastion.routing.router import TemplateRouter
from bastion.validation.compile import compile_description
from bastion.validation.guard import ValidationGuard
from bastion.validation.openapi import parse_document

SPEC = """
openapi: 3.1.0
info: {title: bench, version: "1"}
paths:
  /users:
    post:
      operationId: createUser
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/NewUser"}
      responses: {"201": {description: created}}
  /orders:
    post:
      operationId: createOrder
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/NewOrder"}
      responses: {"201": {description: created}}
  /profiles:
    post:
      operationId: saveProfile
      x-bastion-unknown-fields: allow
      requestBody:
        required: true
        content:
          application/json:
            schema: {type: object, properties: {email: {type: string, format: email}}}
      responses: {"201": {description: saved}}
  /orders/{id}:
    get:
      operationId: getOrder
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer, minimum: 1}}
        - {name: expand, in: query, schema: {type: array, items: {type: string, enum: [items, customer]}}}
        - {name: X-Tenant, in: header, schema: {type: string, maxLength: 64}}
      responses: {"200": {description: ok}}
components:
  schemas:
    NewUser:
      type: object
      additionalProperties: false
      required: [email, age, name]
      properties:
        email: {type: string, format: email, maxLength: 254}
        age: {type: integer, minimum: 18, maximum: 120}
        name: {type: string, minLength: 1, maxLength: 100}
    Item:
      type: object
      additionalProperties: false
      required: [sku, quantity]
      properties:
        sku: {type: string, pattern: "^[A-Z0-9-]{3,32}$"}
        quantity: {type: integer, minimum: 1, maximum: 100}
    NewOrder:
      type: object
      additionalProperties: false
      required: [items, amount]
      properties:
        items: {type: array, minItems: 1, maxItems: 50, items: {$ref: "#/components/schemas/Item"}}
        amount: {type: integer, minimum: 1}
        currency: {type: string, enum: [EUR, USD, GBP]}
"""

USER = orjson.dumps({"email": "ada@example.com", "age": 36, "name": "Ada Lovelace"})
ORDER = orjson.dumps(
    {
        "items": [{"sku": f"SKU-{i:03d}", "quantity": i + 1} for i in range(5)],
        "amount": 4200,
        "currency": "EUR",
    }
)
BAD_USER = orjson.dumps({"email": "nope", "age": 12, "name": "A", "role": "admin"})

# (label, method, path, template, query, headers, body, body schema name)
REQUESTS: list[tuple[str, str, str, str, str, dict[str, str], bytes | None, str | None]] = [
    ("POST /users (typical JSON body)", "POST", "/users", "/users", "", {}, USER, "NewUser"),
    ("POST /orders (5 items)", "POST", "/orders", "/orders", "", {}, ORDER, "NewOrder"),
    (
        "GET /orders/{id} (path, query, header)",
        "GET",
        "/orders/42",
        "/orders/{id}",
        "expand=items",
        {"X-Tenant": "t1"},
        None,
        None,
    ),
    ("POST /users invalid (3 errors)", "POST", "/users", "/users", "", {}, BAD_USER, "NewUser"),
]


def run_batch(fn: Callable[[], Any], number: int) -> float:
    """One batch: the mean time of ``number`` calls, in microseconds."""
    start = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - start) / number / 1000


def measure(callers: dict[str, Callable[[], Any]], *, batches: int, number: int) -> dict[str, list[float]]:
    """Batches of every caller, interleaved, so that all of them see the same machine load."""
    for fn in callers.values():
        run_batch(fn, max(number // 10, 1))
    samples: dict[str, list[float]] = {name: [] for name in callers}
    for _ in range(batches):
        for name, fn in callers.items():
            samples[name].append(run_batch(fn, number))
    return samples


def bastion_callers(spec: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    description = parse_document(orjson.dumps(spec), "bench")
    api = compile_description(description, load_config({}, env={}))
    router = TemplateRouter(authoritative=True, base_paths=api.base_paths)
    for op in api.operations:
        router.add(op.method, op.template, op.operation_id, op)
    callers = {}
    for label, method, path, _, query, headers, body, _ in REQUESTS:
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        content_type = b"application/json" if body is not None else None
        if content_type:
            raw_headers.append((b"content-type", content_type))
        qs = query.encode()

        def call(method=method, path=path, qs=qs, raw_headers=raw_headers, body=body, ct=content_type) -> Any:
            match = router.resolve(method, path)
            return match.operation.check(match.path_params, qs, raw_headers, body, ct)  # type: ignore[union-attr]

        callers[label] = call
    return callers


def guard_callers(
    spec: dict[str, Any], requests: list[Any] | None = None, max_body_bytes: int = 1 << 20
) -> dict[str, Callable[[], Any]]:
    """The ASGI validation guard alone (body read, replay, check), driven without an event loop.

    A call returns ``None`` when the request passed, or the problem the guard raised.
    """
    description = parse_document(orjson.dumps(spec), "bench")
    api = compile_description(description, load_config({}, env={}))
    router = TemplateRouter(authoritative=True, base_paths=api.base_paths)
    for op in api.operations:
        router.add(op.method, op.template, op.operation_id, op)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    guard = ValidationGuard(app, max_body_bytes=max_body_bytes)
    callers = {}
    for label, method, path, _, query, headers, body, _ in REQUESTS if requests is None else requests:
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        if body is not None:
            raw_headers.append((b"content-type", b"application/json"))
            raw_headers.append((b"content-length", str(len(body)).encode()))

        def call(method=method, path=path, query=query, raw_headers=raw_headers, body=body) -> Any:
            match = router.resolve(method, path)
            ctx = RequestContext("0" * 32, "0" * 16, "r")
            ctx.route, ctx.operation, ctx.path_params = match.template, match.operation, match.path_params  # type: ignore[union-attr]
            scope = {
                "type": "http",
                "method": method,
                "path": path,
                "query_string": query.encode(),
                "headers": raw_headers,
                SCOPE_KEY: ctx,
            }

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body or b"", "more_body": False}

            coro = guard(scope, receive, None)  # type: ignore[arg-type]
            try:
                coro.send(None)
            except StopIteration:
                return None
            except Exception as exc:
                return exc
            raise RuntimeError("the guard awaited something that does not complete at once")

        callers[label] = call
    return callers


#: Unknown-key counts of the hostile-body rows: 50,000 is the budget's 1 MB body.
UNKNOWN_KEYS = (10_000, 50_000, 100_000)


def unknown_keys_body(count: int) -> bytes:
    """A valid new user plus ``count`` unknown members of 19 bytes each (50,000 make 0.95 MB)."""
    members: dict[str, Any] = {"email": "ada@example.com", "age": 36, "name": "Ada"}
    members.update((f"field_{i:08d}", 1) for i in range(count))
    return orjson.dumps(members)


def unknown_keys(spec: dict[str, Any], batches: int) -> None:
    """Bodies full of unknown keys through the guard to their 422: the time, and how it grows."""
    requests = [
        (f"{count} unknown keys", "POST", "/users", "/users", "", {}, unknown_keys_body(count), "NewUser")
        for count in UNKNOWN_KEYS
    ]
    # The same 1 MB body accepted by an operation that allows unknown fields: the
    # cost of reading and parsing it, which any answer pays.
    accepted = ("50000 keys accepted", "POST", "/profiles", "/profiles", "", {}, requests[1][6], None)
    callers = guard_callers(spec, [*requests, accepted], max_body_bytes=4 << 20)
    for label, call in callers.items():
        problem = call()
        if getattr(problem, "status", None) != (None if label == accepted[0] else 422):
            raise RuntimeError(f"{label}: unexpected outcome {problem!r}")
    # One call per batch: a call is tens of milliseconds, and interleaving keeps the load alike.
    samples = measure(callers, batches=batches, number=1)
    millis = {count: statistics.median(samples[f"{count} unknown keys"]) / 1000 for count in UNKNOWN_KEYS}
    print("\nunknown keys (POST /users through the ASGI guard to its 422), median of the batches:")
    for (count, ms), (*_, body, _) in zip(millis.items(), requests, strict=True):
        per = ms / count * 10_000
        print(f"  {count:>7,} keys, {len(body) / 1e6:.2f} MB: {ms:8.1f} ms ({per:.1f} ms per 10,000 keys)")
    base = statistics.median(samples[accepted[0]]) / 1000
    print(
        f"   50,000 keys, 0.95 MB, accepted by /profiles: {base:8.1f} ms "
        f"(the 422 above costs {millis[50_000] / base:.1f}x this)"
    )
    low, high = UNKNOWN_KEYS[0], UNKNOWN_KEYS[-1]
    growth = (millis[high] / millis[low]) / (high / low)
    print(
        f"budget: 50,000 unknown keys in a 1 MB body under 50 ms -> {millis[50_000]:.1f} ms; "
        f"linear -> time per key at {high:,} / at {low:,} keys = {growth:.2f} (1.0 is linear)"
    )


def openapi_core_callers(spec: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    api = OpenAPI.from_dict(spec)
    callers = {}
    for label, method, path, _, query, headers, body, _ in REQUESTS:
        args = dict(p.split("=", 1) for p in query.split("&") if p)

        def call(method=method, path=path, args=args, headers=headers, body=body) -> Any:
            request = MockRequest(
                "http://localhost", method.lower(), path, args=args, headers=headers, data=body
            )
            try:
                api.validate_request(request)
            except Exception as exc:
                return exc
            return None

        callers[label] = call
    return callers


def body_schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The named schema with its references inlined (fastjsonschema resolves no OpenAPI refs)."""
    schemas = spec["components"]["schemas"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(schemas[node["$ref"].rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schemas[name])  # type: ignore[no-any-return]


def jsonschema_callers(spec: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    callers = {}
    for label, *_, body, name in REQUESTS:
        if name is None:
            continue
        validator = jsonschema.Draft202012Validator(
            body_schema(spec, name), format_checker=jsonschema.FormatChecker()
        )

        def call(validator=validator, body=body) -> Any:
            return list(validator.iter_errors(orjson.loads(body)))

        callers[label] = call
    return callers


def fastjsonschema_callers(spec: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    callers = {}
    for label, *_, body, name in REQUESTS:
        if name is None:
            continue
        validate = fastjsonschema.compile(body_schema(spec, name))

        def call(validate=validate, body=body) -> Any:
            try:
                validate(orjson.loads(body))
            except fastjsonschema.JsonSchemaException as exc:
                return exc
            return None

        callers[label] = call
    return callers


STRIPE_SCRIPT = """
import resource, time, sys
from bastion.config import load_config
from bastion.validation.openapi import load_description
from bastion.validation.compile import compile_description
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
description = load_description(sys.argv[1])
loaded = time.perf_counter()
api = compile_description(description, load_config({}, env={}))
done = time.perf_counter()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(loaded - start, done - loaded, len(api.operations), (after - before) / 1024, after / 1024)
"""


def stripe_compile(path: str) -> tuple[float, float, int, float, float]:
    """Load and compile the Stripe description in a fresh process: seconds, operations, memory."""
    out = subprocess.run(
        [sys.executable, "-c", STRIPE_SCRIPT, path], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2]), float(out[3]), float(out[4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--stripe", default="/work/shared/specs/stripe_spec3.yaml")
    options = parser.parse_args()
    batches, number = (3, 200) if options.quick else (9, 2000)
    spec = yaml.safe_load(SPEC)
    peers = {
        "bastion (route+params+body)": bastion_callers(spec),
        "bastion ASGI guard": guard_callers(spec),
        "openapi-core validate_request": openapi_core_callers(spec),
        "jsonschema (body only)": jsonschema_callers(spec),
        "fastjsonschema (body only)": fastjsonschema_callers(spec),
    }
    print(
        f"request validation: {batches} interleaved batches of {number} calls (openapi-core: {number // 10})"
    )
    print("microseconds per request, median of the batches [best batch]; ratios against bastion's median")
    print("(shared 2-core machine: compare the ratios, not the absolute times)\n")
    print(f"{'request':40} " + " ".join(f"{name:>31}" for name in peers))
    medians: dict[str, list[float]] = {name: [] for name in peers}
    bests: dict[str, list[float]] = {name: [] for name in peers}
    for label, *_ in REQUESTS:
        callers = {name: c[label] for name, c in peers.items() if label in c}
        slow = {name: fn for name, fn in callers.items() if "openapi-core" in name}
        fast = {name: fn for name, fn in callers.items() if name not in slow}
        samples = measure(fast, batches=batches, number=number)
        samples.update(measure(slow, batches=batches, number=max(number // 10, 1)))
        base = statistics.median(samples["bastion (route+params+body)"])
        cells = []
        for name in peers:
            if name not in samples:
                cells.append(f"{'-':>31}")
                continue
            median, best = statistics.median(samples[name]), min(samples[name])
            medians[name].append(median)
            bests[name].append(best)
            ratio = "" if name.startswith("bastion (") else f" {median / base:6.1f}x"
            cells.append(f"{median:>9.2f} [{best:>8.2f}]{ratio:>8}".rjust(31))
        print(f"{label:40} " + " ".join(cells))
    core = medians["openapi-core validate_request"]
    ours = medians["bastion (route+params+body)"]
    ratios = [c / o for c, o in zip(core, ours, strict=True)]
    print(
        f"\nopenapi-core / bastion (medians): min {min(ratios):.0f}x, median {statistics.median(ratios):.0f}x"
    )
    print(
        f"budget: typical JSON body <= 10 us -> median {ours[0]:.2f} us, best batch "
        f"{bests['bastion (route+params+body)'][0]:.2f} us; >= 50x openapi-core -> {ratios[0]:.0f}x"
    )
    unknown_keys(spec, batches=3 if options.quick else 9)
    load_s, compile_s, operations, rss_delta, rss = stripe_compile(options.stripe)
    print(
        f"\nStripe description ({operations} operations): load (YAML parse) {load_s:.2f} s, "
        f"translate + compile {compile_s:.2f} s (budget 3 s), "
        f"memory +{rss_delta:.0f} MB (peak RSS {rss:.0f} MB)"
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
