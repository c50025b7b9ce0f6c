"""A Redis Cluster of the test's own: three masters on free loopback ports, no replicas."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port


class RedisCluster:
    """Three ``redis-server --cluster-enabled yes`` masters sharing the 16384 slots."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        self.ports = [free_port() for _ in range(masters)]
        # The cluster bus would be on port + 10000, which may be taken or past 65535.
        self.bus_ports = [free_port() for _ in range(masters)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The store URL of the cluster (any node serves as the entry point)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def cli(self, port: int, *args: str) -> str:
        """``redis-cli`` on one node; its output."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            check=True,
            timeout=30,
        )
        return done.stdout.decode()

    def start(self) -> None:
        """Start the nodes, assign the slots and wait until every node says the cluster is ok."""
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            self.processes.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        str(bus_port),
                        "--cluster-config-file",
                        str(self.directory / f"nodes-{port}.conf"),
                        "--dir",
                        str(self.directory),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._poll(lambda port=port: self._answers(port), "redis-server did not start")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        for port in self.ports:
            self._poll(
                lambda port=port: "cluster_state:ok" in self.cli(port, "CLUSTER", "INFO"), "no cluster"
            )

    def _answers(self, port: int) -> bool:
        try:
            return "PONG" in self.cli(port, "PING")
        except subprocess.CalledProcessError:
            return False

    @staticmethod
    def _poll(ready: Callable[[], bool], message: str) -> None:
        for _ in range(400):
            if ready():
                return
            time.sleep(0.05)
        raise AssertionError(message)

    def stop(self) -> None:
        """Kill every node."""
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes.clear()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A running three-master Redis Cluster, stopped at the end of the module."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are not installed")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
