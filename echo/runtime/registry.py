"""Registry: find processes by key, and forget them when they exit.

    names = Registry(keys="unique")
    names.register("cto", agent)                 # AlreadyRegistered if taken
    [(process, value)] = names.lookup("cto")

    topics = Registry(keys="duplicate")
    topics.register("decisions", agent_a)
    topics.register("decisions", agent_b, value={"role": "cto"})
    topics.dispatch("decisions", lambda entries: [p.cast(msg) for p, _ in entries])

Each registered process is monitored once; when it exits, the `Down` removes all its
entries before anyone can look them up again, so a lookup never returns a process that
is known to be dead. Registering a process that is not alive raises `ActorNotAlive`.

Unlike Elixir's Registry this is a plain object rather than a process: the event loop
is single-threaded, so the table needs no owner to serialise access.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal

from echo.runtime._core import Down, MonitorRef, Process, demonitor, monitor
from echo.runtime._exceptions import ActorNotAlive, AlreadyRegistered

__all__ = ["Registry"]


class Registry:
    """A table of key -> [(process, value)], with ``unique`` or ``duplicate`` keys."""

    def __init__(self, keys: Literal["unique", "duplicate"] = "unique") -> None:
        if keys not in ("unique", "duplicate"):
            raise ValueError(f"keys must be 'unique' or 'duplicate', not {keys!r}")
        self.kind = keys
        self._entries: dict[Hashable, list[tuple[Process, Any]]] = {}
        self._keys_of: dict[Process, list[Hashable]] = {}
        self._refs: dict[Process, MonitorRef] = {}

    def register(self, key: Hashable, process: Process, value: Any = None) -> None:
        """Add ``(process, value)`` under ``key``."""
        if not process.alive:
            raise ActorNotAlive(process, process.exit_reason)
        entries = self._entries.setdefault(key, [])
        if self.kind == "unique" and entries:
            raise AlreadyRegistered(key, entries[0][0])
        entries.append((process, value))
        self._keys_of.setdefault(process, []).append(key)
        if process not in self._refs:
            self._refs[process] = monitor(process, self._on_down)

    def lookup(self, key: Hashable) -> list[tuple[Process, Any]]:
        """The ``(process, value)`` pairs under ``key`` (empty if none)."""
        return list(self._entries.get(key, ()))

    def whereis(self, key: Hashable) -> Process | None:
        """The first process under ``key``, or None."""
        entries = self._entries.get(key)
        return entries[0][0] if entries else None

    def keys(self, process: Process) -> list[Hashable]:
        """The keys ``process`` is registered under."""
        return list(self._keys_of.get(process, ()))

    def unregister(self, key: Hashable, process: Process | None = None) -> None:
        """Remove ``key``'s entries for ``process`` (for every process if None)."""
        entries = self._entries.get(key)
        if not entries:
            return
        removed = [p for p, _ in entries if process is None or p is process]
        kept = [(p, v) for p, v in entries if not (process is None or p is process)]
        if kept:
            self._entries[key] = kept
        else:
            del self._entries[key]
        for owner in removed:
            owned = self._keys_of.get(owner, [])
            if key in owned:
                owned.remove(key)
            if not owned:
                self._forget(owner)

    def dispatch(self, key: Hashable, fn: Callable[[list[tuple[Process, Any]]], object]) -> bool:
        """Call ``fn(entries)`` if ``key`` has entries; returns whether it was called."""
        entries = self.lookup(key)
        if entries:
            fn(entries)
        return bool(entries)

    def count(self) -> int:
        """How many ``(key, process)`` entries there are."""
        return sum(len(entries) for entries in self._entries.values())

    def _forget(self, process: Process) -> None:
        self._keys_of.pop(process, None)
        ref = self._refs.pop(process, None)
        if ref is not None:
            demonitor(ref)

    def _on_down(self, down: Down) -> None:
        process = down.process
        for key in self._keys_of.get(process, []):
            entries = [(p, v) for p, v in self._entries.get(key, ()) if p is not process]
            if entries:
                self._entries[key] = entries
            else:
                self._entries.pop(key, None)
        self._forget(process)
