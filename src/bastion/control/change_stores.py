"""Where admin changes are kept: SQLite, Redis or PostgreSQL, shared by every worker and host.

Each store holds one entry per ``(kind, name)`` and a version number that every
write raises by one. A worker asks for the version every ``admin.poll_interval``
and reads the entries only when it moved. A write names the version it was
validated against and is refused (``None``) when another write came first, so a
change is always validated against exactly the changes it joins.

- SQLite: two tables, each write in ``BEGIN IMMEDIATE``; calls run on a worker thread.
- PostgreSQL: the same two tables; a write locks the version row (``FOR UPDATE``).
- Redis: a hash of the entries and a counter, read and written by Lua scripts, so a
  reader never sees an entry without its version.
"""

# ruff: noqa: S608 - the only text put into SQL is a fixed table name.
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from bastion.control.changes import Change
from bastion.stores import StoreURL, parse_store_url
from bastion.stores.registry import Capability

T = TypeVar("T")
ENTRIES = "bastion_admin_changes"
VERSION = "bastion_admin_version"
_COLUMNS = "(kind TEXT, name TEXT, entry TEXT, PRIMARY KEY (kind, name))"
#: How long one store call may take before it counts as failed.
TIMEOUT_S = 5.0


class ChangeStore(Protocol):
    """The changes of the admin layer, in a store every worker shares."""

    name: str

    async def start(self) -> None:
        """Connect and create what is missing (tables)."""

    async def close(self) -> None:
        """Release the connection."""

    async def ping(self) -> bool:
        """Whether the store answers."""

    async def version(self) -> int:
        """The version of the changes (``0`` before the first write)."""

    async def read(self) -> tuple[int, dict[tuple[str, str], Change]]:
        """The version and every change, read together."""

    async def write(self, change: Change, *, expected: int, forget: bool = False) -> int | None:
        """Store ``change`` (or, with ``forget``, drop its entry) if the version is still
        ``expected``; the new version, or ``None`` when another write came first."""


def _encode(change: Change) -> bytes:
    return orjson.dumps(change.to_json())


def _decode(kind: str, name: str, raw: bytes | str) -> Change:
    return Change.from_json(kind, name, orjson.loads(raw))


class SQLiteChangeStore:
    """Admin changes in a SQLite file (one host; every process on it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"admin:sqlite:{path}"
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {ENTRIES} {_COLUMNS}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION} (id INTEGER PRIMARY KEY, version INTEGER)")
            conn.execute(f"INSERT OR IGNORE INTO {VERSION} VALUES (1, 0)")
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                return fn(self._connect())

        # (asyncio.timeout, not wait_for: wait_for in Python 3.11 can swallow a cancellation that
        # arrives as the call ends, and the cancelled poll would then never stop.)
        async with asyncio.timeout(TIMEOUT_S):
            return await asyncio.to_thread(call)

    async def start(self) -> None:
        """Create the tables if the file has none."""
        await self._run(lambda conn: None)

    async def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def ping(self) -> bool:
        """Whether the file can be read."""
        return await _answers(self)

    async def version(self) -> int:
        """The version of the changes."""
        return await self._run(lambda conn: int(conn.execute(f"SELECT version FROM {VERSION}").fetchone()[0]))

    async def read(self) -> tuple[int, dict[tuple[str, str], Change]]:
        """The version and every change, in one read transaction."""

        def read(conn: sqlite3.Connection) -> tuple[int, dict[tuple[str, str], Change]]:
            conn.execute("BEGIN")
            try:
                version = int(conn.execute(f"SELECT version FROM {VERSION}").fetchone()[0])
                rows = conn.execute(f"SELECT kind, name, entry FROM {ENTRIES}").fetchall()
            finally:
                conn.execute("COMMIT")
            return version, {(k, n): _decode(k, n, e) for k, n, e in rows}

        return await self._run(read)

    async def write(self, change: Change, *, expected: int, forget: bool = False) -> int | None:
        """Write ``change`` in ``BEGIN IMMEDIATE`` if the version is still ``expected``."""

        def write(conn: sqlite3.Connection) -> int | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = int(conn.execute(f"SELECT version FROM {VERSION}").fetchone()[0])
                if version != expected:
                    conn.execute("ROLLBACK")
                    return None
                version += 1
                if forget:
                    conn.execute(
                        f"DELETE FROM {ENTRIES} WHERE kind = ? AND name = ?", (change.kind, change.name)
                    )
                else:
                    stored = _encode(_versioned(change, version)).decode()
                    conn.execute(
                        f"INSERT OR REPLACE INTO {ENTRIES} VALUES (?, ?, ?)",
                        (change.kind, change.name, stored),
                    )
                conn.execute(f"UPDATE {VERSION} SET version = ?", (version,))
                conn.execute("COMMIT")
                return version
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

        return await self._run(write)


async def _answers(store: ChangeStore) -> bool:
    """Whether ``store`` answers a version read."""
    try:
        await store.version()
    except Exception:
        return False
    return True


def _versioned(change: Change, version: int) -> Change:
    return Change(change.kind, change.name, change.op, change.fields, change.actor, change.at, version)


_REDIS_READ = """
return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2])}
"""
_REDIS_WRITE = """
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version ~= tonumber(ARGV[1]) then return -1 end
version = version + 1
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  -- The entry's version goes in front of its JSON, which Redis never parses.
  redis.call('HSET', KEYS[2], ARGV[2], version .. '|' .. ARGV[3])
end
redis.call('SET', KEYS[1], version)
return version
"""


class RedisChangeStore:
    """Admin changes in Redis: a hash of entries and a version counter under one hash tag."""

    def __init__(self, url: str, prefix: str) -> None:
        # The one Redis client of bastion's stores (pool, timeouts, close and ping).
        from bastion.stores.redis import RedisResource

        self.url = url
        self.name = f"admin:redis:{parse_store_url(url).redacted}"
        self.resource = RedisResource(url, timeout_s=TIMEOUT_S / 20, max_connections=4)
        self.redis = self.resource.redis
        # One hash tag: both keys on one Redis Cluster slot, so one script reads or writes both.
        self._keys = (f"{{{prefix}}}:version", f"{{{prefix}}}:entries")

    async def start(self) -> None:
        """Check that Redis answers."""
        await self.redis.ping()

    async def close(self) -> None:
        """Close the connection pool."""
        await self.resource.close()

    async def ping(self) -> bool:
        """Whether Redis answers."""
        return await self.resource.ping()

    async def version(self) -> int:
        """The version counter."""
        return int(await self.redis.get(self._keys[0]) or 0)

    async def read(self) -> tuple[int, dict[tuple[str, str], Change]]:
        """The counter and every entry, read by one script."""
        version, flat = await self.redis.eval(_REDIS_READ, 2, *self._keys)
        changes: dict[tuple[str, str], Change] = {}
        for field, raw in zip(flat[::2], flat[1::2], strict=True):
            kind, _, name = field.decode().partition("\x00")
            stored_version, _, entry = raw.partition(b"|")
            changes[(kind, name)] = _versioned(_decode(kind, name, entry), int(stored_version))
        return int(version), changes

    async def write(self, change: Change, *, expected: int, forget: bool = False) -> int | None:
        """Write by one script that checks the counter first."""
        field = f"{change.kind}\x00{change.name}"
        entry = "" if forget else _encode(change).decode()
        version = await self.redis.eval(_REDIS_WRITE, 2, *self._keys, expected, field, entry)
        return None if int(version) < 0 else int(version)


class PostgresChangeStore:
    """Admin changes in PostgreSQL: two tables, a write locks the version row."""

    def __init__(self, url: str) -> None:
        # Imported here, not at start: a missing driver is refused with the configuration
        # (the store registry names the extra), not found later by the poll.
        import asyncpg  # noqa: F401

        self.url = url
        self.name = f"admin:postgres:{parse_store_url(url).redacted}"
        self._pool: Any = None
        # Callers that find no pool (the poll, readiness checks, the API) wait for one to be made:
        # each would otherwise make its own, and all but the last would stay open, unused.
        self._making = asyncio.Lock()

    async def start(self) -> None:
        """Connect and create the tables (one process at a time, by an advisory lock)."""
        await self._ready()

    async def _ready(self) -> Any:
        """The connection pool, made (with the tables) on first use and after a failed start."""
        if self._pool is not None:
            return self._pool
        async with self._making:
            if self._pool is None:
                self._pool = await self._make_pool()
        return self._pool

    async def _make_pool(self) -> Any:
        import asyncpg

        pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=2, timeout=TIMEOUT_S, command_timeout=TIMEOUT_S
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('bastion_admin_changes'))")
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {ENTRIES} {_COLUMNS}")
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {VERSION} (id int PRIMARY KEY, version bigint)"
                )
                await conn.execute(f"INSERT INTO {VERSION} VALUES (1, 0) ON CONFLICT DO NOTHING")
        except BaseException:
            await pool.close()
            raise
        return pool

    async def close(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        """Whether PostgreSQL answers."""
        return await _answers(self)

    async def version(self) -> int:
        """The version of the changes."""
        pool = await self._ready()
        return int(await pool.fetchval(f"SELECT version FROM {VERSION} WHERE id = 1"))

    async def read(self) -> tuple[int, dict[tuple[str, str], Change]]:
        """The version and every change, in one repeatable-read transaction."""
        pool = await self._ready()
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            version = int(await conn.fetchval(f"SELECT version FROM {VERSION} WHERE id = 1"))
            rows = await conn.fetch(f"SELECT kind, name, entry FROM {ENTRIES}")
        return version, {(r[0], r[1]): _decode(r[0], r[1], r[2]) for r in rows}

    async def write(self, change: Change, *, expected: int, forget: bool = False) -> int | None:
        """Write in a transaction that locks the version row."""
        pool = await self._ready()
        async with pool.acquire() as conn, conn.transaction():
            version = int(await conn.fetchval(f"SELECT version FROM {VERSION} WHERE id = 1 FOR UPDATE"))
            if version != expected:
                return None
            version += 1
            if forget:
                await conn.execute(
                    f"DELETE FROM {ENTRIES} WHERE kind = $1 AND name = $2", change.kind, change.name
                )
            else:
                await conn.execute(
                    f"INSERT INTO {ENTRIES} VALUES ($1, $2, $3) "
                    "ON CONFLICT (kind, name) DO UPDATE SET entry = $3",
                    change.kind,
                    change.name,
                    _encode(_versioned(change, version)).decode(),
                )
            await conn.execute(f"UPDATE {VERSION} SET version = $1 WHERE id = 1", version)
            return version


#: The admin stores in the store registry; the context is ``admin.key_prefix``.
STORES: Capability[str, ChangeStore] = Capability("admin", "admin changes")


@STORES.register("sqlite")
def _sqlite(url: StoreURL, prefix: str) -> ChangeStore:
    return SQLiteChangeStore(url.path)


@STORES.register("redis")
def _redis(url: StoreURL, prefix: str) -> ChangeStore:
    return RedisChangeStore(url.url, prefix)


@STORES.register("postgres")
def _postgres(url: StoreURL, prefix: str) -> ChangeStore:
    return PostgresChangeStore(url.url)
