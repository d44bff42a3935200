-- 005: what each agent has processed. One row per (role, message): inserting it is
-- how an agent claims a message for processing, so a redelivery after a crash is
-- recognised (ON CONFLICT DO NOTHING) and processing happens once.

CREATE TABLE agent_inbox (
    role         text NOT NULL,
    message_id   bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, message_id)
);

CREATE INDEX agent_inbox_message_idx ON agent_inbox (message_id);
