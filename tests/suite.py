"""`make test`: the whole suite in two phases, then one closing line.

1. Every test not marked `alone` (the unit and integration tests), on parallel
   workers (pytest-xdist, `--dist loadgroup`): two on two cores; a module whose tests
   share a module-scoped organisation stays on one worker (tests/conftest.py).
2. The `alone` tests (chaos, e2e, browser, package, the embedded lifecycle, the short
   Jepsen run) in two lanes, one xdist group each on two workers, each lane one test
   after another (tests/conftest.py, ALONE_BESIDE). The first lane holds what kills,
   stops, partitions or pauses servers and agents and waits for the recovery, Chromium,
   the wheel build and the embedded lifecycle: no other test of that lane runs
   beside any of them. The second holds the Jepsen run (its own hosts and servers in network
   namespaces) and the e2e tests (the claude CLI against a fake API): they break
   nothing shared and mostly wait, on their processes and on clocks (the phase's 62
   tests used 265 s of CPU in all). Beside each other the lanes took the phase
   from 734 s to 312-342 s (docs/benchmarks.md).

Arguments go to both phases (`make test PYTEST_ARGS="tests/unit -x"`); a `-m`
expression among them is combined with each phase's. ECHO_TEST_WORKERS sets the
number of workers (default 2; 0 runs both phases in one process each). More
workers than cores buy little here: each organisation a test starts holds about 25
of the shared Postgres's 100 connections, and its agents need the CPU. The exit
status is the first failing phase's; a phase that selected no test (pytest's 5) is
no failure while the other ran some. The last line adds both phases up in the
plain form CI reads: `suite: N passed, N failed, N skipped`.

Bytecode is cached for the run even where PYTHONDONTWRITEBYTECODE is set (as on the
CI machines): otherwise every pytest worker compiles and rewrites the test modules
anew (collection took 15.6 s of CPU instead of 3.2 s) and every agent and `echoctl`
a test starts compiles the package anew. `__pycache__` is ignored by git.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NO_TESTS = 5
INTERRUPTED = 2
#: The alone phase's lanes (tests/conftest.py, ALONE_BESIDE), one worker each.
ALONE_LANES = 2


def split_marker(args: list[str]) -> tuple[str | None, list[str]]:
    """The `-m` expression among `args` (the last one wins, as in pytest), and the rest."""
    expr, rest, it = None, [], iter(args)
    for arg in it:
        if arg == "-m":
            expr = next(it, None)
        elif arg.startswith("-m") and len(arg) > 2:
            expr = arg[2:]
        else:
            rest.append(arg)
    return expr, rest


def phases(args: list[str], workers: int) -> list[tuple[str, list[str]]]:
    expr, rest = split_marker(args)

    def marked(own: str) -> list[str]:
        return ["-m", f"({expr}) and ({own})" if expr else own]

    parallel = ["-n", str(workers), "--dist", "loadgroup"] if workers > 0 else []
    lanes = ["-n", str(ALONE_LANES), "--dist", "loadgroup"] if workers > 0 else []
    return [
        ("parallel", [*parallel, *marked("not alone"), *rest]),
        ("alone", [*lanes, *marked("alone"), *rest]),
    ]


def combined_status(codes: list[int]) -> int:
    failing = [c for c in codes if c not in (0, NO_TESTS)]
    if failing:
        return failing[0]
    return 0 if 0 in codes else NO_TESTS


def main(argv: list[str]) -> int:
    workers = int(os.environ.get("ECHO_TEST_WORKERS", "2"))
    totals: dict[str, int] = {}
    codes = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="echo-suite-") as tmp:
        for name, args in phases(argv, workers):
            tally = Path(tmp) / f"{name}.json"
            print(f"suite: the {name} phase: pytest {' '.join(args)}", flush=True)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            code = subprocess.call([sys.executable, "-m", "pytest", *args],
                                   env={**env, "ECHO_TEST_TALLY": str(tally)})
            codes.append(code)
            if tally.exists():
                for key, n in json.loads(tally.read_text()).items():
                    totals[key] = totals.get(key, 0) + n
            if code == INTERRUPTED or (code not in (0, NO_TESTS) and ("-x" in args or "--exitfirst" in args)):
                break
    failed = totals.get("failed", 0) + totals.get("error", 0)
    print(f"suite: both phases took {time.monotonic() - started:.0f} s", flush=True)
    print(f"suite: {totals.get('passed', 0)} passed, {failed} failed, {totals.get('skipped', 0)} skipped",
          flush=True)
    return combined_status(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
