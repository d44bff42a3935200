-- Named queries of the message bus (echo/bus/store.py). Each starts with `-- name: <name>`.
-- Tables are unqualified: the connection's search_path is the organisation's namespace.

-- name: insert_one
-- One message. ON CONFLICT: a sender retrying after a lost commit acknowledgement
-- gets no second row (the caller then looks the first one up by uuid). `prev`: the
-- id committed before this statement's rows, recorded by the ordering trigger
-- (NULL outside READ COMMITTED; see 007_bus_chain.sql).
INSERT INTO messages (uuid, channel, kind, from_role, to_role, thread_id, subject, body,
                      published_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, CASE WHEN $9::bool THEN now() END)
ON CONFLICT (uuid) DO NOTHING
RETURNING id, uuid, created_at,
          nullif(current_setting('echo.messages_prev', true), '')::bigint AS prev;

-- name: insert_many
-- A batch in one statement, hence one transaction and one audit INSERT.
INSERT INTO messages (uuid, channel, kind, from_role, to_role, thread_id, subject, body,
                      published_at)
SELECT m.uuid, m.channel, m.kind, m.from_role, m.to_role, m.thread_id, m.subject,
       m.body::jsonb, CASE WHEN $9::bool THEN now() END
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[])
     AS m(uuid, channel, kind, from_role, to_role, thread_id, subject, body)
ON CONFLICT (uuid) DO NOTHING
RETURNING id, uuid, created_at,
          nullif(current_setting('echo.messages_prev', true), '')::bigint AS prev;

-- name: ids_by_uuid
SELECT id, uuid, created_at FROM messages WHERE uuid = ANY($1::uuid[]);

-- name: mark_published
UPDATE messages SET published_at = now()
WHERE id = ANY($1::bigint[]) AND published_at IS NULL;

-- name: any_unpublished
-- The relay's idle check, outside any transaction: is there anything to lock? (The
-- partial index messages_unpublished_idx holds only unannounced rows.)
SELECT EXISTS (
    SELECT 1 FROM messages
     WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
);

-- name: lock_unpublished
-- The outbox relay's batch. SKIP LOCKED: several relays share the work instead of
-- waiting on each other; the grace leaves publishers time to mark their own rows.
SELECT id, channel, kind, from_role, to_role, thread_id, subject
FROM messages
WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
ORDER BY id
LIMIT $2
FOR UPDATE SKIP LOCKED;

-- name: fetch_after
-- Catch-up: a range scan of the primary key from the cursor, filtered by channel, and
-- in the same snapshot the highest committed id (`settled`; one row with NULL message
-- columns when nothing matched). Ids commit in order, so once the rows up to it are
-- handed over, a reader may move its cursor to `settled`.
WITH top AS (SELECT coalesce(max(id), 0) AS settled FROM messages)
SELECT top.settled, m.*
FROM top LEFT JOIN LATERAL (
    SELECT id, uuid, channel, kind, from_role, to_role, thread_id, subject, body,
           created_at, published_at
    FROM messages
    WHERE id > $1 AND channel = ANY($2::text[])
    ORDER BY id
    LIMIT $3
) AS m ON true
ORDER BY m.id;

-- name: get_many
SELECT id, uuid, channel, kind, from_role, to_role, thread_id, subject, body,
       created_at, published_at
FROM messages
WHERE id = ANY($1::bigint[])
ORDER BY id;

-- name: list_since
-- What a role sees (to it or to all) or sent, oldest first from an id.
SELECT id, uuid, channel, kind, from_role, to_role, thread_id, subject, body,
       created_at, published_at
FROM messages
WHERE id > $1
  AND ($2::text IS NULL OR to_role IN ($2, 'all') OR from_role = $2)
ORDER BY id
LIMIT $3;

-- name: list_latest
SELECT id, uuid, channel, kind, from_role, to_role, thread_id, subject, body,
       created_at, published_at
FROM messages
WHERE ($1::text IS NULL OR to_role IN ($1, 'all') OR from_role = $1)
ORDER BY id DESC
LIMIT $2;

-- name: answer_on
-- The answer on a question's thread (echo/org/agent/asks.py), if it came.
SELECT id, uuid, channel, kind, from_role, to_role, thread_id, subject, body,
       created_at, published_at
FROM messages
WHERE thread_id = $1 AND kind = 'answer'
ORDER BY id
LIMIT 1;

-- name: open_questions
-- The questions to a role still waiting for its answer, with the seconds left before
-- the asker gives up (by the database's clock), oldest first.
SELECT q.id, q.uuid, q.channel, q.kind, q.from_role, q.to_role, q.thread_id, q.subject,
       q.body, q.created_at, q.published_at,
       extract(epoch FROM q.created_at - now())
         + CASE WHEN jsonb_typeof(q.body->'timeout') = 'number' THEN (q.body->>'timeout')::float8 ELSE 0 END AS seconds_left
FROM messages q
WHERE q.to_role = $1 AND q.kind = 'question'
  AND q.created_at > now() - make_interval(secs => $2)
  AND q.created_at + make_interval(secs => CASE WHEN jsonb_typeof(q.body->'timeout') = 'number' THEN (q.body->>'timeout')::float8 ELSE 0 END) > now()
  AND NOT EXISTS (SELECT 1 FROM messages a
                  WHERE a.thread_id = q.thread_id AND a.kind = 'answer')
ORDER BY q.id
LIMIT 50;

-- name: max_id
SELECT coalesce(max(id), 0) FROM messages;

-- name: bus_key
SELECT key FROM bus_key;

-- name: read_cursor
SELECT last_message_id FROM agent_cursors WHERE role = $1;

-- name: advance_cursor
-- Monotonic: the WHERE makes an older position a no-op, so a slow writer never
-- moves a cursor back. Losing a cursor write only means a redelivery, so the
-- commit does not wait for the disk: set_config(..., true) turns synchronous_commit
-- off for this statement's own (implicit) transaction, in the one round trip.
WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO agent_cursors AS c (role, last_message_id)
SELECT $1, $2 FROM async_commit
ON CONFLICT (role) DO UPDATE SET last_message_id = excluded.last_message_id,
                                 updated_at = now()
WHERE c.last_message_id < excluded.last_message_id;

-- name: record_inbox
-- A role handles a message once (echo/org/agent/participant.py): the row commits with
-- the handling's own writes; nothing is returned for a message recorded before.
INSERT INTO agent_inbox (role, message_id, attempt) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING message_id;

-- name: notify_many
-- NOTIFY mode: the announcements, sent inside the inserting transaction so they
-- go out exactly when (and only if) it commits.
SELECT pg_notify(n.channel, n.payload)
FROM unnest($1::text[], $2::text[]) AS n(channel, payload);

-- name: organisation_id
-- This organisation's id (015_delivery.sql): part of every Redis channel name.
SELECT id FROM organisation;
