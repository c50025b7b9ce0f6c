"""The admin layer of one :class:`~bastion.Bastion`: the change store, the poll, the API's listener.

:class:`AdminControl` is a resource of the instance (kept across reloads). At start it
reads every change from the shared store and applies them before the first request;
then it asks the store for its version every ``admin.poll_interval`` and applies the
changes again when another worker or host made one. With ``admin.listen`` it also
serves the admin API (:mod:`bastion.control.admin_api`), wrapped in a
:class:`~bastion.Bastion` of its own that validates every request against the API's
description.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bastion.config import ConfigError
from bastion.config.admin import read_tokens, split_listen
from bastion.control.admin_api import DESCRIPTION, AdminAPI, entry_view
from bastion.control.change_stores import STORES
from bastion.control.changes import CONSUMER, CONSUMER_VALIDATION, RULE, Change, Changes, file_entry

if TYPE_CHECKING:
    from bastion.stack import Bastion

#: After this many failed polls in a row, a failing store is logged again only every this many.
_LOG_EVERY = 20


class AdminControl:
    """Keeps one instance's configuration in step with the admin changes in the shared store."""

    name = "admin"

    def __init__(self, bastion: Bastion) -> None:
        config = bastion.config
        self.bastion = bastion
        self.settings = config.admin
        self.store = STORES.open(config.admin_store(), config.admin.key_prefix, key="admin.store")
        if self.settings.listen is not None and importlib.util.find_spec("aiohttp") is None:
            hint = "the admin API's listener needs the gateway extra: pip install 'bastion-guards[gateway]'"
            raise ConfigError([("admin.listen", hint)])
        self.tokens = read_tokens(self.settings.token_file) if self.settings.token_file else None
        #: The version of the changes in force here, and the changes.
        self.version = -1
        self.changes: Changes = {}
        self._poller: asyncio.Task[None] | None = None
        self._failures = 0
        self._closing = False
        self._sync_lock = asyncio.Lock()
        self.api = AdminAPI(self)
        self.app: Any = None
        self.listener: Any = None

    async def start(self) -> None:
        """Connect to the store and make the API.

        :meth:`~bastion.Bastion.startup` then applies the changes already made
        (:meth:`sync` with ``starting``) before the first request, and only then does
        the poll begin and (with ``listen``) the listener serve the API.
        """
        with contextlib.suppress(Exception):
            # Unreachable now: the instance starts with the file's configuration, says so
            # (the readiness check fails while the store does) and applies the changes
            # once the store answers.
            await self.store.start()
        # Served by the listener, and by the dashboard's controls.
        self.app = _described(self.api, self.bastion.config.logging.level)
        await self.app.startup()

    async def _begin(self) -> None:
        """Poll the store and (with ``listen``) serve the API.

        Not before the changes already made apply: a change applied earlier, by a poll or
        through the API, would wait for the reload lock that start-up holds, while start-up
        waited for that change to finish.
        """
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        if self.settings.listen is not None and self.listener is None:
            from bastion.control.admin_listener import AdminListener

            host, port = split_listen(self.settings.listen)
            self.listener = AdminListener(self.app, host, port)
            await self.listener.start()

    async def close(self) -> None:
        """Stop polling and listening; close the store."""
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self.listener is not None:
            await self.listener.stop()
        if self.app is not None:
            await self.app.shutdown()
        await self.store.close()

    async def ping(self) -> bool:
        """Whether the change store answers."""
        return bool(await self.store.ping())

    async def sync(self, *, starting: bool = False) -> None:
        """Apply the changes in the store if their version moved since the last look.

        ``starting``: at start-up, where an unreachable store is logged rather than raised;
        then the poll and the API begin.
        """
        await self._sync(starting)
        if starting:
            await self._begin()

    async def _sync(self, starting: bool) -> None:
        async with self._sync_lock:
            try:
                version = await self.store.version()
                if version == self.version:
                    return
                version, changes = await self.store.read()
            except Exception as exc:
                if not starting:
                    raise
                self.bastion.logger.error(
                    "admin store unreachable at start: the file's configuration applies until it answers",
                    store=self.store.name,
                    error=type(exc).__name__,
                )
                return
            # Whether the changes fit the file or not, they are the latest: a failed reload
            # is logged and counted, and the next reload of the file tries them again.
            moved = changes != self.changes
            self.version, self.changes = version, changes
            if moved:
                await self.bastion.apply_admin_changes(changes, starting=starting)

    async def _poll(self) -> None:
        interval = self.settings.poll_interval.seconds
        while not self._closing:
            await asyncio.sleep(interval)
            try:
                await self.sync()
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                if self._failures == 1 or self._failures % _LOG_EVERY == 0:
                    self.bastion.logger.warning(
                        "admin store unreachable; the changes in force stay",
                        store=self.store.name,
                        error=type(exc).__name__,
                        failures=self._failures,
                    )

    def check(self, changes: Changes) -> None:
        """Raise as a reload would if ``changes`` cannot apply to the configuration file."""
        self.bastion.check_admin_changes(changes)

    def audit(
        self, actor: str, kind: str, name: str, change: Change | None, *, forget: bool, version: int
    ) -> None:
        """The audit line of one change: who, what, and the version it made."""
        self.bastion.logger.info(
            "admin change",
            audit=True,
            actor=actor,
            kind=kind,
            name=name,
            op="forget" if forget or change is None else change.op,
            fields=dict(change.fields) if change is not None else {},
            version=version,
            pid=os.getpid(),
        )

    def effective(self) -> dict[str, Any]:
        """The configuration in force, secrets redacted, with the admin version and changes."""
        config = self.bastion.config
        data = config.model_dump(mode="json")
        for section, key in (
            (data, "store"),
            (data, "upstream"),
            *((data[s], "store") for s in _STORE_SECTIONS),
        ):
            if section.get(key):
                section[key] = _redacted(section[key])
        changes = [
            {"kind": kind, "name": name, "op": c.op, "actor": c.actor, "at": c.at, "version": c.version}
            for (kind, name), c in sorted(self.changes.items(), key=lambda item: item[1].version)
        ]
        return {"config": data, "admin_version": self.version, "changes": changes}

    def entries(self, kind: str) -> list[dict[str, Any]]:
        """Every rule or consumer in force, with the layer of each field."""
        config = self.bastion.config
        if kind == RULE:
            names = [rule.name for rule in config.rate_limits.rules]
        else:
            names = [key.sha256 for key in config.clients.known_keys() or ()]
        return [view for view in map(lambda name: self.entry(kind, name), names) if view is not None]

    def entry(self, kind: str, name: str) -> dict[str, Any] | None:
        """One rule or consumer in force, or ``None``."""
        config = self.bastion.config
        effective: dict[str, Any] | None = None
        if kind == RULE:
            for rule in config.rate_limits.rules:
                if rule.name == name:
                    effective = rule.model_dump(mode="json")
        else:
            for key in config.clients.known_keys() or ():
                if key.sha256 == name:
                    effective = key.model_dump(mode="json")
        if effective is None:
            return None
        change = self.changes.get((kind, name))
        if kind == CONSUMER and change is not None and CONSUMER_VALIDATION in change.fields:
            effective[CONSUMER_VALIDATION] = change.fields[CONSUMER_VALIDATION]
        return entry_view(kind, effective, file_entry(self.bastion.file_config, kind, name), change)


_STORE_SECTIONS = ("idempotency", "rate_limits", "admin")


def _redacted(url: str) -> str:
    """``url`` without its password (stores and the upstream may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _described(api: AdminAPI, level: str) -> Any:
    """``api`` wrapped in a :class:`~bastion.Bastion` that validates it against its description."""
    from bastion.stack import Bastion

    settings = {
        "openapi": str(DESCRIPTION),
        "store": "memory://",
        "idempotency": {"enabled": False},
        "metrics": {"enabled": False},
        "logging": {"level": level, "access": False},
        "validation": {"max_body_bytes": "256KiB"},
    }
    # env={}: the BASTION_... variables configure the instance being administered, not this one.
    return Bastion(api, settings, env={})
