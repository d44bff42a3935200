"""Role-lease benchmarks. One JSON line per figure, the lease length beside each:

- `takeover_after_sigkill`: two agent processes for one role (nodes a and b); SIGKILL
  the active one and time until the standby is the role's healthy owner (median and
  p99; target: below lease + 1 s). The killed node is started again as the next
  standby, and the round repeats. Run for a short lease and for the default 5 s.
- `restart_after_sigkill`: one agent process for the role (its node's only one); SIGKILL
  it, reap it, and start it again as its supervisor does, told the dead pid and epoch
  (`--predecessor`), and time from the kill until the new process is the role's healthy
  owner (median and p99; target: below 1 s with any lease). Baseline, in the same run:
  the same restart not told (how a restart waited out the dead process's lease
  before). Run for the default 5 s lease and for 30 s.
- `fenced_publish_rate` / `fenced_claim_rate`: messages published (one per commit)
  and tasks claimed (one per transaction) per second through connections fenced by a
  held lease, beside the same through unfenced connections, interleaved in the same
  run (target ratio >= 0.95).

ECHO_BENCH_ROUNDS sets the takeover and restart rounds per lease (8),
ECHO_BENCH_BASELINE_ROUNDS the rounds of the slow restart baseline (2; each waits out
a lease); ECHO_BENCH_BATCHES the alternating batches of 50 operations per side for the
fencing cost (20).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time

import anyio

from bench._common import bench_settings, emit, percentile
from echo import db as dbmod
from echo.bus import Message, Publisher
from echo.config import Settings
from echo.org.agent.lease_keeper import LeaseKeeper
from echo.org.leases import Predecessor, agent_processes
from echo.org.node.predecessors import agent_argv
from echo.work import NewTask, TaskQueue

ROUNDS = int(os.environ.get("ECHO_BENCH_ROUNDS", "8"))
BASELINE_ROUNDS = int(os.environ.get("ECHO_BENCH_BASELINE_ROUNDS", "2"))
BATCHES = int(os.environ.get("ECHO_BENCH_BATCHES", "20"))
BATCH = 50


def start_agent(s: Settings, node: str, predecessor: Predecessor | None = None) -> subprocess.Popen[bytes]:
    """The agent as `echoctl up` starts it (`agent_argv`), told its dead predecessor."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    env.update(s.child_env())
    env["ECHO_NODE"] = node
    return subprocess.Popen(agent_argv("cto", predecessor=predecessor), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def owner(s: Settings) -> tuple[int | None, set[int]]:
    """(pid of the healthy active cto, pids of live standbys)."""
    rows = await agent_processes(s.database, s.leases, stale_after=s.lease_seconds)
    active = [r["pid"] for r in rows if r["active"] and r["state"] == "healthy"]
    standby = {r["pid"] for r in rows if r["state"] == "standby"}
    return (active[0] if len(active) == 1 else None), standby


async def takeover(lease: float, renew: float) -> None:
    async with bench_settings("takeover", redis=False, lease_seconds=lease,
                              lease_renew_interval=renew) as s:
        procs = {"a": start_agent(s, "a"), "b": start_agent(s, "b")}
        times: list[float] = []
        try:
            for _ in range(ROUNDS):
                while True:  # settled: one healthy owner, one standby
                    active, standby = await owner(s)
                    if active and standby:
                        break
                    await anyio.sleep(0.02)
                node = next(n for n, p in procs.items() if p.pid == active)
                os.kill(active, signal.SIGKILL)
                killed = time.monotonic()
                while True:
                    new, _ = await owner(s)
                    if new and new != active:
                        break
                    await anyio.sleep(0.01)
                times.append(time.monotonic() - killed)
                procs[node].wait()
                procs[node] = start_agent(s, node)
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
        emit("leases", "takeover_after_sigkill", statistics.median(times),
             baseline="lease_seconds", baseline_value=lease, p99=round(percentile(times, 0.99), 3),
             lease_seconds=lease, renew_interval=renew, rounds=len(times),
             target=f"below lease + 1 s = {lease + 1:g} s")


async def restart_rounds(s: Settings, rounds: int, *, told: bool) -> tuple[list[float], list[float]]:
    """Kill -9 the role's only agent, reap it, start the next: seconds from the kill to a
    healthy owner, and from the new process's spawn to that (its start, lease wait and
    all: on a loaded machine the start is most of it)."""
    proc = start_agent(s, "a")
    times: list[float] = []
    starts: list[float] = []
    try:
        for _ in range(rounds):
            while True:
                active, _standby = await owner(s)
                if active == proc.pid:
                    break
                await anyio.sleep(0.02)
            async with dbmod.connection(s.database) as conn:
                epoch = await conn.fetchval("SELECT epoch FROM role_leases WHERE role = 'cto'")
            os.kill(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            await anyio.to_thread.run_sync(proc.wait)  # reaped: the supervisor knows it is dead
            dead = proc.pid
            spawned = time.monotonic()
            proc = start_agent(s, "a", Predecessor(dead, int(epoch)) if told else None)
            while True:
                new, _ = await owner(s)
                if new == proc.pid:
                    break
                await anyio.sleep(0.01)
            times.append(time.monotonic() - killed)
            starts.append(time.monotonic() - spawned)
    finally:
        proc.kill()
        proc.wait()
    return times, starts


async def restart(lease: float, renew: float) -> None:
    async with bench_settings("restart", redis=False, lease_seconds=lease,
                              lease_renew_interval=renew) as s:
        told, starts = await restart_rounds(s, ROUNDS, told=True)
        waited, _ = await restart_rounds(s, BASELINE_ROUNDS, told=False)
        emit("leases", "restart_after_sigkill", statistics.median(told),
             baseline="restart_not_told_the_dead_pid", baseline_value=statistics.median(waited),
             p99=round(percentile(told, 0.99), 3), process_start_median=round(statistics.median(starts), 3),
             lease_seconds=lease, renew_interval=renew, rounds=len(told), baseline_rounds=len(waited),
             load_average=round(os.getloadavg()[0], 1), target="below 1 s with any lease")


async def fencing_cost() -> None:
    """Plain and fenced alternate in small batches (which goes first alternates too),
    and each side's rate is its total over all its batches: on a loaded machine, drift
    then falls on both sides alike."""
    async with bench_settings("fence", redis=False, lease_seconds=600.0) as s:
        keeper = LeaseKeeper(s.leases, s.database, "cto")
        await keeper.open()
        lease = await keeper.try_acquire()
        assert lease is not None
        plain = await dbmod.Database.open(s.database, max_size=1)
        fenced = await dbmod.Database.open(s.database, max_size=1, fence=lease.fence)
        sides = {"plain": plain, "fenced": fenced}
        spent = {(f, k): 0.0 for f in ("publish", "claim") for k in sides}
        try:
            await TaskQueue(plain).enqueue_many(
                [NewTask(f"bench {i}", task_type="noop", role="cto") for i in range(2 * BATCHES * BATCH)])
            async with Publisher(s.bus, plain) as pub_plain, Publisher(s.bus, fenced) as pub_fenced:
                publishers = {"plain": pub_plain, "fenced": pub_fenced}
                for round_ in range(BATCHES):
                    order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                    for label in order:
                        spent["publish", label] += await publish_batch(publishers[label])
                        spent["claim", label] += await claim_batch(TaskQueue(sides[label]))
        finally:
            await plain.close()
            await fenced.close()
            await keeper.close()
        ops = BATCHES * BATCH
        for figure in ("publish", "claim"):
            emit("leases", f"fenced_{figure}_rate", ops / spent[figure, "fenced"],
                 baseline=f"unfenced_{figure}_rate", baseline_value=ops / spent[figure, "plain"],
                 unit="per s", operations=ops, batch=BATCH, lease_seconds=s.lease_seconds,
                 target="ratio >= 0.95")


async def publish_batch(pub: Publisher) -> float:
    started = time.perf_counter()
    for i in range(BATCH):
        await pub.publish(Message.build(from_role="cto", subject=f"bench {i}"))
    return time.perf_counter() - started


async def claim_batch(queue: TaskQueue) -> float:
    started = time.perf_counter()
    for _ in range(BATCH):
        got = await queue.claim(["w1"], task_types=["noop"], roles=["cto"])
        assert got, "the queue ran dry"
    return time.perf_counter() - started


async def main() -> None:
    await fencing_cost()
    await takeover(2.0, 0.4)
    await takeover(5.0, 1.0)
    await restart(5.0, 1.0)
    await restart(30.0, 1.0)


if __name__ == "__main__":
    anyio.run(main)
