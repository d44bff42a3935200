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
trap 'ctl down >/dev/null 2>&1' EXIT

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
wait_for 60 discussing
victim=$(ctl status --json | "$py" -c "import json,sys; print([a['pid'] for a in json.load(sys.stdin)['agents'] if a['role']=='operations_head'][0])")
kill -9 "$victim" 2>/dev/null
done_() { [ "$(field "$wf" "d['workflow']['phase']")" = done ]; }
check "workflow completes although operations_head was killed mid-way" wait_for 180 done_
check "operations_head took part" test "$(field "$wf" "[p['participate'] for p in d['participants'] if p['role']=='operations_head'][0]")" = True
check "decision recorded and announced" test "$(field "$wf" "sum(m['kind']=='decision' for m in d['messages'])")" = 1
check "every assigned task reported on the thread (completed, failed or skipped)" \
  test "$(field "$wf" "len(d['tasks']) == sum('task' in m['body'] for m in d['messages'])")" = True
ctl workflow show "$wf"
ctl decisions
check "organisation stops cleanly" ctl down
trap - EXIT
echo "day 2: $failed check(s) failed"
exit "$failed"
