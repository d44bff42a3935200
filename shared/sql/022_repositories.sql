-- 022: repositories a task may work in (issue 22), and the merge queue's record.
--
-- A repository is a name for a git repository the user owns (`source`: a path or a URL),
-- the branch its work starts from and lands on (`base_branch`), and the command that
-- must pass before a branch lands (`test_command`, split like a shell would, never run
-- by one). ECHO never writes to `source`: workers keep a bare mirror of it under their
-- state directory, and results reach `source` only when `push` is set.
--
-- `repository_merges` is one row per task branch the merge queue took up: merged (the
-- base fast-forwarded to `merged_commit`) or failed with the reason (a conflict, a red
-- test). Every change to either table writes its agent_actions row in the same
-- statement, by the triggers below (actor: `echo.actor`, else 'system').

CREATE TABLE repositories (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    source        text NOT NULL CHECK (source <> ''),
    base_branch   text NOT NULL CHECK (base_branch <> ''),
    test_command  text,
    push          boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE repository_merges (
    task_id       bigint PRIMARY KEY,
    repo          text NOT NULL,
    branch        text NOT NULL,
    head          text NOT NULL,                   -- the task's commit the queue took up
    status        text NOT NULL CHECK (status IN ('merging', 'merged', 'failed')),
    reason        text,
    merged_commit text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX repository_merges_repo_idx ON repository_merges (repo, task_id);

CREATE FUNCTION repositories_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r repositories;
    verb text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD; verb := 'removed';
    ELSIF TG_OP = 'INSERT' THEN
        r := NEW; verb := 'added';
    ELSE
        r := NEW; verb := 'updated';
    END IF;
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    VALUES (coalesce(nullif(current_setting('echo.actor', true), ''), 'system'),
            'repo.' || verb, 'repository', r.name,
            jsonb_strip_nulls(jsonb_build_object('source', r.source, 'base', r.base_branch,
                                                 'test_command', r.test_command, 'push', r.push)));
    RETURN NULL;
END $$;

CREATE TRIGGER repositories_audit AFTER INSERT OR UPDATE OR DELETE ON repositories
    FOR EACH ROW EXECUTE FUNCTION repositories_audit();

CREATE FUNCTION repository_merges_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status
       AND NEW.head IS NOT DISTINCT FROM OLD.head THEN
        RETURN NULL;
    END IF;
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    VALUES (coalesce(nullif(current_setting('echo.actor', true), ''), 'system'),
            'merge.' || NEW.status, 'task', NEW.task_id::text,
            jsonb_strip_nulls(jsonb_build_object('repo', NEW.repo, 'branch', NEW.branch,
                                                 'head', NEW.head, 'reason', NEW.reason,
                                                 'merged_commit', NEW.merged_commit)));
    RETURN NULL;
END $$;

CREATE TRIGGER repository_merges_audit AFTER INSERT OR UPDATE ON repository_merges
    FOR EACH ROW EXECUTE FUNCTION repository_merges_audit();
