"""What bastion's own servers (``bastion gateway``, ``bastion demo``) ask of uvicorn.

uvicorn on its own never cuts off a client that sends its request head slowly,
puts no limit on the head's size or number of fields, answers its own parse
errors in plain text and accepts connections until the process runs out of file
descriptors. bastion's servers run uvicorn's httptools protocol with those limits
added (:class:`bastion.gateway.transport.GuardedHttpProtocol`), configured from the
``gateway`` section:

- the whole request head within ``header_timeout``, then ``408 REQUEST_TIMEOUT``;
- at most ``body_timeout`` of silence between two chunks of a request body;
- at most ``max_header_bytes`` and ``max_headers`` in a head, else ``431 HEADERS_TOO_LARGE``;
- at most ``max_connections`` per process, else ``503 TOO_MANY_CONNECTIONS`` at once;
- a request that is not HTTP/1.1 is ``400 BAD_REQUEST``, all as problems;
- the open-file limit raised to its hard limit at start.

Where the installed uvicorn is not a release the protocol was tested on, or does not
have the shape it was written against (:mod:`bastion.gateway.uvicorn_fit`),
:func:`uvicorn_options` says so once, in the log, and falls back to uvicorn's public
protocol and settings (keep-alive timeout, ``limit_concurrency``,
``h11_max_incomplete_event_size``), which cover less; see docs/deployment.md.

With ``--workers N``, uvicorn's supervisor answers SIGHUP by replacing each worker
with a new process (its connections, requests and counters go with it), where
bastion's workers reload in place (:mod:`bastion.control.watch`):
:class:`ForwardingSupervisor` sends SIGHUP on to every started worker instead. It
leans on the supervisor's ``handle_hup`` hook and its ``processes`` (each with
``pid`` and ``is_ready``); :func:`supervisor_problem` checks them and the release,
and elsewhere :func:`serve` runs ``uvicorn.run`` as it is and says so (SIGHUP then
restarts the workers, as uvicorn does).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import resource
import signal
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from bastion.config.gateway import GatewayConfig
from bastion.gateway.fence import outside_tested
from bastion.observability.logwriter import close_writers
from bastion.problems import (
    BadRequest,
    HeadersTooLarge,
    Problem,
    ProblemLinks,
    RequestTimeout,
    TooManyConnections,
    render,
)
from bastion.tracing import format_traceparent, new_span_id, new_trace_id

#: File descriptors kept out of the connection ceiling for everything else a process opens
#: (listening sockets, store connections, log and database files).
RESERVED_DESCRIPTORS = 128
#: The lowest connection ceiling start-up lowers ``max_connections`` to.
MIN_CONNECTIONS = 16

#: The uvicorn releases :class:`ForwardingSupervisor` was tested on (0.55, up to 0.56 not included).
SUPERVISOR_TESTED_UVICORN = ((0, 55), (0, 56))
#: How long the supervisor waits for a worker to say whether it has started, in seconds.
READY_TIMEOUT = 1.0

_log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The limits one server process applies to its client connections (plain data: workers get a copy)."""

    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_header_bytes: int
    max_headers: int
    max_connections: int
    #: ``errors.type_base`` and ``docs_url``, for the problems the server answers itself.
    type_base: str | ProblemLinks

    @classmethod
    def from_config(cls, settings: GatewayConfig, type_base: str | ProblemLinks) -> ServerLimits:
        """The limits the ``gateway`` section configures."""
        return cls(
            header_timeout=settings.header_timeout.seconds,
            body_timeout=settings.body_timeout.seconds,
            keepalive_timeout=settings.client_keepalive_timeout.seconds,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_connections=settings.max_connections,
            type_base=type_base,
        )

    def within_open_files(self, open_files: int, reserved: int) -> ServerLimits:
        """These limits with ``max_connections`` lowered to fit ``open_files`` descriptors.

        ``reserved`` descriptors stay free for the upstream pool and the rest of the
        process, so that running out of them never fails a request already accepted.
        """
        ceiling = max(MIN_CONNECTIONS, open_files - reserved - RESERVED_DESCRIPTORS)
        if self.max_connections <= ceiling:
            return self
        _log.warning(
            "max_connections lowered from %d to %d: the open-file limit is %d",
            self.max_connections,
            ceiling,
            open_files,
        )
        return replace(self, max_connections=ceiling)


class RefusalLog:
    """The log of what a server refuses (connections over ``max_connections``, malformed requests).

    One line a second at most for each, with counts.

    A flood of connections is refused by the thousand; one line each would flood the
    log as well. Each server process has its own.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.refused = 0
        self.logged_at = -interval
        #: Requests refused since the last line about them, by reason.
        self.requests: dict[str, int] = {}
        self.requests_logged_at = -interval

    def refused_one(self, now: float, open_connections: int) -> None:
        """Count one refused connection; log the count if the last line is ``interval`` old."""
        self.refused += 1
        if now - self.logged_at >= self.interval:
            _log.warning(
                "%d connection(s) refused: %d are open (gateway.max_connections)",
                self.refused,
                open_connections,
            )
            self.refused = 0
            self.logged_at = now

    def refused_request(self, now: float, reason: str) -> None:
        """Count a request the server refused itself (400, 431); log the counts if the last line is old.

        One line a second at most, whatever a client sends: a flood of malformed
        requests is not a flood of log lines.
        """
        requests = self.requests
        if reason not in requests and len(requests) >= _MAX_REASONS:
            reason = "other"
        requests[reason] = requests.get(reason, 0) + 1
        if now - self.requests_logged_at >= self.interval:
            summary = ", ".join(f"{why} ({count})" for why, count in requests.items())
            _log.warning("Invalid HTTP request received: %s", summary)
            requests.clear()
            self.requests_logged_at = now


#: The most reasons one line about refused requests names (the rest count as ``other``).
_MAX_REASONS = 16


def raise_open_files_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; returns the soft limit now in force.

    Worker processes inherit it. Where the raise is refused (a hard limit the kernel
    caps lower), the soft limit stays as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def headers_too_large(limits: ServerLimits) -> Problem:
    """``431 HEADERS_TOO_LARGE``: the request head is over ``max_header_bytes`` or ``max_headers``."""
    return HeadersTooLarge(
        f"The request head may have at most {limits.max_header_bytes} bytes "
        f"and {limits.max_headers} header fields."
    )


def request_timeout(part: str, seconds: float) -> Problem:
    """``408 REQUEST_TIMEOUT``: the request ``part`` (head, body) did not arrive in time."""
    return RequestTimeout(f"The request {part} did not arrive within {seconds:g} s.")


def too_many_connections() -> Problem:
    """``503 TOO_MANY_CONNECTIONS``: the process holds ``max_connections`` already."""
    return TooManyConnections(
        "The server has too many open connections; retry shortly.", headers={"Retry-After": "1"}
    )


def invalid_request() -> Problem:
    """``400 BAD_REQUEST``: the bytes received are not an HTTP/1.1 request."""
    return BadRequest("The request is not valid HTTP/1.1.")


def problem_response(
    problem: Problem, type_base: str | ProblemLinks, default_headers: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    """The whole HTTP/1.1 response (head and body) for a problem the server answers on its own.

    It always closes the connection: what follows on it cannot be trusted to be a request.
    """
    trace_id = new_trace_id()
    rendered = render(
        problem,
        type_base=type_base,
        trace_id=trace_id,
        instance=None,
        extra_headers=[(b"traceparent", format_traceparent(trace_id, new_span_id()))],
    )
    phrase = HTTPStatus(rendered.status).phrase
    lines = [f"HTTP/1.1 {rendered.status} {phrase}".encode()]
    lines += [name + b": " + value for name, value in (*(default_headers or ()), *rendered.headers)]
    lines += [b"connection: close", b"", rendered.body]
    return b"\r\n".join(lines)


def uvicorn_options(limits: ServerLimits, *, coalesce: bool = False, own: bool = False) -> dict[str, Any]:
    """The ``uvicorn.run`` arguments that apply ``limits`` (and take the client's address as is).

    ``own`` picks the gateway's own HTTP/1.1 server (:mod:`bastion.gateway.protocol`,
    ``gateway.server: bastion``); ``coalesce`` uvicorn's protocol with the gateway's
    writes (gathered per event-loop turn); otherwise the guarded protocol alone.
    Without httptools, or with a uvicorn whose
    internals differ from those the protocol was written for, uvicorn's public
    settings stand in: its keep-alive timeout, ``limit_concurrency`` (a plain-text
    503 once the head has arrived) and, for h11, ``h11_max_incomplete_event_size``;
    the head and body timeouts are then not enforced.
    """
    options: dict[str, Any] = {
        "timeout_keep_alive": limits.keepalive_timeout,
        # bastion reads forwarding headers itself, from clients.trusted_proxies only:
        # uvicorn must not rewrite the client's address first.
        "proxy_headers": False,
    }
    if own:
        from bastion.gateway.protocol import GatewayProtocol, slot_problem

        problem = slot_problem()
        if problem is None:
            options["http"] = functools.partial(GatewayProtocol, limits=limits, refusals=RefusalLog())
            return options
        _log.warning("serving with uvicorn's protocol, not the gateway's own (%s)", problem)
    try:
        from bastion.gateway.transport import GatewayHttpProtocol, GuardedHttpProtocol
    except ImportError as exc:
        _log.warning(
            "serving with uvicorn's own %s protocol, not bastion's (%s): header and body timeouts"
            " are not enforced, heads are limited by uvicorn's settings only",
            public_protocol(),
            exc,
        )
        options.update(
            http="auto",
            limit_concurrency=limits.max_connections,
            h11_max_incomplete_event_size=limits.max_header_bytes,
        )
        return options
    protocol = GatewayHttpProtocol if coalesce else GuardedHttpProtocol
    # uvicorn calls the protocol "class" with its own arguments; a partial adds the
    # limits and, unlike a class made here, pickles for --workers' processes (each
    # process gets its own copy of the refusal log).
    options["http"] = functools.partial(protocol, limits=limits, refusals=RefusalLog())
    return options


def public_protocol() -> str:
    """The protocol uvicorn's ``http="auto"`` picks here: httptools where installed, else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def supervisor_problem() -> str | None:
    """What differs in the installed uvicorn from what :class:`ForwardingSupervisor` needs, if anything."""
    from uvicorn.supervisors.multiprocess import Process

    outside = outside_tested("uvicorn", uvicorn.__version__, SUPERVISOR_TESTED_UVICORN)
    if outside is not None:
        return outside
    if not callable(getattr(Multiprocess, "handle_hup", None)):
        return "uvicorn's supervisor has no handle_hup"
    pid = getattr(Process, "pid", None)
    if not callable(getattr(Process, "is_ready", None)) or not isinstance(pid, property):
        return "uvicorn's worker processes have no is_ready or pid"
    if list(inspect.signature(Multiprocess.__init__).parameters) != ["self", "config", "sockets"]:
        return "uvicorn's supervisor takes other arguments"
    return None


class ForwardingSupervisor(Multiprocess):
    """uvicorn's supervisor, except that SIGHUP goes on to every started worker (which reloads)."""

    def handle_hup(self) -> None:
        """Forward SIGHUP to each worker that has started; restart none."""
        for process in list(self.processes):
            # A worker still starting reads the file as it starts; one that has started
            # has its SIGHUP handler installed (a SIGHUP would otherwise end it).
            pid = process.pid
            if pid is not None and process.is_ready(timeout=READY_TIMEOUT):
                try:
                    os.kill(pid, signal.SIGHUP)
                except ProcessLookupError:
                    continue


def serve(app: str, **options: Any) -> None:
    """``uvicorn.run(app, **options)``, with :class:`ForwardingSupervisor` over several workers.

    Every log line waiting in this process is written before it returns or raises.
    """
    try:
        _serve(app, **options)
    finally:
        close_writers()


def _serve(app: str, **options: Any) -> None:
    if options.get("workers", 1) <= 1:
        uvicorn.run(app, **options)
        return
    problem = supervisor_problem()
    if problem is not None:
        _log.warning("SIGHUP restarts the workers instead of reloading them in place (%s)", problem)
        uvicorn.run(app, **options)
        return
    config = uvicorn.Config(app, **options)
    sock = config.bind_socket()
    try:
        ForwardingSupervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
