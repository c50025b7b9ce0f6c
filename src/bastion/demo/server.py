"""``bastion demo``: the demo API behind every guard, on the embedded SQLite store."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

from bastion.config import load_config, read_yaml
from bastion.stack import Bastion

TOUR = """\
bastion demo: a checkout API behind every guard, at {base}
  (state in {data_dir}; logs are JSON lines on standard error)

Try each pitfall:

  # Idempotency: send the same order twice with one key. One order, one charge;
  # the second answer is the stored one, marked Idempotent-Replayed: true.
  curl -i {base}/orders -H 'Idempotency-Key: order-1' -H 'Content-Type: application/json' \\
       -d '{{"items": [{{"sku": "BOOK-1", "quantity": 1}}], "amount": 1200}}'
  curl -s {base}/orders            # count the orders and charges

  # Errors: a crash is a problem with a trace id, never a stack trace.
  curl -i {base}/reports/daily
  curl -i {base}/nope

  # Validation: every broken field at once, none of the values echoed.
  curl -i {base}/users -H 'Content-Type: application/json' \\
       -d '{{"email": "nope", "age": 12, "name": "A", "role": "admin"}}'

  # Rate limits: 20 quick requests with the demo's key k1 pass, the 21st gets 429 with
  # Retry-After. An invented key is no new client: it shares its address's budget.
  for i in $(seq 25); do curl -s -o /dev/null -w '%{{http_code}} ' {base}/health -H 'X-API-Key: k1'; done

  curl -s {base}/metrics | grep bastion_

  # Watch it live: {base}/_bastion/dashboard
"""


def demo_config(data_dir: Path, store: str | None) -> dict[str, Any]:
    """The demo's configuration, with its description and store made absolute."""
    package = resources.files("bastion.demo")
    with resources.as_file(package.joinpath("bastion.yaml")) as config_path:
        config = read_yaml(Path(config_path))
    with resources.as_file(package.joinpath("openapi.yaml")) as spec_path:
        config["openapi"] = str(spec_path)
    config["store"] = store or f"sqlite:///{data_dir / 'bastion.db'}"
    return config


def build_demo(data_dir: Path, store: str | None = None, *, payment_delay: float = 0.3) -> Bastion:
    """The demo app wrapped in bastion, ready to serve."""
    from bastion.demo.app import create_demo_app

    app = create_demo_app(data_dir, payment_delay=payment_delay)
    return Bastion(app, load_config(demo_config(data_dir, store)))


def run_demo(host: str = "127.0.0.1", port: int = 8000, store: str | None = None) -> None:
    """Serve the demo with uvicorn and print the tour.

    The demo's server has the gateway's limits (``gateway.header_timeout`` and the rest,
    at their defaults unless ``BASTION_GATEWAY__...`` says otherwise), writes only JSON
    lines to standard error, and leaves the client's address as the connection gives it:
    forwarding headers count only from ``clients.trusted_proxies``.
    """
    import logging.config

    import uvicorn

    from bastion.gateway.serving import ServerLimits, raise_open_files_limit, uvicorn_options
    from bastion.observability.logging import server_log_config
    from bastion.observability.logwriter import close_writers

    log_config = server_log_config("warning")
    logging.config.dictConfig(log_config)
    data_dir = Path(".bastion-demo").resolve()
    app = build_demo(data_dir, store)
    config = app.config
    limits = ServerLimits.from_config(config.gateway, config.errors.problem_links()).within_open_files(
        raise_open_files_limit(), reserved=0
    )
    shown_host = f"[{host}]" if ":" in host else host
    sys.stdout.write(TOUR.format(base=f"http://{shown_host}:{port}", data_dir=data_dir))
    sys.stdout.flush()
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
            log_config=log_config,
            **uvicorn_options(limits),
        )
    finally:
        # Every log line waiting is written before the process exits (or its crash is told).
        close_writers()
