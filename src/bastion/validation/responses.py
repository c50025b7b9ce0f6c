"""Response validation in shadow mode: a sample of responses is checked, never altered.

The response passes through untouched; its body is copied (up to a bound) and
checked after the last chunk has been sent, so a client never waits for it. A
mismatch is logged and counted. Only JSON responses with a schema are checked.
"""

from __future__ import annotations

from typing import Any

import orjson

from bastion import exactjson
from bastion.asgi import Message, Send
from bastion.validation import errors
from bastion.validation.bodies import matches, parse_media_type


class ResponseSchemas:
    """The response schemas of one operation, by status then media type.

    Every response schema of a description is checked by one shared validator
    (over ``{key: body}``): compiling them together shares the referenced
    schemas, which for Stripe is 0.1 s instead of most of a minute.
    """

    __slots__ = ("by_status", "validator")

    def __init__(self) -> None:
        #: ``"200"``, ``"2XX"`` or ``"DEFAULT"`` -> [(media range, key in the shared validator)]
        self.by_status: dict[str, list[tuple[str, str]]] = {}
        self.validator: Any = None

    def add(self, status: str, media: str, key: str) -> None:
        """Register the schema under ``key`` for responses of ``status`` in ``media``."""
        self.by_status.setdefault(status.upper(), []).append((media, key))

    def key_for(self, status: int, content_type: bytes | None) -> str | None:
        """The schema key for a response, or ``None`` when its description has no JSON schema."""
        candidates = (
            self.by_status.get(str(status))
            or self.by_status.get(f"{status // 100}XX")
            or self.by_status.get("DEFAULT")
        )
        if not candidates or content_type is None:
            return None
        essence = parse_media_type(content_type.decode("latin-1")).essence
        for media, key in candidates:
            if matches(media, essence):
                return key
        return None


def check_response(validator: Any, key: str, body: bytes, limit: int) -> list[dict[str, Any]]:
    """The error entries of a response body (``in`` is ``body``)."""
    try:
        value = exactjson.loads(body)
    except orjson.JSONDecodeError:
        return [{"code": "MALFORMED_BODY", "in": "body", "pointer": "", "field": "", "detail": "is not JSON"}]
    instance = {key: value}
    if validator.is_valid(instance):
        return []
    return errors.collect(validator.iter_errors(instance), {}, limit, root="body")


def recording_send(send: Send, schemas: ResponseSchemas, max_bytes: int, on_done: Any) -> Send:
    """A ``send`` that forwards every message and, at the end, checks the copied body.

    ``on_done(status, entries)`` is called after the last chunk went out, only for
    responses that have a schema.
    """
    state: dict[str, Any] = {"key": None, "status": 0, "chunks": [], "size": 0}

    async def wrapped(message: Message) -> None:
        await send(message)
        kind = message["type"]
        if kind == "http.response.start":
            status = int(message["status"])
            content_type = None
            for key, value in message.get("headers", ()):
                if bytes(key).lower() == b"content-type":
                    content_type = bytes(value)
            state["status"] = status
            state["key"] = schemas.key_for(status, content_type)
        elif kind == "http.response.body" and state["key"] is not None:
            chunk = message.get("body", b"")
            state["size"] += len(chunk)
            if state["size"] > max_bytes:
                state["key"] = None  # too large to copy; skipped, not failed
                return
            state["chunks"].append(chunk)
            if not message.get("more_body", False):
                entries = check_response(schemas.validator, state["key"], b"".join(state["chunks"]), 50)
                on_done(state["status"], entries)

    return wrapped
