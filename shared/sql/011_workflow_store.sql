-- 011: the workflow store. A workflow can end without finishing: `cancelled` by an
-- operator (`echoctl workflow cancel`), or `error` when a step hit a permanent error
-- (a row Postgres rejects): that one workflow stops with its reason in `error`, and
-- the others go on. Both leave the open-workflows index, like `done`.

ALTER TABLE workflows DROP CONSTRAINT IF EXISTS workflows_phase_check;
ALTER TABLE workflows ADD CONSTRAINT workflows_phase_check
    CHECK (phase IN ('selecting', 'discussing', 'voting', 'deciding', 'executing', 'done',
                     'cancelled', 'error'));
ALTER TABLE workflows ADD COLUMN IF NOT EXISTS error text;

DROP INDEX IF EXISTS workflows_open_idx;
CREATE INDEX workflows_open_idx ON workflows (id)
    WHERE phase NOT IN ('done', 'cancelled', 'error');
