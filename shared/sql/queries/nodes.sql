-- Named queries of the node seats (echo/org/node/nodes.py; 009_role_leases.sql's nodes table).
-- Tables are unqualified: the connection's search_path is the organisation's namespace.

-- name: claim_node
-- Register a running `echoctl up` under its node name. Compare-and-set on the row
-- that was seen ($6: its heartbeat, or NULL when there was none), so two nodes
-- starting together under one name cannot both win.
INSERT INTO echo_nodes AS n (name, host, pid, state_dir)
VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE
   SET host = excluded.host, pid = excluded.pid, state_dir = excluded.state_dir,
       started_at = now(), heartbeat_at = now()
 WHERE n.heartbeat_at IS NOT DISTINCT FROM $5
RETURNING name;

-- name: node
SELECT name, host, pid, state_dir, heartbeat_at,
       heartbeat_at > now() - make_interval(secs => $2) AS fresh
  FROM echo_nodes WHERE name = $1;

-- name: node_beat
UPDATE echo_nodes SET heartbeat_at = now() WHERE name = $1 AND host = $2 AND pid = $3;

-- name: node_leave
DELETE FROM echo_nodes WHERE name = $1 AND host = $2 AND pid = $3;
