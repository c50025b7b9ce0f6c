"""The admin API: an ASGI app over the admin layer, checked by bastion against its own description.

Routes (all JSON; ``admin-openapi.yaml`` beside this module describes them, and the
:class:`~bastion.Bastion` that wraps this app validates every request against it):

- ``GET /v1/config``: the effective configuration (secrets redacted) and the admin version;
- ``GET /v1/rules``, ``GET|PUT|PATCH|DELETE /v1/rules/{name}``: rate limit rules;
- ``GET /v1/consumers``, ``GET|PUT|PATCH|DELETE /v1/consumers/{sha256}``: consumers;
- ``DELETE /v1/{rules|consumers}/{name}/override``: forget the admin layer's change, so the
  file's entry (or none) is back;
- ``GET /v1/openapi.yaml``: the description.

Each entry is returned with ``layers``: per field, ``admin``, ``file`` or ``default``.
A change is validated against the file and every other change before it is kept, and
refused as ``422 CONFIG_REJECTED`` naming each key and reason; then it is written to
the shared store, applied in this worker at once, and logged as an audit line.
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from bastion import exactjson
from bastion.asgi import Receive, Scope, Send
from bastion.control.changes import CONSUMER, RULE, Change, Op, layers
from bastion.control.reload import problems_of
from bastion.problems import (
    ConfigRejected,
    Conflict,
    DependencyUnavailable,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
)

if TYPE_CHECKING:
    from bastion.control.admin import AdminControl

PREFIX = "/v1"
_COLLECTIONS = {"rules": RULE, "consumers": CONSUMER}
#: Attempts at a write when another write came first (each one validated again).
_WRITE_ATTEMPTS = 5
#: Seconds to wait before trying a change again when the store did not answer (as readiness says).
_RETRY_AFTER_S = 5


#: The admin API's OpenAPI description, shipped in the package.
DESCRIPTION = Path(__file__).with_name("admin-openapi.yaml")


def _json(status: int, body: Any) -> tuple[int, bytes]:
    return status, orjson.dumps(body)


class AdminAPI:
    """The ASGI app of the admin API (wrap it in a :class:`~bastion.Bastion` to serve it)."""

    def __init__(self, control: AdminControl) -> None:
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        actor = self._actor(scope)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, payload = await self._route(scope["method"], scope["path"], body, actor)
        content_type = b"application/yaml" if scope["path"].endswith(".yaml") else b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), (b"cache-control", b"no-store")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _actor(self, scope: Scope) -> str:
        """Who makes the request: the token's name, or ``loopback`` when no token is configured."""
        tokens = self.control.tokens
        if tokens is None:
            return "loopback"
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
        scheme, _, token = given.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer":
            token = token.strip()
            for known, who in tokens.items():
                if hmac.compare_digest(known.encode(), token.encode("latin-1")):
                    return who
        raise Unauthorized("a valid admin token is required", headers={"WWW-Authenticate": "Bearer"})

    async def _route(self, method: str, path: str, body: bytes, actor: str) -> tuple[int, bytes]:
        if not path.startswith(PREFIX + "/"):
            raise NotFound("no such admin resource")
        parts = [unquote(p) for p in path[len(PREFIX) + 1 :].split("/")]
        if parts == ["openapi.yaml"]:
            return 200, DESCRIPTION.read_bytes()
        if parts == ["config"]:
            return _json(200, self.control.effective())
        kind = _COLLECTIONS.get(parts[0])
        if kind is None:
            raise NotFound("no such admin resource")
        if len(parts) == 1:
            return _json(200, {parts[0]: self.control.entries(kind)})
        name = parts[1]
        if len(parts) == 3 and parts[2] == "override" and method == "DELETE":
            return _json(200, await self._change(kind, name, None, actor))
        if len(parts) != 2:
            raise NotFound("no such admin resource")
        if method == "GET":
            entry = self.control.entry(kind, name)
            if entry is None:
                raise NotFound(f"no {kind} {name!r}")
            return _json(200, entry)
        ops: dict[str, Op] = {"PUT": "put", "PATCH": "patch", "DELETE": "delete"}
        op = ops.get(method)
        if op is None:
            raise MethodNotAllowed(headers={"Allow": "GET, PUT, PATCH, DELETE"})
        fields: dict[str, Any] = exactjson.loads(body) if body else {}
        if op == "patch" and self.control.entry(kind, name) is None:
            raise NotFound(f"no {kind} {name!r} to change; PUT creates one")
        if op == "delete" and self.control.entry(kind, name) is None:
            raise NotFound(f"no {kind} {name!r}")
        return _json(
            200, await self._change(kind, name, Change(kind, name, op, fields, actor, time.time()), actor)
        )

    async def _change(self, kind: str, name: str, change: Change | None, actor: str) -> dict[str, Any]:
        """Validate, keep and apply one change (``None``: forget the admin layer's entry)."""
        control = self.control
        for _ in range(_WRITE_ATTEMPTS):
            try:
                version, changes = await control.store.read()
            except Exception as exc:
                raise _unreachable(control, exc, "nothing was changed") from None
            merged = dict(changes)
            previous = merged.pop((kind, name), None)
            if change is not None:
                if change.op == "patch" and previous is not None and previous.op != "delete":
                    # A second patch adds to the first; a patch of a put stays a put.
                    change = Change(
                        kind, name, previous.op, {**previous.fields, **change.fields}, actor, change.at
                    )
                merged[(kind, name)] = change
            elif previous is None:
                raise NotFound(f"the admin layer has no change to {kind} {name!r}")
            try:
                control.check(merged)
            except Exception as exc:
                raise ConfigRejected(
                    "the change was not made", errors=[{"key": k, "reason": r} for k, r in problems_of(exc)]
                ) from None
            forget = change is None
            try:
                written = await control.store.write(change or previous, expected=version, forget=forget)  # type: ignore[arg-type]
            except Exception as exc:
                # A write that timed out may have been kept: the client reads the entry back.
                raise _unreachable(control, exc, "the change may or may not have been kept") from None
            if written is None:
                continue
            control.audit(actor, kind, name, change, forget=forget, version=written)
            await control.sync()
            return control.entry(kind, name) or {"deleted": True, kind: name}
        raise Conflict("other admin changes kept coming first; try again")


def _unreachable(control: AdminControl, exc: Exception, outcome: str) -> DependencyUnavailable:
    """The answer to a change the store did not take: ``503``, with what became of the change."""
    return DependencyUnavailable(
        f"the admin store {control.store.name} did not answer ({type(exc).__name__}); {outcome}",
        headers={"Retry-After": str(_RETRY_AFTER_S)},
    )


def entry_view(
    kind: str, effective: dict[str, Any], file: dict[str, Any] | None, change: Change | None
) -> dict[str, Any]:
    """An entry as the API shows it: its effective fields, the layer of each, and the change."""
    view: dict[str, Any] = {"entry": effective, "layers": layers(file, change, effective)}
    key = "name" if kind == RULE else "sha256"
    view["layers"][key] = "admin" if change is not None and (file is None or change.op == "put") else "file"
    if change is not None:
        view["change"] = {"op": change.op, "actor": change.actor, "at": change.at, "version": change.version}
    return view
