-- Named queries about the agents' health (004_health.sql), for readers such as
-- `echoctl status` through echo.org.client. Each starts with `-- name: <name>`.

-- name: all
SELECT * FROM agent_health ORDER BY role;
