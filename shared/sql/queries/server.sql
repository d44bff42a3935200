-- Named queries about the Postgres server itself (echo/org/node/lifecycle.py): who is
-- connected, so `echoctl down` stops the embedded server only once nothing uses it.

-- name: clients
-- Every client connection but the asking one, oldest first.
SELECT pid,
       coalesce(nullif(application_name, ''), 'unnamed') AS application_name,
       datname,
       backend_start
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
ORDER BY backend_start

-- name: version
-- The server's version, for `echoctl db status`.
SHOW server_version
