#!/usr/bin/env bash
# Day 2: the organisation decides together. A proposal is broadcast as a workflow; the
# agents self-select, discuss, vote, the CEO decides and assigns work, and the results
# come back on the thread. A participant is killed mid-way and the workflow still
# completes. One ✓ or ✗ per check; the exit status is the number of failed checks.
#
# Without a logged-in Claude every step falls back (keywords, templates) and says so,
# and the assigned work is reported as `skipped: claude unavailable (...)`.
# Uses ECHO_DATABASE_URL / ECHO_REDIS_URL if set, else the embedded Postgres.
set -uo pipefail
DAY=day2 . "$(dirname "$0")/lib.sh"
field() { ctl workflow show "$1" --json | "$py" -c "import json,sys; d=json.load(sys.stdin); print($2)"; }

echo "ECHO day 2 (state: $ECHO_STATE_DIR, namespace: $ECHO_NAMESPACE)"
check "database reachable and schema migrated" ctl db migrate
check "organisation starts staggered" ctl up --staggered --detach
check "six agents healthy" wait_for 60 six_healthy

echo "-- training scenario: api_migration"
ctl train api_migration; trained=$?
[ "$trained" = 0 ] && echo "✓ scenario api_migration passed" || { echo "✗ scenario api_migration: $trained check(s) failed"; failed=$((failed + 1)); }

wf=$(ctl workflow start "Roll out the new monitoring and deployment process" \
       --body "Operations and the platform team; cost within budget." --rounds 2 --json \
     | "$py" -c "import json,sys; print(json.load(sys.stdin)['workflow']['id'])")
check "workflow $wf started" test -n "$wf"
discussing() { [ "$(field "$wf" "d['workflow']['phase']")" != selecting ]; }
echo "  … selecting: waiting until each role decides whether it takes part"
wait_for 60 discussing
victim=$(ctl status --json | "$py" -c "import json,sys; print([a['pid'] for a in json.load(sys.stdin)['agents'] if a['role']=='operations_head'][0])")
kill -9 "$victim" 2>/dev/null && echo "  … killed operations_head (pid $victim) mid-way"
done_() { [ "$(field "$wf" "d['workflow']['phase']")" = done ]; }
waiting_for() { # what a phase waits for, so a pause is never silent
  case $1 in
    selecting) echo "each role decides whether it takes part" ;;
    discussing*) echo "the participants post their positions (a killed one is restarted and catches up)" ;;
    voting) echo "the participants vote" ;;
    deciding) echo "the CEO decides and assigns the work" ;;
    executing) echo "the assigned tasks finish (a killed agent's task is rescued when its ${ECHO_TASK_LEASE_SECONDS} s lease expires)" ;;
    *) echo "" ;;
  esac
}
follow() { # $1 seconds: print each phase of the workflow as it comes, until done
  local deadline=$((SECONDS + $1)) last="" now
  while [ $SECONDS -lt $deadline ]; do
    now=$(field "$wf" "d['workflow']['phase'] + (' round %d' % d['workflow']['round'] if d['workflow']['phase'] == 'discussing' else '')" 2>/dev/null)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
      [ "$now" = done ] && echo "  … $now" || echo "  … $now: waiting until $(waiting_for "$now")"
      last=$now
    fi
    [ "$now" = done ] && return 0
    sleep 0.5
  done
  return 1
}
follow 180
check "workflow completes although operations_head was killed mid-way" done_
check "operations_head took part" test "$(field "$wf" "[p['participate'] for p in d['participants'] if p['role']=='operations_head'][0]")" = True
check "decision recorded and announced" test "$(field "$wf" "sum(m['kind']=='decision' for m in d['messages'])")" = 1
check "every assigned task reported on the thread (completed, failed or skipped)" \
  test "$(field "$wf" "len(d['tasks']) == sum('task' in m['body'] for m in d['messages'])")" = True
ctl workflow show "$wf"
ctl decisions
check "organisation stops cleanly" ctl down
check "no process left behind (agents and the database server)" none_left
echo "day 2: $failed check(s) failed"
exit "$failed"
