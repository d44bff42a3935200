"""The Jepsen checker: pure Python over a run's record, no services.

A run's record is a directory (what `run.py` collects, or what a unit test writes):

    history.jsonl   the client's operations: invoke / ok / fail / info, with wall times
    nemesis.jsonl   fault-start / fault-end lines
    db.json         rows of the run's database (`DUMP_QUERIES`), times as epoch seconds
    postgres.log    the database host's server log (the fence's refusals)
    logs/<node>/    every node's log files (the agents' `processed message N` lines)
    runs.log        the task attempts' start / tick / end lines (`attempt.sh`)
    meta.json       the roles, nodes, lease length

What it checks (each a violation kind in `VIOLATIONS`):
- lost-message: an acknowledged message has no `agent_inbox` row for a role that
  should see it (every role for a broadcast, the addressee for a direct message);
- recorded-not-processed: the row is there but the role never logged processing it;
- duplicate-delivery: a role logged processing one message more than once;
- lost-task / duplicate-completion: an acknowledged task not completed, or completed
  more than once (`task.completed` audit rows);
- overlapping-attempts: two attempts of one task ran at the same time (the second
  claim comes only after the first attempt's lease expired, so any overlap means a
  worker ran past its lease);
- stale-write: a statement written under a role's lease fence after that lease was
  taken over, released or expired, or under an epoch the holder never had;
- workflow-unfinished: an acknowledged workflow not `done` at the end.

Figures, not violations (the fence held): how many writes of deposed owners the
fence refused, and how long after its lease's end the last came. And, per fault:
how long each role had no owner (from the lease log) and how long after the fault's
end every message and task acknowledged during it was done.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VIOLATIONS = ("lost-message", "recorded-not-processed", "duplicate-delivery", "lost-task",
              "duplicate-completion", "overlapping-attempts", "stale-write", "workflow-unfinished")
PLANTS = ("duplicate-delivery", "lost-message", "stale-write")
AFTERMATH_S = 10.0  # a fault's window for the ownerless figure: its length plus this (2 leases),
                    # cut short where the next fault starts
EXAMPLES = 5

DUMP_QUERIES = {
    # `attempt`: the processing attempt that committed the row, where the schema has it
    # (the agent then logs it on its `processed message` line); NULL elsewhere.
    "inbox": "SELECT role, message_id, extract(epoch FROM processed_at)::float8 AS at, "
             "to_jsonb(i) ->> 'attempt' AS attempt FROM agent_inbox i",
    "tasks": "SELECT task_id, status, attempt, assigned_role, "
             "extract(epoch FROM completed_at)::float8 AS completed_at FROM agent_tasks",
    "task_actions": "SELECT subject_id::bigint AS task_id, action, actor, "
                    "extract(epoch FROM at)::float8 AS at FROM agent_actions "
                    "WHERE subject_type = 'task' AND subject_id ~ '^[0-9]+$' ORDER BY id",
    "leases": "SELECT extract(epoch FROM at)::float8 AS at, role, holder, node, pid, epoch, "
              "extract(epoch FROM expires_at)::float8 AS expires_at FROM jepsen_lease_log ORDER BY id",
    "writes": "SELECT extract(epoch FROM at)::float8 AS at, extract(epoch FROM txn_at)::float8 AS txn_at, "
              "tbl, fence FROM jepsen_writes ORDER BY id",
    "workflows": "SELECT id, phase FROM workflows",
}
_PROCESSED = re.compile(r" (?P<role>[a-z_]+) processed message (?P<id>\d+) from ")
_ATTEMPT = re.compile(r" attempt=(?P<attempt>[0-9a-f]+)$")
_REFUSED = re.compile(r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC \[\d+\] ERROR:  the lease of role "
                      r"(?P<role>\S+) at epoch (?P<epoch>\d+) is no longer held")


@dataclass(frozen=True)
class Op:
    """An acknowledged operation: what it was, the id it got, for whom, when."""

    kind: str
    id: Any
    to: str | None
    t: float


@dataclass
class Acked:
    messages: list[Op]
    tasks: list[Op]
    workflows: list[Op]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a kill
    return out


def acknowledged(history: list[dict[str, Any]]) -> Acked:
    acked = Acked([], [], [])
    for e in history:
        if e.get("type") != "ok":
            continue
        op = Op(e["op"], e["id"], e.get("to"), float(e["t"]))
        if op.kind in ("broadcast", "direct"):
            acked.messages.append(op)
        elif op.kind in ("task", "role-task"):
            acked.tasks.append(op)
        elif op.kind == "workflow":
            acked.workflows.append(op)
    return acked


def audience(message: Op, roles: list[str]) -> list[str]:
    """The roles that must see `message`."""
    return list(roles) if message.to in (None, "all") else [message.to] if message.to in roles else []


def processed_in_logs(logs: Path) -> Counter[tuple[str, int, str | None]]:
    """How often each (role, message, attempt) was logged as processed, over every
    node's logs. `attempt` is None on a line that names none."""
    seen: Counter[tuple[str, int, str | None]] = Counter()
    if not logs.exists():
        return seen
    for path in sorted(logs.rglob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if (m := _PROCESSED.search(line)) is not None:
                a = _ATTEMPT.search(line)
                seen[(m["role"], int(m["id"]), a["attempt"] if a else None)] += 1
    return seen


def processings(seen: Counter[tuple[str, int, str | None]],
                rows: dict[tuple[str, int], str | None]) -> Counter[tuple[str, int]]:
    """How often each (role, message) was processed. Where the inbox row names the
    attempt that committed it, only that attempt's lines count: an attempt that died
    or rolled back before its commit logged a line too, but recorded nothing, and the
    next attempt handles the message again. Elsewhere every line counts."""
    counted: Counter[tuple[str, int]] = Counter()
    for (role, mid, attempt), n in seen.items():
        committed = rows.get((role, mid))
        if committed is None or attempt == committed:
            counted[(role, mid)] += n
    return counted


def attempts(runs: str) -> dict[int, dict[tuple[int, int], tuple[float, float]]]:
    """Per task, per (attempt, pid): the first and last time that run was seen running.
    Keyed by pid too, so two processes running the same attempt are two runs."""
    spans: dict[int, dict[tuple[int, int], list[float]]] = defaultdict(dict)
    for line in runs.splitlines():
        parts = line.split()
        if len(parts) != 5 or parts[0] not in ("start", "tick", "end"):
            continue
        try:
            task, attempt, pid, t = int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4])
        except ValueError:
            continue
        span = spans[task].setdefault((attempt, pid), [t, t])
        span[0], span[1] = min(span[0], t), max(span[1], t)
    return {task: {k: (v[0], v[1]) for k, v in by.items()} for task, by in spans.items()}


# ---------------------------------------------------------------- leases


def ownerless_intervals(leases: list[dict[str, Any]], role: str, end: float) -> list[tuple[float, float]]:
    """When `role` had no live lease, from its first acquisition to `end`."""
    rows = [r for r in leases if r["role"] == role]
    gaps: list[tuple[float, float]] = []
    for i, row in enumerate(rows):
        nxt = rows[i + 1]["at"] if i + 1 < len(rows) else end
        owned_until = min(row["expires_at"], nxt) if row["holder"] else row["at"]
        if nxt > owned_until:
            gaps.append((owned_until, nxt))
    return gaps


def _overlap(gaps: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in gaps)


def stale_writes(leases: list[dict[str, Any]], writes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Writes under a fence whose lease was no longer the writer's at the statement."""
    by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in leases:
        by_role[row["role"]].append(row)
    found = []
    for w in writes:
        role, _, rest = w["fence"].partition("/")
        epoch_s, _, holder = rest.partition("/")
        try:
            epoch = int(epoch_s)
        except ValueError:
            found.append({**w, "why": "a fence that names no epoch"})
            continue
        before = [r for r in by_role.get(role, []) if r["at"] <= w["at"]]
        mine = [r for r in before if r["epoch"] == epoch and r["holder"] == holder]
        if not mine:
            found.append({**w, "why": f"{holder} never held {role} at epoch {epoch} before this write"})
        elif any(r["epoch"] > epoch for r in before):
            newer = min(r["at"] for r in before if r["epoch"] > epoch)
            found.append({**w, "why": f"{role} was taken over (a newer epoch) {w['at'] - newer:.3f}s "
                                      f"before this write at epoch {epoch}"})
        elif any(r["epoch"] == epoch and r["holder"] is None for r in before):
            found.append({**w, "why": f"written after {role} epoch {epoch} was released"})
        elif mine[-1]["expires_at"] < w["txn_at"]:
            found.append({**w, "why": f"written {w['txn_at'] - mine[-1]['expires_at']:.3f}s after "
                                      f"{role} epoch {epoch} expired"})
    return found


def fenced_refusals(leases: list[dict[str, Any]], pg_log: str) -> dict[str, Any]:
    """The writes the fence refused (Postgres logs each), and how long after its lease
    expired a deposed owner was still trying: the fence held, but the owner's rule
    (act only before the lease's end) did not."""
    ends: dict[tuple[str, int], float] = {}
    for row in leases:
        key = (row["role"], int(row["epoch"]))
        ends[key] = max(ends.get(key, 0.0), float(row["expires_at"]) if row["holder"] else float(row["at"]))
    after: list[float] = []
    for line in pg_log.splitlines():
        if (m := _REFUSED.match(line)) is not None:
            at = datetime.strptime(m["at"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
            end = ends.get((m["role"], int(m["epoch"])))
            if end is not None:
                after.append(at - end)
    return {"refused": len(after),
            "max_after_lease_end_s": round(max(after), 2) if after else None}


# ---------------------------------------------------------------- the check


def check(out: Path) -> dict[str, Any]:
    """Read the record in `out`; the result (`valid`, counts, violations, per-fault figures)."""
    meta = json.loads((out / "meta.json").read_text())
    roles: list[str] = meta["roles"]
    history = read_jsonl(out / "history.jsonl")
    faults = read_jsonl(out / "nemesis.jsonl")
    db = json.loads((out / "db.json").read_text())
    acked = acknowledged(history)
    violations: dict[str, list[dict[str, Any]]] = {k: [] for k in VIOLATIONS}

    inbox = {(r["role"], int(r["message_id"])): float(r["at"]) for r in db["inbox"]}
    committed = {(r["role"], int(r["message_id"])): r.get("attempt") for r in db["inbox"]}
    processed = processings(processed_in_logs(out / "logs"), committed)
    for m in acked.messages:
        for role in audience(m, roles):
            if (role, m.id) not in inbox:
                violations["lost-message"].append({"role": role, "message": m.id, "acked_at": m.t})
            elif processed[(role, m.id)] == 0:
                violations["recorded-not-processed"].append({"role": role, "message": m.id})
    for (role, mid), n in sorted(processed.items()):
        if n > 1:
            violations["duplicate-delivery"].append({"role": role, "message": mid, "times": n})

    tasks = {int(r["task_id"]): r for r in db["tasks"]}
    completions = Counter(int(a["task_id"]) for a in db["task_actions"] if a["action"] == "task.completed")
    for t in acked.tasks:
        row = tasks.get(int(t.id))
        if row is None or row["status"] != "completed":
            violations["lost-task"].append({"task": t.id, "status": row and row["status"]})
        if completions[int(t.id)] > 1:
            violations["duplicate-completion"].append({"task": t.id, "completions": completions[int(t.id)]})
    runs = attempts((out / "runs.log").read_text() if (out / "runs.log").exists() else "")
    for task, by in sorted(runs.items()):
        spans = sorted(by.items(), key=lambda kv: kv[1][0])
        for ((a1, _p1), (_s1, e1)), ((a2, _p2), (s2, e2)) in itertools.pairwise(spans):
            if e1 > s2:
                violations["overlapping-attempts"].append(
                    {"task": task, "attempts": [a1, a2], "overlap_s": round(min(e1, e2) - s2, 3)})

    violations["stale-write"] = stale_writes(db["leases"], db["writes"])
    phases = {r["id"]: r["phase"] for r in db["workflows"]}
    for w in acked.workflows:
        if phases.get(w.id) != "done":
            violations["workflow-unfinished"].append({"workflow": w.id, "phase": phases.get(w.id)})

    end = max([float(e["t"]) for e in history] + [0.0]) + float(meta.get("drain_s", 0))
    gaps = {role: ownerless_intervals(db["leases"], role, end) for role in roles}
    per_fault = fault_figures(faults, acked, inbox, tasks, roles, gaps)
    ops = Counter(e["type"] for e in history if e.get("type") in ("invoke", "ok", "fail", "info"))
    by_kind: dict[str, int] = dict(Counter(f["kind"] for f in faults if f["type"] == "fault-start"))
    by_kind["total"] = sum(by_kind.values())
    result: dict[str, Any] = {
        "valid": not any(violations.values()),
        "operations": {"invoked": ops["invoke"], "ok": ops["ok"], "refused": ops["fail"],
                       "unknown": ops["info"], "messages": len(acked.messages),
                       "deliveries_expected": sum(len(audience(m, roles)) for m in acked.messages),
                       "tasks": len(acked.tasks), "workflows": len(acked.workflows),
                       "fenced_writes": len(db["writes"]),
                       "epochs": len({(r["role"], r["epoch"]) for r in db["leases"]})},
        "faults": by_kind,
        "violations": {k: len(v) for k, v in violations.items()},
        "examples": {k: v[:EXAMPLES] for k, v in violations.items() if v},
        "per_fault": per_fault,
        "ownerless_total_s": {r: round(sum(b - a for a, b in g), 2) for r, g in gaps.items()},
        "fenced_refusals": fenced_refusals(
            db["leases"], (out / "postgres.log").read_text(errors="replace")
            if (out / "postgres.log").exists() else ""),
    }
    return result


def fault_figures(faults: list[dict[str, Any]], acked: Acked, inbox: dict[tuple[str, int], float],
                  tasks: dict[int, dict[str, Any]], roles: list[str],
                  gaps: dict[str, list[tuple[float, float]]]) -> list[dict[str, Any]]:
    starts = {f["id"]: f for f in faults if f["type"] == "fault-start"}
    start_times = sorted(float(f["t"]) for f in starts.values())
    figures = []
    for f in faults:
        if f["type"] != "fault-end" or f["id"] not in starts:
            continue
        s, e = float(starts[f["id"]]["t"]), float(f["t"])
        window = min([e + AFTERMATH_S, *(t for t in start_times if t > e)])
        done: list[float] = []
        for m in acked.messages:
            if s <= m.t <= e:
                times = [inbox.get((r, m.id)) for r in audience(m, roles)]
                if times and all(t is not None for t in times):
                    done.append(max(t for t in times if t is not None))
        for t in acked.tasks:
            row = tasks.get(int(t.id))
            if s <= t.t <= e and row and row.get("completed_at"):
                done.append(float(row["completed_at"]))
        figures.append({
            "id": f["id"], "kind": f["kind"], "target": f.get("target"),
            "start": round(s, 3), "seconds": round(e - s, 2),
            "ownerless_s": {r: round(_overlap(g, s, window), 2) for r, g in gaps.items()
                            if _overlap(g, s, window) > 0},
            "drained_after_s": round(max(0.0, max(done) - e), 2) if done else None,
        })
    return figures


# ---------------------------------------------------------------- planting


def plant(out: Path, kind: str) -> str:
    """Plant one violation of `kind` into the record in `out`; what was planted."""
    if kind == "duplicate-delivery":
        for path in sorted((out / "logs").rglob("*.log")):
            lines = [ln for ln in path.read_text().splitlines() if _PROCESSED.search(ln)]
            if lines:
                with open(path, "a") as f:
                    f.write(lines[0] + "\n")  # as if a restarted agent handled it again
                return f"planted duplicate-delivery: {lines[0].strip()[-60:]!r} again in {path.name}"
        raise ValueError("nothing to duplicate: no agent logged processing a message")
    db = json.loads((out / "db.json").read_text())
    if kind == "lost-message":
        acked = acknowledged(read_jsonl(out / "history.jsonl")).messages
        ids = {m.id for m in acked}
        victim = next(r for r in db["inbox"] if int(r["message_id"]) in ids)
        db["inbox"].remove(victim)
        what = f"planted lost-message: dropped {victim['role']}'s inbox row of message {victim['message_id']}"
    elif kind == "stale-write":
        leases = db["leases"]
        first = leases[0]
        newer = [r for r in leases if r["role"] == first["role"] and r["epoch"] > first["epoch"]]
        if newer:
            at = newer[0]["at"] + 0.5  # the deposed owner writes after the takeover
        else:
            at = first["at"] + 0.5
            first = {**first, "epoch": first["epoch"] - 1}  # an epoch this holder never had
        fence = f"{first['role']}/{first['epoch']}/{first['holder']}"
        db["writes"].append({"at": at, "txn_at": at, "tbl": "agent_inbox", "fence": fence})
        what = f"planted stale-write: a write to agent_inbox under {fence}"
    else:
        raise ValueError(f"unknown plant {kind!r}; use one of {', '.join(PLANTS)}")
    (out / "db.json").write_text(json.dumps(db))
    return what


# ---------------------------------------------------------------- report


def report(result: dict[str, Any], out: Path) -> None:
    """The timeline (text, and a PNG where matplotlib is installed), then the JSON line."""
    for f in result["per_fault"]:
        owners = ", ".join(f"{r} {s}s" for r, s in f["ownerless_s"].items()) or "none"
        print(f"fault {f['id']:>3} {f['kind']:<16} {f['target'] or '-':<4} {f['seconds']:>6.1f}s  "
              f"ownerless: {owners}; " + ("nothing acknowledged during it" if f["drained_after_s"] is None
                                           else f"drained {f['drained_after_s']}s after its end"))
    for kind, examples in result["examples"].items():
        for ex in examples:
            print(f"violation {kind}: {json.dumps(ex, default=str)}")
    refusals = result["fenced_refusals"]
    if refusals["refused"]:
        print(f"fence: {refusals['refused']} write(s) by deposed owners refused, the last "
              f"{refusals['max_after_lease_end_s']}s after its lease ended")
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    try:
        from tests.jepsen import timeline

        timeline.plot(out, result, out / "timeline.png")
        print(f"timeline: {out / 'timeline.png'}")
    except ImportError:
        print("timeline: no plot, matplotlib is not installed (pip install -e '.[jepsen]')")
    line = {k: result[k] for k in ("valid", "operations", "faults", "violations")}
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.jepsen.checker DIR [--plant KIND]`: check (again) a recorded run."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.jepsen.checker", description=main.__doc__)
    parser.add_argument("record", type=Path)
    parser.add_argument("--plant", choices=PLANTS)
    args = parser.parse_args(argv)
    if not (args.record / "meta.json").exists():
        print(f"{args.record} is not a Jepsen run's record (no meta.json); give the --out of a run",
              file=sys.stderr)
        return 2
    if args.plant:
        print(plant(args.record, args.plant), file=sys.stderr)
    result = check(args.record)
    report(result, args.record)
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
