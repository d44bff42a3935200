-- The organisation's event feed: agent_actions, which every state change writes in
-- its own transaction (see 001_core.sql and 013_console.sql).

-- name: after
-- The next events after a cursor, oldest first.
SELECT id, at, actor, action, subject_type, subject_id, details
FROM agent_actions
WHERE id > $1
ORDER BY id
LIMIT $2;

-- name: these
-- Events that were gaps (ids drawn by transactions not yet committed when read).
SELECT id, at, actor, action, subject_type, subject_id, details
FROM agent_actions
WHERE id = ANY($1::bigint[])
ORDER BY id;

-- name: last
-- Where a feed that wants only new events starts.
SELECT coalesce(max(id), 0) FROM agent_actions;
