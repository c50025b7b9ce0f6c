"""An API description loaded once, with the line of every member and every local ``$ref``.

PyYAML's C parser composes the node tree; the tree is turned into plain dicts,
lists and scalars in one walk that also records, for each mapping, the line of
each key, and collects every ``$ref`` with the path where it sits. Findings then
carry a JSON pointer and a line without a second parse.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:  # pragma: no branch - the C loader ships with PyYAML wheels
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"

Path_ = tuple[str | int, ...]


@dataclass(slots=True)
class ParseError:
    """Why a file could not be read as YAML or JSON."""

    message: str
    line: int | None


@dataclass(slots=True)
class Document:
    """A parsed description: the data, lines by container and key, and every ``$ref`` seen."""

    data: Any
    source: str
    #: id(mapping or list) -> (line of the container, {key: line of the key})
    lines: dict[int, tuple[int, dict[Any, int]]] = field(default_factory=dict)
    #: (the $ref value, path of the mapping holding it)
    refs: list[tuple[str, Path_]] = field(default_factory=list)
    #: Why the document cannot be written out in full (an alias bomb or cycle), else ``None``.
    alias_problem: str | None = None

    def line_of(self, container: Any, key: Any = None) -> int | None:
        """The 1-based line of ``container[key]`` (or of the container itself)."""
        entry = self.lines.get(id(container))
        if entry is None:
            return None
        if key is not None:
            line = entry[1].get(key)
            if line is not None:
                return line
        return entry[0]

    def line_at(self, path: Path_) -> int | None:
        """The line of the member at ``path``, or of its nearest ancestor that has one."""
        node = self.data
        best = self.line_of(node)
        for part in path:
            line = self.line_of(node, part)
            if line is not None:
                best = line
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return best
        return best

    def resolve(self, ref: str) -> tuple[Any, Path_] | None:
        """The target of a local ``$ref`` and its path, or ``None`` when it does not exist."""
        path = pointer_path(ref)
        if path is None:
            return None
        node = self.data
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif (
                isinstance(node, list) and isinstance(part, str) and part.isdigit() and int(part) < len(node)
            ):
                node = node[int(part)]
            else:
                return None
        return node, path


def pointer_path(ref: str) -> Path_ | None:
    """The path of a local JSON pointer reference (``#/a/b~1c``), ``None`` if it is not local."""
    if not ref.startswith("#"):
        return None
    pointer = ref[1:]
    if not pointer:
        return ()
    if not pointer.startswith("/"):
        return None
    from urllib.parse import unquote

    return tuple(unquote(p).replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/"))


def pointer(path: Path_) -> str:
    """The JSON pointer (RFC 6901) of ``path``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def json_path(path: Path_) -> str:
    """A readable JSONPath-like rendering of ``path`` (``$.paths['/orders'].post``)."""
    parts = ["$"]
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p.replace("_", "").replace("-", "").isalnum() and not p[:1].isdigit() and "-" not in p:
            parts.append("." + p)
        else:
            parts.append("['" + p.replace("'", "\\'") + "']")
    return "".join(parts)


class _Builder:
    """Turns a composed node tree into plain data, recording lines and refs on the way."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.memo: dict[int, Any] = {}
        #: Whether an alias made two places share one container.
        self.shared = False
        self.scalars = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: list[str | int]) -> Any:
        known = self.memo.get(id(node))
        if known is not None:
            self.shared = True
            return known
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return node.value
            return self.scalars.construct_object(node, deep=True)
        lines: dict[Any, int] = {}
        if isinstance(node, yaml.SequenceNode):
            items: list[Any] = []
            self.memo[id(node)] = items
            self.doc.lines[id(items)] = (node.start_mark.line + 1, lines)
            for index, child in enumerate(node.value):
                lines[index] = child.start_mark.line + 1
                path.append(index)
                items.append(self.build(child, path))
                path.pop()
            return items
        mapping: dict[Any, Any] = {}
        self.memo[id(node)] = mapping
        self.doc.lines[id(mapping)] = (node.start_mark.line + 1, lines)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged = self.build(value_node, path)
                for source in merged if isinstance(merged, list) else [merged]:
                    if isinstance(source, dict):
                        for k, v in source.items():
                            mapping.setdefault(k, v)
                continue
            key = key_node.value if key_node.tag == _STR else self.build(key_node, path)
            if isinstance(key, list | dict):
                key = str(key)
            lines[key] = key_node.start_mark.line + 1
            path.append(key)
            value = self.build(value_node, path)
            path.pop()
            mapping[key] = value
            if key == "$ref" and isinstance(value, str):
                self.doc.refs.append((value, tuple(path)))
        return mapping


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large tree is built or walked.

    Building the Stripe description allocates about a million objects, and each
    automatic collection re-scans all of them: pausing it makes the load 2 to 4
    times faster. The trees hold no reference cycles that need collecting.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_text(text: str | bytes, source: str = "<string>") -> Document | ParseError:
    """Parse a YAML or JSON description."""
    with no_gc():
        return _load_text(text, source)


def _load_text(text: str | bytes, source: str) -> Document | ParseError:
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return ParseError(str(exc.problem or exc), mark.line + 1 if mark else None)
    except yaml.YAMLError as exc:
        return ParseError(str(exc), None)
    doc = Document(None, source)
    if root is None:
        return doc
    builder = _Builder(doc)
    try:
        doc.data = builder.build(root, [])
        if builder.shared:
            doc.alias_problem = alias_problem(doc.data)
    except yaml.YAMLError as exc:
        return ParseError(str(exc), None)
    except RecursionError:
        return ParseError("the document nests too deeply", None)
    return doc


#: Aliases may make the written-out document this many times as large as the members the file
#: spells out (and up to ``ALIAS_FLOOR`` members whatever the ratio); beyond that it is an alias bomb.
ALIAS_EXPANSION = 10
ALIAS_FLOOR = 100_000


class _Cycle(Exception):
    """A container holds itself through an alias."""


def alias_problem(data: Any) -> str | None:
    """Why ``data`` cannot be written out in full, or ``None`` when its aliases expand modestly.

    The expanded size is computed once per distinct container (shared ones are counted
    by size, never walked again), so a billion-laughs document costs what it spells out.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    spelled = 0

    def size(node: Any) -> int:
        nonlocal spelled
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in open_:
            raise _Cycle
        open_.add(key)
        members = node.values() if isinstance(node, dict) else node
        total = 1 + sum(size(member) for member in members)
        open_.discard(key)
        spelled += 1 + len(node)
        sizes[key] = total
        return total

    try:
        expanded = size(data)
    except _Cycle:
        return "an alias refers to a node that contains it, so the document has no finite form"
    if expanded > max(ALIAS_FLOOR, ALIAS_EXPANSION * spelled):
        return (
            f"aliases expand the document to {expanded:,} members from the {spelled:,} the file "
            f"spells out (more than {ALIAS_EXPANSION}x): an alias bomb"
        )
    return None


def load_file(path: str | Path) -> Document | ParseError:
    """Read and parse a description file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return ParseError(f"cannot read {path}: {exc.strerror}", None)
    return load_text(raw, str(path))


def iter_operations(paths: Any) -> Iterator[tuple[str, str, Any, Any]]:
    """``(template, method, operation, path item)`` for every operation under ``paths``."""
    if not isinstance(paths, dict):
        return
    for template, item in paths.items():
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if operation is not None:
                yield str(template), method, operation, item


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
