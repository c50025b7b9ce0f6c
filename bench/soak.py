"""A bounded soak of ``bastion gateway``: steady load, pipelining and hostile clients at once, memory watched.

    .venv/bin/python bench/soak.py [--duration 300] [--server bastion|uvicorn]
                                   [--workers 1] [--store memory|redis]

A benchmark run lasts seconds and shows speed; a server that leaks a buffer per
hostile connection, or a file descriptor per pipelined burst, only shows it after
minutes of mixed traffic. This runs, for ``--duration`` seconds and all at once:

- wrk, 32 connections, a Lua script mixing ``GET /items/{id}`` and ``POST /orders``
  with a JSON body and a fresh ``Idempotency-Key`` (bench/gateway.py's workloads);
- a client sending bursts of 50 pipelined requests (GETs and POSTs in a random
  order) on one connection, checking that every response arrives, in order, whole;
- hostile clients: a head trickled a byte a second, a body that stops halfway,
  connections opened and left silent, ``Content-Length`` with ``Transfer-Encoding``,
  an oversized head; each must get its documented answer (``408``, ``400``, ``431``
  problems, a silent close for a connection that sent nothing) in bounded time;
- a client reading a 5 MiB response at 64 KiB/s, when the upstream has a route for
  one (bench/gateway.py's upstream has none: the summary says it was skipped).

The upstream and the gateway's configuration are bench/gateway.py's (the
every-guard target, on ``--store``), with ``gateway.server`` from ``--server``;
the gateway's ``header_timeout`` and ``body_timeout`` are shortened to 2 s so that
each slow hostile case ends in seconds and a short run still covers every case
many times (the defaults, 10 s and 30 s, only change how long each one waits). On
the memory store, idempotency's cap on stored responses (``idempotency.max_memory``)
is lowered to 4 MiB: the store is a cache that grows to its cap by design (64 MiB
by default, minutes of this load), and memory that grows after the cap is what a
soak is after; a low cap also keeps eviction busy for the whole run. A warm-up of
WARMUP_S seconds of wrk alone comes first: imports, pools, caches and that cap are
reached before the clock starts.

Every second the gateway's processes (supervisor and workers) are sampled from
/proc: resident memory, open file descriptors, threads. The summary gives wrk's
counts, the clients' verdicts, memory at 10% of the run, at the end and its
maximum, descriptors, and the gateway's warning and error log lines counted by
message. The exit status is 1 when a pipelined burst or a hostile case failed, wrk
saw socket errors (the hostile clients use their own connections, so they explain
none of wrk's), descriptors grew by more than 20 or memory by more than 20%
between 10% of the run and its end, or the gateway died.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).parent))

import gateway as bench  # bench/gateway.py: the upstream, the configuration, ports, /proc

#: The gateway's head and body timeouts in the soak (see the module's docstring).
LIMIT_S = 2.0
#: How much later than its limit a hostile case may be answered on a loaded machine.
GRACE_S = 3.0
BURST = 50
WARMUP_S = 5.0
SOAK_MAX_MEMORY = "4MiB"
CONNECTIONS = 32
BIG_PATH = "/big"
BIG_BYTES = 5 * 1024 * 1024
SLOW_RATE = 64 * 1024
ITEM = b'{"id": 1, "name": "book", "price": 1200}'
ORDER = b'{"id": 7, "status": "created"}'
ORDER_BODY = b'{"item": "book-42", "quantity": 2, "email": "reader@example.com"}'

MIX_SCRIPT = """
local body = '{"item": "book-42", "quantity": 2, "email": "reader@example.com"}'
local prefix = "%(prefix)s"
local counter = 0
local id = 0
setup = function(thread)
  id = id + 1
  thread:set("tid", id)
end
request = function()
  counter = counter + 1
  if counter %% 2 == 0 then
    local headers = {}
    headers["Content-Type"] = "application/json"
    headers["Idempotency-Key"] = prefix .. "-" .. tostring(tid) .. "-" .. tostring(counter)
    headers["X-API-Key"] = "soak-wrk"
    return wrk.format("POST", "/orders", headers, body)
  end
  return wrk.format("GET", "/items/" .. tostring(counter %% 100), {["X-API-Key"] = "soak-wrk"})
end
"""


# -- the gateway's processes, from /proc ----------------------------------------------------


@dataclass
class Sample:
    elapsed: float
    rss_kib: int
    fds: int
    threads: int
    processes: int


def sample(pid: int, elapsed: float) -> Sample:
    """Resident memory, descriptors and threads summed over ``pid`` and its descendants."""
    rss = fds = threads = processes = 0
    for member in bench.process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
            count = len(os.listdir(f"/proc/{member}/fd"))
        except OSError:
            continue  # gone while being read
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        threads += int(fields.get("Threads", "0"))
        fds += count
        processes += 1
    return Sample(elapsed, rss, fds, threads, processes)


# -- the clients -------------------------------------------------------------------------------


@dataclass
class Tally:
    """Verdicts of one kind of client, shared between threads."""

    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    reasons: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, case: str, problem: str | None) -> None:
        with self.lock:
            if problem is None:
                self.ok[case] += 1
            else:
                self.failed[case] += 1
                if len(self.reasons) < 10:
                    self.reasons.append(f"{case}: {problem}")


def read_response(reader: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One response from ``reader``: status, headers (lower-case names), the whole body."""
    status_line = reader.readline(65_537)
    if not status_line:
        raise ConnectionError("the connection closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(65_537)
        if not line:
            raise ConnectionError("the connection closed inside a response head")
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        body = reader.read(length)
        if len(body) != length:
            raise ConnectionError(f"a body of {len(body)} bytes where {length} were announced")
        return status, headers, body
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(reader.readline(1024).split(b";")[0], 16)
            chunk = reader.read(size + 2)
            if len(chunk) != size + 2:
                raise ConnectionError("the connection closed inside a chunk")
            if size == 0:
                return status, headers, b"".join(chunks)
            chunks.append(chunk[:-2])
    raise ConnectionError(f"a response of unknown length: {headers}")


def pipelined(port: int, deadline: float, tally: Tally, bursts_per_connection: int = 20) -> None:
    """Bursts of BURST pipelined GETs and POSTs, each answer checked in place, until ``deadline``.

    Each request sends its own ``X-Request-ID``, which the gateway echoes on its
    response: a response out of place, lost or doubled does not go unnoticed. The
    order of GETs and POSTs is random per burst, and each must come with its own
    status and the upstream's whole body.
    """
    sock: socket.socket | None = None
    reader: BinaryIO | None = None
    sent_on_connection = 0
    while time.monotonic() < deadline:
        if sock is None:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError as exc:
                tally.record("burst", f"cannot connect: {exc}")
                time.sleep(1.0)
                continue
            reader = sock.makefile("rb")
            sent_on_connection = 0
        assert reader is not None
        kinds = [random.random() < 0.5 for _ in range(BURST)]
        ids = [uuid.uuid4().hex for _ in range(BURST)]
        requests = []
        for is_post, request_id in zip(kinds, ids, strict=True):
            if is_post:
                requests.append(
                    b"POST /orders HTTP/1.1\r\nHost: soak\r\nX-API-Key: soak-pipelined\r\n"
                    b"Content-Type: application/json\r\nIdempotency-Key: %s\r\nX-Request-ID: %s\r\n"
                    b"Content-Length: %d\r\n\r\n%s"
                    % (uuid.uuid4().hex.encode(), request_id.encode(), len(ORDER_BODY), ORDER_BODY)
                )
            else:
                requests.append(
                    b"GET /items/%d HTTP/1.1\r\nHost: soak\r\nX-API-Key: soak-pipelined\r\n"
                    b"X-Request-ID: %s\r\n\r\n" % (random.randrange(100), request_id.encode())
                )
        problem = None
        try:
            sock.sendall(b"".join(requests))
            for position, (is_post, request_id) in enumerate(zip(kinds, ids, strict=True)):
                status, headers, body = read_response(reader)
                expected = (201, ORDER) if is_post else (200, ITEM)
                echoed = headers.get("x-request-id")
                if (status, body) != expected or echoed != request_id:
                    problem = f"response {position}: {status} {body[:80]!r} (request id {echoed})"
                    break
        except (OSError, ValueError, IndexError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        tally.record("burst", problem)
        sent_on_connection += 1
        if problem is not None or sent_on_connection >= bursts_per_connection:
            reader.close()
            sock.close()
            sock = reader = None
        time.sleep(0.1)
    if sock is not None and reader is not None:
        reader.close()
        sock.close()


def read_until_closed(sock: socket.socket, until: float) -> bytes:
    """Everything the server sends until it closes the connection or ``until`` passes."""
    received = b""
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            chunk = sock.recv(65_536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            break
        if not chunk:
            return received
        received += chunk
    raise TimeoutError(f"still open after the bound, {len(received)} bytes received")


def problem_in(received: bytes, status: int, code: str) -> str | None:
    """None when ``received`` is one problem response with ``status`` and ``code`` that closes."""
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(f"HTTP/1.1 {status} ".encode()):
        return f"expected {status}, got {received[:120]!r}"
    lowered = head.lower()
    if b"application/problem+json" not in lowered or b"connection: close" not in lowered:
        return f"not a closing problem: {head[:300]!r}"
    if received.count(b"HTTP/1.1 ") != 1:
        return "more than one response"
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"not JSON: {body[:120]!r}"
    if problem.get("status") != status or problem.get("code") != code:
        return f"problem {problem.get('status')} {problem.get('code')}, expected {status} {code}"
    return None


def exchange(port: int, data: bytes, bound: float) -> tuple[float, bytes]:
    """Send ``data`` (maybe nothing), read until the server closes within ``bound`` seconds."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=bound) as sock:
        if data:
            sock.sendall(data)
        return time.monotonic() - started, read_until_closed(sock, started + bound)


def trickled_head(port: int) -> str | None:
    """A head sent a byte a second: 408 once the whole head is overdue (header_timeout)."""
    bound = LIMIT_S + GRACE_S
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=bound) as sock:
        sock.sendall(b"GET /items/1 HTTP/1.1\r\nHost: soak\r\n")
        for byte in b"X-Trickle: " + b"a" * 64:
            if select.select([sock], [], [], 1.0)[0] or time.monotonic() - started > bound:
                break  # the answer has come (or is overdue)
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
        received = read_until_closed(sock, started + bound)
    return problem_in(received, 408, "REQUEST_TIMEOUT")


def stopped_body(port: int) -> str | None:
    """Half a declared body, then silence: 408 after body_timeout."""
    head = (
        b"POST /orders HTTP/1.1\r\nHost: soak\r\nX-API-Key: soak-hostile\r\n"
        b"Content-Type: application/json\r\n"
        b"Idempotency-Key: %s\r\nContent-Length: %d\r\n\r\n" % (uuid.uuid4().hex.encode(), len(ORDER_BODY))
    )
    _, received = exchange(port, head + ORDER_BODY[: len(ORDER_BODY) // 2], LIMIT_S + GRACE_S)
    return problem_in(received, 408, "REQUEST_TIMEOUT")


def silent(port: int, count: int = 4) -> str | None:
    """``count`` connections that send nothing: each closed without a byte of answer (header_timeout)."""
    bound = LIMIT_S + GRACE_S
    started = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=bound) for _ in range(count)]
    try:
        for sock in socks:
            received = read_until_closed(sock, started + bound)
            if received:
                return f"an answer to nothing: {received[:120]!r}"
    finally:
        for sock in socks:
            sock.close()
    return None


def length_and_chunked(port: int) -> str | None:
    """Content-Length and Transfer-Encoding together (a smuggling attempt): 400 at once."""
    raw = (
        b"POST /orders HTTP/1.1\r\nHost: soak\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /items/1 HTTP/1.1\r\nHost: soak\r\n\r\n"
    )
    _, received = exchange(port, raw, GRACE_S)
    return problem_in(received, 400, "BAD_REQUEST")


def oversized_head(port: int) -> str | None:
    """A header over max_header_bytes (32 KiB): 431, nothing of it echoed.

    The filler is a letter no hex digit is: the answer carries random hex trace ids,
    in which a run such as ``aaaa`` turns up about once in a thousand answers.
    """
    raw = b"GET /items/1 HTTP/1.1\r\nHost: soak\r\nX-Big: " + b"Z" * 33_000 + b"\r\n\r\n"
    try:
        _, received = exchange(port, raw, GRACE_S)
    except (BrokenPipeError, ConnectionResetError) as exc:
        return f"{type(exc).__name__} before an answer"
    echoed = received.find(b"ZZZZ")
    return problem_in(received, 431, "HEADERS_TOO_LARGE") or (
        f"the head is echoed: {received[max(0, echoed - 60) : echoed + 20]!r}" if echoed >= 0 else None
    )


#: Each case, the longest it may take, and the pause between two of its runs.
HOSTILE: dict[str, tuple[Callable[[int], str | None], float, float]] = {
    "trickled head -> 408": (trickled_head, LIMIT_S + GRACE_S, 0.5),
    "body stopped halfway -> 408": (stopped_body, LIMIT_S + GRACE_S, 0.5),
    "silent connections -> closed": (silent, LIMIT_S + GRACE_S, 0.5),
    "Content-Length with Transfer-Encoding -> 400": (length_and_chunked, GRACE_S, 1.0),
    "oversized head -> 431": (oversized_head, GRACE_S, 1.0),
}


def hostile(port: int, deadline: float, tally: Tally, case: str) -> None:
    """One hostile case again and again, each run started only if its bound fits before ``deadline``."""
    run, bound, pause = HOSTILE[case]
    while time.monotonic() + bound < deadline:
        try:
            problem = run(port)
        except (OSError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        tally.record(case, problem)
        time.sleep(pause)


def has_big_route(upstream_port: int) -> bool:
    """Whether the upstream answers ``GET BIG_PATH`` with at least BIG_BYTES (asked directly)."""
    with socket.create_connection(("127.0.0.1", upstream_port), timeout=5) as sock:
        sock.sendall(f"GET {BIG_PATH} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
        head = sock.recv(65_536).split(b"\r\n\r\n", 1)[0].lower()
    match = re.search(rb"content-length: (\d+)", head)
    return head.startswith(b"http/1.1 200 ") and match is not None and int(match.group(1)) >= BIG_BYTES


def slow_reader(port: int, deadline: float, tally: Tally) -> None:
    """Read ``BIG_PATH`` through the gateway at SLOW_RATE, whole, again while there is time."""
    needed = BIG_BYTES / SLOW_RATE + GRACE_S
    while time.monotonic() + needed < deadline:
        problem = None
        try:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RATE)
                sock.settimeout(10)
                sock.connect(("127.0.0.1", port))
                sock.sendall(f"GET {BIG_PATH} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
                received = b""
                while chunk := sock.recv(SLOW_RATE):
                    received += chunk
                    time.sleep(len(chunk) / SLOW_RATE)
            head, _, body = received.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 ") or len(body) < BIG_BYTES:
                problem = f"{head[:60]!r}, {len(body)} bytes of body"
        except OSError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        tally.record("5 MiB at 64 KiB/s", problem)


# -- the run -----------------------------------------------------------------------------------

_SOCKET_ERRORS_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class WrkCounts:
    requests: int
    rps: float
    non_2xx: int
    socket_errors: dict[str, int]
    output: str


def run_wrk(port: int, script: Path, duration: float) -> WrkCounts:
    """wrk with CONNECTIONS connections for ``duration`` seconds; its counts."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(duration))}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = _SOCKET_ERRORS_RE.search(out)
    names = ("connect", "read", "write", "timeout")
    return WrkCounts(
        int(requests.group(1)) if requests else 0,
        float(rps.group(1)) if rps else 0.0,
        int(non_2xx.group(1)) if non_2xx else 0,
        {name: int(errors.group(i + 1)) if errors else 0 for i, name in enumerate(names)},
        out,
    )


def start_gateway(
    workdir: Path, upstream_port: int, server: str, workers: int, store: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """bench/gateway.py's every-guard gateway, shorter head and body timeouts; its process, port, stderr."""
    config_path = bench.gateway_config(
        f"http://127.0.0.1:{upstream_port}", workdir, store, workers=workers, server=server
    )
    config = yaml.safe_load(config_path.read_text())
    config["gateway"].update(header_timeout=f"{LIMIT_S:g}s", body_timeout=f"{LIMIT_S:g}s")
    if store == "memory":
        config["idempotency"]["max_memory"] = SOAK_MAX_MEMORY
    config_path.write_text(yaml.safe_dump(config))
    port = bench.free_port()
    command = [sys.executable, "-m", "bastion", "gateway", "--port", str(port), "--config", str(config_path)]
    if workers > 1 and store == "memory":
        command.append("--allow-per-process-state")  # the limits never bind; keys are fresh
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["PYTHONPATH"] = str(bench.ROOT / "src")
    stderr_path = workdir / "gateway.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=bench.ROOT)
    bench.wait_listening(port, process, timeout=60)
    deadline = time.monotonic() + 60
    while True:  # listening is not ready with several workers: wait for an answer
        try:
            _, received = exchange(
                port, b"GET /_bastion/health HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n", 5
            )
            if received.startswith(b"HTTP/1.1 200 "):
                break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            bench.stop(process)
            raise RuntimeError(f"the gateway did not get ready: {stderr_path.read_text()[-2000:]}")
        time.sleep(0.2)
    return process, port, stderr_path


def log_counts(stderr_path: Path) -> Counter[str]:
    """The gateway's warning and error lines, by level and message; lines not JSON count as such."""
    counts: Counter[str] = Counter()
    for raw in stderr_path.read_bytes().splitlines():
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            counts[f"not JSON: {raw[:100].decode('utf-8', 'replace')}"] += 1
            continue
        if not isinstance(line, dict):
            continue
        level = str(line.get("level", "")).lower()
        if level in ("warning", "error", "critical", "fatal"):
            message = str(line.get("event") or line.get("message") or line)
            counts[f"{level}: {message[:160]}"] += 1
    return counts


def at_fraction(samples: list[Sample], fraction: float, duration: float) -> Sample:
    """The first sample at or after ``fraction`` of the run (the last one when none is)."""
    return next((s for s in samples if s.elapsed >= fraction * duration), samples[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--server", choices=["bastion", "uvicorn"], default="bastion")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.store == "redis" and not bench.redis_reachable():
        print(f"Redis is not reachable at {bench.REDIS_URL}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bastion-soak-"))
    script = workdir / "mix.lua"
    script.write_text(MIX_SCRIPT % {"prefix": uuid.uuid4().hex[:12]})
    upstream_port = bench.free_port()
    upstream = bench.start(
        [sys.executable, bench.__file__, "--serve", "upstream", str(upstream_port)], upstream_port
    )
    gateway: subprocess.Popen[bytes] | None = None
    try:
        gateway, port, stderr_path = start_gateway(
            workdir, upstream_port, args.server, args.workers, args.store
        )
        big = has_big_route(upstream_port)
        idle_before = sample(gateway.pid, 0.0)
        warmup = run_wrk(port, script, WARMUP_S)
        samples: list[Sample] = []
        pipelined_tally, hostile_tally, slow_tally = Tally(), Tally(), Tally()
        started = time.monotonic()
        deadline = started + args.duration
        stop_sampling = threading.Event()

        def sampler() -> None:
            while not stop_sampling.is_set():
                samples.append(sample(gateway.pid, time.monotonic() - started))
                stop_sampling.wait(1.0)

        threads = [
            threading.Thread(target=sampler, daemon=True),
            threading.Thread(target=pipelined, args=(port, deadline, pipelined_tally), daemon=True),
        ]
        threads += [
            threading.Thread(target=hostile, args=(port, deadline, hostile_tally, case), daemon=True)
            for case in HOSTILE
        ]
        if big:
            threads.append(
                threading.Thread(target=slow_reader, args=(port, deadline, slow_tally), daemon=True)
            )
        for thread in threads:
            thread.start()
        wrk_counts = run_wrk(port, script, args.duration)
        for thread in threads[1:]:
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + 30)
        stop_sampling.set()
        threads[0].join(timeout=5)
        stragglers = [thread.name for thread in threads if thread.is_alive()]
        alive = gateway.poll() is None
        time.sleep(1.0)
        idle_after = sample(gateway.pid, time.monotonic() - started)
    finally:
        if gateway is not None:
            bench.stop(gateway)
        bench.stop(upstream)

    return report(
        args,
        wrk_counts,
        pipelined_tally,
        hostile_tally,
        slow_tally if big else None,
        samples,
        (idle_before, idle_after),
        log_counts(stderr_path),
        alive,
        stragglers,
        warmup,
    )


def report(
    args: argparse.Namespace,
    wrk_counts: WrkCounts,
    pipelined_tally: Tally,
    hostile_tally: Tally,
    slow_tally: Tally | None,
    samples: list[Sample],
    idle: tuple[Sample, Sample],
    logs: Counter[str],
    alive: bool,
    stragglers: list[str],
    warmup: WrkCounts,
) -> int:
    """Print the summary; 1 when a check failed (each failure is named on the verdict line)."""
    failures = []
    print(
        f"soak: server {args.server}, {args.workers} worker(s), store {args.store}, {args.duration:g} s; "
        f"header and body timeouts {LIMIT_S:g} s"
        + (f", idempotency.max_memory {SOAK_MAX_MEMORY}" if args.store == "memory" else "")
    )
    print(
        f"warm-up: {WARMUP_S:g} s of wrk alone, {warmup.requests} requests, non-2xx {warmup.non_2xx}, "
        "socket errors " + ", ".join(f"{name} {count}" for name, count in warmup.socket_errors.items())
    )
    errors = wrk_counts.socket_errors
    print(
        f"wrk: {wrk_counts.requests} requests, {wrk_counts.rps:.0f} req/s, non-2xx {wrk_counts.non_2xx}, "
        "socket errors " + ", ".join(f"{name} {count}" for name, count in errors.items())
    )
    if sum(errors.values()):
        failures.append("wrk socket errors")
    if wrk_counts.requests == 0:
        failures.append("wrk completed no request")
    ok, failed = sum(pipelined_tally.ok.values()), sum(pipelined_tally.failed.values())
    print(f"pipelined bursts of {BURST}: {ok} ok, {failed} failed")
    if failed or not ok:
        failures.append("pipelined bursts")
    ok, failed = sum(hostile_tally.ok.values()), sum(hostile_tally.failed.values())
    print(f"hostile cases: {ok} ok, {failed} failed")
    for case in HOSTILE:
        print(f"  {case}: {hostile_tally.ok[case]} ok, {hostile_tally.failed[case]} failed")
        if not hostile_tally.ok[case] and not hostile_tally.failed[case]:
            failures.append(f"hostile case not run: {case}")
    if failed:
        failures.append("hostile cases")
    for reason in pipelined_tally.reasons + hostile_tally.reasons:
        print(f"  failure: {reason}")
    if slow_tally is None:
        print(f"slow reader: skipped (the upstream has no {BIG_PATH} route of 5 MiB)")
    else:
        ok, failed = sum(slow_tally.ok.values()), sum(slow_tally.failed.values())
        print(f"slow reader, 5 MiB at 64 KiB/s: {ok} ok, {failed} failed")
        for reason in slow_tally.reasons:
            print(f"  failure: {reason}")
        if failed:
            failures.append("slow reader")
    if samples:
        # The end is the last sample under load: wrk's connections are gone from the later ones.
        loaded = [s for s in samples if s.elapsed <= args.duration - 1.0] or samples
        early, end = at_fraction(loaded, 0.1, args.duration), loaded[-1]
        peak = max(s.rss_kib for s in samples)
        growth = (end.rss_kib - early.rss_kib) / 1024
        percent = 100 * (end.rss_kib - early.rss_kib) / max(early.rss_kib, 1)
        print(
            f"rss ({end.processes} process(es)): at 10% {early.rss_kib / 1024:.1f} MiB, "
            f"end {end.rss_kib / 1024:.1f} MiB, max {peak / 1024:.1f} MiB; "
            f"growth {growth:+.1f} MiB ({percent:+.1f}%)"
        )
        print(
            f"fds: at 10% {early.fds}, end {end.fds} ({end.fds - early.fds:+d}); "
            f"idle before the load {idle[0].fds}, 1 s after it {idle[1].fds}"
        )
        print(f"threads: at 10% {early.threads}, end {end.threads}, max {max(s.threads for s in samples)}")
        if percent > 20:
            failures.append("rss grew by more than 20%")
        if end.fds - early.fds > 20:
            failures.append("fds grew by more than 20")
    else:
        failures.append("no samples")
    if logs:
        print("gateway log, warning and error lines by message:")
        for message, count in logs.most_common():
            print(f"  {count} x {message}")
    else:
        print("gateway log: no warning or error lines")
    if not alive:
        failures.append("the gateway exited during the run")
    if stragglers:
        failures.append(f"clients still running after the run: {', '.join(stragglers)}")
    print("verdict: ok" if not failures else "verdict: FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the peers on SIGTERM too
    raise SystemExit(main())
