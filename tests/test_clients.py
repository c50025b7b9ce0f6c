"""Client identity: API keys, IPs behind trusted proxies, tiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bastion.cli import app
from bastion.clients import ClientIdentifier, key_digest
from bastion.config import ClientsConfig, ConfigError, load_config


def scope(peer: str | None = "203.0.113.7", headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 40000) if peer is not None else None,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers or []],
    }


def identifier(**settings: Any) -> ClientIdentifier:
    return ClientIdentifier(ClientsConfig.model_validate(settings))


def test_a_known_key_names_the_client_and_its_tier() -> None:
    ids = identifier(keys=[{"sha256": key_digest(b"key-paid"), "name": "acme", "tier": "paid"}])
    paid = ids.identify(scope(headers=[("X-API-Key", "key-paid")]))
    assert (paid.id, paid.tier, paid.api_key) == ("key:acme", "paid", "key-paid")
    # The same client from another address.
    assert paid.id == ids.identify(scope(peer="198.51.100.1", headers=[("X-API-Key", "key-paid")])).id


def test_a_known_key_without_name_or_tier() -> None:
    digest = key_digest(b"key-plain")
    client = identifier(keys=[digest]).identify(scope(headers=[("X-API-Key", "key-plain")]))
    assert (client.id, client.tier) == ("key:" + digest[:16], "free")


def test_an_unknown_key_leaves_the_client_identified_by_ip() -> None:
    ids = identifier(keys=[{"sha256": key_digest(b"key-paid"), "tier": "paid"}])
    other = ids.identify(scope(headers=[("X-API-Key", "key-other")]))
    assert (other.id, other.tier, other.api_key) == ("ip:203.0.113.7", "free", None)


def test_without_a_key_list_any_key_names_a_client_by_digest() -> None:
    ids = identifier()
    one = ids.identify(scope(headers=[("X-API-Key", "key-one")]))
    two = ids.identify(scope(headers=[("X-API-Key", "key-two")]))
    assert one.id == "key:" + key_digest(b"key-one")[:16]
    assert one.id != two.id and one.tier == two.tier == "free"
    assert ids.believes_any_key
    assert not identifier(keys=[]).believes_any_key
    assert not identifier(identify=["ip"]).believes_any_key


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
    ids = identifier(
        identify=["header:X-Tenant", "header:X-API-Key", "ip"],
        keys=[{"sha256": key_digest(b"t1"), "tier": "gold"}],
    )
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


def problems_of(settings: dict[str, Any], tmp_path: Path | None = None) -> list[tuple[str, str]]:
    """The configuration problems of a ``clients`` section (from a file in ``tmp_path`` if given)."""
    source: Any = {"clients": settings}
    if tmp_path is not None:
        source = tmp_path / "bastion.yaml"
        source.write_text(orjson.dumps({"clients": settings}).decode())
    with pytest.raises(ConfigError) as caught:
        load_config(source, env={})
    return caught.value.problems


def test_a_raw_key_in_the_key_list_is_an_error_that_does_not_repeat_it() -> None:
    problems = problems_of({"keys": [{"sha256": "my-raw-secret", "tier": "paid"}, "another-raw-secret"]})
    assert [path for path, _ in problems] == ["clients.keys.0.sha256", "clients.keys.1.sha256"]
    for _, reason in problems:
        assert "bastion keys hash" in reason
        assert "secret" not in reason


@pytest.mark.parametrize(
    "digest", ["9f86d081884c7d65", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0g"]
)
def test_a_short_or_non_hex_digest_is_an_error(digest: str) -> None:
    (problem,) = problems_of({"keys": [{"sha256": digest}]})
    assert problem[0] == "clients.keys.0.sha256" and "64 hex characters" in problem[1]


def test_digests_are_read_in_either_case() -> None:
    digest = key_digest(b"k")
    config = ClientsConfig.model_validate({"keys": [digest.upper()]})
    assert config.known_keys() == ClientsConfig.model_validate({"keys": [digest]}).known_keys()


def test_other_key_list_mistakes_are_errors() -> None:
    digest = key_digest(b"k")
    assert "listed twice" in problems_of({"keys": [digest, digest]})[0][1]
    assert problems_of({"keys": [{"sha256": digest, "name": "has space"}]})[0][0] == "clients.keys.0.name"
    assert problems_of({"unknown_keys": "ignore"})[0][0] == "clients.unknown_keys"


def test_the_old_raw_key_tiers_are_refused_pointing_to_keys() -> None:
    ((path, reason),) = problems_of({"tiers": {"key-paid-1": "paid"}})
    assert path == "clients"
    assert "clients.keys" in reason and "bastion keys hash" in reason
    assert "key-paid-1" not in reason


def test_keys_file_relative_to_the_configuration(tmp_path: Path) -> None:
    acme, plain = key_digest(b"acme-key"), key_digest(b"plain-key")
    (tmp_path / "keys.txt").write_text(f"# known keys\n{acme} acme paid\n\n{plain}   # no name\n")
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "clients:\n  keys_file: keys.txt\n  keys: [{sha256: " + key_digest(b"inline") + ", name: inline}]\n"
    )
    ids = ClientIdentifier(load_config(path, env={}).clients)
    acme_client = ids.identify(scope(headers=[("X-API-Key", "acme-key")]))
    assert (acme_client.id, acme_client.tier) == ("key:acme", "paid")
    assert ids.identify(scope(headers=[("X-API-Key", "plain-key")])).id == "key:" + plain[:16]
    assert ids.identify(scope(headers=[("X-API-Key", "inline")])).id == "key:inline"
    assert ids.identify(scope(headers=[("X-API-Key", "other")])).id == "ip:203.0.113.7"


def test_a_bad_keys_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text(f"{key_digest(b'a')} a\nraw-secret-key b\n")
    ((path, reason),) = problems_of({"keys_file": "keys.txt"}, tmp_path)
    assert path == "clients"
    assert "line 2" in reason and "bastion keys hash" in reason and "raw-secret-key" not in reason
    ((_, missing),) = problems_of({"keys_file": "absent.txt"}, tmp_path)
    assert "cannot read" in missing


def test_keys_hash_prints_the_digest_from_the_argument_or_stdin() -> None:
    runner = CliRunner()
    expected = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
    assert runner.invoke(app, ["keys", "hash", "test"]).output == expected
    assert runner.invoke(app, ["keys", "hash", "-"], input="test\n").output == expected
    assert runner.invoke(app, ["keys", "hash", "-"], input="").exit_code == 2


def test_the_printed_digest_is_the_one_a_request_with_the_key_matches() -> None:
    printed = CliRunner().invoke(app, ["keys", "hash", "clé-ünicode"]).output.strip()
    ids = identifier(keys=[{"sha256": printed, "name": "accented"}])
    request = {
        "type": "http",
        "client": ("203.0.113.7", 1),
        "headers": [(b"x-api-key", "clé-ünicode".encode())],
    }
    assert ids.identify(request).id == "key:accented"


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
