"""Observability: Prometheus metrics, OpenTelemetry spans, the live dashboard, JSON logs.

For guards and applications:

- :func:`record_event` adds a guard decision to the request's span (a no-op
  without tracing);
- :func:`start_upstream_span` starts the client span of a gateway's upstream call
  (``None`` without tracing);
- :func:`prepare_multiprocess_dir` switches metrics to multiprocess mode; call it
  in the parent process before starting workers.
"""

from __future__ import annotations

from bastion.observability.multiprocess import prepare_multiprocess_dir
from bastion.observability.otel import record_event, start_upstream_span

__all__ = ["prepare_multiprocess_dir", "record_event", "start_upstream_span"]
