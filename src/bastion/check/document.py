"""An API description loaded once, with the line of every member and every local ``$ref``.

PyYAML's C parser reads the text as a stream of events, turned into plain dicts,
lists and scalars in one walk that also records, for each mapping, the line of
each key, and collects every ``$ref`` with the path where it sits. Findings then
carry a JSON pointer and a line without a second parse.
"""

from __future__ import annotations

import gc
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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
    #: id(mapping or list) -> [line of the container, line of each member in order (0: none)]
    lines: dict[int, array[int]] = field(default_factory=dict)
    #: (the $ref value, path of the mapping holding it)
    refs: list[tuple[str, Path_]] = field(default_factory=list)
    #: Why the document cannot be written out in full (an alias bomb or cycle), else ``None``.
    alias_problem: str | None = None
    #: How deeply containers nest once aliases are written out (the root alone: 1).
    depth: int = 0
    #: id(large mapping) -> {key: position}, built when a finding first points into it.
    _positions: dict[int, dict[Any, int]] = field(default_factory=dict, repr=False)

    def line_of(self, container: Any, key: Any = None) -> int | None:
        """The 1-based line of ``container[key]`` (or of the container itself)."""
        entry = self.lines.get(id(container))
        if entry is None:
            return None
        if key is not None:
            index = self._position(container, key)
            if index is not None and index + 1 < len(entry) and entry[index + 1]:
                return entry[index + 1]
        return entry[0]

    def _position(self, container: Any, key: Any) -> int | None:
        """Where ``key`` sits among the members of a list or dict.

        Lines are kept by position, not by key, to stay small. A small mapping is
        scanned; a large one gets a key index the first time a finding points into
        it, so many findings in one big mapping cost one index, not a scan each.
        """
        if isinstance(container, list):
            return key if isinstance(key, int) and 0 <= key < len(container) else None
        if not isinstance(container, dict) or key not in container:
            return None
        if len(container) <= _SCAN_LIMIT:
            return next(i for i, member in enumerate(container) if member == key)
        positions = self._positions.get(id(container))
        if positions is None or len(positions) != len(container):  # new, or grown since (--fix)
            positions = self._positions[id(container)] = {k: i for i, k in enumerate(container)}
        return positions[key]

    def line_at(self, path: Path_) -> int | None:
        """The line of the member at ``path``, or of its nearest ancestor that has one."""
        steps: list[tuple[Any, Any]] = [(self.data, None)]
        node = self.data
        for part in path:
            steps.append((node, part))
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        for container, part in reversed(steps):
            line = self.line_of(container, part)
            if line is not None:
                return line
        return None

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


class _Frame:
    """An open mapping or sequence while events fill it."""

    __slots__ = ("as_key", "container", "key", "key_line", "lines", "merge", "named", "positions")

    def __init__(self, container: dict[Any, Any] | list[Any], lines: array[int]) -> None:
        self.container = container
        self.lines = lines
        #: The key whose value comes next (mappings), ``_EXPECT_KEY`` before a key.
        self.key: Any = _EXPECT_KEY
        self.key_line = 0
        #: Whether this container is the value of a merge key (``<<``), merged into the parent at its end.
        self.merge = False
        #: Whether this container is a complex mapping key (its text becomes the key).
        self.as_key = False
        #: Whether the container added a member to the builder's path (a key or an index).
        self.named = False
        #: Key -> position, built at the first repeated key (rare) so repeats cost O(1) each.
        self.positions: dict[Any, int] | None = None

    def insert(self, key: Any, value: Any, line: int) -> None:
        """Set ``key`` in the mapping and record its line at the key's position."""
        mapping = self.container
        assert isinstance(mapping, dict)
        if key in mapping:
            # A repeated key: the last value wins, at the first one's place (as PyYAML does).
            if self.positions is None:
                self.positions = {k: i for i, k in enumerate(mapping)}
            self.lines[1 + self.positions[key]] = line
        else:
            if self.positions is not None:
                self.positions[key] = len(mapping)
            self.lines.append(line)
        mapping[key] = value


_EXPECT_KEY = object()
#: Mappings up to this size are scanned for a key's position; larger ones are indexed.
_SCAN_LIMIT = 32
_MERGE_KEY = object()
#: Strings up to this length are shared between equal occurrences.
_SHARED_STRING = 64
#: The deepest nesting accepted: the rules walk the tree recursively.
MAX_DEPTH = 500
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("null", "bool", "int", "float", "binary", "timestamp")
)


class _Builder:
    """Builds plain data straight from the parser's events, recording lines and refs on the way.

    No node tree is composed: the events stream through once, so the peak holds the
    data and its lines only. Anchored containers are shared by their aliases (never
    copied), which ``check_aliases`` then checks for bombs and cycles.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.anchors: dict[str, Any] = {}
        self.strings: dict[str, str] = {}
        self.resolver: Any = yaml.resolver.Resolver()
        self.constructor = yaml.constructor.SafeConstructor()
        self.stack: list[_Frame] = []
        self.path: list[str | int] = []
        #: Whether an alias made two places share one container.
        self.shared = False
        self.root: Any = None
        self.documents = 0
        self.deepest = 0

    def run(self, events: Iterator[Any]) -> Any:
        """Consume the parser's events; returns the root value."""
        for event in events:
            kind = type(event)
            if kind is yaml.ScalarEvent:
                value = self.scalar(event)
                if value is _MERGE_KEY and not self.expects_key():
                    raise yaml.constructor.ConstructorError(
                        None, None, "`<<` (a merge key) stands where a value belongs", event.start_mark
                    )
                if event.anchor is not None:
                    self.anchors[event.anchor] = value
                self.add(value, event.start_mark.line + 1)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                self.open({} if kind is yaml.MappingStartEvent else [], event)
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                self.close()
            elif kind is yaml.AliasEvent:
                if event.anchor not in self.anchors:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                    )
                value = self.anchors[event.anchor]
                if isinstance(value, dict | list):
                    self.shared = True
                self.add(value, event.start_mark.line + 1)
            elif kind is yaml.DocumentStartEvent:
                self.documents += 1
                if self.documents > 1:
                    raise yaml.composer.ComposerError(
                        None, None, "expected a single document in the stream", event.start_mark
                    )
        return self.root

    def scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR:
            # Keys, types and $refs repeat thousands of times: one object each, not one per use.
            value: str = event.value
            return self.strings.setdefault(value, value) if len(value) <= _SHARED_STRING else value
        if tag == _MERGE:
            return _MERGE_KEY
        if tag not in _SCALAR_TAGS:
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {tag!r}", event.start_mark
            )
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self.constructor.yaml_constructors[tag](self.constructor, node)
        except (ValueError, TypeError, AttributeError, OverflowError):  # e.g. `!!int abc`, 5,000 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {event.value[:40]!r} as {tag}", event.start_mark
            ) from None

    def expects_key(self) -> bool:
        """Whether the next value is a mapping key."""
        return (
            bool(self.stack)
            and self.stack[-1].key is _EXPECT_KEY
            and isinstance(self.stack[-1].container, dict)
        )

    def add(self, value: Any, line: int) -> None:
        """Put a finished value (scalar, alias, or a container just opened) into the open container."""
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        container = frame.container
        if isinstance(container, list):
            container.append(value)
            frame.lines.append(line)
            return
        if frame.key is _EXPECT_KEY:
            if isinstance(value, dict | list):
                value = str(value)
            frame.key = value
            frame.key_line = line
            return
        key = frame.key
        frame.key = _EXPECT_KEY
        if key is _MERGE_KEY:
            self.merge(frame, value)
            return
        frame.insert(key, value, frame.key_line)
        if key == "$ref" and isinstance(value, str):
            self.doc.refs.append((value, tuple(self.path)))

    def merge(self, frame: _Frame, value: Any) -> None:
        """Merge a ``<<`` value (a mapping or a list of them) into ``frame``: its own keys win."""
        for source in value if isinstance(value, list) else [value]:
            if isinstance(source, dict):
                for k, v in source.items():
                    if k not in frame.container:
                        frame.insert(k, v, 0)

    def open(self, container: dict[Any, Any] | list[Any], event: Any) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise RecursionError
        self.deepest = max(self.deepest, len(self.stack) + 1)
        line = event.start_mark.line + 1
        lines = array("I", (line,))
        self.doc.lines[id(container)] = lines
        if event.anchor is not None:
            self.anchors[event.anchor] = container
        frame = _Frame(container, lines)
        parent = self.stack[-1] if self.stack else None
        if parent is not None and isinstance(parent.container, dict):
            frame.as_key = parent.key is _EXPECT_KEY
            frame.merge = parent.key is _MERGE_KEY
        if parent is not None and not frame.as_key and not frame.merge:
            frame.named = True
            parent_container = parent.container
            self.path.append(len(parent_container) if isinstance(parent_container, list) else parent.key)
        if not frame.as_key and not frame.merge:
            self.add(container, line)
        self.stack.append(frame)

    def close(self) -> None:
        frame = self.stack.pop()
        if frame.named:
            self.path.pop()
        if frame.as_key:
            self.add(frame.container, frame.lines[0])
        elif frame.merge:
            parent = self.stack[-1]
            parent.key = _EXPECT_KEY
            self.merge(parent, frame.container)


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
        return _load(text, source)


def _load(text: str | bytes | BinaryIO, source: str) -> Document | ParseError:
    doc = Document(None, source)
    builder = _Builder(doc)
    try:
        doc.data = builder.run(yaml.parse(text, Loader=_Loader))
        doc.depth = builder.deepest
        if builder.shared:
            doc.alias_problem, doc.depth = check_aliases(doc.data)
            if doc.depth > MAX_DEPTH:  # aliases nested in aliases: as deep as if spelled out
                raise RecursionError
    except yaml.MarkedYAMLError as exc:
        mark: Any = exc.problem_mark or exc.context_mark
        return ParseError(str(exc.problem or exc), mark.line + 1 if mark else None)
    except yaml.YAMLError as exc:
        return ParseError(str(exc), None)
    except RecursionError:
        return ParseError(f"the document nests more than {MAX_DEPTH} levels deep", None)
    return doc


#: Aliases may make the written-out document this many times as large as the members the file
#: spells out (and up to ``ALIAS_FLOOR`` members whatever the ratio); beyond that it is an alias bomb.
ALIAS_EXPANSION = 10
ALIAS_FLOOR = 100_000


class _Cycle(Exception):
    """A container holds itself through an alias."""


def check_aliases(data: Any) -> tuple[str | None, int]:
    """Why ``data`` cannot be written out in full (or ``None``), and its depth written out.

    The expanded size and depth are computed once per distinct container (shared ones
    are looked up, never walked again), so a billion-laughs document costs what it
    spells out.
    """
    measured: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()
    spelled = 0

    def measure(node: Any) -> tuple[int, int]:
        nonlocal spelled
        if not isinstance(node, dict | list):
            return 1, 0
        key = id(node)
        known = measured.get(key)
        if known is not None:
            return known
        if key in open_:
            raise _Cycle
        open_.add(key)
        total, deepest = 1, 0
        for member in node.values() if isinstance(node, dict) else node:
            size, depth = measure(member)
            total += size
            deepest = max(deepest, depth)
        open_.discard(key)
        spelled += 1 + len(node)
        measured[key] = total, deepest + 1
        return total, deepest + 1

    try:
        expanded, depth = measure(data)
    except _Cycle:
        return "an alias refers to a node that contains it, so the document has no finite form", 0
    if expanded > max(ALIAS_FLOOR, ALIAS_EXPANSION * spelled):
        return (
            f"aliases expand the document to {expanded:,} members from the {spelled:,} the file "
            f"spells out (more than {ALIAS_EXPANSION}x): an alias bomb"
        ), depth
    return None, depth


def load_file(path: str | Path) -> Document | ParseError:
    """Read and parse a description file."""
    try:
        # The parser reads the file in chunks: the whole text is never held in memory.
        with Path(path).open("rb") as stream, no_gc():
            return _load(stream, str(path))
    except OSError as exc:
        return ParseError(f"cannot read {path}: {exc.strerror}", None)


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
