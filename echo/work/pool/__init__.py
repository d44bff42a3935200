"""The work pool: a worker's slots, and the loops that keep them busy and honest.

One pool runs at most `concurrency` tasks at once and claims only as many tasks as
it has free slots, so nothing it claims waits behind its own work. It is a plain
anyio component: `await tg.start(pool.run)` starts it, `pool.stop()` asks for a
graceful drain, and cancelling `run` releases what it holds (shielded, briefly).

Inside `run`, alongside one runner per claimed task:

- the claimer wakes on NOTIFY `<namespace>:tasks` (through the process's shared
  `Listener`) and polls every `settings.worker_check_interval` seconds anyway (idle,
  with the LISTEN connection up: when the next delayed task comes due, at most
  IDLE_POLL_FACTOR times less often; a due task it could not claim keeps the short
  poll). It
  stores the results finished since its last round together with its next claim, in
  one statement (`complete_and_claim`): the slots those tasks free are claimed for
  at once, and a busy pool pays one round trip and one commit per batch;
- the writer stores failures, and every result once the pool is stopping. A result
  that cannot be written (the database is down) stays in memory and is retried until
  the database answers; the write is guarded, so it lands only if this worker still
  owns the task. The task keeps its slot, and its lease keeps being renewed, meanwhile;
- each slot has one long-lived runner task, started the first time the slot is used,
  which runs the slot's tasks one after another: starting an anyio task costs more
  than a no-op task's whole trip through the queue;
- the heartbeat renews leases every `lease_seconds / 3` and stops any task the
  database says this worker no longer owns (rescued, or cancelled by a user);
- the owner's rule, per task (the role lease's, echo/org/leases.py): a worker runs a
  task only while its monotonic clock is before t + `lease_seconds`, t = when it sent
  the claim or renewal the database last confirmed. A run whose lease could not be
  renewed (a partition, a database that does not answer) is stopped `stop_margin`
  before that, its child process group killed, so it is over before the database
  lets another worker claim the task: two attempts of a task never overlap. The task
  goes back to the queue when its lease expires (the rescue), to run elsewhere;
- the rescuer returns expired leases of dead workers to the queue.

A database outage never crashes the pool: it reports `degraded` (its `Condition`,
pushed to the agent's `HealthMonitor` as `work`) and keeps retrying with capped
backoff. A statement Postgres rejects fails the one task it was about. An outcome is
logged (`completed`, `failed`) once it is stored, never for a result the pool then
drops because the task is no longer its own. On `stop()`,
claiming stops, running work has `grace_seconds` to finish, and whatever is still
running is then cancelled and released back to pending: never lost. `halt()` is the
role owner's deadline: every run stops at once and nothing more is written.

The rooms: `executor_pool` (the pool: claiming, slots, runs, rescue, drain), `writer`
(storing outcomes through outages and refusals), `leases` (the task lease keeper), `retry`
(the retry decision, pure), `running` (the record of a held task, the figures),
`ports` (what the pool needs of its stores) and `memory` (in-memory adapters of those
ports, for unit tests of the pool without Postgres).
"""

from echo.work.pool.executor_pool import ExecutorPool
from echo.work.pool.ports import PoolStores
from echo.work.pool.running import PoolMetrics

__all__ = ["ExecutorPool", "PoolMetrics", "PoolStores"]
