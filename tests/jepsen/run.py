"""`make jepsen`: the organisation on several hosts under a nemesis, then the checker.

    python -m tests.jepsen.run [--duration 300] [--seed 1] [--nodes 2] [--plant KIND]
                               [--out jepsen-out] [--roles ceo,cto,chro]

1. Hosts (`hosts.py`): a bridge, a database host (its own Postgres and Redis), the
   nodes (`echoctl up --node nK` and `echoctl worker` each; the last node runs under
   libfaketime so the nemesis can skew its clock) and a client host.
2. The workload (`workload.py`) runs on the client for `--duration` seconds while
   the nemesis (`nemesis.py`) injects faults from `--seed`; then every fault is
   healed and the organisation gets up to `--drain` seconds (90) to finish every
   acknowledged message, task and workflow.
3. The database (with the run's audit of lease changes and fenced writes, added by
   `audit.sql`), every node's logs, the task attempts' run file and the histories
   are collected into `--out`, `--plant` (if given) plants a violation into that
   record, and the checker (`checker.py`) reads it: a timeline PNG, a summary, and
   one JSON line. Exit 0 when valid, 1 when not (or the run failed), and the reason
   in one line when this machine cannot run it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from tests.jepsen import checker, dbhost, hosts
from tests.jepsen.hosts import Cluster, Host
from tests.jepsen.nemesis import KINDS, Hooks, Nemesis

NAMESPACE = "jepsen"
REPO = Path(__file__).resolve().parents[2]
AUDIT_SQL = Path(__file__).with_name("audit.sql")
LEASE_SECONDS = 5.0


def say(line: str) -> None:
    print(f"jepsen: {line}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, cluster: Cluster, args: argparse.Namespace) -> None:
        self.cluster, self.args = cluster, args
        self.password = secrets.token_hex(12)
        self.pg = dbhost.postgres(cluster.root / "db")
        cluster.cleanups.append(self.pg.remove_files)  # its data lives outside the run's dir as root
        self.ups: dict[str, subprocess.Popen[bytes]] = {}
        self.skew_file = cluster.root / "skew"
        self.roles: list[str] = args.roles.split(",")
        self.runfile = cluster.root / "runs.log"
        self.runfile.touch(mode=0o666)
        self.runfile.chmod(0o666)
        self.ups_started = 0

    # ------------------------------------------------------------ environment

    def env(self, host: Host) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("ECHO_", "ANTHROPIC_", "CLAUDE")) and k != "PYTHONPATH"}
        return {**keep,
                "PYTHONPATH": str(REPO),
                "ECHO_DATABASE_URL": f"postgresql://postgres:{self.password}@{hosts.DB_ADDR}:"
                                     f"{host.pg_port}/postgres",
                "ECHO_REDIS_URL": f"redis://{hosts.DB_ADDR}:{host.redis_port}/0",
                "ECHO_NAMESPACE": NAMESPACE,
                "ECHO_STATE_DIR": str(self.cluster.root / host.name / "state"),
                "ECHO_CONSOLE": "false",
                "ECHO_LEASE_SECONDS": str(LEASE_SECONDS),
                "ECHO_TASK_LEASE_SECONDS": "5",
                "ECHO_CLAUDE_BIN": str(self.cluster.root / "no-claude"),  # fallback mode, no CLI
                "ECHO_LOG_LEVEL": "INFO",
                "ECHO_CONNECT_TIMEOUT": "2",
                "ECHO_COMMAND_TIMEOUT": "5"}

    async def conn(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.pg.dsn, timeout=10,
                                     server_settings={"search_path": NAMESPACE})
        return conn

    # ------------------------------------------------------------ start

    async def start_db(self) -> None:
        db = self.cluster.db
        log = self.cluster.root / "logs" / "dbhost.log"
        indexes = ",".join(str(h.index) for h in [*self.cluster.node_hosts, self.cluster.client])
        self.cluster.spawn(db, [sys.executable, "-m", "tests.jepsen.dbhost", str(self.cluster.root / "db"),
                                self.password, indexes, str(self.cluster.root / "proxy.json")],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, log=log)
        with anyio.fail_after(120):
            while "ready" not in log.read_text():
                if "Traceback" in log.read_text():
                    raise RuntimeError(f"the database host did not start: {log.read_text()[-800:]}")
                await anyio.sleep(0.2)
        env = {**self.env(db), "ECHO_DATABASE_URL": self.pg.dsn}
        migrated = await anyio.run_process([sys.executable, "-m", "echo", "db", "migrate"], env=env,
                                           check=False)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrated.stderr.decode()[-500:]}")
        conn = await self.conn()
        try:
            await conn.execute(AUDIT_SQL.read_text())
        finally:
            await conn.close()

    async def start_up(self, name: str) -> None:
        host = self.cluster.host(name)
        state = self.cluster.root / name / "state"
        skewed = host is self.cluster.node_hosts[-1]
        # Each node prefers some roles (round robin), so every node owns some and a
        # role taken over during a fault goes back afterwards: more takeovers to check.
        mine = self.roles[host.index - 1::len(self.cluster.node_hosts)]
        prefer = ["--prefer", ",".join(mine)] if mine else []
        self.ups[name] = self.cluster.spawn(
            host, [sys.executable, "-m", "echo", "up", "--node", name, "--roles", ",".join(self.roles),
                   "--no-console", *prefer],
            env=self.env(host), log=state.parent / f"up-{self.ups_started}.log",
            faketime=self.skew_file if skewed else None)
        self.ups_started += 1

    async def kill_up(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.ups[name].pid, signal.SIGKILL)  # the supervisor alone: its agents die with it
        await anyio.to_thread.run_sync(self.ups[name].wait)

    async def start_workers(self) -> None:
        for host in self.cluster.node_hosts:
            skewed = host is self.cluster.node_hosts[-1]
            self.cluster.spawn(host, [sys.executable, "-m", "echo", "worker", "--executor", "command",
                                      "--lease", "5", "--concurrency", "2"],
                               env=self.env(host), log=self.cluster.root / host.name / "worker.log",
                               faketime=self.skew_file if skewed else None)

    async def owners(self, node: str | None = None) -> dict[str, int]:
        conn = await self.conn()
        try:
            rows = await conn.fetch("SELECT role, pid FROM role_leases WHERE holder IS NOT NULL "
                                    "AND expires_at > now() AND ($1::text IS NULL OR node = $1)", node)
        finally:
            await conn.close()
        return {r["role"]: r["pid"] for r in rows}

    async def wait_owned(self, timeout: float = 180) -> None:
        with anyio.fail_after(timeout):
            while set(await self.owners()) != set(self.roles):
                await anyio.sleep(0.5)

    # ------------------------------------------------------------ drain and collect

    async def backlog(self, history: list[dict[str, Any]]) -> tuple[int, int, int]:
        """(messages not yet seen by every role they are for, tasks not yet finished,
        workflows not yet finished)."""
        acked = checker.acknowledged(history)
        conn = await self.conn()
        try:
            inbox = {(r["role"], r["message_id"]) for r in await conn.fetch(
                "SELECT role, message_id FROM agent_inbox WHERE message_id = ANY($1)",
                [m.id for m in acked.messages])}
            done = {r["task_id"] for r in await conn.fetch(
                "SELECT task_id FROM agent_tasks WHERE task_id = ANY($1) AND status IN "
                "('completed', 'failed', 'dead', 'cancelled')", [t.id for t in acked.tasks])}
            open_workflows = await conn.fetchval(
                "SELECT count(*) FROM workflows WHERE id = ANY($1) AND phase NOT IN "
                "('done', 'cancelled', 'error')", [w.id for w in acked.workflows])
        finally:
            await conn.close()
        missing = sum(1 for m in acked.messages for r in checker.audience(m, self.roles)
                      if (r, m.id) not in inbox)
        return missing, sum(1 for t in acked.tasks if t.id not in done), int(open_workflows)

    async def drain(self, out: Path, seconds: float) -> float:
        started = time.monotonic()
        with anyio.move_on_after(seconds):
            while True:
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    if await self.backlog(checker.read_jsonl(out / "history.jsonl")) == (0, 0, 0):
                        break
                await anyio.sleep(1)
        return round(time.monotonic() - started, 1)

    async def collect(self, out: Path) -> None:
        conn = await self.conn()
        try:
            dump = {name: [dict(r) for r in await conn.fetch(query)]
                    for name, query in checker.DUMP_QUERIES.items()}
        finally:
            await conn.close()
        (out / "db.json").write_text(json.dumps(dump, default=str))
        logs = out / "logs"
        for host in self.cluster.node_hosts:
            for path in (self.cluster.root / host.name).rglob("*.log"):
                target = logs / host.name / path.relative_to(self.cluster.root / host.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        shutil.copy(self.runfile, out / "runs.log")
        with contextlib.suppress(OSError):
            shutil.copy(self.pg.log_file, out / "postgres.log")

    async def stop_nodes(self) -> None:
        for proc in self.ups.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        with anyio.move_on_after(30):
            for proc in self.ups.values():
                await anyio.to_thread.run_sync(proc.wait)


async def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    netem = hosts.netem_available()
    if not netem:
        say("tc netem is missing on this kernel (no sch_netem): delay goes through the userspace proxy")
    with Cluster(nodes=args.nodes) as cluster:
        r = Run(cluster, args)
        try:
            say(f"hosts up (run {cluster.run_id}, files in {cluster.root}): "
                f"{', '.join(h.ns for h in cluster.hosts)}")
            await r.start_db()
            for host in cluster.node_hosts:
                await r.start_up(host.name)
            await r.start_workers()
            await r.wait_owned()
            say(f"every role owned; workload and nemesis for {args.duration:.0f}s (seed {args.seed})")
            kinds = tuple(k for k in args.kinds.split(",") if k) or KINDS
            nemesis = Nemesis(cluster, Hooks(owners=r.owners, kill_up=r.kill_up, start_up=r.start_up,
                                             lease_seconds=LEASE_SECONDS, skew_file=r.skew_file,
                                             skew_node=cluster.node_hosts[-1].name),
                              out / "nemesis.jsonl", args.seed, kinds=kinds, netem=netem)
            (out / "nemesis.jsonl").touch()
            client = cluster.client
            workload = cluster.spawn(
                client, [sys.executable, "-m", "tests.jepsen.workload", str(out.resolve() / "history.jsonl"),
                         str(r.runfile), str(args.duration), str(args.seed), ",".join(r.roles)],
                env=r.env(client), log=out / "workload.log")
            if args.duration > 10 and not args.no_faults:
                await nemesis.run(args.duration)
            if await anyio.to_thread.run_sync(workload.wait) != 0:
                raise RuntimeError(f"the workload failed: {(out / 'workload.log').read_text()[-600:]}")
            drained = await r.drain(out, args.drain)
            say(f"faults healed; drained in {drained}s")
            await r.collect(out)
            meta = {"roles": r.roles, "nodes": [h.name for h in cluster.node_hosts], "seed": args.seed,
                    "duration_s": args.duration, "drain_s": drained, "lease_seconds": LEASE_SECONDS,
                    "netem": netem, "run_id": cluster.run_id}
            (out / "meta.json").write_text(json.dumps(meta))
        finally:
            with anyio.CancelScope(shield=True):
                await r.stop_nodes()
    if args.plant:
        say(checker.plant(out, args.plant))
    result = checker.check(out)
    checker.report(result, out)
    return 0 if result["valid"] else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.jepsen.run", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=2, choices=(2, 3))
    parser.add_argument("--plant", choices=checker.PLANTS, default=None)
    parser.add_argument("--out", default="jepsen-out")
    parser.add_argument("--roles", default="ceo,cto,chro")
    parser.add_argument("--drain", type=float, default=90)
    parser.add_argument("--kinds", default="", help="comma-separated fault kinds (default: all)")
    parser.add_argument("--no-faults", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.plant and args.plant not in checker.PLANTS:
        print(f"unknown PLANT {args.plant!r}; use one of {', '.join(checker.PLANTS)}", file=sys.stderr)
        return 2
    reason = hosts.cannot_run()
    if reason is not None:
        print(f"jepsen: cannot run here: {reason}", file=sys.stderr)
        return 1
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # torn down the same way as Ctrl-C
    # Ctrl-C too, explicitly: a process started in the background of a shell script
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt for it.
    signal.signal(signal.SIGINT, interrupted)
    try:
        return anyio.run(run, args)
    except KeyboardInterrupt:
        say("interrupted; everything it started is stopped")
        return 1


if __name__ == "__main__":
    sys.exit(main())
