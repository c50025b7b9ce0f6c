"""The application the multi-process tests run under uvicorn, behind bastion.

Every execution of ``POST /orders`` is recorded in a SQLite file shared by all
the server processes (``IDEM_TEST_RUNS_DB``) with the worker's process id, so a
test can count how often the handler really ran and signal the worker that runs
it. The ``X-Sleep`` request header (not part of the fingerprint) is how many
seconds the handler takes.
Bastion takes its configuration from the ``BASTION_*`` environment variables.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

import orjson

from bastion import Bastion

RUNS_DB = os.environ.get("IDEM_TEST_RUNS_DB", "runs.db")


def record(phase: str, key: str) -> int:
    """Add a row to the shared runs table; returns its id."""
    conn = sqlite3.connect(RUNS_DB, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, pid, key, phase)")
        row = (os.getpid(), key, phase)
        cursor = conn.execute("INSERT INTO runs (pid, key, phase) VALUES (?, ?, ?)", row)
        return int(cursor.lastrowid or 0)
    finally:
        conn.close()


def runs(path: str, key: str, phase: str) -> list[int]:
    """The process ids of the runs of ``phase`` for ``key`` (empty before the first run)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        rows = conn.execute("SELECT pid FROM runs WHERE key = ? AND phase = ? ORDER BY id", (key, phase))
        return [int(pid) for (pid,) in rows.fetchall()]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


async def orders(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET`` answers with the process id (readiness); ``POST`` runs the counted handler."""
    if scope["type"] != "http":
        raise RuntimeError("this app speaks HTTP only")  # bastion then runs lifespan by itself
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    payload: dict[str, Any] = {"pid": os.getpid()}
    status = 200
    if scope["method"] == "POST":
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key", b"").decode()
        run = await asyncio.to_thread(record, "started", key)
        await asyncio.sleep(float(headers.get(b"x-sleep", b"0")))
        await asyncio.to_thread(record, "finished", key)
        payload.update(run=run, request=orjson.loads(body) if body else None)
        status = 201
    content_type = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": content_type})
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})


app = Bastion(orders)
