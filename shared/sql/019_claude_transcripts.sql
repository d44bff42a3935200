-- The CLI's session transcripts, mirrored as a run goes (issue 21), so a retry on any
-- machine restores the JSONL into its own CLAUDE_CONFIG_DIR and resumes the session.
--
-- A transcript is append-only JSONL (`projects/<cwd>/<session>.jsonl`); it is stored as
-- the byte ranges read so far, one row per range, keyed by where the range starts.
-- `project` is the folder name under projects/ (the working directory, every character
-- but letters and digits as `-`). Written under the attempt's guard (queries/runs.sql).

CREATE TABLE claude_transcripts (
    session_id   text NOT NULL,
    offset_bytes bigint NOT NULL CHECK (offset_bytes >= 0),
    task_id      bigint NOT NULL,
    attempt      integer NOT NULL,
    project      text NOT NULL,
    chunk        bytea NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, offset_bytes)
);
CREATE INDEX claude_transcripts_task_idx ON claude_transcripts (task_id);
