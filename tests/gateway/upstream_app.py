"""A small Starlette API the gateway tests put bastion in front of.

It reports what reached it (method, path, headers, body size and digest) and can
be slow, stream, fail with an HTML page or a stack trace, and count how often a
handler ran, so the tests can see from the outside what the gateway did.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

STACK_TRACE = """Traceback (most recent call last):
  File "/srv/app/orders.py", line 42, in create_order
    db.connect("postgresql://admin:hunter2@db.internal/orders")
RuntimeError: connection refused (secret-token-123)
"""

calls: Counter[str] = Counter()
release = asyncio.Event()


async def echo(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    calls["echo"] += 1
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope["raw_path"].decode("latin-1"),
            "query": request.scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "body_size": size,
            "body_sha256": digest.hexdigest(),
            "pid": os.getpid(),
        }
    )


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("seconds", "2")))
    calls["slow"] += 1
    return PlainTextResponse("finally " * 100)


async def events(request: Request) -> StreamingResponse:
    release.clear()

    async def stream():  # type: ignore[no-untyped-def]
        yield b"event: first\ndata: one\n\n"
        # The rest of the stream waits for the test to say so (bounded: 20 s).
        try:
            await asyncio.wait_for(release.wait(), 20)
        except TimeoutError:
            yield b"event: timeout\ndata: never released\n\n"
            return
        yield b"event: second\ndata: two\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


async def do_release(request: Request) -> PlainTextResponse:
    release.set()
    return PlainTextResponse("released")


async def download(request: Request) -> StreamingResponse:
    megabytes = int(request.query_params.get("mb", "1"))
    block = b"x" * (1024 * 1024)

    async def stream():  # type: ignore[no-untyped-def]
        for _ in range(megabytes):
            yield block

    return StreamingResponse(stream(), media_type="application/octet-stream")


async def broken_stream(request: Request) -> StreamingResponse:
    """A chunked response whose server fails after the first chunk (the connection drops)."""

    async def stream():  # type: ignore[no-untyped-def]
        yield b"first part of the answer\n"
        await asyncio.sleep(0.2)
        raise RuntimeError("the upstream fails mid-response")

    return StreamingResponse(stream(), media_type="text/plain")


async def html_error(request: Request) -> Response:
    page = f"<!DOCTYPE html><html><body><h1>Internal Server Error</h1><pre>{STACK_TRACE}</pre></body></html>"
    return Response(page, status_code=500, media_type="text/html")


async def stack(request: Request) -> PlainTextResponse:
    return PlainTextResponse(STACK_TRACE, status_code=503, headers={"Retry-After": "7"})


async def missing(request: Request) -> Response:
    return Response("<html><body><pre>Cannot GET /missing</pre></body></html>", 404, media_type="text/html")


async def problem(request: Request) -> Response:
    body = (
        b'{"type":"https://api.example/errors/out-of-stock","title":"Out of stock",'
        b'"status":409,"code":"OUT_OF_STOCK"}'
    )
    return Response(body, 409, media_type="application/problem+json")


async def json_error(request: Request) -> JSONResponse:
    return JSONResponse({"error": "internal", "stack": STACK_TRACE}, status_code=500)


async def orders(request: Request) -> JSONResponse:
    body = await request.json()
    key = request.headers.get("idempotency-key", "-")
    calls["orders:" + key] += 1
    # Long enough for concurrent duplicates to overlap.
    await asyncio.sleep(0.2)
    return JSONResponse({"order": calls["orders:" + key], "item": body.get("item")}, status_code=201)


async def count(request: Request) -> JSONResponse:
    return JSONResponse({"count": calls[request.query_params["name"]]})


async def order_page(request: Request) -> Response:
    return Response(f"<html><pre>Cannot GET {request.url.path}</pre></html>", 404, media_type="text/html")


async def limited(request: Request) -> JSONResponse:
    calls["limited"] += 1
    return JSONResponse({"ok": True})


async def compressed(request: Request) -> Response:
    return Response(
        gzip.compress(b"hello " * 1000), media_type="text/plain", headers={"Content-Encoding": "gzip"}
    )


async def cookie(request: Request) -> PlainTextResponse:
    response = PlainTextResponse(request.headers.get("cookie", "(none)"))
    response.set_cookie("session", "abc")
    return response


async def ws_echo(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=offered[0] if offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                if message["text"] == "close":
                    await websocket.close(code=4001)
                    return
                if message["text"] == "headers":
                    await websocket.send_json(
                        [[k.decode(), v.decode()] for k, v in websocket.scope["headers"]]
                    )
                    continue
                await websocket.send_text("echo:" + message["text"])
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route(
            "/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        ),
        Route("/upload", echo, methods=["POST", "PUT"]),
        Route("/slow", slow),
        Route("/events", events),
        Route("/release", do_release, methods=["POST"]),
        Route("/download", download),
        Route("/broken-stream", broken_stream),
        Route("/html-error", html_error),
        Route("/stack", stack),
        Route("/missing", missing),
        Route("/problem", problem),
        Route("/json-error", json_error),
        Route("/orders", orders, methods=["POST"]),
        Route("/orders/{id}", order_page),
        Route("/limited", limited),
        Route("/boom", html_error),
        Route("/count", count),
        Route("/compressed", compressed),
        Route("/cookie", cookie),
        WebSocketRoute("/ws", ws_echo),
    ]
)
