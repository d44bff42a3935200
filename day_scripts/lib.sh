# Shared by the day scripts: sourced, never run. Sets up the environment of one day
# (state directory, namespace) and the check helpers that print ✓ or ✗ per check.
# Usage: DAY=day1 . "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
py="${ECHO_PYTHON:-$here/.venv/bin/python}"
export ECHO_STATE_DIR="${ECHO_STATE_DIR:-$(mktemp -d -t "echo-$DAY-XXXXXX")}"
export ECHO_NAMESPACE="${ECHO_NAMESPACE:-${DAY}_$(date +%s)}"
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

# The banner: which mode this run is in (real Claude, or fallbacks) and how to switch.
ctl claude || true
