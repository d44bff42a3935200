#!/usr/bin/env bash
# Day 1: the organisation starts staggered, stays up, hears a broadcast on every
# agent, survives an agent being killed, and shuts down clean. One ✓ or ✗ per check;
# the exit status is the number of failed checks (0: all passed).
#
# Uses whatever database the environment names (ECHO_DATABASE_URL, ECHO_REDIS_URL),
# else the embedded Postgres in ECHO_STATE_DIR (default: a fresh temporary folder).
set -uo pipefail
DAY=day1 . "$(dirname "$0")/lib.sh"
agents_json() { ctl status --json; }

echo "ECHO day 1 (state: $ECHO_STATE_DIR, namespace: $ECHO_NAMESPACE)"
check "database reachable and schema migrated" ctl db migrate
check "organisation starts staggered" ctl up --staggered --detach
check "six agents healthy" wait_for 60 six_healthy
sleep 3
check "six agents still healthy after 3 s" six_healthy

ctl broadcast "Day 1 kickoff" --body "Introduce yourselves and confirm you are online." --from operator >/dev/null
delivered() { [ "$(agents_json | "$py" -c "import json,sys; print(sum((a.get('processed') or 0) >= 1 for a in json.load(sys.stdin)['agents']))")" = 6 ]; }
check "broadcast stored and processed by all six agents" wait_for 30 delivered

victim=$(agents_json | "$py" -c "import json,sys; print([a['pid'] for a in json.load(sys.stdin)['agents'] if a['role']=='cto'][0])")
kill -9 "$victim" 2>/dev/null
cto_back() { agents_json | "$py" -c "import json,sys; a=[a for a in json.load(sys.stdin)['agents'] if a['role']=='cto'][0]; sys.exit(0 if a['state']=='healthy' and a['pid']!=$victim and a['restarts']==1 else 1)"; }
check "killed CTO restarted by its supervisor and healthy" wait_for 30 cto_back
ctl broadcast "After the crash" --from ceo >/dev/null
caught_up() { [ "$(agents_json | "$py" -c "import json,sys; print(sum((a.get('processed') or 0) >= 1 for a in json.load(sys.stdin)['agents'] if a['role']=='cto'))")" = 1 ]; }
check "restarted CTO received the next broadcast" wait_for 30 caught_up
ctl status
check "organisation stops cleanly" ctl down
check "no process left behind (agents and the database server)" none_left
echo "day 1: $failed check(s) failed"
exit "$failed"
