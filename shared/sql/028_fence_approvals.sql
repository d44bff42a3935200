-- The tables written as a role since 009 are fenced like the rest (role_lease_fence):
-- a role's MCP server asking for a budget (`request_budget`) and an agent recording its
-- workflow session write nothing once the role's lease has passed on. Operators' and
-- the hook's connections carry no fence, so the trigger lets them through.
CREATE TRIGGER approvals_fence BEFORE INSERT OR UPDATE OR DELETE ON approvals
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
CREATE TRIGGER workflow_sessions_fence BEFORE INSERT OR UPDATE OR DELETE ON workflow_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
