# Shared by the day scripts: sourced, never run. Sets up the environment of one day
# (state directory, namespace), the check helpers that print ✓ or ✗ per check, and the
# clean-up: what a day starts (agents, the embedded Postgres, a temporary state
# directory), it stops and removes, whatever happened.
# Usage: DAY=day1 . "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
py="${ECHO_PYTHON:-$here/.venv/bin/python}"
own_state=0
if [ -z "${ECHO_STATE_DIR:-}" ]; then
  ECHO_STATE_DIR=$(mktemp -d -t "echo-$DAY-XXXXXX"); own_state=1
fi
export ECHO_STATE_DIR
export ECHO_NAMESPACE="${ECHO_NAMESPACE:-${DAY}_$(date +%s)}"
# A killed agent's task is rescued when its lease expires: 5 s instead of the default 30 s.
export ECHO_TASK_LEASE_SECONDS="${ECHO_TASK_LEASE_SECONDS:-5}"
failed=0

ctl() { "$py" -m echo "$@"; }

check() { # $1 description, rest: command that must succeed
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "✓ $what"; else echo "✗ $what"; failed=$((failed + 1)); fi
}

wait_for() { # $1 seconds, rest: a command polled until it succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.2; done
}

six_healthy() {
  [ "$(ctl status --json | "$py" -c "import json,sys; print(sum(a['state']=='healthy' for a in json.load(sys.stdin)['agents']))")" = 6 ]
}

# Nothing of this day is left running: the organisation, its agents, and the embedded
# Postgres of the state directory (its postmaster and every process naming its data).
none_left() { "$py" - <<'PY'
import json, os, sys
from pathlib import Path
from echo.embedded import EmbeddedPostgres
state = Path(os.environ["ECHO_STATE_DIR"])
def alive(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
org = json.loads((state / "org.json").read_text())
pids = [org["pid"]] + [a["pid"] for a in org["agents"].values() if a["pid"]]
left = [p for p in pids if alive(p)]
if not os.environ.get("ECHO_DATABASE_URL"):
    data = str(EmbeddedPostgres(state / "postgres").data_dir)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if data in cmdline:
                left.append(int(entry))
if left:
    print("left running:", left, file=sys.stderr)
sys.exit(1 if left else 0)
PY
}

cleanup() { # on exit, whatever happened: stop everything; remove a state dir made here
  ctl down >/dev/null 2>&1
  if [ "$own_state" = 1 ]; then
    ctl db stop --purge >/dev/null 2>&1
    rm -rf "$ECHO_STATE_DIR"
  fi
}
trap cleanup EXIT

# The banner, once per demo (make demo sets ECHO_DEMO_BANNER=0 for day 2): which mode
# this run is in (real Claude, or fallbacks), and what a login would change.
if [ "${ECHO_DEMO_BANNER:-1}" = 1 ]; then
  ctl claude || true
  if [ "$(ctl claude --json 2>/dev/null | "$py" -c "import json,sys; print(json.load(sys.stdin)['mode'])" 2>/dev/null)" = fallback ]; then
    echo "  (fallback mode: with a login the agents' choices, positions and votes come from Claude"
    echo "   and the assigned work runs; here they come from keywords and templates, work is skipped)"
  fi
fi
