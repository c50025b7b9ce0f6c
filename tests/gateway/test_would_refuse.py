"""``Bastion-Would-Refuse`` reaches the upstream through the gateway; a client's own does not."""

from __future__ import annotations

from tests.gateway.test_proxy import client, headers_of, in_process


async def test_upstream_sees_shadow_refusals_and_never_a_forged_header() -> None:
    rule = {"name": "watch", "limit": "1/minute", "mode": "shadow"}
    app, _ = in_process(rate_limits={"rules": [rule]})
    forged = {"Bastion-Would-Refuse": "NOTHING"}
    async with client(app) as http:
        first = await http.get("/echo/x", headers=forged)
        second = await http.get("/echo/x", headers=forged)
    assert first.status_code == second.status_code == 200
    assert "bastion-would-refuse" not in headers_of(first.json())
    assert headers_of(second.json())["bastion-would-refuse"] == ["RATE_LIMITED"]
