"""The nemesis: faults chosen from a seed, one at a time and overlapping, each logged.

Kinds (`KINDS`), each with a target host where it has one:
- `partition-db` (node): the node's packets to and from Postgres are dropped (iptables
  DROP inside the node's namespace: silent, no reset).
- `partition-redis`: every node's packets to and from Redis are dropped (on the
  database host).
- `partition-nodes`: the nodes cannot reach each other (ECHO's nodes talk only
  through Postgres and Redis, so this must change nothing).
- `pause-owners` (node): SIGSTOP of every agent of the node that holds a role lease,
  for the lease plus 3 s, then SIGCONT.
- `kill-up` (node): kill -9 of the node's `echoctl up` supervisor (its agents die
  with it); restarted after 3 s.
- `kill-agent` (node): kill -9 of one active agent (its supervisor restarts it).
- `delay` (node): 150-400 ms each way (plus jitter) on the node's links: tc netem
  where the kernel has it, else the userspace proxy (`proxy.py`).
- `loss` (node): 10-25 % of the node's packets to and from the database host dropped
  (iptables `statistic`).
- `skew` (the last node, which runs under libfaketime): its wall clock jumps 45-120 s
  ahead, then back.

Each fault is logged as `{"t", "type": "fault-start"|"fault-end", "id", "kind",
"target", ...}` lines in the nemesis's history, with the harness's wall time.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tests.jepsen.hosts import DB_ADDR, Cluster, Host

KINDS = ("partition-db", "partition-redis", "partition-nodes", "pause-owners", "kill-up",
         "kill-agent", "delay", "loss", "skew")
TARGETED = {"partition-db", "pause-owners", "kill-up", "kill-agent", "delay", "loss"}


@dataclass
class Hooks:
    """What the nemesis needs from the harness: the role owners of a node (pid per
    role), a node's agent pids, and killing/restarting a node's `up`."""

    owners: Callable[[str], Awaitable[dict[str, int]]]
    kill_up: Callable[[str], Awaitable[None]]
    start_up: Callable[[str], Awaitable[None]]
    lease_seconds: float = 5.0
    skew_file: Path | None = None
    skew_node: str | None = None


@dataclass
class Nemesis:
    cluster: Cluster
    hooks: Hooks
    log_path: Path
    seed: int
    kinds: tuple[str, ...] = KINDS
    max_overlap: int = 2
    netem: bool = False
    rng: random.Random = field(init=False)
    active: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.control = self.cluster.root / "proxy.json"
        self.delays: dict[str, dict[str, float]] = {}
        self.control.write_text("{}")

    def log(self, **event: Any) -> None:
        with open(self.log_path, "a") as out:
            out.write(json.dumps({"t": round(time.time(), 4), **event}) + "\n")

    # ------------------------------------------------------------ schedule

    async def run(self, seconds: float) -> None:
        """Start faults for `seconds` (gaps of 2-6 s; a second fault overlaps the first
        about a third of the time), then wait for the running ones to end."""
        until = time.monotonic() + seconds
        async with anyio.create_task_group() as tg:
            await anyio.sleep(self.rng.uniform(3, 6))
            while time.monotonic() < until - 5:
                if len(self.active) < self.max_overlap:
                    chosen = self._choose()
                    if chosen is not None:
                        self.count += 1
                        tg.start_soon(self._one, self.count, *chosen)
                overlap = self.active and self.rng.random() < 0.35
                await anyio.sleep(self.rng.uniform(1, 3) if overlap else self.rng.uniform(2, 6))
                while len(self.active) >= (self.max_overlap if overlap else 1):
                    await anyio.sleep(0.2)

    def _choose(self) -> tuple[str, str | None, float] | None:
        nodes = [h.name for h in self.cluster.node_hosts]
        busy = set(self.active.values())
        for _ in range(20):
            kind = self.rng.choice(self.kinds)
            if kind == "skew":
                target: str | None = self.hooks.skew_node
                if target is None:
                    continue
            else:
                target = self.rng.choice(nodes) if kind in TARGETED else None
            if any(k == kind or (t == target and target is not None) for k, t in busy):
                continue
            # One fault that stops a node's owners at a time: two would leave roles ownerless
            # by design, which says nothing about takeover.
            if kind in ("kill-up", "pause-owners") and any(
                    k in ("kill-up", "pause-owners") for k, _ in busy):
                continue
            return kind, target, self.rng.uniform(5, 15)
        return None

    async def _one(self, fid: int, kind: str, target: str | None, seconds: float) -> None:
        self.active[fid] = (kind, target)
        try:
            start, stop = getattr(self, "_" + kind.replace("-", "_"))
            details = await start(target, seconds) or {}
            self.log(type="fault-start", id=fid, kind=kind, target=target, **details)
            try:
                hold = details.get("hold", seconds)
                await anyio.sleep(hold)
            finally:
                with anyio.CancelScope(shield=True):
                    await stop(target, details)
                    self.log(type="fault-end", id=fid, kind=kind, target=target)
        finally:
            del self.active[fid]

    def host(self, name: str | None) -> Host:
        assert name is not None
        return self.cluster.host(name)

    # ------------------------------------------------------------ partitions

    def _rules(self, host: Host, port: int) -> list[list[str]]:
        return [["OUTPUT", "-d", DB_ADDR, "-p", "tcp", "--dport", str(port), "-j", "DROP"],
                ["INPUT", "-s", DB_ADDR, "-p", "tcp", "--sport", str(port), "-j", "DROP"]]

    async def _apply(self, host: Host, rules: list[list[str]], add: bool) -> None:
        for rule in rules:
            self.cluster.iptables(host, "-I" if add else "-D", *rule, check=add)

    @property
    def _partition_db(self) -> tuple[Any, Any]:
        async def start(target: str | None, _s: float) -> dict[str, Any]:
            host = self.host(target)
            await self._apply(host, self._rules(host, host.pg_port), True)
            return {}

        async def stop(target: str | None, _d: dict[str, Any]) -> None:
            host = self.host(target)
            await self._apply(host, self._rules(host, host.pg_port), False)

        return start, stop

    def _redis_rules(self) -> list[list[str]]:
        rules = []
        for node in self.cluster.node_hosts:
            rules.append(["INPUT", "-d", DB_ADDR, "-p", "tcp", "--dport", str(node.redis_port),
                          "-j", "DROP"])
            rules.append(["OUTPUT", "-s", DB_ADDR, "-p", "tcp", "--sport", str(node.redis_port),
                          "-j", "DROP"])
        return rules

    @property
    def _partition_redis(self) -> tuple[Any, Any]:
        async def start(_t: str | None, _s: float) -> dict[str, Any]:
            await self._apply(self.cluster.db, self._redis_rules(), True)
            return {}

        async def stop(_t: str | None, _d: dict[str, Any]) -> None:
            await self._apply(self.cluster.db, self._redis_rules(), False)

        return start, stop

    def _node_rules(self, host: Host) -> list[list[str]]:
        rules = []
        for other in self.cluster.node_hosts:
            if other is not host:
                rules += [["INPUT", "-s", other.addr, "-j", "DROP"],
                          ["OUTPUT", "-d", other.addr, "-j", "DROP"]]
        return rules

    @property
    def _partition_nodes(self) -> tuple[Any, Any]:
        async def start(_t: str | None, _s: float) -> dict[str, Any]:
            for host in self.cluster.node_hosts:
                await self._apply(host, self._node_rules(host), True)
            return {}

        async def stop(_t: str | None, _d: dict[str, Any]) -> None:
            for host in self.cluster.node_hosts:
                await self._apply(host, self._node_rules(host), False)

        return start, stop

    def _loss_rules(self, host: Host, p: float) -> list[list[str]]:
        return [["INPUT", "-s", DB_ADDR, "-m", "statistic", "--mode", "random",
                 "--probability", f"{p:.2f}", "-j", "DROP"],
                ["OUTPUT", "-d", DB_ADDR, "-m", "statistic", "--mode", "random",
                 "--probability", f"{p:.2f}", "-j", "DROP"]]

    @property
    def _loss(self) -> tuple[Any, Any]:
        async def start(target: str | None, _s: float) -> dict[str, Any]:
            p = round(self.rng.uniform(0.10, 0.25), 2)
            await self._apply(self.host(target), self._loss_rules(self.host(target), p), True)
            return {"probability": p}

        async def stop(target: str | None, d: dict[str, Any]) -> None:
            await self._apply(self.host(target), self._loss_rules(self.host(target), d["probability"]),
                              False)

        return start, stop

    # ------------------------------------------------------------ delay

    @property
    def _delay(self) -> tuple[Any, Any]:
        async def start(target: str | None, _s: float) -> dict[str, Any]:
            host = self.host(target)
            ms, jitter = round(self.rng.uniform(150, 400)), 50
            if self.netem:
                self.cluster.sh(host.ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
                                "delay", f"{ms}ms", f"{jitter}ms")
            else:
                self.delays[str(host.index)] = {"delay_ms": ms, "jitter_ms": jitter}
                self._write_control()
            return {"delay_ms": ms, "jitter_ms": jitter, "via": "netem" if self.netem else "proxy"}

        async def stop(target: str | None, _d: dict[str, Any]) -> None:
            host = self.host(target)
            if self.netem:
                self.cluster.sh(host.ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
            else:
                self.delays.pop(str(host.index), None)
                self._write_control()

        return start, stop

    def _write_control(self) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.delays))
        tmp.replace(self.control)

    # ------------------------------------------------------------ processes

    @property
    def _pause_owners(self) -> tuple[Any, Any]:
        async def start(target: str | None, _s: float) -> dict[str, Any]:
            owners = await self.hooks.owners(self.host(target).name)
            for pid in owners.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            return {"pids": owners, "hold": self.hooks.lease_seconds + 3}

        async def stop(_t: str | None, d: dict[str, Any]) -> None:
            for pid in d["pids"].values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        return start, stop

    @property
    def _kill_up(self) -> tuple[Any, Any]:
        async def start(target: str | None, _s: float) -> dict[str, Any]:
            await self.hooks.kill_up(self.host(target).name)
            return {"hold": 3.0}

        async def stop(target: str | None, _d: dict[str, Any]) -> None:
            await self.hooks.start_up(self.host(target).name)

        return start, stop

    @property
    def _kill_agent(self) -> tuple[Any, Any]:
        async def start(target: str | None, _s: float) -> dict[str, Any]:
            owners = await self.hooks.owners(self.host(target).name)
            if not owners:
                return {"hold": 0.0, "role": None}
            role = self.rng.choice(sorted(owners))
            with contextlib.suppress(ProcessLookupError):
                os.kill(owners[role], signal.SIGKILL)
            return {"hold": 0.0, "role": role, "pid": owners[role]}

        async def stop(_t: str | None, _d: dict[str, Any]) -> None:
            return None

        return start, stop

    # ------------------------------------------------------------ clock

    @property
    def _skew(self) -> tuple[Any, Any]:
        async def start(_t: str | None, _s: float) -> dict[str, Any]:
            offset = round(self.rng.uniform(45, 120))
            assert self.hooks.skew_file is not None
            self.hooks.skew_file.write_text(f"+{offset}\n")
            return {"offset_s": offset}

        async def stop(_t: str | None, _d: dict[str, Any]) -> None:
            assert self.hooks.skew_file is not None
            self.hooks.skew_file.write_text("+0\n")

        return start, stop
