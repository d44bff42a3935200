"""The Jepsen checker on synthetic records (no services): a clean history is valid,
and each violation planted into it is found and named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.jepsen import checker

T0 = 1_000_000.0  # a run's wall time; the checker only compares times with each other
LINE = "2026-11-26 02:00:00,000 INFO echo.org.agent: {role} processed message {id} from operator: x\n"


def _record(tmp_path: Path, **change: Any) -> Path:
    """A small, clean run: roles ceo and cto; two broadcasts and a direct message to
    cto; one task; one workflow; ceo's lease taken over once (epoch 1 on h1, epoch 2
    on h2 after it expired); one fault."""
    out = tmp_path / "run"
    (out / "logs" / "n1").mkdir(parents=True)
    history = [
        {"t": T0 + 1, "type": "invoke", "op": "broadcast", "n": 1},
        {"t": T0 + 1.1, "type": "ok", "op": "broadcast", "n": 1, "id": 10, "to": "all"},
        {"t": T0 + 2, "type": "ok", "op": "direct", "n": 2, "id": 11, "to": "cto"},
        {"t": T0 + 3, "type": "ok", "op": "broadcast", "n": 3, "id": 12, "to": "all"},
        {"t": T0 + 3, "type": "fail", "op": "broadcast", "n": 4, "error": "database unavailable"},
        {"t": T0 + 4, "type": "ok", "op": "task", "n": 5, "id": 7, "to": None},
        {"t": T0 + 5, "type": "ok", "op": "workflow", "n": 6, "id": "wf-1"},
    ]
    deliveries = [("ceo", 10), ("cto", 10), ("cto", 11), ("ceo", 12), ("cto", 12)]
    db: dict[str, list[dict[str, Any]]] = {
        "inbox": [{"role": r, "message_id": m, "at": T0 + 6} for r, m in deliveries],
        "tasks": [{"task_id": 7, "status": "completed", "attempt": 2, "assigned_role": None,
                   "completed_at": T0 + 12}],
        "task_actions": [{"task_id": 7, "action": "task.claimed", "actor": "w1", "at": T0 + 4},
                         {"task_id": 7, "action": "task.claimed", "actor": "w2", "at": T0 + 10},
                         {"task_id": 7, "action": "task.completed", "actor": "w2", "at": T0 + 12}],
        "leases": [
            {"at": T0, "role": "ceo", "holder": "h1", "node": "n1", "pid": 1, "epoch": 1,
             "expires_at": T0 + 20},
            {"at": T0, "role": "cto", "holder": "h3", "node": "n1", "pid": 3, "epoch": 1,
             "expires_at": T0 + 100},
            {"at": T0 + 24, "role": "ceo", "holder": "h2", "node": "n2", "pid": 2, "epoch": 2,
             "expires_at": T0 + 100},
        ],
        "writes": [{"at": T0 + 6, "txn_at": T0 + 6, "tbl": "agent_inbox", "fence": "ceo/1/h1"},
                   {"at": T0 + 30, "txn_at": T0 + 30, "tbl": "agent_inbox", "fence": "ceo/2/h2"}],
        "workflows": [{"id": "wf-1", "phase": "done"}],
    }
    runs = (f"start 7 1 100 {T0 + 4}\ntick 7 1 100 {T0 + 5}\n"
            f"start 7 2 200 {T0 + 10}\ntick 7 2 200 {T0 + 11}\nend 7 2 200 {T0 + 11}\n")
    faults = [{"t": T0 + 15, "type": "fault-start", "id": 1, "kind": "pause-owners", "target": "n1"},
              {"t": T0 + 23, "type": "fault-end", "id": 1, "kind": "pause-owners", "target": "n1"}]
    logs = {"ceo": [10, 12], "cto": [10, 11, 12]}
    for key, value in change.items():
        if key == "history":
            history = value(history)
        elif key == "runs":
            runs = value
        elif key == "logs":
            logs = value(logs)
        else:
            db[key] = value(db[key])
    (out / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history))
    (out / "nemesis.jsonl").write_text("".join(json.dumps(e) + "\n" for e in faults))
    (out / "db.json").write_text(json.dumps(db))
    (out / "runs.log").write_text(runs)
    (out / "meta.json").write_text(json.dumps({"roles": ["ceo", "cto"], "nodes": ["n1", "n2"],
                                               "drain_s": 10}))
    for role, ids in logs.items():
        (out / "logs" / "n1" / f"{role}.log").write_text("".join(LINE.format(role=role, id=i) for i in ids))
    return out


def _violated(result: dict[str, Any]) -> set[str]:
    return {k for k, n in result["violations"].items() if n}


def test_a_clean_history_is_valid(tmp_path: Path) -> None:
    result = checker.check(_record(tmp_path))
    assert result["valid"] is True, result["examples"]
    assert result["operations"]["messages"] == 3
    assert result["operations"]["deliveries_expected"] == 5
    assert result["operations"]["refused"] == 1
    assert result["faults"] == {"pause-owners": 1, "total": 1}


def test_ownerless_time_and_drain_per_fault(tmp_path: Path) -> None:
    fault = checker.check(_record(tmp_path))["per_fault"][0]
    # ceo's lease expired at +20 and was taken over at +24: 4 s with no owner, in the
    # fault's window; nothing was acknowledged during the fault, so no drain figure.
    assert fault["ownerless_s"] == {"ceo": 4.0}
    assert fault["drained_after_s"] is None


def test_drain_after_a_fault(tmp_path: Path) -> None:
    def during(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*history, {"t": T0 + 16, "type": "ok", "op": "direct", "n": 9, "id": 13, "to": "cto"}]

    out = _record(tmp_path, history=during,
                  inbox=lambda rows: [*rows, {"role": "cto", "message_id": 13, "at": T0 + 26.5}],
                  logs=lambda logs: {**logs, "cto": [*logs["cto"], 13]})
    assert checker.check(out)["per_fault"][0]["drained_after_s"] == 3.5


def test_a_lost_message_is_found(tmp_path: Path) -> None:
    out = _record(tmp_path, inbox=lambda rows: [
        r for r in rows if (r["role"], r["message_id"]) != ("cto", 11)])
    result = checker.check(out)
    assert result["valid"] is False
    assert _violated(result) == {"lost-message"}
    assert result["examples"]["lost-message"][0]["message"] == 11


def test_a_message_recorded_but_never_processed_is_found(tmp_path: Path) -> None:
    out = _record(tmp_path, logs=lambda logs: {**logs, "ceo": [10]})  # the row without the handling
    assert _violated(checker.check(out)) == {"recorded-not-processed"}


def test_a_duplicate_delivery_is_found(tmp_path: Path) -> None:
    out = _record(tmp_path, logs=lambda logs: {**logs, "cto": [10, 11, 12, 11]})
    result = checker.check(out)
    assert _violated(result) == {"duplicate-delivery"}
    assert result["examples"]["duplicate-delivery"][0] == {"role": "cto", "message": 11, "times": 2}


def _with_attempts(tmp_path: Path, lines: dict[str, list[tuple[int, str]]]) -> Path:
    """A record whose inbox rows name the attempt that committed them (`a<id>`), with
    log lines carrying their attempt (`attempt=...`)."""
    out = _record(tmp_path, inbox=lambda rows: [{**r, "attempt": f"a{r['message_id']}"} for r in rows])
    for role, entries in lines.items():
        (out / "logs" / "n1" / f"{role}.log").write_text("".join(
            LINE.format(role=role, id=i).rstrip("\n") + f" attempt={a}\n" for i, a in entries))
    return out


def test_only_the_committed_attempts_line_counts(tmp_path: Path) -> None:
    # cto's first attempt at 11 (attempt b11) died before its commit; a11 committed
    out = _with_attempts(tmp_path, {"ceo": [(10, "a10"), (12, "a12")],
                                    "cto": [(10, "a10"), (11, "b11"), (11, "a11"), (12, "a12")]})
    assert checker.check(out)["valid"] is True


def test_a_committed_attempt_logged_twice_or_never_is_found(tmp_path: Path) -> None:
    twice = _with_attempts(tmp_path / "a", {"ceo": [(10, "a10"), (12, "a12"), (12, "a12")],
                                            "cto": [(10, "a10"), (11, "a11"), (12, "a12")]})
    assert _violated(checker.check(twice)) == {"duplicate-delivery"}
    never = _with_attempts(tmp_path / "b", {"ceo": [(10, "a10"), (12, "a12")],
                                            "cto": [(10, "a10"), (11, "b11"), (12, "a12")]})
    assert _violated(checker.check(never)) == {"recorded-not-processed"}


def test_a_lost_task_and_a_double_completion_are_found(tmp_path: Path) -> None:
    lost = _record(tmp_path / "a", tasks=lambda rows: [{**rows[0], "status": "pending"}])
    assert _violated(checker.check(lost)) == {"lost-task"}
    twice = _record(tmp_path / "b", task_actions=lambda rows: [*rows, {**rows[-1], "actor": "w1"}])
    assert _violated(checker.check(twice)) == {"duplicate-completion"}


def test_overlapping_attempts_are_found(tmp_path: Path) -> None:
    # attempt 1 still ticking at +10.5, after attempt 2 started at +10
    runs = (f"start 7 1 100 {T0 + 4}\ntick 7 1 100 {T0 + 10.5}\n"
            f"start 7 2 200 {T0 + 10}\nend 7 2 200 {T0 + 11}\n")
    result = checker.check(_record(tmp_path, runs=runs))
    assert _violated(result) == {"overlapping-attempts"}
    assert result["examples"]["overlapping-attempts"][0]["overlap_s"] == 0.5


def test_one_attempt_run_by_two_processes_at_once_overlaps(tmp_path: Path) -> None:
    runs = (f"start 7 1 100 {T0 + 4}\nstart 7 1 300 {T0 + 4.2}\ntick 7 1 100 {T0 + 5}\n"
            f"end 7 1 300 {T0 + 5.5}\n")
    assert _violated(checker.check(_record(tmp_path, runs=runs))) == {"overlapping-attempts"}


@pytest.mark.parametrize(("write", "why"), [
    ({"at": T0 + 25, "txn_at": T0 + 25, "fence": "ceo/1/h1"}, "taken over"),
    ({"at": T0 + 21, "txn_at": T0 + 21, "fence": "ceo/1/h1"}, "expired"),
    ({"at": T0 + 6, "txn_at": T0 + 6, "fence": "ceo/1/h2"}, "never held"),
    ({"at": T0 + 6, "txn_at": T0 + 6, "fence": "ceo/2/h2"}, "never held"),
])
def test_a_stale_write_is_found(tmp_path: Path, write: dict[str, Any], why: str) -> None:
    out = _record(tmp_path, writes=lambda rows: [*rows, {"tbl": "agent_inbox", **write}])
    result = checker.check(out)
    assert _violated(result) == {"stale-write"}
    assert why in result["examples"]["stale-write"][0]["why"]


def test_a_write_after_release_is_stale(tmp_path: Path) -> None:
    released = {"at": T0 + 5, "role": "cto", "holder": None, "node": "n1", "pid": 3, "epoch": 1,
                "expires_at": T0 + 5}
    out = _record(tmp_path, leases=lambda rows: [*rows, released],
                  writes=lambda rows: [*rows, {"at": T0 + 7, "txn_at": T0 + 7, "tbl": "messages",
                                               "fence": "cto/1/h3"}])
    assert _violated(checker.check(out)) == {"stale-write"}


def test_an_unfinished_workflow_is_found(tmp_path: Path) -> None:
    out = _record(tmp_path, workflows=lambda rows: [{"id": "wf-1", "phase": "voting"}])
    assert _violated(checker.check(out)) == {"workflow-unfinished"}


@pytest.mark.parametrize("kind", checker.PLANTS)
def test_each_plant_makes_the_record_invalid_naming_it(tmp_path: Path, kind: str) -> None:
    out = _record(tmp_path)
    assert kind in checker.plant(out, kind)
    result = checker.check(out)
    assert result["valid"] is False
    assert _violated(result) == {kind}


def test_the_report_ends_with_one_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _record(tmp_path)
    checker.report(checker.check(out), out)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"valid", "operations", "faults", "violations"}
    assert last["violations"] == dict.fromkeys(checker.VIOLATIONS, 0)


def test_refused_writes_of_a_deposed_owner_are_counted(tmp_path: Path) -> None:
    out = _record(tmp_path)
    # ceo epoch 1 ended at +20 (T0 is 1970-01-12 13:46:40 UTC); two refusals, the last 3.5 s after
    (out / "postgres.log").write_text(
        "1970-01-12 13:46:59.000 UTC [9] LOG:  checkpoint starting: time\n"
        "1970-01-12 13:47:01.000 UTC [9] ERROR:  the lease of role ceo at epoch 1 is no longer held "
        "by this agent\n"
        "1970-01-12 13:47:03.500 UTC [9] ERROR:  the lease of role ceo at epoch 1 is no longer held "
        "by this agent\n")
    result = checker.check(out)
    assert result["fenced_refusals"] == {"refused": 2, "max_after_lease_end_s": 3.5}
    assert result["valid"] is True  # the fence held: a figure, not a violation
