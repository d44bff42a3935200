#!/bin/sh
# One attempt of a Jepsen task (run by ECHO's command executor): it appends
# `start`, a `tick` every half second and `end` lines (task id, attempt, pid, wall
# time) to the run file named by $1, so the checker sees when each attempt ran.
f="$1"
echo "start $ECHO_TASK_ID $ECHO_TASK_ATTEMPT $$ $(date +%s.%N)" >> "$f"
for _ in 1 2 3; do
    sleep 0.5
    echo "tick $ECHO_TASK_ID $ECHO_TASK_ATTEMPT $$ $(date +%s.%N)" >> "$f"
done
echo "end $ECHO_TASK_ID $ECHO_TASK_ATTEMPT $$ $(date +%s.%N)" >> "$f"
