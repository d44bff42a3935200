"""The node: what `echoctl up` (and `echoctl worker`) runs on one machine.

`organisation` supervises the agents' OS processes (`children`: each agent process,
its pause and exit; `predecessors`: which dead process a restarted agent replaces)
and the console (`console_keeper`); `nodes` and `heart` are this node's seat and
beat in Postgres; `state` the state directory's record of the organisation, read by
every other command; `control` its control socket; `lifecycle` the embedded Postgres
a command starts and stops; `worker` the standalone work pool of `echoctl worker`;
`scaffold` what `echoctl init` writes. The agent processes themselves are
echo.org.agent.
"""
