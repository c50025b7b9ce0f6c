"""Metrics across worker processes (``bastion gateway --workers N``, ``uvicorn --workers N``).

Each worker writes its values to memory-mapped files in one directory (the
``prometheus_client`` multiprocess mode); a scrape of any worker reads them all,
so ``/metrics`` and the dashboard show the sum over every worker.

The parent process calls :func:`prepare_multiprocess_dir` once, before it starts
the workers; the workers inherit ``PROMETHEUS_MULTIPROC_DIR`` and each
:class:`~bastion.observability.metrics.Metrics` they build switches to this mode
by itself.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def prepare_multiprocess_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Make (or empty) the shared metrics directory and export it to future child processes.

    Call it in the parent, before any worker starts; with no ``path``, a fresh
    temporary directory is made. Values left by an earlier run are removed, as a
    counter that survives a restart would double count. Returns the directory.
    """
    directory = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="bastion-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[ENV_VAR] = str(directory)
    return directory


def multiprocess_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The shared metrics directory when multiprocess mode is on, else ``None``."""
    value = (os.environ if env is None else env).get(ENV_VAR)
    return Path(value) if value else None


def use_shared_values() -> None:
    """Make metrics created from now on write to the shared files.

    ``prometheus_client`` picks its value class when it is first imported; a process
    that imported it before the variable was set (a parent that forks its workers)
    would otherwise keep per-process values that no scrape of another worker sees.
    """
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # untyped upstream


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_workers(directory: Path) -> list[int]:
    """Stop counting the live gauges (active requests) of workers that have exited.

    Counters and histograms of a dead worker stay: what it counted did happen.
    Returns the process ids that were forgotten.
    """
    dead: set[int] = set()
    for entry in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match is not None and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]  # untyped upstream
    return sorted(dead)


def collect_all_workers(directory: Path) -> list[Metric]:
    """Every metric family, summed over the workers that wrote to ``directory``."""
    forget_dead_workers(directory)
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]  # untyped upstream
    return list(registry.collect())
