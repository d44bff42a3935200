"""The public surface: a rename that would break users fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import echo.runtime

EXPECTED = {
    "Actor", "ActorExit", "ActorNotAlive", "AlreadyRegistered", "Attempts", "Backoff", "CallTimeout",
    "ChildInfo", "ChildSpec", "Down", "DynamicSupervisor", "Exit", "ExitReason", "KILLED",
    "MaxChildrenReached", "MonitorRef", "NORMAL", "OSProcess", "Process", "ProcessExited",
    "Registry", "RuntimeFault", "SHUTDOWN", "Service", "Shutdown", "StartError", "StartTimeout",
    "Supervisor", "SupervisorBase", "SupervisorEscalation", "Task", "TaskTimeout",
    "UnexpectedMessage", "UnknownChild", "demonitor", "gave_up", "is_normal", "link", "monitor",
    "unlink",
}  # fmt: skip


def test_all_is_exactly_the_public_surface() -> None:
    assert set(echo.runtime.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(echo.runtime, name) is not None


def test_the_issue_import_line_works() -> None:
    from echo.runtime import (  # noqa: F401
        Actor,
        ChildSpec,
        DynamicSupervisor,
        OSProcess,
        Registry,
        Supervisor,
        Task,
    )


def test_runtime_imports_nothing_from_the_rest_of_echo() -> None:
    package = Path(echo.runtime.__file__).parent
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name == "echo" or name.startswith("echo."):
                    assert name.startswith("echo.runtime"), f"{module.name} imports {name}"
