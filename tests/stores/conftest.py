"""A redis-server of the test's own, which the tests may freeze or kill; a Redis Cluster of three masters."""

from tests.ratelimit.conftest import redis_server
from tests.stores.cluster import redis_cluster

__all__ = ["redis_cluster", "redis_server"]
