"""A redis-server of the test's own, which the tests may freeze or kill."""

from tests.ratelimit.conftest import redis_server

__all__ = ["redis_server"]
