"""Registry: unique and duplicate keys, removal when the process exits."""

from __future__ import annotations

from typing import Any

import pytest

from echo.runtime import ActorNotAlive, AlreadyRegistered, Registry

from .helpers import Probe, crash

pytestmark = pytest.mark.anyio


async def test_unique_keys() -> None:
    names = Registry(keys="unique")
    async with Probe("a") as a, Probe("b") as b:
        names.register("cto", a, value={"role": "cto"})
        assert names.lookup("cto") == [(a, {"role": "cto"})]
        assert names.whereis("cto") is a
        with pytest.raises(AlreadyRegistered):
            names.register("cto", b)
        names.unregister("cto")
        assert names.lookup("cto") == [] and names.whereis("cto") is None
        names.register("cto", b)
        assert names.keys(b) == ["cto"] and names.keys(a) == []


async def test_duplicate_keys_and_dispatch() -> None:
    topics = Registry(keys="duplicate")
    async with Probe("a") as a, Probe("b") as b:
        topics.register("decisions", a)
        topics.register("decisions", b, value=2)
        assert topics.count() == 2
        seen: list[Any] = []
        assert topics.dispatch("decisions", lambda entries: seen.extend(entries))
        assert seen == [(a, None), (b, 2)]
        assert not topics.dispatch("nothing", seen.extend)
        topics.unregister("decisions", a)
        assert topics.lookup("decisions") == [(b, 2)]


async def test_entries_vanish_when_the_process_exits() -> None:
    registry = Registry(keys="duplicate")
    a = await Probe("a").start()
    async with Probe("b") as b:
        registry.register("k1", a)
        registry.register("k2", a)
        registry.register("k1", b)
        await crash(a)
        assert registry.lookup("k1") == [(b, None)]
        assert registry.lookup("k2") == []
        assert registry.keys(a) == []
    assert registry.count() == 0


async def test_registering_a_dead_process_fails() -> None:
    probe = await Probe().start()
    await probe.stop()
    with pytest.raises(ActorNotAlive):
        Registry().register("k", probe)


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        Registry(keys="many")  # type: ignore[arg-type]
