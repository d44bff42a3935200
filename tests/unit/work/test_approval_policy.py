"""The approval policy (echo.approval_rules): Claude Code's permission-rule syntax,
matched purely; the hook's answer for calls no rule gates and for a batch of calls."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.approval_hook import answer, batch_size
from echo.approval_rules import Rule, gated, hook_matcher, parse_rule, parse_rules
from echo.errors import ConfigError
from echo.work.approvals.install import hook_command, hook_folder

PUSH = parse_rules(["Bash(git push:*)"])


@pytest.mark.parametrize(("command", "needs"), [
    ("git push", True),
    ("git push origin main", True),
    ("git push --force", True),
    ("cd repo && git push origin main", True),
    ("make test; git push", True),
    ("FOO=1 git push", True),
    ("echo $(git push)", True),
    ("git status | cat && git push -f", True),
    # found in review: each of these used to run ungated
    ("true & git push", True),
    ("(git push)", True),
    ("{ git push; }", True),
    ("if true; then git push; fi", True),
    ("time git push", True),
    ("! git push", True),
    ("env git push", True),
    ("nohup git push &", True),
    ("git pull", False),
    ("echo git push", False),
    ("git log", False),
])
def test_a_bash_prefix_rule_gates_every_part_of_a_compound_command(command: str,
                                                                   needs: bool) -> None:
    assert (gated(PUSH, "Bash", {"command": command}) is not None) is needs


def test_a_bare_tool_name_gates_every_call_of_that_tool_only() -> None:
    rules = parse_rules(["Write", "mcp__github__merge_pull_request"])
    assert gated(rules, "Write", {"file_path": "/x", "content": "y"}) == Rule("Write")
    assert gated(rules, "Edit", {"file_path": "/x"}) is None
    assert gated(rules, "mcp__github__merge_pull_request", {"number": 7}) is not None
    assert gated(rules, "mcp__github__list", {}) is None


def test_exact_and_wildcard_rules_compare_the_calls_subject() -> None:
    rules = parse_rules(["Bash(rm -rf build)", "Write(/etc/*)", "WebFetch(https://x.test/*)"])
    assert gated(rules, "Bash", {"command": "rm -rf build"}) is not None
    assert gated(rules, "Bash", {"command": "rm -rf build2"}) is None
    assert gated(rules, "Write", {"file_path": "/etc/passwd"}) is not None
    assert gated(rules, "Write", {"file_path": "/home/x"}) is None
    assert gated(rules, "WebFetch", {"url": "https://x.test/a"}) is not None
    assert gated(rules, "WebFetch", {"url": "https://y.test/a"}) is None


@pytest.mark.parametrize("bad", ["", "Bash(", "Bash()", "Ba sh", "(git push)", "Bash(x)y"])
def test_a_malformed_rule_is_one_config_error_naming_the_syntax(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"is not Tool, Tool\(prefix:\*\) or Tool\(exact\)"):
        parse_rule(bad)


def test_rules_are_deduplicated_and_shown_as_written() -> None:
    rules = parse_rules(["Bash(git push:*)", "Write", "Bash(git push:*)"])
    assert [str(r) for r in rules] == ["Bash(git push:*)", "Write"]


def test_the_hooks_matcher_names_only_the_gated_tools() -> None:
    import re

    matcher = re.compile(hook_matcher(parse_rules(["Bash(git push:*)", "Write", "mcp__a__b"])))
    assert matcher.search("Bash") and matcher.search("Write") and matcher.search("mcp__a__b")
    assert not matcher.search("Read") and not matcher.search("BashOutput")


words = st.text(alphabet="abcdefgh -_./", min_size=1, max_size=20).map(str.strip).filter(bool)


@given(prefix=words, rest=st.text(alphabet="abcdefgh -_./=", max_size=20),
       before=st.sampled_from(["", "cd x && ", "true; ", "make | "]))
def test_a_prefix_rule_gates_any_command_with_a_part_that_starts_with_it(
        prefix: str, rest: str, before: str) -> None:
    rules = parse_rules([f"Bash({prefix}:*)"])
    assert gated(rules, "Bash", {"command": before + prefix + rest}) is not None


@given(tool=st.sampled_from(["Bash", "Write", "Edit", "Read"]), content=words,
       other=st.sampled_from(["Glob", "Grep", "WebSearch", "Task"]),
       tool_input=st.dictionaries(st.sampled_from(["command", "file_path", "x"]), words))
def test_a_rule_never_gates_another_tool(tool: str, content: str, other: str,
                                         tool_input: dict[str, str]) -> None:
    rules = parse_rules([tool, f"{tool}({content}:*)", f"{tool}({content})"])
    assert gated(rules, other, tool_input) is None


@given(rule=st.builds(lambda t, c: f"{t}({c})" if c else t,
                      st.sampled_from(["Bash", "Write", "mcp__s__t"]),
                      st.one_of(st.just(""), words)))
def test_a_parsed_rule_reads_back_as_itself(rule: str) -> None:
    assert str(parse_rule(rule)) == rule


def test_a_call_that_shares_its_message_with_other_calls_is_counted(tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    message = {"message": {"id": "msg_2", "content": [{"type": "tool_use", "id": "toolu_1"},
                                       {"type": "tool_use", "id": "toolu_2"}]}}
    transcript.write_text(json.dumps({"message": {"content": "hi"}}) + "\n" + json.dumps(message) + "\n")
    assert batch_size(str(transcript), "toolu_2") == 2
    assert batch_size(str(transcript), "toolu_9") == 1
    assert batch_size(str(tmp_path / "none.jsonl"), "toolu_1") == 1
    # One message written as a line per block, as the CLI may: counted by the message id.
    split = tmp_path / "split.jsonl"
    split.write_text("".join(json.dumps({"message": {"id": "msg_1", "content": [
        {"type": "tool_use", "id": f"toolu_{n}"}]}}) + "\n" for n in (1, 2, 3)))
    assert batch_size(str(split), "toolu_3") == 3


def run_hook(config: Path, call: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "echo.approval_hook", str(config)],
                          input=json.dumps(call), capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_hook_is_silent_for_a_call_no_rule_gates(tmp_path: Path) -> None:
    config = tmp_path / "hook.json"
    config.write_text(json.dumps({"settings": {}, "task_id": 1, "rules": ["Bash(git push:*)"],
                                  "timeout": 60}))
    done = run_hook(config, {"tool_name": "Bash", "tool_input": {"command": "ls"}})
    assert (done.returncode, done.stdout) == (0, "")


def test_the_hook_denies_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    config = tmp_path / "hook.json"
    config.write_text(json.dumps({
        "settings": {"database_url": "postgresql://nobody@127.0.0.1:1/none",
                     "connect_timeout": 1.0, "state_dir": str(tmp_path / "state")},
        "task_id": 1, "rules": ["Bash(git push:*)"], "timeout": 60}))
    done = run_hook(config, {"tool_name": "Bash", "tool_input": {"command": "git push"},
                             "tool_use_id": "toolu_1", "session_id": "s"})
    assert done.returncode == 0
    out = json.loads(done.stdout)["hookSpecificOutput"]
    assert out["permissionDecision"] == "deny"
    assert out["permissionDecisionReason"].startswith("the approval check failed (")
    assert "\n" not in out["permissionDecisionReason"]


def test_the_hook_denies_a_bad_config_instead_of_allowing(tmp_path: Path) -> None:
    done = run_hook(tmp_path / "missing.json", {"tool_name": "Bash"})
    assert json.loads(done.stdout)["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_the_answer_is_the_pretooluse_schema_of_the_cli() -> None:
    assert json.loads(answer("defer", "why")) == {"hookSpecificOutput": {
        "hookEventName": "PreToolUse", "permissionDecision": "defer",
        "permissionDecisionReason": "why"}}


def as_the_cli_runs_it(command: str, cwd: Path, call: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """A hook command as the CLI runs it: through a shell, in the run's working directory."""
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd, input=json.dumps(call),
                          capture_output=True, text=True, timeout=60)


def test_a_hook_written_into_the_worktree_is_never_the_one_that_runs(tmp_path: Path) -> None:
    # The run may write files in its worktree: an `echo` package there answering
    # allow must not shadow ECHO's hook (found in review: `-m` put the cwd first).
    worktree = tmp_path / "worktree"
    (worktree / "echo").mkdir(parents=True)
    (worktree / "echo" / "__init__.py").write_text("")
    (worktree / "echo" / "approval_hook.py").write_text(
        "print('{\"hookSpecificOutput\": {\"hookEventName\": \"PreToolUse\", "
        "\"permissionDecision\": \"allow\"}}')\n")
    config = tmp_path / "hook.json"
    config.write_text(json.dumps({
        "settings": {"database_url": "postgresql://nobody@127.0.0.1:1/none",
                     "connect_timeout": 1.0, "state_dir": str(tmp_path / "state")},
        "task_id": 1, "rules": ["Bash(git push:*)"], "timeout": 60}))
    done = as_the_cli_runs_it(hook_command(config), worktree,
                              {"tool_name": "Bash", "tool_input": {"command": "git push"},
                               "tool_use_id": "toolu_1", "session_id": "s"})
    assert json.loads(done.stdout)["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_a_hook_that_cannot_even_start_blocks_the_call(tmp_path: Path) -> None:
    # The CLI makes the call when a hook fails any other way than exit 2.
    command = hook_command(tmp_path / "hook.json", python=str(tmp_path / "no-such-python"))
    done = as_the_cli_runs_it(command, tmp_path, {"tool_name": "Bash"})
    assert done.returncode == 2


def test_a_runs_hook_folder_is_private_in_the_state_dir_and_a_dead_workers_is_removed(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a worker killed mid-run: its folder outlived it
    first = hook_folder(state, 6)
    root = tmp_path / "state" / "approval-hooks"
    assert first.parent == root and first.name.startswith(f"{os.getpid()}-task-6-")
    assert stat.S_IMODE(root.stat().st_mode) == stat.S_IMODE(first.stat().st_mode) == 0o700
    first.rmdir()  # the run ended
    (root / f"{dead.pid}-task-7-abc").mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (root / f"{live.pid}-task-8-def").mkdir()  # another worker's run, still going
        folder = hook_folder(state, 9)
        assert folder.name.startswith(f"{os.getpid()}-task-9-")
        assert sorted(p.name.split("-task-")[0] for p in root.iterdir()) == sorted(
            [str(live.pid), str(os.getpid())])  # the dead worker's folder is gone
    finally:
        live.kill()
        live.wait()
