"""Idempotency events are counted as integers and reach the counter at every collection."""

from __future__ import annotations

from typing import Any

from bastion import Bastion
from tests.idempotency.apps import OrdersApp
from tests.support import LogCapture, client


def events(text: str) -> dict[str, float]:
    prefix = 'bastion_idempotency_events_total{event="'
    found = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            event, _, value = line[len(prefix) :].partition('"} ')
            found[event] = float(value)
    return found


async def test_each_scrape_shows_the_totals_so_far() -> None:
    config: dict[str, Any] = {"store": "memory://", "idempotency": {"store": "memory://"}}
    bastion = Bastion(OrdersApp(), config, env={}, log_stream=LogCapture())
    async with client(bastion) as http:
        for i in range(3):
            await http.post("/orders", json={"n": i}, headers={"Idempotency-Key": f"k{i}"})
        first = events((await http.get("/metrics")).text)
        await http.post("/orders", json={"n": 0}, headers={"Idempotency-Key": "k0"})
        await http.post("/orders", json={"n": 3}, headers={"Idempotency-Key": "k3"})
        second = events((await http.get("/metrics")).text)
        third = events((await http.get("/metrics")).text)
    await bastion.shutdown()
    assert first["claimed"] == 3 and first["replayed"] == 0
    assert second["claimed"] == 4 and second["replayed"] == 1
    assert third == second  # nothing counted twice
    metrics = bastion.metrics
    assert metrics is not None
    assert metrics.registry.get_sample_value("bastion_idempotency_events_total", {"event": "claimed"}) == 4
