-- 014: the workflow store (issue 15) adds `cancelled`: an operator stopped an unfinished
-- workflow (`echoctl workflow cancel`). Final like `done` and `error` (011), so it
-- leaves the open-workflows index too. (A number of its own so that 011, already
-- applied where branch failure ran, keeps its checksum.)

ALTER TABLE workflows DROP CONSTRAINT workflows_phase_check;
ALTER TABLE workflows ADD CONSTRAINT workflows_phase_check
    CHECK (phase IN ('selecting', 'discussing', 'voting', 'deciding', 'executing', 'done',
                     'cancelled', 'error'));

DROP INDEX workflows_open_idx;
CREATE INDEX workflows_open_idx ON workflows (id)
    WHERE phase NOT IN ('done', 'cancelled', 'error');
