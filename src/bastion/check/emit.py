"""Writing plain data as YAML through libyaml's emitter, one event at a time.

``yaml.dump`` first represents the whole document as a node tree (about 20 times
the output's size in memory) and recurses a few frames per level. Here the data
is walked with an explicit stack and each event goes straight to the emitter, so
memory stays at the data plus the path being written, and no nesting is too deep.
Scalars are represented and tagged exactly as ``yaml.dump`` does (SafeRepresenter,
then the resolver decides whether the tag may be left implicit), and shared
objects are written out in full: anchors in an API description confuse many tools.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TextIO

import yaml

try:  # pragma: no branch - the C emitter ships with PyYAML wheels
    _Dumper: Any = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Dumper = yaml.SafeDumper

_END_MAPPING = object()
_END_SEQUENCE = object()


def _events(data: Any) -> Iterator[yaml.Event]:
    representer: Any = yaml.representer.SafeRepresenter()
    resolver: Any = yaml.resolver.Resolver()
    yield yaml.StreamStartEvent()
    yield yaml.DocumentStartEvent(explicit=False)
    pending: list[Any] = [data]
    while pending:
        item = pending.pop()
        if item is _END_MAPPING:
            yield yaml.MappingEndEvent()
        elif item is _END_SEQUENCE:
            yield yaml.SequenceEndEvent()
        elif isinstance(item, dict):
            yield yaml.MappingStartEvent(None, None, True, flow_style=False)
            pending.append(_END_MAPPING)
            for key, value in reversed(item.items()):
                pending.append(value)
                pending.append(key)
        elif isinstance(item, list):
            yield yaml.SequenceStartEvent(None, None, True, flow_style=False)
            pending.append(_END_SEQUENCE)
            pending.extend(reversed(item))
        else:
            node = representer.represent_data(item)
            implicit = (
                node.tag == resolver.resolve(yaml.ScalarNode, node.value, (True, False)),
                node.tag == resolver.resolve(yaml.ScalarNode, node.value, (False, True)),
            )
            yield yaml.ScalarEvent(None, node.tag, implicit, node.value, style=node.style)
    yield yaml.DocumentEndEvent(explicit=False)
    yield yaml.StreamEndEvent()


def write_yaml(data: Any, out: TextIO) -> None:
    """Write ``data`` (dicts, lists, scalars) as block YAML, keys in their order, aliases spelled out."""
    yaml.emit(_events(data), out, Dumper=_Dumper, allow_unicode=True, width=4096)
