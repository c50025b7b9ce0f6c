"""The SQLite store runs an operation again when SQLite answers "locked" without waiting."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from bastion.idempotency.stores.sqlite import BUSY_ATTEMPTS, retry_when_locked


def refusing(times: int, message: str = "database is locked") -> tuple[list[int], Callable[[int], int]]:
    calls: list[int] = []

    def operation(value: int) -> int:
        calls.append(value)
        if len(calls) <= times:
            raise sqlite3.OperationalError(message)
        return value * 2

    return calls, operation


def test_a_locked_database_is_tried_again_until_it_answers() -> None:
    calls, operation = refusing(BUSY_ATTEMPTS - 1)
    assert retry_when_locked(operation, 21) == 42
    assert len(calls) == BUSY_ATTEMPTS


def test_a_database_that_stays_locked_fails_after_the_last_attempt() -> None:
    calls, operation = refusing(BUSY_ATTEMPTS, "database table is locked")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        retry_when_locked(operation, 1)
    assert len(calls) == BUSY_ATTEMPTS


def test_other_errors_are_not_tried_again() -> None:
    calls, operation = refusing(1, "no such table: bastion_idempotency")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        retry_when_locked(operation, 1)
    assert len(calls) == 1
