"""SIGKILL of random agents during a storm of 1,000 broadcasts.

Real `echoctl up` agent processes; the supervisor restarts each killed agent and it
catches up from its cursor. The promise: every agent processes every message
exactly once (one agent_inbox row per role and message, none missing).
"""

from __future__ import annotations

import os
import random
import signal

import pytest

from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.org.node.state import read_org
from echo.slices import BusSettings
from tests.chaos.conftest import (
    agent_restarts,
    assert_each_role_processed_each_once,
    inbox_count,
)
from tests.helpers import ROLES, all_in, run_cli, wait_until

pytestmark = pytest.mark.chaos

MESSAGES = 1000
BATCH = 25


async def test_random_sigkills_during_a_storm_lose_nothing_and_repeat_nothing(
    org_settings: Settings, bus: BusSettings, db: dbmod.Database
) -> None:
    s = org_settings
    started = await run_cli(s, "up", "--detach", "--max-restarts", "100", timeout=120)
    assert started.returncode == 0, started.stderr
    await wait_until(all_in(s, "healthy"), timeout=60, interval=0.1)

    rng = random.Random(7)
    killed: list[int] = []
    sent: list[int] = []
    async with Publisher(bus, db) as pub:
        for batch in range(MESSAGES // BATCH):
            messages = [Message.build(from_role="operator", subject=f"storm {batch}.{i}")
                        for i in range(BATCH)]
            sent += (await pub.publish_many(messages)).db_ids
            if batch % 4 == 1:  # ten kills spread over the storm
                record = read_org(s)
                assert record is not None
                alive = [a.pid for a in record.agents.values()
                         if a.pid and a.state == "running" and a.pid not in killed]
                if alive:
                    victim = rng.choice(alive)
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
    assert len(sent) == MESSAGES and len(killed) >= 5

    async def all_processed() -> bool:
        return await inbox_count(db, sent) >= MESSAGES * len(ROLES)

    await wait_until(all_processed, timeout=90, interval=0.2)
    await assert_each_role_processed_each_once(s, db, ROLES, sent)
    assert sum(agent_restarts(s, ROLES).values()) == len(killed)
    record = read_org(s)  # the organisation is still up: the kills were not fatal
    assert record is not None and record.state == "running"
