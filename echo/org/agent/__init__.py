"""What runs inside one agent process (`python -m echo.org ROLE`).

`process` is the OS process around the role's tree: it takes the role's lease
(`lease_keeper`; `standby` while another agent holds it) and, while it owns the role,
runs `tree.RoleAgent`: the participant that reads the role's messages, the answerer
of direct questions (`asks`), the workflow's part (echo.org.workflow) with its
deciders (`deciders`: Claude, with the pure checks and fallbacks of `answers`), and
the work pool. `reach` is how the role's own Claude runs reach the organisation (the
agent as an MCP server). The node that starts these processes is echo.org.node; what
users ask of the organisation is echo.org's top level (the client and its views).
"""
