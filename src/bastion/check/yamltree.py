"""Plain data built straight from PyYAML's parser events, with every line and ``$ref`` recorded.

:func:`bastion.check.document.load_text` and ``load_file`` drive it; this module
holds the one walk over the events and the alias checks that follow it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"

#: Where a member sits: the keys and indexes from the root.
Path_ = tuple[str | int, ...]


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
_MERGE_KEY = object()
#: Strings up to this length are shared between equal occurrences.
_SHARED_STRING = 64
#: The deepest nesting accepted: the rules walk the tree recursively.
MAX_DEPTH = 500
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("null", "bool", "int", "float", "binary", "timestamp")
)


class TreeBuilder:
    """Builds plain data straight from the parser's events, recording lines and refs on the way.

    No node tree is composed: the events stream through once, so the peak holds the
    data and its lines only. Anchored containers are shared by their aliases (never
    copied), which ``check_aliases`` then checks for bombs and cycles.
    """

    def __init__(self, lines: dict[int, array[int]], refs: list[tuple[str, Path_]]) -> None:
        #: Where each container's lines go (``Document.lines``).
        self.lines = lines
        #: Where each ``$ref`` and the path holding it go (``Document.refs``).
        self.refs = refs
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
            self.refs.append((value, tuple(self.path)))

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
        self.lines[id(container)] = lines
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
