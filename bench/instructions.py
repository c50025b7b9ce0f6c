"""User-space instructions per request through bastion's guards, counted by callgrind.

    .venv/bin/python bench/instructions.py [--requests 1000] [--only NAME ...]

The clock on a shared 2-core machine moves by 2x between runs; instruction counts
do not. Each scenario runs in its own Python process under valgrind's callgrind,
twice: once with a warm-up only, once with the warm-up and ``--requests`` more
requests, both with ``PYTHONHASHSEED=0``. The difference, divided by
``--requests``, is what one request costs, start-up and warm-up excluded.
Requests go in-process through the ASGI app (the same driver as bench/chain.py),
built with bastion's public API only, so the table compares like with like
across versions of the code.

Scenarios (the rows of the before/after table in docs/performance.md):

- ``get-bare``: GET through a bare Starlette app (the floor everything adds to);
- ``get-boundary``: GET behind ``Bastion`` with errors, trace ids and metrics;
- ``get-default``: the same with the default access log (to memory);
- ``get-ratelimit``: GET with one per-client rate limit rule, memory store;
- ``get-ratelimit-redis``: the same on Redis (the process's own share only);
- ``post-idempotency``: POST with a new Idempotency-Key each time, memory store;
- ``post-replay``: POST repeating one key (a replay), memory store;
- ``post-chain``: POST through every guard (route, rate limit, validation,
  idempotency), memory stores;
- ``post-chain-redis``: the same with Redis stores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

REDIS = os.environ.get("BASTION_BENCH_REDIS", "redis://127.0.0.1:6379/0")
WARMUP = 300
ORDER = b'{"item":"book","quantity":2}'


def scenario_app(name: str, spec: Path) -> tuple[Any, Any, int]:
    """The app, a request maker and the expected status for one scenario."""
    import yaml

    from asgi_driver import make_scope
    from bastion import Bastion
    from chain import ORDERS, post_requests, starlette_app

    spec.write_text(yaml.safe_dump(ORDERS))
    quiet: dict[str, Any] = {"store": "memory://", "logging": {"access": False}}
    huge = "1000000/second"
    prefix = "bench-" + uuid.uuid4().hex[:8]

    def get(i: int) -> tuple[dict[str, Any], bytes]:
        return make_scope("GET", f"/items/{i % 100}", [(b"host", b"bench"), (b"x-api-key", b"k")]), b""

    def bastion(config: dict[str, Any]) -> Any:
        return Bastion(starlette_app(), config, env={}, log_stream=io.BytesIO())

    rule = {"rate_limits": {"rules": [{"name": "per-client", "key": "client", "limit": huge}]}}
    redis = {
        "store": REDIS,
        "rate_limits": {**rule["rate_limits"], "key_prefix": prefix},
        "idempotency": {"key_prefix": prefix},
    }
    if name == "get-bare":
        return starlette_app(), get, 200
    if name == "get-boundary":
        return bastion({**quiet, "idempotency": {"enabled": False}}), get, 200
    if name == "get-default":
        return bastion({"store": "memory://", "idempotency": {"enabled": False}}), get, 200
    if name == "get-ratelimit":
        return bastion({**quiet, **rule, "idempotency": {"enabled": False}}), get, 200
    if name == "get-ratelimit-redis":
        config = {**quiet, **redis, "idempotency": {"enabled": False}}
        return bastion(config), get, 200
    if name == "post-idempotency":
        return bastion(quiet), post_requests(), 201
    if name == "post-replay":
        make = post_requests()
        scope, body = make(0)

        def replay(_: int) -> tuple[dict[str, Any], bytes]:
            return dict(scope, headers=list(scope["headers"])), body

        return bastion(quiet), replay, 201
    if name == "post-chain":
        return bastion({**quiet, **rule, "openapi": str(spec)}), post_requests(), 201
    if name == "post-chain-redis":
        return bastion({**quiet, **redis, "openapi": str(spec)}), post_requests(), 201
    raise SystemExit(f"unknown scenario {name}")


SCENARIOS = [
    "get-bare",
    "get-boundary",
    "get-default",
    "get-ratelimit",
    "get-ratelimit-redis",
    "post-idempotency",
    "post-replay",
    "post-chain",
    "post-chain-redis",
]


async def drive(name: str, requests: int) -> None:
    """The child: build the app, start its lifespan, warm up, then run ``requests`` more."""
    from asgi_driver import call

    spec = Path(tempfile.mkdtemp(prefix="bastion-bench-instr-")) / "openapi.yaml"
    app, make, expect = scenario_app(name, spec)
    started = asyncio.Event()
    stopping = asyncio.Event()
    messages: list[dict[str, Any]] = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await stopping.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    )
    await started.wait()
    counter = itertools.count()
    for _ in range(WARMUP + requests):
        scope, body = make(next(counter))
        status = await call(app, scope, body)
        if status != expect:
            raise SystemExit(f"{name}: expected {expect}, got {status}")
    stopping.set()
    await lifespan


def count(name: str, requests: int) -> int:
    """Total user-space instructions of one child run."""
    out = Path(tempfile.mkdtemp(prefix="bastion-callgrind-")) / "callgrind.out"
    # A fixed hash seed: string hashing, and with it dict and set layouts, the same on every run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            name,
            "--requests",
            str(requests),
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per scenario")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="scenarios to run (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(drive(args.child, args.requests))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    print(
        f"user-space instructions per request under callgrind "
        f"({args.requests} requests, after {WARMUP} warm-up)\n"
    )
    print("| scenario | instructions per request |")
    print("|---|---:|")
    for name in args.only or SCENARIOS:
        base = count(name, 0)
        total = count(name, args.requests)
        print(f"| {name} | {(total - base) / args.requests:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
