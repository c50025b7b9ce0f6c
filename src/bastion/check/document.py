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

from bastion.aliases import check_aliases
from bastion.check.yamltree import MAX_DEPTH as MAX_DEPTH
from bastion.check.yamltree import Path_ as Path_
from bastion.check.yamltree import TreeBuilder
from bastion.protocols import HTTP_METHODS

try:  # pragma: no branch - the C loader ships with PyYAML wheels
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

#: Mappings up to this size are scanned for a key's position; larger ones are indexed.
_SCAN_LIMIT = 32


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
    builder = TreeBuilder(doc.lines, doc.refs)
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
