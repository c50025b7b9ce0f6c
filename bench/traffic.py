"""A week of synthetic API traffic in under a minute, through the rate limit guard, on a fake clock.

    .venv/bin/python bench/traffic.py [--quick] [--out observed.json] [--write-config bastion.yaml]

The guard runs in-process on the memory store: the script builds a
:class:`~bastion.ratelimit.guard.RateLimitGuard` from a bastion.yaml (its own example
unless ``--config`` names one), gives the store and the rate observations one fake
clock, and calls the guard's decision for each request, so a simulated week takes
seconds. (A real gateway cannot be sped up this way; on one, read the same
observations with ``bastion limits suggest --url``.)

Traffic: ``--clients`` clients with heavy-tailed (Pareto) request rates, a tenth of
them paying (API keys of tier ``paid``), a daily cycle, and a few scripted clients
that now and then send a burst of tens to hundreds of requests. Requests arrive as a Poisson stream.
The observations are written to ``--out``; then::

    bastion limits suggest --from observed.json --config bastion.yaml --format yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bastion.asgi import RequestContext
from bastion.clients import ClientIdentifier
from bastion.config import load_config
from bastion.problems import RateLimited
from bastion.ratelimit.guard import RateLimitGuard
from bastion.ratelimit.observed import RateObservations
from bastion.ratelimit.rules import compile_rule
from bastion.ratelimit.stores.memory import MemoryStore

WEEK_S = 7 * 86_400
US = 1_000_000
# The share of clients that are scripts; the chance that a script's arrival is a burst, and
# a burst's mean size.
SCRIPTED = 0.02
BURST_CHANCE = 0.01
BURST_MEAN = 160


def example_config(paid_keys: list[str]) -> dict[str, Any]:
    """The example bastion.yaml: per-client limits with a paid tier, a login limit, a global one."""
    return {
        "upstream": "http://127.0.0.1:3000",
        "store": "memory://",
        "clients": {
            "identify": ["header:X-API-Key", "ip"],
            "keys": [
                {"sha256": hashlib.sha256(key.encode()).hexdigest(), "name": f"paid-{i}", "tier": "paid"}
                for i, key in enumerate(paid_keys)
            ],
        },
        "rate_limits": {
            "rules": [
                {"name": "global", "key": "global", "limit": "1000/second"},
                {
                    "name": "per-client",
                    "key": "client",
                    "limit": "60/minute",
                    "tiers": {"paid": "600/minute"},
                },
                {"name": "login", "match": "POST /login", "key": "ip", "limit": "5/minute"},
            ]
        },
    }


class Clock:
    """A settable clock in microseconds."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def run(config: dict[str, Any], paid_keys: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Play the traffic through the guard; the observations' snapshot and a few counts."""
    rng = random.Random(args.seed)
    settings = load_config(config, env={})
    clock = Clock()
    observed = RateObservations(clock)
    guard = RateLimitGuard(
        None,  # type: ignore[arg-type]  # only the decision runs: no app behind it
        [compile_rule(rule) for rule in settings.rate_limits.rules],
        MemoryStore(clock),
        clients=ClientIdentifier(settings.clients),
        observed=observed,
    )
    # Who sends: IPs for anonymous clients, API keys (and an IP) for paying ones.
    senders: list[list[tuple[bytes, bytes]]] = []
    ips: list[str] = []
    weights: list[float] = []
    scripted = {i for i in range(args.clients) if rng.random() < SCRIPTED}
    for i in range(args.clients):
        ips.append(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
        paying = i < len(paid_keys)
        senders.append([(b"x-api-key", paid_keys[i].encode())] if paying else [])
        weights.append(rng.paretovariate(1.3) * (5 if paying else 1))
    cumulative = []
    total = 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)
    # Arrivals per second such that the week holds ``--requests`` (a burst is many requests).
    mean_rate = args.requests / WEEK_S / (1 + SCRIPTED * BURST_CHANCE * (BURST_MEAN - 1))
    t = 0.0
    sent = refused = 0
    while sent < args.requests and t < WEEK_S:
        # Poisson arrivals at a rate that follows the day (busiest at midday, a ninth of it at night).
        daily = 1 + 0.8 * math.sin(2 * math.pi * (t / 86_400 - 0.25))
        t += rng.expovariate(mean_rate * daily)
        who = rng.choices(range(args.clients), cum_weights=cumulative)[0]
        # Now and then a scripted client (a batch job, a retry loop) sends many at once.
        bursting = who in scripted and rng.random() < BURST_CHANCE
        burst = int(rng.uniform(20, 2 * BURST_MEAN - 20)) if bursting else 1
        path, method = ("/login", "POST") if rng.random() < 0.02 else ("/orders", "GET")
        for k in range(burst):
            clock.now = int(t * US) + k * 50_000
            observed.tick()
            scope = {
                "type": "http",
                "method": method,
                "path": path,
                "headers": senders[who],
                "client": (ips[who], 40_000),
            }
            try:
                guard.admit(scope, RequestContext("0" * 32, "0" * 16, str(sent)))
            except RateLimited:
                refused += 1
            sent += 1
        t += burst * 0.05
    return {"snapshot": observed.snapshot(), "sent": sent, "refused": refused}


def main() -> None:
    """Parse the options, play the week, write the observations."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smaller week (under 10 s)")
    parser.add_argument("--clients", type=int, default=None, help="distinct clients (default 5000)")
    parser.add_argument("--requests", type=int, default=None, help="requests in the week (default 600000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", type=Path, default=None, help="a bastion.yaml (default: the example)")
    parser.add_argument("--out", type=Path, default=Path("observed.json"))
    parser.add_argument("--write-config", type=Path, default=None, help="write the example bastion.yaml here")
    args = parser.parse_args()
    args.clients = args.clients or (1000 if args.quick else 5000)
    args.requests = args.requests or (60_000 if args.quick else 600_000)
    paid_keys = [f"key-{i:05d}" for i in range(args.clients // 10)]
    config = example_config(paid_keys)
    if args.config is not None:
        config = yaml.safe_load(args.config.read_text())
        paid_keys = []
    if args.write_config is not None:
        args.write_config.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    result = run(config, paid_keys, args)
    elapsed = time.perf_counter() - started
    args.out.write_text(json.dumps(result["snapshot"]))
    print(
        f"{result['sent']} requests from {args.clients} clients over 7 simulated days in {elapsed:.1f} s; "
        f"{result['refused']} refused; observations in {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
