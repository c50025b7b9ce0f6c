"""Admin changes as data: the layer the admin API adds on top of the configuration file.

A change names an entry, a rate limit rule by its name or a consumer by its API key's
SHA-256 digest, and says what the admin layer does to it:

- ``put``: the entry is exactly ``fields`` (created, or replacing the file's);
- ``patch``: ``fields`` replace those keys of the file's entry, the others stay the file's;
- ``delete``: the entry no longer exists, whatever the file says.

Dropping the change (the store forgets the entry) gives the file's entry back.
:func:`apply_changes` lays the changes over a configuration and returns the mapping to
validate; :func:`layers` says, per field, which layer a value comes from. Nothing here
does I/O.

A consumer is a ``clients.keys`` entry (``sha256``, ``name``, ``tier``, ``limits``) plus,
optionally, ``validation``: a ``validation.relax`` entry without its ``match`` (the
consumer's own name is the match), put before the file's entries so that it wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.config import Config

RULE = "rule"
CONSUMER = "consumer"
KINDS = (RULE, CONSUMER)
Op = Literal["put", "patch", "delete"]
#: The consumer field that becomes a ``validation.relax`` entry rather than a key field.
CONSUMER_VALIDATION = "validation"


@dataclass(frozen=True, slots=True)
class Change:
    """What the admin layer does to one entry, who did it and when (``version`` orders changes)."""

    kind: str
    name: str
    op: Op
    fields: Mapping[str, Any] = field(default_factory=dict)
    actor: str = ""
    at: float = 0.0
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        """The stored form (``kind`` and ``name`` are the store's key)."""
        return {
            "op": self.op,
            "fields": dict(self.fields),
            "actor": self.actor,
            "at": self.at,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, kind: str, name: str, data: Mapping[str, Any]) -> Change:
        """A change read back from a store."""
        op = data.get("op")
        if op not in ("put", "patch", "delete") or kind not in KINDS:
            raise ValueError(f"the stored change to {kind} {name!r} is not one bastion wrote")
        return cls(
            kind,
            name,
            op,
            dict(data.get("fields") or {}),
            str(data.get("actor", "")),
            float(data.get("at", 0.0)),
            int(data.get("version", 0)),
        )


#: Every change in force, by ``(kind, name)``.
Changes = Mapping[tuple[str, str], Change]


def _merge_entries(base: list[dict[str, Any]], key: str, kind: str, changes: Changes) -> list[dict[str, Any]]:
    """``base`` entries (identified by ``key``) with the changes of ``kind`` laid over them, in order."""
    merged: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in base:
        name = str(entry.get(key, ""))
        seen.add(name)
        change = changes.get((kind, name))
        if change is None:
            merged.append(entry)
        elif change.op == "put":
            merged.append({key: name, **change.fields})
        elif change.op == "patch":
            merged.append({**entry, **change.fields, key: name})
    for (change_kind, name), change in sorted(changes.items(), key=lambda item: item[1].version):
        if change_kind == kind and name not in seen and change.op != "delete":
            # A patch of an entry the file does not have creates it from its fields alone.
            merged.append({key: name, **change.fields})
    return merged


def apply_changes(config: Config, changes: Changes) -> dict[str, Any]:
    """The mapping of ``config`` with ``changes`` laid over it, to validate as a configuration."""
    data: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True)
    if any(kind == RULE for kind, _ in changes):
        limits = dict(data.get("rate_limits") or {})
        limits["rules"] = _merge_entries(list(limits.get("rules") or []), "name", RULE, changes)
        data["rate_limits"] = limits
    if any(kind == CONSUMER for kind, _ in changes):
        clients = dict(data.get("clients") or {})
        # The keys of keys_file too: the merged list replaces both (the file is read again at
        # every reload of the configuration, so nothing of it is lost).
        known = config.clients.known_keys() or ()
        base = [key.model_dump(mode="json", exclude_unset=True) for key in known]
        keys = _merge_entries(base, "sha256", CONSUMER, changes)
        relax: list[dict[str, Any]] = []
        for key in keys:
            validation = key.pop(CONSUMER_VALIDATION, None)
            if validation is not None:
                relax.append({**validation, "match": {"client": key.get("name")}})
        clients["keys"] = keys
        clients.pop("keys_file", None)
        data["clients"] = clients
        if relax:
            section = dict(data.get("validation") or {})
            section["relax"] = [*relax, *(section.get("relax") or [])]
            data["validation"] = section
    return data


def file_entry(config: Config, kind: str, name: str) -> dict[str, Any] | None:
    """The file's own entry (the keys it sets), or ``None`` when the file has none."""
    if kind == RULE:
        for rule in config.rate_limits.rules:
            if rule.name == name:
                return rule.model_dump(mode="json", exclude_unset=True)
        return None
    for key in config.clients.known_keys() or ():
        if key.sha256 == name:
            return key.model_dump(mode="json", exclude_unset=True)
    return None


def layers(
    file: Mapping[str, Any] | None, change: Change | None, effective: Mapping[str, Any]
) -> dict[str, str]:
    """Per field of ``effective``, the layer its value comes from: ``admin``, ``file`` or ``default``."""
    admin: set[str] = set()
    from_file: set[str] = set(file or {})
    if change is not None:
        admin = set(change.fields)
        if change.op == "put":
            from_file = set()
    found: dict[str, str] = {}
    for name in effective:
        found[name] = "admin" if name in admin else "file" if name in from_file else "default"
    return found
