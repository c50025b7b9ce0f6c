"""The PostgreSQL store: asyncpg, one statement per step.

- A claim is one ``INSERT ... ON CONFLICT`` statement: it inserts the record, or
  replaces one that has expired or whose lease expired (same fingerprint), and
  otherwise returns the existing row in the same reply. Only when a concurrent
  claim committed between our snapshot and our insert does it need a second read.
- Completion, release and renewal are ``UPDATE``/``DELETE ... WHERE owner = $n``:
  an old owner's late completion matches no row (fencing).
- Times come from the server's clock (``clock_timestamp()``), so hosts agree.
- The table is created on start when missing; its name is configurable.
- Expired rows are deleted in bounded batches after claims, at most once a
  second per process, with ``SKIP LOCKED`` so processes never wait on each other.
- The server being down at start-up is not fatal: the pool is created on first use,
  and until then every call fails fast, which the guard's ``on_store_error`` handles.
"""

# ruff: noqa: S608 - the only text put into SQL is the table name, checked by check_table_name().
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg

from bastion.config.idempotency import check_table_name
from bastion.idempotency.core import CLAIMED, ClaimResult, State, StoredResponse, took_over
from bastion.idempotency.stores import WaitingStore

NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"
CLEANUP_BATCH = 100
CLEANUP_EVERY_S = 1.0
#: Creating (or extending) the table at start-up may wait for other processes doing the same.
CREATE_TIMEOUT_S = 10.0
#: After a failed connection attempt, calls fail at once for this long instead of each trying again.
RECONNECT_AFTER_S = 1.0


class StoreUnavailable(ConnectionError):
    """The PostgreSQL server could not be reached (recently)."""


class PostgresStore(WaitingStore):
    """Idempotency records in a PostgreSQL table."""

    kind = "postgres"

    def __init__(
        self,
        url: str,
        *,
        table: str = "bastion_idempotency",
        min_size: int = 1,
        max_size: int = 10,
        timeout_s: float = 0.25,
    ) -> None:
        self.url = url
        self.table = table
        self.name = f"idempotency:postgres:{table}"
        self.min_size = min_size
        self.max_size = max_size
        self.timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self._connecting: asyncio.Lock | None = None
        self._failed_at = 0.0
        self._last_cleanup = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        t = check_table_name(table)
        self._claim_sql = f"""
WITH claimed AS (
    INSERT INTO {t} AS r (key, fingerprint, state, owner, lease_until, expires_at, took_over, trace_id)
    VALUES ($1, $2, 0, $3, {NOW_MS} + $4, {NOW_MS} + $5, false, $6)
    ON CONFLICT (key) DO UPDATE SET
        fingerprint = EXCLUDED.fingerprint, state = 0, owner = EXCLUDED.owner,
        lease_until = EXCLUDED.lease_until, expires_at = EXCLUDED.expires_at,
        status = NULL, headers = NULL, body = NULL, body_stored = NULL,
        took_over = (r.expires_at > {NOW_MS}),
        lost_trace_id = CASE WHEN r.expires_at > {NOW_MS} THEN r.trace_id END,
        trace_id = EXCLUDED.trace_id
    WHERE r.expires_at <= {NOW_MS}
       OR (r.state = 0 AND r.lease_until <= {NOW_MS} AND r.fingerprint = EXCLUDED.fingerprint)
    RETURNING true AS claimed, r.took_over, r.state, r.fingerprint, 0::bigint AS remaining,
              NULL::int AS status, NULL::bytea AS headers, NULL::bytea AS body, NULL::bool AS body_stored,
              r.lost_trace_id
)
SELECT * FROM claimed
UNION ALL
SELECT false, false, state, fingerprint, lease_until - {NOW_MS}, status, headers, body, body_stored,
       NULL::text
FROM {t} WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM claimed)
"""
        self._select_sql = (
            f"SELECT false, false, state, fingerprint, lease_until - {NOW_MS}, status, headers, body, "
            f"body_stored, NULL::text FROM {t} WHERE key = $1"
        )
        self._complete_sql = (
            f"UPDATE {t} SET state = 1, status = $3, headers = $4, body = $5, body_stored = $6, "
            f"expires_at = {NOW_MS} + $7, owner = NULL WHERE key = $1 AND state = 0 AND owner = $2"
        )
        self._release_sql = f"DELETE FROM {t} WHERE key = $1 AND state = 0 AND owner = $2"
        self._renew_sql = (
            f"UPDATE {t} SET lease_until = {NOW_MS} + $3 WHERE key = $1 AND state = 0 AND owner = $2"
        )
        self._cleanup_sql = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= {NOW_MS} "
            f"LIMIT {CLEANUP_BATCH} FOR UPDATE SKIP LOCKED)"
        )
        self._create_sql = f"""
-- Processes starting at once take turns (the lock ends with this implicit transaction):
-- two creators each holding the index's share lock and waiting for the other's
-- exclusive one would deadlock.
SELECT pg_advisory_xact_lock(hashtext('bastion:create:{t}'));
CREATE TABLE IF NOT EXISTS {t} (
    key text PRIMARY KEY,
    fingerprint text NOT NULL,
    state smallint NOT NULL,
    owner text,
    lease_until bigint NOT NULL,
    expires_at bigint NOT NULL,
    status integer,
    headers bytea,
    body bytea,
    body_stored boolean,
    took_over boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at);
-- The claiming request's trace id, and on a takeover the one it replaced (for
-- IDEMPOTENCY_OUTCOME_UNKNOWN); added to tables created by earlier versions. Only when
-- missing: ALTER TABLE locks the table against every claim, even when it changes nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{t}')
                   AND attname = 'trace_id' AND NOT attisdropped) THEN
        ALTER TABLE {t} ADD COLUMN IF NOT EXISTS trace_id text;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{t}')
                   AND attname = 'lost_trace_id' AND NOT attisdropped) THEN
        ALTER TABLE {t} ADD COLUMN IF NOT EXISTS lost_trace_id text;
    END IF;
END $$;
"""

    async def _get_pool(self) -> asyncpg.Pool:
        pool = self._pool
        if pool is not None:
            return pool
        if time.monotonic() - self._failed_at < RECONNECT_AFTER_S:
            raise StoreUnavailable("PostgreSQL was unreachable a moment ago")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._pool is not None:
                return self._pool
            try:
                pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    # Connecting may take longer than a statement; every statement is
                    # bounded by ``timeout`` (idempotency.timeout).
                    timeout=max(1.0, 4 * self.timeout_s),
                    command_timeout=self.timeout_s,
                )
                async with pool.acquire() as conn:
                    # Two processes starting at once may both try to create the table.
                    with contextlib.suppress(
                        asyncpg.UniqueViolationError,
                        asyncpg.DuplicateTableError,
                        asyncpg.DuplicateColumnError,
                    ):
                        await conn.execute(self._create_sql, timeout=CREATE_TIMEOUT_S)
            except BaseException:
                self._failed_at = time.monotonic()
                raise
            self._pool = pool
            return pool

    def _result(self, row: Any) -> ClaimResult:
        if row[0]:
            return took_over(row[9]) if row[1] else CLAIMED
        if row[2] == 1:
            response = StoredResponse(
                int(row[5]),
                StoredResponse.headers_from_blob(bytes(row[6] or b"[]")),
                bytes(row[7] or b""),
                bool(row[8]),
            )
            return ClaimResult(State.COMPLETED, row[3], response)
        return ClaimResult(State.IN_PROGRESS, row[3], None, int(row[4]))

    async def claim(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """Claim ``key`` with one ``INSERT ... ON CONFLICT`` statement."""
        pool = await self._get_pool()
        self._maybe_cleanup(pool)
        for _ in range(5):
            row = await pool.fetchrow(self._claim_sql, key, fingerprint, owner, lease_ms, ttl_ms, trace_id)
            if row is None:
                # A concurrent claim committed after this statement's snapshot: read it now.
                row = await pool.fetchrow(self._select_sql, key)
            if row is not None:
                return self._result(row)
            # The record was released in between: claim again.
        raise StoreUnavailable("the idempotency record changed under five claims in a row")

    async def complete(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Store the response if ``owner`` still holds the claim."""
        pool = await self._get_pool()
        status = await pool.execute(
            self._complete_sql,
            key,
            owner,
            response.status,
            response.headers_blob(),
            response.body,
            response.body_stored,
            ttl_ms,
        )
        return bool(status == "UPDATE 1")

    async def release(self, key: str, owner: str) -> bool:
        """Drop the claim if ``owner`` still holds it."""
        pool = await self._get_pool()
        return bool(await pool.execute(self._release_sql, key, owner) == "DELETE 1")

    async def renew(self, key: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease if ``owner`` still holds the claim."""
        pool = await self._get_pool()
        return bool(await pool.execute(self._renew_sql, key, owner, lease_ms) == "UPDATE 1")

    def _maybe_cleanup(self, pool: asyncpg.Pool) -> None:
        now = time.monotonic()
        if now - self._last_cleanup < CLEANUP_EVERY_S:
            return
        self._last_cleanup = now
        task = asyncio.get_running_loop().create_task(self._cleanup(pool))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cleanup(self, pool: asyncpg.Pool) -> None:
        # Clean-up is best effort: the next claim a second later tries again.
        with contextlib.suppress(Exception):
            await pool.execute(self._cleanup_sql)

    async def start(self) -> None:
        """Connect and create the table; an unreachable server is retried on first use."""
        try:
            await self._get_pool()
        except (TimeoutError, OSError, asyncpg.PostgresError):
            self._failed_at = 0.0

    async def close(self) -> None:
        """Wait for clean-ups in flight, then close the pool."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        """Whether PostgreSQL answers a query."""
        try:
            pool = await self._get_pool()
            return bool(await pool.fetchval("SELECT 1") == 1)
        except Exception:
            return False
