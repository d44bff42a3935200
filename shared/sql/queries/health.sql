-- Named queries about the agents' health (004_health.sql), for readers such as
-- `echoctl status` through echo.org.client, and the agents' own heartbeats
-- (echo/org/health.py). Each starts with `-- name: <name>`.

-- name: all
SELECT * FROM agent_health ORDER BY role;

-- name: beat
-- One agent's heartbeat: its row, stamped by the database's clock.
INSERT INTO agent_health (role, host, pid, state, reason, started_at, last_heartbeat, details)
VALUES ($1, $2, $3, $4, $5, $6, now(), $7)
ON CONFLICT (role) DO UPDATE SET
    host = EXCLUDED.host, pid = EXCLUDED.pid, state = EXCLUDED.state,
    reason = EXCLUDED.reason, started_at = EXCLUDED.started_at,
    last_heartbeat = now(), details = EXCLUDED.details;
