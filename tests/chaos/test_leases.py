"""One active agent per role with real agent processes: a paused owner is fenced, a
killed `echoctl up` takes its agents with it, two nodes share the roles, a
hand-started agent stands by, `down` hands roles over at once, `--prefer` takes a
role back.

Every organisation runs from its own state directory; all share the test's namespace
(one organisation, several nodes). Teardown stops each and kills what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import anyio
import psutil
import pytest

from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.org.leases import agent_processes
from echo.org.node.state import read_org
from echo.slices import BusSettings
from tests.helpers import all_in, cli_env, org_processes, run_cli, stop_org, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]  # several organisations start

TWO = ["ceo", "cto"]


@pytest.fixture
def nodes(org_settings: Settings) -> Iterator[dict[str, Settings]]:
    """Settings for nodes a, b and c of one organisation (one namespace), each with its
    own state directory."""
    made = {
        name: org_settings.model_copy(update={
            "node": name, "state_dir": org_settings.state_dir.parent / f"node-{name}"})
        for name in "abc"
    }
    yield made
    for s in made.values():
        stop_org(s)
        assert org_processes(s) == []


async def view(s: Settings) -> list[dict[str, object]]:
    return await agent_processes(s.database, s.leases, stale_after=s.lease_seconds)


def active_on(entries: list[dict[str, object]]) -> dict[str, tuple[object, object]]:
    """role -> (node, pid) of its active agent; fails if a role has two."""
    out: dict[str, tuple[object, object]] = {}
    for e in entries:
        if e["active"]:
            assert e["role"] not in out, f"two active agents for {e['role']}: {entries}"
            out[str(e["role"])] = (e["node"], e["pid"])
    return out


def lone_agent(s: Settings, role: str, *, node: str) -> subprocess.Popen[str]:
    """`python -m echo agent ROLE --autonomous`, as a person starts one by hand."""
    return subprocess.Popen(
        [sys.executable, "-m", "echo", "agent", role, "--autonomous"],
        env=cli_env(s, ECHO_NODE=node), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def reap(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


_AUDIT = """
CREATE TABLE fence_audit (at timestamptz NOT NULL DEFAULT clock_timestamp(), tbl text, fence text);
CREATE FUNCTION fence_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fence_audit (tbl, fence) VALUES (TG_TABLE_NAME, current_setting('echo.fence', true));
    RETURN NULL;
END $$;
"""
_FENCED_TABLES = ["agent_inbox", "agent_cursors", "agent_health", "messages", "agent_tasks",
                  "workflows", "workflow_participants", "decisions"]


async def test_a_paused_owner_writes_nothing_after_its_lease_passed_on(
    org_settings: Settings, bus: BusSettings, db: dbmod.Database
) -> None:
    s = org_settings.model_copy(update={"lease_seconds": 2.0, "lease_renew_interval": 0.4})
    async with db.acquire() as conn:  # every committed statement of an agent, with its fence
        await conn.execute(_AUDIT)
        for table in _FENCED_TABLES:
            await conn.execute(f"CREATE TRIGGER {table}_fence_audit AFTER INSERT OR UPDATE OR DELETE "
                               f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION fence_audit()")
    first = lone_agent(s, "cto", node="a")
    second: subprocess.Popen[str] | None = None
    try:
        await wait_until(lambda: _one_active(s, "cto", "a", "healthy"), timeout=60, interval=0.1)
        second = lone_agent(s, "cto", node="b")
        await wait_until(lambda: _has(s, "cto", "b", "standby"), timeout=60, interval=0.1)
        async with db.acquire() as conn:
            old_epoch = await conn.fetchval("SELECT epoch FROM role_leases WHERE role = 'cto'")

        os.kill(first.pid, signal.SIGSTOP)  # past its lease: the standby takes over
        async with Publisher(bus, db) as pub:
            during = (await pub.publish_many(
                [Message.build(from_role="operator", subject=f"paused {i}") for i in range(5)])).db_ids
        await wait_until(lambda: _one_active(s, "cto", "b", "healthy"), timeout=60, interval=0.1)
        await wait_until(lambda: _processed(db, "cto", during), timeout=60, interval=0.1)
        async with db.acquire() as conn:
            taken_at, new_epoch = await conn.fetchrow(
                "SELECT acquired_at, epoch FROM role_leases WHERE role = 'cto'")
        assert new_epoch == old_epoch + 1

        os.kill(first.pid, signal.SIGCONT)  # it resumes believing it is the CTO...
        await wait_until(lambda: _standby_since(s, "cto", "a", first.pid), timeout=60, interval=0.1)
        async with Publisher(bus, db) as pub:
            after = (await pub.publish_many(
                [Message.build(from_role="operator", subject=f"after {i}") for i in range(3)])).db_ids
        await wait_until(lambda: _processed(db, "cto", after), timeout=60, interval=0.1)

        async with db.acquire() as conn:
            by_epoch = dict(await conn.fetch(
                "SELECT split_part(fence, '/', 2)::int, count(*) FROM fence_audit "
                "WHERE fence LIKE 'cto/%' AND at >= $1 GROUP BY 1", taken_at))
            before = await conn.fetchval(
                "SELECT count(*) FROM fence_audit WHERE fence LIKE $1 AND at < $2",
                f"cto/{old_epoch}/%", taken_at)
        assert before > 0  # the audit sees the old owner's writes while it held the role
        assert by_epoch.get(new_epoch, 0) > 0  # ...and the new owner's
        assert by_epoch.get(old_epoch, 0) == 0, f"the paused owner wrote after losing the lease: {by_epoch}"
        assert first.poll() is None  # it stands by rather than dying
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
        reap(first, *([second] if second else []))


async def _one_active(s: Settings, role: str, node: str, state: str) -> bool:
    entries = [e for e in await view(s) if e["role"] == role and e["active"]]
    return len(entries) == 1 and entries[0]["node"] == node and entries[0]["state"] == state


async def _has(s: Settings, role: str, node: str, state: str) -> bool:
    return any(e["role"] == role and e["node"] == node and e["state"] == state for e in await view(s))


async def _standby_since(s: Settings, role: str, node: str, pid: int) -> bool:
    return any(e["pid"] == pid and e["state"] == "standby" for e in await view(s))


async def _processed(db: dbmod.Database, role: str, ids: list[int]) -> bool:
    async with db.acquire() as conn:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM agent_inbox WHERE role = $1 AND message_id = ANY($2)", role, ids)
            == len(ids))


async def test_a_killed_up_takes_its_agents_along_and_the_next_up_is_the_only_owner(
    org_settings: Settings,
) -> None:
    s = org_settings.model_copy(update={"lease_seconds": 2.0, "lease_renew_interval": 0.4})
    up = subprocess.Popen([sys.executable, "-m", "echo", "up", "--roles", ",".join(TWO)],
                          env=cli_env(s), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
        record = read_org(s)
        assert record is not None
        agents = [psutil.Process(record.agents[r].pid) for r in TWO]  # type: ignore[arg-type]
        up.kill()
        up.wait(timeout=30)
        _gone, alive = await anyio.to_thread.run_sync(lambda: psutil.wait_procs(agents, timeout=30))
        assert alive == []
        shown = await run_cli(s, "status", "--json")
        info = json.loads(shown.stdout)
        # Honest: the supervisor died without saying (a crash), and nothing lives on
        # (not "supervisor gone, N agent(s) alive").
        assert info["organisation"]["state"] == "crashed", shown.stdout
        assert [a["pid"] for a in info["agents"] if a["role"] in TWO] == [None, None]

        again = await run_cli(s, "up", "--detach", "--roles", ",".join(TWO), timeout=120)
        assert again.returncode == 0, again.stderr
        await wait_until(all_in(s, "healthy", TWO), timeout=90, interval=0.1)
        record = read_org(s)
        assert record is not None
        owners = active_on(await view(s))
        assert {r: pid for r, (_node, pid) in owners.items()} == {
            r: record.agents[r].pid for r in TWO}
    finally:
        reap(up)  # type: ignore[arg-type]


async def test_two_nodes_share_the_roles_and_down_hands_them_over_at_once(
    nodes: dict[str, Settings],
) -> None:
    # A lease far longer than the test's waits: a takeover can only come from a release.
    a, b, c = (s.model_copy(update={"lease_seconds": 120.0}) for s in nodes.values())
    first = await run_cli(a, "up", "--detach", "--roles", ",".join(TWO), "--node", "a", timeout=120)
    assert first.returncode == 0, first.stderr
    await wait_until(all_in(a, "healthy", TWO), timeout=90, interval=0.1)
    second = await run_cli(b, "up", "--detach", "--roles", ",".join(TWO), "--node", "b", timeout=120)
    assert second.returncode == 0, second.stderr
    await wait_until(all_in(b, "standby", TWO), timeout=90, interval=0.1)
    entries = await view(a)
    assert {r: node for r, (node, _pid) in active_on(entries).items()} == {"ceo": "a", "cto": "a"}
    assert sorted((e["role"], e["node"], e["state"]) for e in entries if not e["active"]) == [
        ("ceo", "b", "standby"), ("cto", "b", "standby")]

    same = await run_cli(c, "up", "--detach", "--roles", "ceo", "--node", "a", timeout=120)
    assert same.returncode == 2
    lines = same.stderr.strip().splitlines()
    assert len(lines) == 1 and "node 'a' is already up" in lines[0], same.stderr

    hand = lone_agent(c, "cto", node="c")
    try:
        assert hand.stdout is not None
        line = await anyio.to_thread.run_sync(hand.stdout.readline)
        pid_a = active_on(entries)["cto"][1]
        assert line.strip() == (f"cto: standing by because cto is active on node a (pid {pid_a}); "
                                "this agent takes over if that one dies")
        shown = await run_cli(b, "status", "--json")  # one view, from any node
        assert shown.returncode == 0, shown.stderr
        assert len([p for p in json.loads(shown.stdout)["processes"]
                    if p["role"] == "cto"]) == 3

        stopped = await run_cli(a, "down", timeout=120)
        assert stopped.returncode == 0, stopped.stderr

        async def moved() -> bool:
            owners = active_on(await view(a))
            return set(owners) == set(TWO) and all(node != "a" for node, _pid in owners.values())

        await wait_until(moved, timeout=60, interval=0.1)
        assert "a" not in {e["node"] for e in await view(a)}
    finally:
        reap(hand)


async def test_a_preferred_node_takes_its_role_back(nodes: dict[str, Settings]) -> None:
    a, b, _c = (s.model_copy(update={"lease_takeover_grace": 0.5}) for s in nodes.values())
    first = await run_cli(a, "up", "--detach", "--roles", ",".join(TWO), timeout=120)
    assert first.returncode == 0, first.stderr
    await wait_until(all_in(a, "healthy", TWO), timeout=90, interval=0.1)
    second = await run_cli(b, "up", "--detach", "--roles", "cto", "--prefer", "cto", timeout=120)
    assert second.returncode == 0, second.stderr

    async def taken_back() -> bool:
        owners = active_on(await view(a))
        return owners.get("cto", ("", 0))[0] == "b" and owners.get("ceo", ("", 0))[0] == "a"

    await wait_until(taken_back, timeout=60, interval=0.1)
    await wait_until(all_in(b, "healthy", ["cto"]), timeout=60, interval=0.1)
    async with dbmod.connection(a.database) as conn:
        assert await conn.fetchval("SELECT epoch FROM role_leases WHERE role = 'cto'") == 2

    bad = await run_cli(b, "up", "--roles", "ceo", "--prefer", "cto", timeout=60)
    assert bad.returncode == 2 and "--prefer names cto" in bad.stderr
