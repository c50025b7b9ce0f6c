"""Path templates to operations.

Two routers share one matcher:

- with ``openapi:`` configured, an *authoritative* router over the description's
  operations (unknown paths and methods are 404 / 405, decided by the route
  guard from the result), honouring the ``servers`` base paths;
- without a description, a non-authoritative router over the ``METHOD /template``
  entries the configuration names (``idempotency.require``, rate limit rule
  ``match``), so that requests carry a route template for labels and rule
  matching while unknown paths simply pass.

Matching is one dictionary lookup for literal paths; templated paths walk a
segment tree where a literal segment beats a partly templated one (``{sid}.json``),
which beats a fully templated one, as the OpenAPI specification requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.config import Config
from bastion.protocols import RouteMatch, Router

if TYPE_CHECKING:
    from bastion.protocols import GuardContext

#: The method of a configured route that applies to every method.
ANY_METHOD = "*"
_PLACEHOLDER = re.compile(r"\{([^{}/]+)\}")


@dataclass(slots=True)
class _Route:
    template: str
    #: METHOD -> (operation id, compiled operation)
    methods: dict[str, tuple[str | None, Any]] = field(default_factory=dict)
    #: The template's parameter names in order; matching collects values by position,
    #: since templates sharing a tree position may name it differently.
    names: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    #: Partly templated segments: (regex, child, literal characters), most literal characters first.
    mixed: list[tuple[re.Pattern[str], _Node, int]] = field(default_factory=list)
    #: The child for a fully templated segment.
    param: _Node | None = None
    route: _Route | None = None


def _segment_regex(segment: str) -> tuple[re.Pattern[str], int]:
    pattern = ""
    last = 0
    for match in _PLACEHOLDER.finditer(segment):
        pattern += re.escape(segment[last : match.start()]) + "(.+?)"
        last = match.end()
    pattern += re.escape(segment[last:])
    return re.compile(pattern), len(_PLACEHOLDER.sub("", segment))


class TemplateRouter:
    """Matches request paths to route templates; see the module documentation."""

    def __init__(self, *, authoritative: bool, base_paths: list[str] | None = None) -> None:
        #: Whether unknown paths and methods are errors.
        self.authoritative = authoritative
        self.base_paths = [b for b in (base_paths or [""]) if b]
        self._bare = not self.base_paths or "" in (base_paths or [""])
        self._exact: dict[str, _Route] = {}
        self._root = _Node()

    def add(self, method: str, template: str, operation_id: str | None = None, operation: Any = None) -> None:
        """Register ``method`` on ``template`` (``*`` for every method)."""
        template = template if template.startswith("/") else "/" + template
        if "{" not in template:
            route = self._exact.setdefault(template, _Route(template))
        else:
            node = self._root
            for segment in template.split("/")[1:]:
                if "{" not in segment:
                    node = node.literal.setdefault(segment, _Node())
                elif _PLACEHOLDER.fullmatch(segment):
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    regex, weight = _segment_regex(segment)
                    for existing, child, _ in node.mixed:
                        if existing.pattern == regex.pattern:
                            node = child
                            break
                    else:
                        child = _Node()
                        node.mixed.append((regex, child, weight))
                        node.mixed.sort(key=lambda entry: -entry[2])
                        node = child
            if node.route is None:
                node.route = _Route(template, names=_PLACEHOLDER.findall(template))
            route = node.route
        route.methods.setdefault(method.upper(), (operation_id, operation))

    def _strip_base(self, path: str) -> str | None:
        for base in self.base_paths:
            if path.startswith(base) and (len(path) == len(base) or path[len(base)] == "/"):
                return path[len(base) :] or "/"
        return path if self._bare else None

    def _find(self, path: str) -> tuple[_Route, dict[str, str]] | None:
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        segments = path.split("/")[1:]
        values: list[str] = []
        # The walk's first path, without recursion: a literal child where there is one,
        # else the templated child. When it ends on a route, that is the route the walk
        # would find first; anything else (a dead end, partly templated segments to
        # try) takes the full walk, which backtracks.
        node = self._root
        for segment in segments:
            child = node.literal.get(segment)
            if child is None:
                if node.mixed or node.param is None or not segment:
                    break
                values.append(segment)
                child = node.param
            node = child
        else:
            route = node.route
            if route is not None:
                # Names and values have the same length here; spelling out strict=False
                # would cost a keyword-argument call on every request.
                return route, dict(zip(route.names, values))  # noqa: B905
        values = []
        found = self._walk(self._root, segments, 0, values)
        if found is None:
            return None
        return found, dict(zip(found.names, values, strict=False))

    def _walk(self, node: _Node, segments: list[str], index: int, values: list[str]) -> _Route | None:
        if index == len(segments):
            return node.route
        segment = segments[index]
        child = node.literal.get(segment)
        if child is not None:
            found = self._walk(child, segments, index + 1, values)
            if found is not None:
                return found
        mark = len(values)
        for regex, mixed_child, _ in node.mixed:
            match = regex.fullmatch(segment)
            if match is not None:
                values.extend(match.groups())
                found = self._walk(mixed_child, segments, index + 1, values)
                if found is not None:
                    return found
                del values[mark:]
        if node.param is not None and segment:
            values.append(segment)
            found = self._walk(node.param, segments, index + 1, values)
            if found is not None:
                return found
            del values[mark:]
        return None

    def resolve(self, method: str, path: str) -> RouteMatch | list[str] | None:
        """The match; the allowed methods when only the method is wrong; ``None`` when the path is unknown."""
        stripped = self._strip_base(path) if self.base_paths else path
        if stripped is None:
            return None
        found = self._find(stripped)
        if found is None:
            return None
        route, params = found
        entry = route.methods.get(method) or route.methods.get(ANY_METHOD)
        if entry is None and method == "HEAD":
            entry = route.methods.get("GET")
        if entry is None:
            if method == "OPTIONS":
                # A CORS preflight: let the application (or its CORS middleware) answer it.
                return RouteMatch(route.template, None, None, params)
            return sorted(route.methods)
        return RouteMatch(route.template, entry[0], entry[1], params)


def parse_route(entry: str) -> tuple[str, str]:
    """``"POST /orders/{id}/pay"`` as ``("POST", "/orders/{id}/pay")``; a bare template is any method."""
    text = entry.strip()
    if " " in text:
        method, _, template = text.partition(" ")
        return method.strip().upper(), template.strip()
    return ANY_METHOD, text


def configured_routes(config: Config) -> list[tuple[str, str]]:
    """The ``METHOD /template`` entries the configuration names."""
    entries: list[str] = list(config.idempotency.require)
    for rule in config.rate_limits.rules:
        if isinstance(rule.match, str):
            entries.append(rule.match)
        elif rule.match:
            entries.extend(rule.match)
    routes: list[tuple[str, str]] = []
    for entry in entries:
        route = parse_route(entry)
        if route[1].startswith("/") and route not in routes:
            routes.append(route)
    return routes


def build_router(ctx: GuardContext) -> Router | None:
    """The router for the configuration's OpenAPI description and route templates."""
    config = ctx.config
    api = ctx.description()
    if api is not None:
        router = TemplateRouter(authoritative=True, base_paths=api.base_paths)
        for operation in api.operations:
            router.add(operation.method, operation.template, operation.operation_id, operation)
        known = {(o.method, o.template) for o in api.operations}
        for method, template in configured_routes(config):
            if (method, template) not in known and not (
                method == ANY_METHOD and any(t == template for _, t in known)
            ):
                ctx.logger.warning(
                    "configured route is not in the OpenAPI description", route=f"{method} {template}"
                )
        return router
    routes = configured_routes(config)
    if not routes:
        return None
    router = TemplateRouter(authoritative=False)
    for method, template in routes:
        router.add(method, template)
    return router
