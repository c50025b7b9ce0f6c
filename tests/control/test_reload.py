"""``Bastion.reload``: a new configuration in force between requests, or the old one kept and said why."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from bastion import Bastion
from bastion.asgi import Receive, Scope, Send
from tests.control.conftest import serving, write_config
from tests.support import LogCapture


class App:
    """Answers 200 with a count; ``/slow`` waits for ``release`` first."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        if scope["path"] == "/slow":
            self.entered.set()
            await self.release.wait()
        body = b'{"calls": %d}' % self.calls
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def limits(limit: str, **extra: Any) -> dict[str, Any]:
    """A configuration with one rate limit rule over every request, on memory."""
    return {
        "store": "memory://",
        "rate_limits": {"rules": [{"name": "all", "key": "global", "limit": limit}]},
        **extra,
    }


def policy(response: Any) -> str:
    return str(response.headers["ratelimit-policy"])


def reloads(text: str, result: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'bastion_config_reloads_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_reload_puts_the_new_file_in_force_and_counts_it(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, limits("50/minute"))
    bastion = Bastion(App(), path, env={}, log_stream=LogCapture())
    async with serving(bastion) as http:
        assert '"all";q=50' in policy(await http.get("/x"))
        write_config(path, limits("70/minute"))
        assert await bastion.reload()
        assert '"all";q=70' in policy(await http.get("/x"))
        assert bastion.config.rate_limits.rules[0].limit.limit == 70
        assert reloads((await http.get("/metrics")).text, "ok") == 1


@pytest.mark.parametrize(
    ("broken", "key"),
    [
        ({"rate_limits": {"rules": [{"name": "all", "key": "global", "limit": "many"}]}}, "rate_limits"),
        ({"store": "memory://", "idempotency": {"ttl": "forever"}, "no_such_section": 1}, "no_such_section"),
    ],
)
async def test_a_bad_file_keeps_the_configuration_in_force_and_logs_every_problem(
    tmp_path: Path, broken: dict[str, Any], key: str
) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, limits("50/minute"))
    logs = LogCapture()
    bastion = Bastion(App(), path, env={}, log_stream=logs)
    async with serving(bastion) as http:
        write_config(path, broken)
        assert not await bastion.reload()
        response = await http.get("/x")
        assert response.status_code == 200
        assert '"all";q=50' in policy(response)
        assert reloads((await http.get("/metrics")).text, "error") == 1
    refused = [r for r in logs.records() if r.get("event", r.get("msg", "")).startswith("reload refused")]
    assert refused and any(key in r["key"] for r in refused)
    if "idempotency" in broken:
        # Every problem of the file, one line each: the bad duration and the unknown section.
        assert len(refused) >= 2


async def test_a_broken_description_keeps_the_old_one(tmp_path: Path) -> None:
    description = tmp_path / "openapi.yaml"
    good = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}}}}},
    }
    write_config(description, good)
    path = tmp_path / "bastion.yaml"
    write_config(path, {"store": "memory://", "openapi": str(description)})
    logs = LogCapture()
    bastion = Bastion(App(), path, env={}, log_stream=logs)
    async with serving(bastion) as http:
        assert (await http.get("/x")).status_code == 200
        assert (await http.get("/y")).status_code == 404
        description.write_text("openapi: 3.1.0\npaths: [not, a, mapping\n")
        assert not await bastion.reload()
        assert (await http.get("/x")).status_code == 200
        good["paths"]["/y"] = good["paths"]["/x"]
        write_config(description, good)
        assert await bastion.reload()
        assert (await http.get("/y")).status_code == 200
    assert any(r.get("key", "").startswith(str(description)) for r in logs.records())


async def test_a_request_in_flight_finishes_under_the_configuration_it_started_with(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    idempotency = {"store": f"sqlite:///{tmp_path / 'keys.db'}"}
    write_config(path, limits("50/minute", idempotency=idempotency))
    app = App()
    bastion = Bastion(app, path, env={}, log_stream=LogCapture())
    async with serving(bastion) as http:
        key = {"idempotency-key": str(uuid.uuid4())}
        slow = asyncio.create_task(http.post("/slow", headers=key, json={}))
        await asyncio.wait_for(app.entered.wait(), 5)
        write_config(path, limits("70/minute", idempotency=idempotency))
        assert await bastion.reload()
        assert '"all";q=70' in policy(await http.get("/x"))
        app.release.set()
        response = await slow
        # The old chain answered it, and its store (closed only now) recorded it.
        assert response.status_code == 200
        assert '"all";q=50' in policy(response)
        replay = await http.post("/slow", headers=key, json={})
        assert replay.content == response.content
        assert replay.headers.get("idempotent-replayed") == "true"


async def test_concurrent_reloads_run_one_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, limits("50/minute"))
    bastion = Bastion(App(), path, env={}, log_stream=LogCapture())
    async with serving(bastion) as http:
        assert all(await asyncio.gather(*(bastion.reload(limits(f"{n}/minute")) for n in range(60, 70))))
        # The last one asked for is the one in force: they ran in turn, none lost.
        assert '"all";q=69' in policy(await http.get("/x"))


async def _over_the_limit(tmp_path: Path, config: dict[str, Any], *, reload: bool) -> list[int]:
    bastion = Bastion(App(), config, env={}, log_stream=LogCapture())
    statuses = []
    async with serving(bastion) as http:
        for n in range(10):
            if reload and n == 5:
                assert await bastion.reload(config)
            statuses.append((await http.get("/x")).status_code)
    return statuses


async def test_memory_rate_limit_counters_survive_a_reload(tmp_path: Path) -> None:
    config = limits("6/minute")
    assert await _over_the_limit(tmp_path, config, reload=True) == await _over_the_limit(
        tmp_path, config, reload=False
    )


async def test_redis_rate_limit_counters_survive_a_reload(tmp_path: Path, redis_url: str) -> None:
    rules = {
        "key_prefix": f"bastion-test-reload-{uuid.uuid4().hex[:8]}",
        "rules": [{"name": "all", "key": "global", "limit": "6/minute"}],
    }
    config = {"store": "memory://", "rate_limits": {**rules, "store": redis_url}}
    statuses = await _over_the_limit(tmp_path, config, reload=True)
    assert statuses == [200] * 6 + [429] * 4


async def _replays_after_a_reload(store: str) -> bool:
    config = {"store": store}
    bastion = Bastion(App(), config, env={}, log_stream=LogCapture())
    async with serving(bastion) as http:
        key = {"idempotency-key": str(uuid.uuid4())}
        first = await http.post("/x", headers=key, json={})
        assert await bastion.reload(config)
        again = await http.post("/x", headers=key, json={})
    return again.headers.get("idempotent-replayed") == "true" and again.content == first.content


async def test_an_idempotency_record_made_before_a_reload_replays_after_it(tmp_path: Path) -> None:
    assert await _replays_after_a_reload(f"sqlite:///{tmp_path / 'keys.db'}")


async def test_a_memory_idempotency_record_made_before_a_reload_replays_after_it() -> None:
    assert await _replays_after_a_reload("memory://")


async def test_observed_rates_outlive_a_reload_that_changes_the_limit() -> None:
    """Applying a suggestion (a new limit, same rule and period) keeps what was observed."""
    from bastion.ratelimit.observed import observed_snapshot

    bastion = Bastion(App(), limits("600/minute"), env={}, log_stream=LogCapture())
    async with serving(bastion) as http:
        for _ in range(5):
            await http.get("/x")
        assert await bastion.reload(limits("300/minute"))
        await http.get("/x")
        (sketch,) = observed_snapshot(bastion.resources)["sketches"]
    assert sketch["limit"] == "300/minute"
    # The five requests before the reload and the one after, in one window of one record.
    assert sketch["peaks"] == {"*": 6}
