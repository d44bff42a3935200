"""`make test`: the whole suite in two phases at once, then one closing line.

1. Every test not marked `alone` (the unit and integration tests), on parallel
   workers (pytest-xdist, `--dist loadgroup`): two on two cores; a module whose tests
   share a module-scoped organisation stays on one worker (tests/conftest.py).
2. The `alone` tests (chaos, e2e, browser, package, the embedded lifecycle, the short
   Jepsen run) in lanes, one xdist group each on a worker each, each lane one test
   after another (tests/lanes.py says which test runs in which lane and why). Each
   test starts what it breaks, so the lanes share only the CPU.

The phases run at the same time, the parallel phase at a lower CPU priority (nice
10, PARALLEL_NICENESS): the alone tests spend most of their time waiting (on a
recovery, a fake API's stall, a clock) and get a core whenever they want one, while
the parallel phase's CPU-bound tests take what they leave. One after the other the
phases took 437 s (135 s and 301 s) on the 2-core machine; the CPU stood idle for most
of the second. Each phase's output is printed line by line under its name.

Arguments go to both phases (`make test PYTEST_ARGS="tests/unit -x"`); a `-m`
expression among them is combined with each phase's. With `-x`, the first failure of
either phase interrupts the other. ECHO_TEST_WORKERS sets the number of workers of
the parallel phase (default 2; 0 runs both phases in one process each, one after the
other). More workers than cores buy little here: each organisation a test starts
holds about 25 of the shared Postgres's 100 connections, and its agents need the CPU.
The exit status is the first failing phase's; a phase that selected no test (pytest's
5) is no failure while the other ran some. The last line adds both phases up in the
plain form CI reads: `suite: N passed, N failed, N skipped`.

Bytecode is cached for the run even where PYTHONDONTWRITEBYTECODE is set (as on the
CI machines): otherwise every pytest worker compiles and rewrites the test modules
anew (collection took 15.6 s of CPU instead of 3.2 s) and every agent and `echoctl`
a test starts compiles the package anew. `__pycache__` is ignored by git.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tests import lanes

NO_TESTS = 5
INTERRUPTED = 2
#: The parallel phase's CPU priority beside the alone phase (os.nice): lower, so the
#: alone tests' agents, servers and clocks are never the ones kept waiting.
PARALLEL_NICENESS = 10
#: The alone phase's lanes (tests/lanes.py), one worker each.
ALONE_LANES = lanes.COUNT


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


def _nice() -> None:
    os.nice(PARALLEL_NICENESS)


def _pump(name: str, proc: subprocess.Popen[str], lock: threading.Lock,
          ended: queue.Queue[str]) -> None:
    """Print a phase's output, each line under the phase's name; then say it ended."""
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, ""):
        with lock:
            sys.stdout.write(f"{name:>8} | {line}")
            sys.stdout.flush()
    proc.wait()
    ended.put(name)


def _interrupt(procs: Iterable[subprocess.Popen[str]]) -> None:
    """Ctrl-C, once, to each phase still running, workers and all (its process group: a
    phase has its own, so a Ctrl-C at the terminal reaches only this runner, which passes
    it on; pytest then tears its fixtures down, organisations and servers included)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)


def main(argv: list[str]) -> int:
    workers = int(os.environ.get("ECHO_TEST_WORKERS", "2"))
    exitfirst = "-x" in argv or "--exitfirst" in argv
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    totals: dict[str, int] = {}
    codes = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="echo-suite-") as tmp:
        tallies = {name: Path(tmp) / f"{name}.json" for name, _ in phases(argv, workers)}
        if workers > 0:
            codes = _at_once(phases(argv, workers), tallies, env, exitfirst)
        else:
            for name, args in phases(argv, workers):
                print(f"suite: the {name} phase: pytest {' '.join(args)}", flush=True)
                code = subprocess.call([sys.executable, "-m", "pytest", *args],
                                       env={**env, "ECHO_TEST_TALLY": str(tallies[name])})
                codes.append(code)
                if code == INTERRUPTED or (code not in (0, NO_TESTS) and exitfirst):
                    break
        for tally in tallies.values():
            if tally.exists():
                for key, n in json.loads(tally.read_text()).items():
                    totals[key] = totals.get(key, 0) + n
    failed = totals.get("failed", 0) + totals.get("error", 0)
    print(f"suite: both phases took {time.monotonic() - started:.0f} s", flush=True)
    print(f"suite: {totals.get('passed', 0)} passed, {failed} failed, {totals.get('skipped', 0)} skipped",
          flush=True)
    return combined_status(codes)


def _at_once(runs: list[tuple[str, list[str]]], tallies: dict[str, Path], env: dict[str, str],
             exitfirst: bool) -> list[int]:
    """Both phases at the same time, the parallel one niced; their exit statuses in order.
    Every process starts before any thread does (`preexec_fn` is unsafe beside threads)."""
    procs: dict[str, subprocess.Popen[str]] = {}
    for name, args in runs:
        print(f"suite: the {name} phase: pytest {' '.join(args)}", flush=True)
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "pytest", *args], text=True, bufsize=1,
            env={**env, "ECHO_TEST_TALLY": str(tallies[name])}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0,
            preexec_fn=_nice if name == "parallel" else None)
    lock, ended = threading.Lock(), queue.Queue[str]()
    pumps = [threading.Thread(target=_pump, args=(name, proc, lock, ended), daemon=True)
             for name, proc in procs.items()]
    for pump in pumps:
        pump.start()
    try:
        for _ in procs:
            code = procs[ended.get()].returncode
            if exitfirst and code not in (0, NO_TESTS):  # -x: the first failure ends both
                _interrupt(procs.values())
    except KeyboardInterrupt:
        _interrupt(procs.values())
    while True:
        try:
            codes = [proc.wait() for proc in procs.values()]
            break
        except KeyboardInterrupt:  # again: passed on again (pytest's "hurry up")
            _interrupt(procs.values())
    for pump in pumps:
        pump.join()
    return codes


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
