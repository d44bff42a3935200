-- 027: one Claude conversation per role per workflow.
-- A role's questions of one workflow (take part?, its positions, its vote, the CEO's
-- decision) are one CLI session: the first question's run reports its session id,
-- recorded here, and every later question resumes it (`claude -p --resume`) with only
-- the new step's prompt, so the role remembers what it said. Kept here, not in
-- memory, so a restarted agent continues the same session. Deleted with the workflow.

CREATE TABLE workflow_sessions (
    workflow_id text NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    role        text NOT NULL,
    session_id  text NOT NULL CHECK (session_id <> ''),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, role)
);
