"""The Jepsen harness's hosts: network namespaces that this run makes and unmakes.

    bridge ns (br0) ── veth ── db      10.231.0.1   Postgres, Redis, the link proxy
                    ── veth ── n1..nN  10.231.0.11+ `echoctl up --node nK`, `echoctl worker`
                    ── veth ── client  10.231.0.20  the workload

Every address lives inside these namespaces (the bridge has its own namespace too),
so nothing here touches the machine's interfaces, routes or shared services. A node
reaches the database host through the link proxy (`tests/jepsen/proxy.py`), which
listens on one port pair per host, so delay can be added per host in userspace where
the kernel has no `sch_netem`. The harness itself stays in the root namespace and
reaches Postgres over its Unix socket (pathname sockets are not namespaced).

`Cluster` is a context manager: on the way out, whatever happened (an exception, a
Ctrl-C), it kills every process it started and every process still inside its
namespaces (by pid, from `ip netns pids`), deletes the namespaces (their veths go
with them) and its temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.231.0"
DB_ADDR = f"{SUBNET}.1"
CLIENT_ADDR = f"{SUBNET}.20"
PG_PORT_BASE = 15432  # host k's Postgres port on the database host: base + 1000 * k
REDIS_PORT_BASE = 16379
TOOLS = {"ip": "iproute2", "iptables": "iptables", "faketime": "faketime"}
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def node_addr(index: int) -> str:
    return f"{SUBNET}.{10 + index}"


def pg_port(host_index: int) -> int:
    return PG_PORT_BASE + 1000 * host_index


def redis_port(host_index: int) -> int:
    return REDIS_PORT_BASE + 1000 * host_index


def cannot_run() -> str | None:
    """Why this machine cannot run the harness (one line), or None. A missing tool
    is named with the install step (`make jepsen-setup`) that brings it."""
    if os.geteuid() != 0:
        return "the Jepsen harness needs root (network namespaces, iptables)"
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing or not FAKETIME_LIB.exists():
        pkgs = sorted(set(missing) | ({"faketime"} if not FAKETIME_LIB.exists() else set()))
        return f"missing {', '.join(pkgs)}: run `make jepsen-setup` (apt-get install {' '.join(pkgs)})"
    name = f"ejprobe{os.getpid()}"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        return f"no network namespaces here: {made.stderr.strip() or 'ip netns add failed'}"
    try:
        probe = _ip("netns", "exec", name, "iptables", "-A", "INPUT", "-s", "10.0.0.9", "-j", "DROP")
        if probe.returncode != 0:
            return f"iptables cannot filter inside a namespace: {probe.stderr.strip()}"
    finally:
        _ip("netns", "del", name)
    return None


def netem_available() -> bool:
    """Whether tc netem works here (this kernel may lack `sch_netem`)."""
    name = f"ejnetem{os.getpid()}"
    if _ip("netns", "add", name).returncode != 0:
        return False
    try:
        tried = _run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root",
                      "netem", "delay", "1ms"])
        return tried.returncode == 0
    finally:
        _ip("netns", "del", name)


def _run(argv: Sequence[str], check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args])


@dataclass
class Host:
    """One namespace: its name, address and the index that picks its proxy ports."""

    name: str
    ns: str
    addr: str
    index: int

    @property
    def pg_port(self) -> int:
        return pg_port(self.index)

    @property
    def redis_port(self) -> int:
        return redis_port(self.index)


@dataclass
class Cluster:
    """The namespaces of one run, and every process started in them."""

    nodes: int = 2
    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="echo-jepsen-")))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    made: list[str] = field(default_factory=list)
    #: Called once every process is gone (e.g. deleting a server's files elsewhere).
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        prefix = f"ej{self.run_id}"
        self.bridge_ns = f"{prefix}-br"
        self.db = Host("db", f"{prefix}-db", DB_ADDR, 0)
        self.node_hosts = [Host(f"n{i}", f"{prefix}-n{i}", node_addr(i), i)
                           for i in range(1, self.nodes + 1)]
        self.client = Host("client", f"{prefix}-client", CLIENT_ADDR, 9)

    @property
    def hosts(self) -> list[Host]:
        return [self.db, *self.node_hosts, self.client]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Cluster:
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        self._netns_add(self.bridge_ns)
        self.sh(self.bridge_ns, "ip", "link", "add", "br0", "type", "bridge")
        self.sh(self.bridge_ns, "ip", "link", "set", "br0", "up")
        self.sh(self.bridge_ns, "ip", "link", "set", "lo", "up")
        for host in self.hosts:
            self._netns_add(host.ns)
            peer = f"v-{host.name}"
            # Made inside the bridge's namespace, its peer moved straight into the host's:
            # no interface ever appears in the root namespace.
            self.sh(self.bridge_ns, "ip", "link", "add", peer, "type", "veth",
                    "peer", "name", "eth0", "netns", host.ns)
            self.sh(self.bridge_ns, "ip", "link", "set", peer, "master", "br0")
            self.sh(self.bridge_ns, "ip", "link", "set", peer, "up")
            self.sh(host.ns, "ip", "addr", "add", f"{host.addr}/24", "dev", "eth0")
            self.sh(host.ns, "ip", "link", "set", "eth0", "up")
            self.sh(host.ns, "ip", "link", "set", "lo", "up")

    def _netns_add(self, ns: str) -> None:
        _run(["ip", "netns", "add", ns], check=True)
        self.made.append(ns)

    def destroy(self) -> None:
        """Stop everything this run started; leave no namespace, process or file."""
        for proc in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError, OSError):
                os.killpg(proc.pid, signal.SIGCONT)  # a paused process cannot die of TERM
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for ns in self.made:
            self._kill_everything_in(ns)
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError, OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for cleanup in self.cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        for ns in reversed(self.made):
            _ip("netns", "del", ns)
        self.made.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_everything_in(self, ns: str, within: float = 10.0) -> None:
        """SIGKILL every process inside `ns` until none is left. One listing is a
        snapshot: a supervisor still alive when it was taken (a node restarting an
        agent) can start a process after it, which one round of kills would miss."""
        deadline = time.monotonic() + within
        while (pids := self.pids_in(ns)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)  # for the killed to leave the namespace (no event says so)

    @staticmethod
    def pids_in(ns: str) -> list[int]:
        listed = _ip("netns", "pids", ns)
        return [int(p) for p in listed.stdout.split()] if listed.returncode == 0 else []

    # ------------------------------------------------------------ commands

    def sh(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one command inside namespace `ns` and wait for it."""
        return _run(["ip", "netns", "exec", ns, *argv], check=check)

    def spawn(self, host: Host, argv: Sequence[str], *, env: dict[str, str], log: Path,
              faketime: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process inside `host`'s namespace, in its own process
        group, output to `log`. `faketime`: the file whose offset (`+0`, `+45`) skews
        this process's wall clock (libfaketime; monotonic clocks untouched)."""
        env = dict(env)
        if faketime is not None:
            if not faketime.exists():
                faketime.write_text("+0\n")
            env.update(LD_PRELOAD=str(FAKETIME_LIB), FAKETIME_TIMESTAMP_FILE=str(faketime),
                       FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_CACHE_DURATION="1")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", host.ns, *argv], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.processes.append(proc)
        return proc

    def iptables(self, host: Host, *rule: str, check: bool = True) -> None:
        self.sh(host.ns, "iptables", "-w", *rule, check=check)


def leftover_namespaces(run_id: str) -> list[str]:
    """Namespaces of run `run_id` still present (a test asserts there are none)."""
    listed = _ip("netns", "list").stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(f"ej{run_id}-")]


@contextlib.contextmanager
def cluster(nodes: int = 2) -> Iterator[Cluster]:
    with Cluster(nodes=nodes) as made:
        yield made
