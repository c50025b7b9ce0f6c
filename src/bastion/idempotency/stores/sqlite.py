"""The SQLite store: the embedded default, durable across restarts, shared by processes on one host.

- stdlib ``sqlite3`` in WAL mode, on one dedicated thread per store (a connection
  is used from one thread only; the event loop never blocks on the file).
- A claim that finds a completed record answers from a plain read; any write
  runs in ``BEGIN IMMEDIATE``, which takes SQLite's write lock before reading, so
  two processes sharing the file can never both claim a key. ``busy_timeout``
  makes a process wait for the lock instead of failing.
- Times are wall-clock milliseconds: every process sharing the file runs on the
  same host, so they share the clock.
- Expired rows are deleted in bounded batches by claims, at most once a second
  per process: no separate cron.
"""

# ruff: noqa: S608 - the only text put into SQL is the table name, checked by check_table_name().
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bastion.config.idempotency import check_table_name
from bastion.idempotency.core import CLAIMED, ClaimResult, State, StoredResponse, may_claim, took_over
from bastion.idempotency.stores import WaitingStore

T = TypeVar("T")

#: Expired rows deleted per clean-up batch, and the least time between batches.
CLEANUP_BATCH = 100
CLEANUP_EVERY_MS = 1000
BUSY_TIMEOUT_MS = 10_000
#: Attempts at an operation that SQLite refused with "database is locked" or "busy".
#: ``busy_timeout`` waits for most locks, but SQLite answers some at once without waiting
#: (another process opening the file or recovering its WAL index, say); every operation
#: here is safe to run again (a failed transaction is rolled back, a failed statement
#: wrote nothing).
BUSY_ATTEMPTS = 4

_Row = tuple[str, int, str | None, int, int, int | None, bytes | None, bytes | None, int | None, str | None]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _locked(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def retry_when_locked(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, run again (up to :data:`BUSY_ATTEMPTS` times, 10, 20, 40 ms apart)
    while SQLite answers that the database is locked or busy."""
    for attempt in range(BUSY_ATTEMPTS - 1):
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            time.sleep(0.01 * 2**attempt)
    return fn(*args)


class SQLiteStore(WaitingStore):
    """Idempotency records in a SQLite file."""

    kind = "sqlite"

    def __init__(self, path: str, *, table: str = "bastion_idempotency") -> None:
        self.path = path
        self.table = table
        self.name = f"idempotency:sqlite:{path}"
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._last_cleanup = 0
        t = check_table_name(table)
        self._select = (
            f"SELECT fingerprint, state, owner, lease_until, expires_at, status, headers, body, body_stored, "
            f"trace_id FROM {t} WHERE key = ?"
        )
        self._insert = (
            f"INSERT OR REPLACE INTO {t} (key, fingerprint, state, owner, lease_until, expires_at, trace_id) "
            "VALUES (?, ?, 0, ?, ?, ?, ?)"
        )
        self._take_over = f"UPDATE {t} SET owner = ?, lease_until = ?, trace_id = ? WHERE key = ?"
        self._complete = (
            f"UPDATE {t} SET state = 1, status = ?, headers = ?, body = ?, body_stored = ?, expires_at = ?, "
            "owner = NULL WHERE key = ? AND state = 0 AND owner = ?"
        )
        self._release = f"DELETE FROM {t} WHERE key = ? AND state = 0 AND owner = ?"
        self._renew = f"UPDATE {t} SET lease_until = ? WHERE key = ? AND state = 0 AND owner = ?"
        self._cleanup = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= ? LIMIT {CLEANUP_BATCH})"
        )

    # -- the thread side ---------------------------------------------------------------

    def _open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives a process crash; only an OS crash or power loss
        # can lose the last transactions, and then a retry runs again.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " key TEXT PRIMARY KEY,"
            " fingerprint TEXT NOT NULL,"
            " state INTEGER NOT NULL,"  # 0 in progress, 1 completed
            " owner TEXT,"
            " lease_until INTEGER NOT NULL,"
            " expires_at INTEGER NOT NULL,"
            " status INTEGER, headers BLOB, body BLOB, body_stored INTEGER,"
            " trace_id TEXT"  # the claiming request's, for IDEMPOTENCY_OUTCOME_UNKNOWN
            ") WITHOUT ROWID"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_expires ON {self.table} (expires_at)")
        # A table created by an earlier version lacks trace_id: add it (a nullable column
        # with no default, so old rows read NULL). Another process may add it first.
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({self.table})")}
        if "trace_id" not in columns:
            try:
                conn.execute(f"ALTER TABLE {self.table} ADD COLUMN trace_id TEXT")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc).lower():
                    raise

    def _result(self, row: _Row, now: int) -> ClaimResult:
        fp, state, _owner, lease_until, _expires, status, headers, body, body_stored, _trace_id = row
        if state == 1:
            response = StoredResponse(
                int(status or 0),
                StoredResponse.headers_from_blob(headers or b"[]"),
                body or b"",
                bool(body_stored),
            )
            return ClaimResult(State.COMPLETED, fp, response)
        return ClaimResult(State.IN_PROGRESS, fp, None, lease_until - now)

    def _claim(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str
    ) -> ClaimResult:
        conn = self._connection()
        now = _wall_ms()
        # A completed, live record needs no write lock: answer from a plain read.
        row: _Row | None = conn.execute(self._select, (key,)).fetchone()
        if row is not None and row[1] == 1 and row[4] > now:
            return self._result(row, now)
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = _wall_ms()
            row = conn.execute(self._select, (key,)).fetchone()
            result: ClaimResult
            if row is None:
                verdict: bool | None = None
            else:
                verdict = may_claim(
                    now_ms=now,
                    expires_at=row[4],
                    state_completed=row[1] == 1,
                    lease_until=row[3],
                    stored_fingerprint=row[0],
                    request_fingerprint=fingerprint,
                )
            if verdict is None:
                conn.execute(self._insert, (key, fingerprint, owner, now + lease_ms, now + ttl_ms, trace_id))
                result = CLAIMED
            elif verdict:
                assert row is not None
                conn.execute(self._take_over, (owner, now + lease_ms, trace_id, key))
                result = took_over(row[9])
            else:
                assert row is not None
                result = self._result(row, now)
            if now - self._last_cleanup >= CLEANUP_EVERY_MS:
                self._last_cleanup = now
                conn.execute(self._cleanup, (now,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _write(self, sql: str, params: tuple[Any, ...]) -> bool:
        cursor = self._connection().execute(sql, params)
        return cursor.rowcount == 1

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._open()
        assert self._conn is not None
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the event loop side -----------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-idem-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._executor, retry_when_locked, fn, *args)

    async def claim(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """Claim ``key`` in one ``BEGIN IMMEDIATE`` transaction (or answer a replay from a read)."""
        return await self._run(self._claim, key, fingerprint, owner, lease_ms, ttl_ms, trace_id)

    async def complete(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Store the response if ``owner`` still holds the claim."""
        params = (
            response.status,
            response.headers_blob(),
            response.body,
            int(response.body_stored),
            _wall_ms() + ttl_ms,
            key,
            owner,
        )
        return await self._run(self._write, self._complete, params)

    async def release(self, key: str, owner: str) -> bool:
        """Drop the claim if ``owner`` still holds it."""
        return await self._run(self._write, self._release, (key, owner))

    async def renew(self, key: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease if ``owner`` still holds the claim."""
        return await self._run(self._write, self._renew, (_wall_ms() + lease_ms, key, owner))

    async def start(self) -> None:
        """Nothing yet: the file is opened (and the table created) by the first call that needs it,
        so an instance that never sees a key never creates a file."""

    async def close(self) -> None:
        """Close the connection and stop the thread."""
        if self._executor is not None:
            await self._run(self._close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def ping(self) -> bool:
        """Whether the file answers a query."""
        try:
            await self._run(lambda: self._connection().execute("SELECT 1").fetchone())
        except Exception:
            return False
        return True
