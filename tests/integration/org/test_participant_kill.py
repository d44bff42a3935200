"""A participant SIGKILLed while it handles a message: its successor still handles it
(issue 19, fault 1).

The participant used to commit the message's `agent_inbox` row first and only then log
`processed message N` and kick the workflow. Killed in between, it left the row, and
its successor skipped the message as a redelivery: recorded, never handled. Here a
real process runs the agent's delivery path (Subscriber -> Participant) over a burst
of messages and SIGKILLs itself at a chosen point of one message's handling (a logging
handler that sees the line: before it is written, or just after); a second process
takes over from the saved cursor, as a restarted agent does.

What must hold for every message: its row exists once, the line of the attempt the row
names exists exactly once (lines of attempts that died before their commit are not
processings), and the handling's database effects happened exactly once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.logs import parse_line

BURST = 400
KILL_AT = 137  # the index in the burst of the message whose handling is killed

CHILD = r"""
import logging, os, signal, sys
import anyio
from echo import db
from echo.bus import Subscriber
from echo.config import Settings
from echo.logs import configure
from echo.org.agent.participant import Participant
from echo.runtime import Registry

kill_at, when, last, effect = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "effect"
line = f"cto processed message {kill_at} from "


class KillPoint(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith(line):
            os.kill(os.getpid(), signal.SIGKILL)


async def write_effect(conn, message):  # the handling's database write, in its transaction
    await conn.execute("INSERT INTO handled (role, message_id) VALUES ('cto', $1)", message.id)
    if when == "in-handle" and message.id == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


async def main():
    configure("INFO")
    root = logging.getLogger()
    if when == "before-line":
        root.handlers.insert(0, KillPoint())
    elif when == "after-line":
        root.handlers.append(KillPoint())
    settings = Settings()
    database = await db.Database.open(settings.database, max_size=2)
    participant = await Participant(database, "cto", Registry(),
                                    **({"handle": write_effect} if effect else {})).start()

    async def deliver(message):
        await participant.call(("message", message), timeout=None)

    sub = Subscriber(settings.bus, database, "cto", deliver)
    async with anyio.create_task_group() as tg:
        await tg.start(sub.run)
        while participant.last_message_id < last:
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()  # saves the cursor
    await database.close()

anyio.run(main)
"""


async def burst(settings: Settings, db: dbmod.Database) -> list[int]:
    async with Publisher(settings.bus, db) as pub:
        return (await pub.publish_many(
            [Message.build(from_role="operator", subject=f"burst {i}") for i in range(BURST)])).db_ids


def run_child(s: Settings, log: Path, kill_at: int, when: str, last: int, effect: bool) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    with log.open("a") as out:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(kill_at), when, str(last),
             "effect" if effect else "plain"],
            env=env, stdout=out, stderr=out, timeout=300, check=False)
    return done.returncode


def lines(log: Path) -> Counter[tuple[int, str]]:
    """(message id, attempt) of every `processed` line of the log."""
    seen: Counter[tuple[int, str]] = Counter()
    for raw in log.read_text().splitlines():
        parsed = parse_line(raw)
        match = re.match(r"cto processed message (\d+) from ", parsed["message"])
        if match:
            seen[(int(match[1]), str(parsed["fields"].get("attempt")))] += 1
    return seen


async def test_a_kill_before_the_line_is_written_leaves_no_message_unhandled(
    settings: Settings, db: dbmod.Database, tmp_path: Path
) -> None:
    await kill_and_take_over(settings, db, tmp_path, "before-line")


async def test_a_kill_after_the_line_is_written_leaves_one_processing_per_message(
    settings: Settings, db: dbmod.Database, tmp_path: Path
) -> None:
    await kill_and_take_over(settings, db, tmp_path, "after-line")


async def kill_and_take_over(settings: Settings, db: dbmod.Database, tmp_path: Path,
                             when: str) -> None:
    ids = await burst(settings, db)
    log = tmp_path / "cto.log"
    assert run_child(settings, log, ids[KILL_AT], when, ids[-1], effect=False) == -9
    assert run_child(settings, log, ids[KILL_AT], "never", ids[-1], effect=False) == 0

    seen = lines(log)
    handled = {message_id for message_id, _ in seen}
    never = sorted(set(ids) - handled)
    assert not never, f"{len(never)} message(s) recorded but never handled, e.g. {never[:5]}"
    async with db.acquire() as conn:
        rows = {r["message_id"]: r["attempt"] for r in await conn.fetch(
            "SELECT message_id, attempt FROM agent_inbox WHERE role = 'cto'")}
    assert sorted(rows) == ids
    # The processing of each message is the line of the attempt its row names: once.
    assert all(seen[(i, rows[i])] == 1 for i in ids)
    other = [(i, a) for i, a in seen if rows.get(i) != a]  # attempts that rolled back
    assert all(i == ids[KILL_AT] for i, _ in other)
    assert len(other) == (1 if when == "after-line" else 0)


async def test_the_handlings_writes_commit_with_the_record_exactly_once(
    settings: Settings, db: dbmod.Database, tmp_path: Path
) -> None:
    """The handling's own database writes commit with the inbox row: a kill after the
    write and before the commit leaves neither, and the successor does both."""
    async with db.acquire() as conn:
        await conn.execute("CREATE TABLE handled (role text, message_id bigint)")  # no key
    ids = await burst(settings, db)
    log = tmp_path / "cto.log"
    assert run_child(settings, log, ids[KILL_AT], "in-handle", ids[-1], effect=True) == -9
    assert run_child(settings, log, ids[KILL_AT], "never", ids[-1], effect=True) == 0
    async with db.acquire() as conn:
        effects = Counter(r["message_id"] for r in await conn.fetch(
            "SELECT message_id FROM handled"))
        recorded = await conn.fetchval("SELECT count(*) FROM agent_inbox WHERE role = 'cto'")
    assert recorded == BURST
    assert sorted(effects) == ids and set(effects.values()) == {1}
