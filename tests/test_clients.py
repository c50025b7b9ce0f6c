"""Client identity: API keys, IPs behind trusted proxies, tiers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.clients import ClientIdentifier
from bastion.config import ClientsConfig


def scope(peer: str | None = "203.0.113.7", headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 40000) if peer is not None else None,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers or []],
    }


def identifier(**settings: Any) -> ClientIdentifier:
    return ClientIdentifier(ClientsConfig.model_validate(settings))


def test_api_key_names_the_client_and_its_tier() -> None:
    ids = identifier(tiers={"key-paid": "paid"})
    paid = ids.identify(scope(headers=[("X-API-Key", "key-paid")]))
    other = ids.identify(scope(headers=[("X-API-Key", "key-other")]))
    assert paid.tier == "paid"
    assert other.tier == "free"
    assert paid.id != other.id
    # The raw key never appears in the id (it ends up in logs and store keys).
    assert "key-paid" not in paid.id
    assert paid.id == ids.identify(scope(peer="198.51.100.1", headers=[("X-API-Key", "key-paid")])).id


def test_without_a_key_the_ip_names_the_client() -> None:
    ids = identifier()
    client = ids.identify(scope(peer="203.0.113.7"))
    assert client.id == "ip:203.0.113.7"
    assert client.tier == "free"
    assert client.api_key is None


def test_empty_key_header_falls_back_to_ip() -> None:
    client = identifier().identify(scope(headers=[("X-API-Key", "")]))
    assert client.id == "ip:203.0.113.7"


def test_sources_are_tried_in_order() -> None:
    ids = identifier(identify=["ip", "header:X-API-Key"])
    assert ids.identify(scope(headers=[("X-API-Key", "k")])).id == "ip:203.0.113.7"
    ids = identifier(identify=["header:X-Tenant", "header:X-API-Key", "ip"], tiers={"t1": "gold"})
    assert ids.identify(scope(headers=[("X-API-Key", "k"), ("X-Tenant", "t1")])).tier == "gold"


def test_forged_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    ids = identifier(trusted_proxies=["10.0.0.0/8"])
    forged = scope(peer="203.0.113.7", headers=[("X-Forwarded-For", "1.2.3.4")])
    assert ids.client_ip(forged) == "203.0.113.7"
    # Without any trusted proxy configured, the header is never read.
    assert identifier().client_ip(forged) == "203.0.113.7"


def test_forwarded_for_from_a_trusted_proxy_is_believed() -> None:
    ids = identifier(trusted_proxies=["10.0.0.0/8"])
    via_proxy = scope(peer="10.1.2.3", headers=[("X-Forwarded-For", "198.51.100.9")])
    assert ids.client_ip(via_proxy) == "198.51.100.9"
    assert ids.identify(via_proxy).id == "ip:198.51.100.9"


def test_entries_prepended_by_the_client_are_not_believed() -> None:
    # The client sends "X-Forwarded-For: 1.2.3.4"; the trusted proxy appends the real peer.
    ids = identifier(trusted_proxies=["10.0.0.0/8"])
    chain = scope(peer="10.0.0.2", headers=[("X-Forwarded-For", "1.2.3.4, 198.51.100.9")])
    assert ids.client_ip(chain) == "198.51.100.9"


def test_a_chain_of_trusted_proxies_is_walked_back() -> None:
    ids = identifier(trusted_proxies=["10.0.0.0/8", "192.168.0.0/16"])
    chain = scope(peer="10.0.0.2", headers=[("X-Forwarded-For", "1.2.3.4, 198.51.100.9, 192.168.1.1")])
    assert ids.client_ip(chain) == "198.51.100.9"
    # Several header lines form one list, in order.
    split = scope(
        peer="10.0.0.2",
        headers=[("X-Forwarded-For", "1.2.3.4, 198.51.100.9"), ("X-Forwarded-For", "192.168.1.1")],
    )
    assert ids.client_ip(split) == "198.51.100.9"


def test_garbage_in_the_chain_stops_the_walk_at_the_last_trusted_hop() -> None:
    ids = identifier(trusted_proxies=["10.0.0.0/8"])
    chain = scope(peer="10.0.0.2", headers=[("X-Forwarded-For", "198.51.100.9, not-an-ip")])
    assert ids.client_ip(chain) == "10.0.0.2"


def test_ports_and_ipv6_are_understood() -> None:
    ids = identifier(trusted_proxies=["10.0.0.0/8"])
    assert ids.client_ip(scope(peer="10.0.0.2", headers=[("X-Forwarded-For", "198.51.100.9:5555")])) == (
        "198.51.100.9"
    )
    v6 = scope(peer="10.0.0.2", headers=[("X-Forwarded-For", "2001:db8::1")])
    assert ids.client_ip(v6) == "2001:db8::1"


def test_ipv4_mapped_peer_matches_an_ipv4_network() -> None:
    ids = identifier(trusted_proxies=["127.0.0.1/32"])
    mapped = scope(peer="::ffff:127.0.0.1", headers=[("X-Forwarded-For", "198.51.100.9")])
    assert ids.client_ip(mapped) == "198.51.100.9"


def test_rfc7239_forwarded_when_configured() -> None:
    ids = identifier(trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded")
    request = scope(
        peer="10.0.0.2",
        headers=[("Forwarded", 'for=1.2.3.4, for="[2001:db8::7]:4711";proto=https')],
    )
    assert ids.client_ip(request) == "2001:db8::7"


def test_the_header_proxies_do_not_set_is_ignored() -> None:
    # The proxy appends to X-Forwarded-For and passes a forged Forwarded through untouched.
    ids = identifier(trusted_proxies=["10.0.0.0/8"])
    request = scope(
        peer="10.0.0.2",
        headers=[("X-Forwarded-For", "198.51.100.9"), ("Forwarded", "for=1.2.3.4")],
    )
    assert ids.client_ip(request) == "198.51.100.9"
    ids = identifier(trusted_proxies=["10.0.0.0/8"], forwarded_header="forwarded")
    request = scope(
        peer="10.0.0.2",
        headers=[("X-Forwarded-For", "1.2.3.4"), ("Forwarded", "for=198.51.100.9")],
    )
    assert ids.client_ip(request) == "198.51.100.9"


def test_missing_peer_is_unknown() -> None:
    assert identifier().client_ip(scope(peer=None)) == "unknown"


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        ClientsConfig.model_validate({"trusted_proxies": ["nope"]})
    with pytest.raises(ValueError, match="not a client source"):
        ClientsConfig.model_validate({"identify": ["cookie:x"]})


octets = st.integers(min_value=0, max_value=255)
public_ips = st.tuples(octets, octets, octets, octets).map(lambda t: f"198.{t[1]}.{t[2]}.{t[3]}")


@given(forged=st.lists(public_ips, max_size=4), real=public_ips)
def test_property_untrusted_peer_always_wins(forged: list[str], real: str) -> None:
    ids = identifier(trusted_proxies=["10.0.0.0/8"])
    request = scope(peer=real, headers=[("X-Forwarded-For", ", ".join(forged))] if forged else [])
    assert ids.client_ip(request) == real


@given(forged=st.lists(public_ips, max_size=4), real=public_ips)
def test_property_trusted_proxy_reports_its_peer(forged: list[str], real: str) -> None:
    ids = identifier(trusted_proxies=["10.0.0.0/8"])
    request = scope(peer="10.9.9.9", headers=[("X-Forwarded-For", ", ".join([*forged, real]))])
    assert ids.client_ip(request) == real
