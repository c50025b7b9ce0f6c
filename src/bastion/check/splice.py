"""``--fix`` as additions to the file's own text: comments, order, quoting and style stay.

The fixer changes the parsed data and notes, for each container the file spells
out, the keys (or list items) it added. One more pass over the parser's events
finds where each of those containers sits in the text: where its last member
ends, the column its members start at, and whether it is block or flow style.
The new members are then written there:

- a block mapping or sequence gets new lines after its last member, at its
  members' indentation, written by the same YAML writer as a whole document;
- a flow mapping or sequence (and so every JSON object and array) gets
  ``, "key": value`` in JSON after its last member, on new lines indented like its
  members when it spans several lines, else inline.

The caller parses the result again, which must equal the fixed data; when it does
not, or a container cannot be found in the text (it is reached through an alias),
it writes the whole document instead. The text is written a slice at a time around
the insertions: no list of its lines, no second copy of it.
"""

from __future__ import annotations

import io
import json
import re
from array import array
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from bastion.check.document import Path_
from bastion.check.emit import write_yaml

try:  # pragma: no branch - the C parser ships with PyYAML wheels
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

Key = tuple[str, ...]
#: Where text goes: (0-based line, column), column -1 meaning "new lines before this line".
Spot = tuple[int, int]


def key_of(path: Path_) -> Key:
    """A path as the locating pass spells it (every member name as text)."""
    return tuple(str(part) for part in path)


@dataclass(slots=True)
class Span:
    """Where one container sits in the text."""

    flow: bool
    mapping: bool
    start: Spot
    #: (line, column) just after the last member's value; ``None`` when it has no members.
    last_end: Spot | None = None
    #: Column of the first member (flow) or of the container's first key or dash (block).
    member_column: int = 0
    #: Line of the closing bracket (flow only).
    close_line: int = 0


class _Frame:
    __slots__ = ("expect_key", "flow", "index", "key", "mapping", "path", "span")

    def __init__(self, path: Key, mapping: bool, flow: bool, span: Span | None) -> None:
        self.path = path
        self.mapping = mapping
        self.flow = flow
        self.span = span
        self.expect_key = True
        self.key = ""
        self.index = 0

    def child(self) -> str:
        return self.key if self.mapping else str(self.index)

    def done(self) -> None:
        """A member (a value, or a list item) is complete."""
        if self.mapping:
            self.expect_key = True
        else:
            self.index += 1


def _key_text(event: Any, resolver: Any) -> str:
    """The text of a scalar key, as ``str()`` of the loaded key would spell it for an integer."""
    value: str = event.value
    if event.style is None and event.implicit[0]:
        tag = resolver.resolve(yaml.ScalarNode, value, (True, False))
        if tag == "tag:yaml.org,2002:int":
            try:
                return str(int(value.replace("_", ""), 0))
            except ValueError:
                return value
    return value


def locate(text: str, wanted: set[Key]) -> dict[Key, Span]:
    """The spans of the containers at ``wanted`` paths (those the text spells out)."""
    found: dict[Key, Span] = {}
    stack: list[_Frame] = []
    last_end: Spot = (0, 0)
    resolver: Any = yaml.resolver.Resolver()
    events: Any = yaml.parse(text, Loader=_Loader)
    for event in events:
        kind = type(event)
        top = stack[-1] if stack else None
        span_ = top.span if top is not None else None
        if span_ is not None and span_.flow and span_.last_end is None and top is not None and top.expect_key:
            # The first member of a flow container: later members line up with it.
            span_.member_column = event.start_mark.column
        if kind is yaml.ScalarEvent or kind is yaml.AliasEvent:
            if top is not None and top.mapping and top.expect_key:
                top.key = _key_text(event, resolver) if kind is yaml.ScalarEvent else "*"
                top.expect_key = False
                continue
            last_end = (event.end_mark.line, event.end_mark.column)
            if top is not None:
                _member_done(top, last_end)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            mapping = kind is yaml.MappingStartEvent
            if top is not None and top.mapping and top.expect_key:
                top.key, top.expect_key = "?", False  # a complex key: nothing of ours lives there
            path = (*top.path, top.child()) if top is not None else ()
            span = None
            if path in wanted:
                mark = event.start_mark
                span = Span(bool(event.flow_style), mapping, (mark.line, mark.column), None, mark.column)
                found[path] = span
            stack.append(_Frame(path, mapping, bool(event.flow_style), span))
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = stack.pop()
            if frame.flow:  # the member ends after the bracket; a block one ends with its last value
                last_end = (event.end_mark.line, event.end_mark.column)
                if frame.span is not None:
                    frame.span.close_line = event.start_mark.line
            if stack:
                _member_done(stack[-1], last_end)
    return found


def _member_done(frame: _Frame, end: Spot) -> None:
    if frame.span is not None:
        frame.span.last_end = end
    frame.done()


def _block_text(span: Span, members: Any) -> str:
    out = io.StringIO()
    write_yaml(members, out)
    pad = " " * span.member_column
    return "".join(pad + line if line.strip() else line for line in out.getvalue().splitlines(True))


def _flow_text(span: Span, container: Any, keys: list[Any]) -> str:
    """The JSON members to insert after a flow container's last member (or its opening bracket)."""
    parts = []
    for key in keys:
        value = container[key]
        member = json.dumps(value, ensure_ascii=False, indent=2 if span.close_line > span.start[0] else None)
        if span.mapping:
            member = f"{json.dumps(str(key), ensure_ascii=False)}: {member}"
        parts.append(member)
    if span.close_line > span.start[0]:  # several lines: one member per line, like its siblings
        pad = "\n" + " " * span.member_column
        return "".join(
            ("," if i or span.last_end else "") + pad + part.replace("\n", pad)
            for i, part in enumerate(parts)
        )
    return ("" if span.last_end is None else ", ") + ", ".join(parts)


#: What PyYAML counts as a line break, so its line numbers find the same lines here.
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def insertions(text: str, additions: list[tuple[Path_, Any, list[Any]]]) -> list[tuple[int, str]] | None:
    """Where in ``text`` (character offsets, in order) to write what, or ``None`` when it cannot be done.

    ``additions`` holds (path of a container, the container, the keys or list indexes
    added to it).
    """
    spans = locate(text, {key_of(path) for path, _, _ in additions})
    starts = array("Q", [0])
    starts.extend(match.end() for match in _BREAK.finditer(text))
    # (offset, -column, text): where several containers end at one line, the deeper one's members first.
    found: list[tuple[int, int, str]] = []
    for path, container, keys in additions:
        span = spans.get(key_of(path))
        if span is None or span.mapping != isinstance(container, dict):
            return None  # reached through an alias or a merge key: not where the data says
        if span.flow:
            line, column = span.last_end or (span.start[0], span.start[1] + 1)
            found.append((starts[line] + column, 0, _flow_text(span, container, keys)))
            continue
        if span.last_end is None:
            return None
        members = {k: container[k] for k in keys} if span.mapping else [container[i] for i in keys]
        end_line, end_column = span.last_end
        # A value that ends at a line's start (a block scalar) ends on the line before.
        at = end_line + 1 if end_column > 0 else end_line
        block = _block_text(span, members)
        if at < len(starts):
            found.append((starts[at], -span.member_column, block))
        else:  # after the last line, which may lack its line break
            found.append((len(text), -span.member_column, ("" if _ends_line(text) else "\n") + block))
    found.sort(key=lambda item: (item[0], item[1]))
    return [(offset, addition) for offset, _, addition in found]


def _ends_line(text: str) -> bool:
    return not text or _BREAK.match(text[-1]) is not None


def write_spliced(text: str, inserts: list[tuple[int, str]], out: TextIO) -> None:
    """Write ``text`` with each insertion at its offset, a slice at a time."""
    done = 0
    for offset, addition in inserts:
        out.write(text[done:offset])
        out.write(addition)
        done = offset
    out.write(text[done:])
