"""A repository ECHO works in: its definition, the checks at `repo add`, its mirror.

ECHO never writes to the user's repository. Each machine keeps a bare clone of it
(the *mirror*) under `$ECHO_STATE_DIR/workspaces/<name>/mirror.git`; task worktrees
and the merge queue work on the mirror, whose `refs/heads/<base>` is the integration
branch. The user's branches are fetched into `refs/remotes/origin/*`, so a fetch never
overwrites what the queue merged; when the user's base moved ahead (and the mirror's
base is behind it), the mirror's base fast-forwards to it before a new workspace is
made from it.

Concurrent `git worktree add` (and clone, fetch, update-ref) on one repository race
on its config and refs, so all of them run under the repository's lock: an `fcntl`
lock on `<root>/.lock`, which the kernel releases when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from echo.errors import BadRepository, WorkspaceError
from echo.slices import WorkSettings
from echo.work.workspaces.git import git, ok, out

#: A repository's name: it is a directory name and part of branch names.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
NAME_RULE = ("a repository name is 1-63 characters: lower-case letters, digits, '.', '_' "
             "or '-', starting with a letter or digit")
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://|^[^/@\s]+@[^/:\s]+:")


@dataclass(frozen=True)
class Repository:
    """One repository as a task carries it (`payload["repo"]`) and the table stores it."""

    name: str
    source: str
    base_branch: str
    test_command: str | None = None
    push: bool = False
    require_approval: bool = False  # a merge into the base waits for an operator's yes

    def as_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Repository:
        return cls(name=str(data["name"]), source=str(data["source"]),
                   base_branch=str(data["base_branch"]),
                   test_command=data.get("test_command") or None, push=bool(data.get("push")),
                   require_approval=bool(data.get("require_approval")))


def is_url(source: str) -> bool:
    return bool(_URL_RE.match(source))


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or ".." in name or name.endswith(".lock"):
        raise BadRepository(f"bad repository name {name!r}: {NAME_RULE}")
    return name


def check_source(name: str, source: str, base: str | None) -> Repository:
    """What `repo add` stores, or one `BadRepository` line saying what to fix. A local
    path must be a git repository whose base branch exists; its checkout must not be
    on a detached HEAD, nor have uncommitted changes when the base is checked out."""
    check_name(name)
    if base is not None and not ok(["check-ref-format", "--branch", base]):
        raise BadRepository(f"bad base branch name {base!r}; name an existing branch")
    if is_url(source):
        if base is None:
            raise BadRepository(f"{source}: a URL needs --base BRANCH")
        found = git(["ls-remote", "--heads", source, f"refs/heads/{base}"], check=False,
                    timeout=60)
        if found.returncode != 0:
            raise BadRepository(f"{source} cannot be read ({found.stderr.strip()[-200:]}); "
                                "check the URL and your access")
        if not found.stdout.strip():
            raise BadRepository(f"{source} has no branch {base!r}; name an existing branch "
                                "with --base")
        return Repository(name, source, base)
    path = Path(source).expanduser().resolve()
    if not path.is_dir():
        raise BadRepository(f"{source}: no such directory; give the path of a git repository")
    inside = git(["rev-parse", "--is-bare-repository"], cwd=path, check=False)
    if inside.returncode != 0:
        raise BadRepository(f"{path} is not a git repository; run `git init` there or give "
                            "another path")
    top = path if inside.stdout.strip() == "true" else \
        Path(out(["rev-parse", "--show-toplevel"], cwd=path))
    if top != path:
        raise BadRepository(f"{path} is inside the git repository {top}; give its top "
                            "directory")
    bare = inside.stdout.strip() == "true"
    current = git(["symbolic-ref", "--quiet", "--short", "HEAD"], cwd=path, check=False)
    if not bare and current.returncode != 0:
        head = out(["rev-parse", "--short", "HEAD"], cwd=path) if ok(
            ["rev-parse", "--verify", "--quiet", "HEAD"], cwd=path) else "nothing"
        raise BadRepository(f"{path} has a detached HEAD (at {head}); check out a branch "
                            "there first")
    base = base or current.stdout.strip()
    if not base or not ok(["rev-parse", "--verify", "--quiet", f"refs/heads/{base}^{{commit}}"],
                          cwd=path):
        raise BadRepository(f"{path} has no branch {base!r} with a commit; name an existing "
                            "branch with --base")
    if not bare and current.stdout.strip() == base:
        dirty = out(["status", "--porcelain", "--untracked-files=no"], cwd=path)
        if dirty:
            raise BadRepository(f"{path}: the checkout of {base!r} has uncommitted changes; "
                                "commit or discard them first")
    return Repository(name, str(path), base)


# ------------------------------------------------------------------ the mirror


def workspace_place(settings: WorkSettings) -> str:
    """Where a worker keeps its worktrees: its node and state directory. A task of a
    repository without a push is claimed again only at this place (029), since its
    work is in a worktree here and nowhere else."""
    return f"{settings.node}:{Path(settings.state_dir).resolve()}"


@dataclass(frozen=True)
class Layout:
    """Where one repository lives on this machine, under the state directory."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path, name: str) -> Layout:
        return cls(Path(state_dir) / "workspaces" / check_name(name))

    @property
    def mirror(self) -> Path:
        return self.root / "mirror.git"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def merges(self) -> Path:
        return self.root / "merge"

    def worktree(self, task_id: int) -> Path:
        return self.tasks / f"task-{task_id}"

    def meta(self, task_id: int) -> Path:
        return self.tasks / f"task-{task_id}.json"

    def acquire(self, which: str = "") -> int:
        """Take the repository's lock (`which="merge"`: the merge queue's, held across a
        whole merge) and return its file descriptor; closing it releases the lock.
        Blocking (call it from a thread in async code): a holder's git calls have their
        own timeouts, and the kernel releases the lock of a holder that died."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".{which or 'repo'}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def lock(self, which: str = "") -> Iterator[None]:
        """`acquire` as a context manager, for synchronous code."""
        fd = self.acquire(which)
        try:
            yield
        finally:
            os.close(fd)


def ensure_mirror(layout: Layout, repo: Repository) -> Path:
    """The mirror, cloned if missing, with the user's latest branches fetched. Call
    under `layout.lock()`."""
    mirror = layout.mirror
    if not (mirror / "HEAD").is_file():
        if mirror.exists():
            shutil.rmtree(mirror)  # a clone that died halfway
        partial = layout.root / "mirror.partial"
        shutil.rmtree(partial, ignore_errors=True)
        git(["clone", "--bare", "--quiet", repo.source, str(partial)])
        git(["config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"], cwd=partial)
        partial.rename(mirror)
    git(["fetch", "--quiet", "--prune", "origin"], cwd=mirror, timeout=300)
    base, theirs = f"refs/heads/{repo.base_branch}", f"refs/remotes/origin/{repo.base_branch}"
    if not ok(["rev-parse", "--verify", "--quiet", theirs], cwd=mirror):
        raise WorkspaceError(f"repository {repo.name}: {repo.source} has no branch "
                             f"{repo.base_branch!r} any more")
    if not ok(["rev-parse", "--verify", "--quiet", base], cwd=mirror):
        git(["update-ref", base, theirs], cwd=mirror)
    elif ok(["merge-base", "--is-ancestor", base, theirs], cwd=mirror):
        git(["update-ref", base, theirs], cwd=mirror)  # the user moved ahead: follow
    return mirror


def disk_usage(path: Path) -> int:
    """Bytes under `path` (files only, links not followed); 0 if it does not exist."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
