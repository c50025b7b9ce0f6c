"""The memory store's cap (``idempotency.max_memory``): oldest completed records go, claims stay."""

from __future__ import annotations

from bastion import Bastion
from bastion.asgi import Receive, Scope, Send
from bastion.idempotency.core import State, StoredResponse
from bastion.idempotency.stores.memory import MemoryStore
from tests.support import LogCapture, client

BODY = b"x" * 10_000
TTL_MS = 3_600_000
LEASE_MS = 60_000


def response(body: bytes = BODY) -> StoredResponse:
    return StoredResponse(201, ((b"content-type", b"text/plain"),), body)


def test_completed_records_stay_under_the_cap_oldest_first() -> None:
    evicted: list[int] = []
    store = MemoryStore(max_bytes=100_000)
    store.on_evict = lambda: evicted.append(1)
    for i in range(100):
        store.claim_now(f"done-{i}", "fp", "o", LEASE_MS, TTL_MS)
        assert store.complete_now(f"done-{i}", "o", response(), TTL_MS)
        assert store.stored_bytes <= 100_000
    kept = [
        i
        for i in range(100)
        if store.claim_now(f"done-{i}", "fp", "x", LEASE_MS, TTL_MS).state is State.COMPLETED
    ]
    # The newest records are the ones kept, as many as fit; every other one was evicted and counted.
    assert kept == list(range(100 - len(kept), 100))
    assert 5 <= len(kept) < 10
    assert len(evicted) == 100 - len(kept)


def test_claims_in_flight_are_never_evicted() -> None:
    store = MemoryStore(max_bytes=50_000)
    for i in range(200):
        store.claim_now(f"running-{i}", "fp", f"owner-{i}", LEASE_MS, TTL_MS, f"trace-{i}")
    for i in range(50):
        store.claim_now(f"done-{i}", "fp", "o", LEASE_MS, TTL_MS)
        store.complete_now(f"done-{i}", "o", response(), TTL_MS)
    assert store.stored_bytes <= 50_000
    for i in range(200):
        assert store.claim_now(f"running-{i}", "fp", "other", LEASE_MS, TTL_MS).state is State.IN_PROGRESS
        # The claim still belongs to its owner, who can store its response.
    assert store.complete_now("running-0", "owner-0", response(), TTL_MS)


class BigApp:
    """Answers every request with a 10 kB body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        await send(
            {"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": BODY})


async def test_the_cap_is_configured_and_evictions_are_counted() -> None:
    config = {"store": "memory://", "idempotency": {"max_memory": "100KiB"}}
    bastion = Bastion(BigApp(), config, env={}, log_stream=LogCapture())
    async with client(bastion) as http:
        for i in range(40):
            assert (
                await http.post("/orders", content=b"{}", headers={"Idempotency-Key": f"k{i}"})
            ).status_code == 201
        newest = await http.post("/orders", content=b"{}", headers={"Idempotency-Key": "k39"})
        oldest = await http.post("/orders", content=b"{}", headers={"Idempotency-Key": "k0"})
        metrics = (await http.get("/metrics")).text
    await bastion.shutdown()
    assert newest.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in oldest.headers  # forgotten: it ran again
    evictions = [
        line for line in metrics.splitlines() if line.startswith("bastion_idempotency_evictions_total ")
    ]
    assert len(evictions) == 1 and float(evictions[0].split()[1]) >= 30


def test_a_store_at_its_cap_does_not_grow_with_every_request() -> None:
    # Each new key past the cap evicts an older record; its expiry entry must go too,
    # or the store grows by one entry per request for a whole TTL.
    store = MemoryStore(max_bytes=64 * 1024)
    for i in range(30_000):
        key = f"key-{i}"
        store.claim_now(key, "fp", "owner", 30_000, 86_400_000)
        assert store.complete_now(key, "owner", response(), 86_400_000)
        if i % 2 == 0:  # and claims released without a response leave entries as well
            other = f"released-{i}"
            store.claim_now(other, "fp", "owner", 30_000, 86_400_000)
            assert store.release_now(other, "owner")
    # 64 KiB hold fewer than 400 such records: the index stays within twice that, plus its slack.
    assert store.stored_bytes <= 64 * 1024
    assert store.expiry_entries <= 2 * 400 + 1024
