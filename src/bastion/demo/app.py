"""The demo checkout API: a plain Starlette app with no error handling, limits or checks of its own.

Everything that makes it production-ready comes from bastion around it. Orders
charge a fake payment provider (a short delay, then a row in ``charges``), so a
duplicate charge would be visible in ``GET /orders``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.problems import NotFound, Problem

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    items TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    charge_id TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bookings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    start_date TEXT NOT NULL,
    end_date TEXT NOT NULL,
    guests INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL,
    age INTEGER NOT NULL,
    name TEXT NOT NULL
);
"""


class InvalidCredentials(Problem):
    """401 Invalid credentials: the demo's own problem, raised by its login handler."""

    status = 401
    code_default = "INVALID_CREDENTIALS"
    title_default = "Invalid credentials"
    meaning = "The email and password do not match a user (demo API)."
    action = "Check the credentials; repeated failures are rate limited."


class DemoDatabase:
    """The demo's SQLite database: orders, charges, users and bookings."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def insert(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one INSERT and return the new row id."""
        with self._lock:
            cursor = self._conn.execute(sql, params)
            return int(cursor.lastrowid or 0)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _order(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "items": orjson.loads(row[1]),
        "amount": row[2],
        "currency": row[3],
        "charge_id": row[4],
        "status": row[5],
    }


def create_demo_app(data_dir: Path, *, payment_delay: float = 0.3) -> Starlette:
    """The demo API, keeping its data in ``data_dir/demo.db``."""
    db = DemoDatabase(data_dir / "demo.db")

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def list_orders(request: Request) -> Response:
        rows = await asyncio.to_thread(db.execute, "SELECT * FROM orders ORDER BY id")
        charges = await asyncio.to_thread(db.execute, "SELECT COUNT(*) FROM charges")
        return _json({"orders": [_order(r) for r in rows], "charges": charges[0][0]})

    async def create_order(request: Request) -> Response:
        body = orjson.loads(await request.body())
        currency = body.get("currency", "EUR")
        # The fake payment provider: slow enough that a retry can arrive meanwhile.
        await asyncio.sleep(payment_delay)
        charge_id = "ch_" + os.urandom(8).hex()
        await asyncio.to_thread(
            db.insert,
            "INSERT INTO charges (id, amount, currency) VALUES (?, ?, ?)",
            (charge_id, body["amount"], currency),
        )
        order_id = await asyncio.to_thread(
            db.insert,
            "INSERT INTO orders (items, amount, currency, charge_id, status) VALUES (?, ?, ?, ?, ?)",
            (orjson.dumps(body["items"]).decode(), body["amount"], currency, charge_id, "paid"),
        )
        rows = await asyncio.to_thread(db.execute, "SELECT * FROM orders WHERE id = ?", (order_id,))
        return _json(_order(rows[0]), status=201)

    async def get_order(request: Request) -> Response:
        order_id = int(request.path_params["id"])
        rows = await asyncio.to_thread(db.execute, "SELECT * FROM orders WHERE id = ?", (order_id,))
        if not rows:
            raise NotFound(detail=f"order {order_id} does not exist")
        return _json(_order(rows[0]))

    async def create_user(request: Request) -> Response:
        body = orjson.loads(await request.body())
        user_id = await asyncio.to_thread(
            db.insert,
            "INSERT INTO users (email, age, name) VALUES (?, ?, ?)",
            (body["email"], body["age"], body["name"]),
        )
        return _json({"id": user_id, "email": body["email"], "age": body["age"], "name": body["name"]}, 201)

    async def create_booking(request: Request) -> Response:
        # bastion has checked the schema and the rule `self.start < self.end`.
        body = orjson.loads(await request.body())
        booking = {
            "room": body["room"],
            "start": body["start"],
            "end": body["end"],
            "guests": body.get("guests", 1),
        }
        booking_id = await asyncio.to_thread(
            db.insert,
            "INSERT INTO bookings (room, start_date, end_date, guests) VALUES (?, ?, ?, ?)",
            (booking["room"], booking["start"], booking["end"], booking["guests"]),
        )
        return _json({"id": booking_id, **booking}, 201)

    async def login(request: Request) -> Response:
        body = orjson.loads(await request.body())
        # The demo knows one account; anything else is a failed login.
        if body.get("email") == "demo@example.com" and body.get("password") == "demo":
            token = hashlib.sha256(os.urandom(16)).hexdigest()
            return _json({"token": token})
        raise InvalidCredentials(detail="the email or the password is wrong")

    async def daily_report(request: Request) -> Response:
        # A crash whose message holds a secret, as real ones often do.
        raise RuntimeError("could not connect to postgresql://report:hunter2@10.0.0.7/sales")

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders", create_order, methods=["POST"]),
            Route("/orders/{id:int}", get_order, methods=["GET"]),
            Route("/users", create_user, methods=["POST"]),
            Route("/bookings", create_booking, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/reports/daily", daily_report, methods=["GET"]),
        ],
        lifespan=_closing(db),
    )
    return app


def _closing(db: DemoDatabase) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        db.close()

    return lifespan
