"""The run's timeline as a PNG: faults, the owner of each role, throughput.

Three panels over the run's wall time (seconds from the first operation): each fault
as a bar on its kind's row; per role, which node held its lease (a gap is a time
with no owner); acknowledged operations and inbox rows written per second.
Needs matplotlib (the `jepsen` extra); the checker says so when it is missing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tests.jepsen.checker import ownerless_intervals, read_jsonl


def plot(out: Path, result: dict[str, Any], png: Path) -> None:
    meta = json.loads((out / "meta.json").read_text())
    history = read_jsonl(out / "history.jsonl")
    faults = read_jsonl(out / "nemesis.jsonl")
    db = json.loads((out / "db.json").read_text())
    if not history:
        return
    t0 = min(float(e["t"]) for e in history + faults)
    end = max(float(e["t"]) for e in history) + float(meta.get("drain_s", 0)) - t0
    fig, (ax_f, ax_o, ax_t) = plt.subplots(3, 1, figsize=(12, 8), sharex=True,
                                           gridspec_kw={"height_ratios": [2, 2, 1.5]})

    kinds = sorted({f["kind"] for f in faults})
    starts = {f["id"]: f for f in faults if f["type"] == "fault-start"}
    for f in faults:
        if f["type"] == "fault-end" and f["id"] in starts:
            s = float(starts[f["id"]]["t"]) - t0
            row = kinds.index(f["kind"])
            ax_f.barh(row, max(0.3, float(f["t"]) - t0 - s), left=s, height=0.6, color=f"C{row % 10}")
            ax_f.text(s, row, f" {f.get('target') or ''}", va="center", fontsize=7)
    ax_f.set_yticks(range(len(kinds)), kinds, fontsize=8)
    ax_f.set_title(f"faults ({result['faults'].get('total', 0)}); valid={result['valid']}")

    nodes = meta["nodes"]
    for i, role in enumerate(meta["roles"]):
        rows = [r for r in db["leases"] if r["role"] == role]
        for j, r in enumerate(rows):
            nxt = rows[j + 1]["at"] if j + 1 < len(rows) else end + t0
            if r["holder"] and r["node"] in nodes:
                until = min(r["expires_at"], nxt)
                ax_o.barh(i, until - r["at"], left=r["at"] - t0, height=0.6,
                          color=f"C{nodes.index(r['node'])}")
        for a, b in ownerless_intervals(db["leases"], role, end + t0):
            ax_o.barh(i, b - a, left=a - t0, height=0.6, color="black")
    ax_o.set_yticks(range(len(meta["roles"])), meta["roles"], fontsize=8)
    ax_o.set_title("owner per role (colour: node " + ", ".join(f"C{i}={n}" for i, n in enumerate(nodes))
                   + "; black: no owner)")

    acks = Counter(int(float(e["t"]) - t0) for e in history if e.get("type") == "ok")
    rows_s = Counter(int(float(r["at"]) - t0) for r in db["inbox"] if float(r["at"]) >= t0)
    xs = range(int(end) + 1)
    ax_t.plot(xs, [acks[x] for x in xs], label="acknowledged ops/s")
    ax_t.plot(xs, [rows_s[x] for x in xs], label="inbox rows/s")
    ax_t.legend(fontsize=8)
    ax_t.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
