-- Named queries of role leases (the rules: echo/org/leases.py; run by the keeper,
-- echo/org/agent/lease_keeper.py). Each starts with `-- name: <name>`.
-- Every expiry is decided by the database's clock: now(), never a node's time.

-- name: acquire
-- Take the role if no one holds it, or its lease expired, or the lease still names
-- exactly the predecessor this process replaces: the agent of this node ($3) with pid
-- $6 (and epoch $7, when its supervisor knew it), which that supervisor reaped, so it
-- is dead. A compare-and-set on the row: a lease another process took meanwhile (any
-- other node, pid or epoch) is never taken. Returns the new epoch (always +1, so the
-- dead process's late writes stay fenced), or no row.
INSERT INTO role_leases AS l (role, holder, node, pid, epoch, acquired_at, renewed_at, expires_at)
VALUES ($1, $2, $3, $4, 1, now(), now(), now() + make_interval(secs => $5))
ON CONFLICT (role) DO UPDATE
   SET holder = excluded.holder, node = excluded.node, pid = excluded.pid,
       epoch = l.epoch + 1, acquired_at = now(), renewed_at = now(),
       expires_at = excluded.expires_at, wanted_by = NULL
 WHERE l.holder IS NULL OR l.expires_at <= now()
    OR (l.node = excluded.node AND l.pid = $6::integer
        AND l.epoch = coalesce($7::bigint, l.epoch))
RETURNING epoch;

-- name: renew_beat
-- The owner's renewal, its process beat and its agent's heartbeat in one statement, one
-- round trip (every `lease_renew_interval`): extend a lease that is still held and
-- unexpired and, only if that matched, refresh this process's row as `beat` does ($5
-- node, $6 host, $7 pid, $8 state) and the heartbeat of the role's `agent_health` row
-- while it is this process's and not `down` (echo/org/health.py writes the rest of it,
-- when it changes). Returns who asks for the role (if anyone alive does) and whether
-- the heartbeat was refreshed, or no row when the lease was lost (both rows are then
-- left as they were).
WITH renewed AS (
    UPDATE role_leases AS l
       SET renewed_at = now(), expires_at = now() + make_interval(secs => $4)
     WHERE role = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()
    RETURNING (SELECT a.holder FROM role_agents a
                WHERE a.holder = l.wanted_by AND a.state = 'standby'
                  AND a.heartbeat_at > now() - make_interval(secs => $4)) AS wanted_by
), gone AS (
    DELETE FROM role_agents WHERE heartbeat_at < now() - interval '60 seconds' AND holder <> $2
       AND EXISTS (SELECT 1 FROM renewed)
), beat AS (
    INSERT INTO role_agents (holder, role, node, host, pid, state)
    SELECT $2, $1, $5::text, $6::text, $7::integer, $8::text WHERE EXISTS (SELECT 1 FROM renewed)
    ON CONFLICT (holder) DO UPDATE SET state = excluded.state, heartbeat_at = now()
), health AS (
    UPDATE agent_health SET last_heartbeat = now()
     WHERE role = $1 AND host = $6::text AND pid = $7::integer AND state <> 'down'
       AND EXISTS (SELECT 1 FROM renewed)
    RETURNING 1
)
SELECT wanted_by, EXISTS (SELECT 1 FROM health) AS heartbeat FROM renewed;

-- name: release
-- Give the role up now, so a standby takes over without waiting for expiry.
UPDATE role_leases SET holder = NULL, expires_at = now(), wanted_by = NULL
 WHERE role = $1 AND holder = $2 AND epoch = $3;

-- name: hand_over
-- Pass the role straight to the standby that asked for it (placement, `--prefer`): one
-- statement, so the role is never without a holder. Returns the new epoch, or no row
-- when the asker is gone (the owner then keeps the role).
UPDATE role_leases AS l
   SET holder = a.holder, node = a.node, pid = a.pid, epoch = l.epoch + 1,
       acquired_at = now(), renewed_at = now(),
       expires_at = now() + make_interval(secs => $4), wanted_by = NULL
  FROM role_agents a
 WHERE l.role = $1 AND l.holder = $2 AND l.epoch = $3 AND l.expires_at > now()
   AND a.holder = l.wanted_by AND a.role = l.role AND a.state = 'standby'
   AND a.heartbeat_at > now() - make_interval(secs => $4)
RETURNING l.epoch;

-- name: ask_for
-- A preferred standby asks the current owner for the role.
UPDATE role_leases SET wanted_by = $2
 WHERE role = $1 AND holder IS DISTINCT FROM $2 AND expires_at > now()
   AND wanted_by IS DISTINCT FROM $2;

-- name: peek
-- Who holds the role, and for how much longer by the database's clock.
SELECT holder, node, pid, epoch, wanted_by,
       greatest(extract(epoch FROM expires_at - now()), 0)::float8 AS expires_in,
       holder IS NOT NULL AND expires_at > now() AS held
  FROM role_leases WHERE role = $1;

-- name: beat
-- This agent process, active or standing by: its row in the organisation's view.
-- Rows of processes gone for a minute are removed on the way.
WITH gone AS (
    DELETE FROM role_agents WHERE heartbeat_at < now() - interval '60 seconds' AND holder <> $1
)
INSERT INTO role_agents (holder, role, node, host, pid, state)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (holder) DO UPDATE SET state = excluded.state, heartbeat_at = now();

-- name: forget
DELETE FROM role_agents WHERE holder = $1;

-- name: view
-- One row per agent process of the organisation, with its role's lease and health;
-- `renewed_age`: seconds since the owner's last renewal the database confirmed.
SELECT a.holder, a.role, a.node, a.host, a.pid, a.state AS lease_state, a.started_at,
       extract(epoch FROM now() - a.heartbeat_at)::float8 AS heartbeat_age,
       (l.holder = a.holder AND l.expires_at > now()) AS active,
       CASE WHEN l.holder = a.holder
            THEN extract(epoch FROM now() - l.renewed_at)::float8 END AS renewed_age,
       CASE WHEN l.holder = a.holder THEN l.epoch END AS epoch,
       CASE WHEN l.holder = a.holder AND h.pid = a.pid THEN h.state END AS health_state,
       CASE WHEN l.holder = a.holder AND h.pid = a.pid THEN h.reason END AS health_reason
  FROM role_agents a
  LEFT JOIN role_leases l ON l.role = a.role
  LEFT JOIN agent_health h ON h.role = a.role
 ORDER BY a.role, a.node, a.pid;
