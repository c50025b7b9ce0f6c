"""Observability: Prometheus metrics, OpenTelemetry spans, the live dashboard, JSON logs.

For guards and applications:

- :func:`record_event` adds a guard decision to the request's span (a no-op
  without tracing);
- :func:`prepare_multiprocess_dir` switches metrics to multiprocess mode; call it
  in the parent process before starting workers.
"""

from __future__ import annotations

from bastion.observability.multiprocess import prepare_multiprocess_dir
from bastion.observability.otel import record_event

__all__ = ["prepare_multiprocess_dir", "record_event"]
