"""The public surfaces of the packages, and the error tree, as users rely on them.

Like trio's test_exports: a rename or a removal that would break a user's import fails
here, and a new public name must be added on purpose. (`echo.runtime` has its own, in
tests/unit/runtime/test_exports.py.)
"""

from __future__ import annotations

import inspect
import re

import pytest

import echo.bus
import echo.errors
import echo.work

BUS = {
    "ALL", "HEALTH_CHANNEL", "MAX_CARRIED_BODY_BYTES", "MAX_NOTICE_BYTES", "ROLE_RE", "ROLE_RULE",
    "ChainBuffer", "GroupCommit", "Handler", "Inserted", "Job", "Kind",
    "Message", "MessageStore", "Notice", "NotifyTransport", "OutboxRelay", "Published",
    "Publisher", "Received", "RedisTransport", "StoredMessage", "Subscriber", "SubscriberStats",
    "Subscription", "Transport", "broadcast_channel", "decision_channel",
    "make_transport", "parse_notice", "role_channel", "valid_channel",
    "wire_channel", "workflow_channel",
}  # fmt: skip

WORK = {
    "AWAITING_APPROVAL", "FINAL_STATUSES", "OUTCOMES", "SKIPPED", "STATUSES", "TASK_TYPES",
    "ClaudeExecutor", "ClaudeRunOptions",
    "CommandExecutor", "Completion", "Enqueued", "Executor", "ExecutorPool", "Failure", "NewTask",
    "NoopExecutor", "PoolMetrics", "ProcessResult", "Result", "Task", "TaskQueue",
    "check_outcome", "resolve_claude_bin", "run_process", "task_outcome",
}  # fmt: skip


@pytest.mark.parametrize(("package", "expected"), [(echo.bus, BUS), (echo.work, WORK)])
def test_all_is_exactly_the_public_surface(package: object, expected: set[str]) -> None:
    names = set(package.__all__)  # type: ignore[attr-defined]
    assert names == expected, f"added: {names - expected}; removed: {expected - names}"
    for name in expected:
        assert getattr(package, name) is not None


def _drawn_tree() -> list[tuple[str, str]]:
    """(class, parent) for every node of the tree in echo.errors' docstring."""
    doc = echo.errors.__doc__ or ""
    edges: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []  # (column of the name, name)
    for line in doc.splitlines():
        root = re.fullmatch(r"\s*(EchoError)\s*", line)
        node = re.match(r"^([\s│]*)[├└]── (\w+)", line)
        if root:
            stack = [(line.index("EchoError"), "EchoError")]
        elif node and stack:
            column = len(node.group(1)) + 4
            while stack and stack[-1][0] >= column:
                stack.pop()
            edges.append((node.group(2), stack[-1][1]))
            stack.append((column, node.group(2)))
    return edges


def test_every_error_in_the_docstring_tree_exists_and_subclasses_as_drawn() -> None:
    edges = _drawn_tree()
    assert len(edges) >= 10, "the tree in echo.errors' docstring was not found"
    for name, parent in edges:
        cls = getattr(echo.errors, name, None)
        assert inspect.isclass(cls), f"{name} is drawn in the tree but does not exist"
        assert cls.__bases__[0] is getattr(echo.errors, parent), f"{name} is drawn under {parent}"


def test_every_error_class_is_in_the_tree() -> None:
    drawn = {name for name, _ in _drawn_tree()} | {"EchoError"}
    defined = {name for name, obj in vars(echo.errors).items()
               if inspect.isclass(obj) and issubclass(obj, echo.errors.EchoError)}
    assert defined == drawn, f"not drawn: {defined - drawn}; drawn, not defined: {drawn - defined}"
