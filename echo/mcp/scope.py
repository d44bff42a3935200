"""Who the MCP server acts as: the operator, or one role under its lease's fence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from echo.errors import UsageError
from echo.org.leases import Lease
from echo.org.roles import check_role, load_role


@dataclass(frozen=True)
class Scope:
    """`role` None: the operator's server (every tool, sender `operator`). A role's
    server sends as `role` only and writes through connections opened with `fence`,
    so the database itself refuses its writes once the role's lease moved on."""

    role: str | None = None
    fence: str | None = None
    #: The role's `[claude] echo_tools` (None: every tool a role may have).
    tools: tuple[str, ...] | None = None

    @property
    def sender(self) -> str:
        return self.role or "operator"

    @property
    def is_operator(self) -> bool:
        return self.role is None

    @classmethod
    def of(cls, agents_dir: Path, role: str | None, fence: str | None) -> Scope:
        """The scope the command line asks for, checked (`UsageError` naming what is
        wrong): a role needs the fence of a lease on that same role, and a fence a role."""
        if role is None and fence is None:
            return cls()
        if role is None or fence is None:
            raise UsageError("--role and --fence go together: a role's server writes under "
                             "its lease (--fence ROLE/EPOCH/HOLDER); give both, or neither "
                             "for the operator's server")
        check_role(role, agents_dir)
        try:
            lease = Lease.parse(fence)
        except ValueError as exc:
            raise UsageError(f"--fence: {exc}") from None
        if lease.role != role:
            raise UsageError(f"--fence names role {lease.role!r}, not {role!r}: a server acts "
                             "as the role whose lease fences it")
        allowed = load_role(agents_dir, role).claude.echo_tools
        return cls(role=role, fence=lease.fence,
                   tools=None if allowed is None else tuple(allowed))
