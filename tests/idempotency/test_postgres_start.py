"""Many processes opening one PostgreSQL store at once: no deadlock, no error, one table."""

from __future__ import annotations

import asyncio
import uuid

from bastion.idempotency.stores.postgres import PostgresStore


async def test_concurrent_creators_of_one_table_never_deadlock(postgres_url: str) -> None:
    for _ in range(3):
        table = f"bastion_test_start_{uuid.uuid4().hex[:12]}"
        first = PostgresStore(postgres_url, table=table, timeout_s=5.0)
        await first.claim("existing", "f", "o", 60_000, 60_000)  # the table exists, as after a restart
        await first.close()
        stores = [PostgresStore(postgres_url, table=table, timeout_s=5.0) for _ in range(12)]
        try:
            # Each store creates (or upgrades) the table on its first claim, all at once.
            results = await asyncio.gather(
                *(store.claim(f"k{i}", "f", f"o{i}", 60_000, 60_000) for i, store in enumerate(stores)),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, errors
        finally:
            for store in stores:
                await store.close()
            import asyncpg

            conn = await asyncpg.connect(postgres_url)
            try:
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
            finally:
                await conn.close()
