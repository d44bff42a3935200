"""One recorded attempt: resume the earlier session if there is one, else start fresh.

A retry after a hang, a crash, a lost worker or lease, a budget cut or a usage limit
continues the session of the task's latest earlier attempt (`claude -p --resume`,
told it was interrupted), after restoring its transcript from Postgres into this
run's config dir. An earlier attempt that looped, succeeded or failed for good
(auth, credit) is not continued. When resuming is impossible (no transcript, the
CLI refuses the session) one warning line says why and the attempt starts over.

`start(resume, prompt, recorder, resumed_attempt)` makes the run itself (the Claude
executor's); this module only decides and records.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio

from echo.errors import ClaudeApiError, ClaudeCrashed, ClaudeError, StoreRejected, StoreUnavailable
from echo.work.executors import Result
from echo.work.runs.recorder import RunRecorder
from echo.work.runs.sessions import config_dir_of, restore, resume_prompt
from echo.work.runs.store import PriorSession, RunStore
from echo.work.runs.stream import RunEvent
from echo.work.tasks import Task

log = logging.getLogger(__name__)

#: Earlier outcomes a retry does not continue: a loop would loop again, the others ended.
NOT_CONTINUED = frozenset({"ok", "loop", "auth", "credit"})

Start = Callable[[str | None, str, RunRecorder, int | None], Awaitable[Result]]


async def prior_session(store: RunStore, task: Task, env: Mapping[str, str],
                        cwd: str | Path) -> tuple[PriorSession | None, str | None]:
    """The session to continue, restored where the CLI looks; else None and, when there
    was one that cannot be continued, why."""
    try:
        prior = await store.previous_session(task.task_id, task.attempt)
    except (StoreUnavailable, StoreRejected) as exc:
        return None, f"the earlier session cannot be looked up ({exc})"
    if prior is None or prior.outcome in NOT_CONTINUED:
        return None, None
    try:
        why = await restore(store, config_dir_of(env), cwd, prior.session_id)
    except (StoreUnavailable, StoreRejected, OSError) as exc:
        why = f"its transcript cannot be restored ({exc})"
    if why is not None:
        return None, f"session {prior.session_id} of attempt {prior.attempt}: {why}"
    return prior, None


def refused(exc: ClaudeError, *, started: bool) -> bool:
    """The CLI refused to resume a session: it failed before its `init` (`started`
    False: no such session, "No conversation found"), or the conversation no longer
    fits the model's context ("Prompt is too long")."""
    if not isinstance(exc, ClaudeApiError | ClaudeCrashed):
        return False
    return not started or "prompt is too long" in str(exc).lower()


def _refused(exc: ClaudeError, recorder: RunRecorder) -> bool:
    return refused(exc, started=recorder.session_id is not None)


async def run_attempt(store: RunStore, task: Task, *, prompt: str, env: Mapping[str, str],
                      cwd: str | Path | None, limit: int, start: Start,
                      decided: str | None = None) -> Result:
    """One attempt; `decided` is what a run resumed after an approval decision is told."""
    where = Path(cwd) if cwd is not None else Path(os.getcwd())
    prior, why = await prior_session(store, task, env, where)
    recorder = RunRecorder(store, task, config_dir=config_dir_of(env), cwd=where, limit=limit,
                           resumed_attempt=prior.attempt if prior else None)
    if why:
        _starting_over(task, why, recorder)
    outcome: Result | Exception
    async with anyio.create_task_group() as tg:
        await tg.start(recorder.run)
        try:
            outcome = await _attempts(task, prompt, prior, recorder, start, decided)
        finally:
            await recorder.close()
            tg.cancel_scope.cancel()
    if isinstance(outcome, Exception):  # raised out here, not wrapped in the group's
        raise outcome
    return outcome


async def _attempts(task: Task, prompt: str, prior: PriorSession | None,
                    recorder: RunRecorder, start: Start,
                    decided: str | None = None) -> Result | Exception:
    """The resumed run and, if the CLI refuses the session, the fresh one."""
    if prior is not None:
        recorder.add(RunEvent("resume", f"resuming session {prior.session_id} of "
                              f"attempt {prior.attempt}"))
        try:
            return await start(prior.session_id, resume_prompt(prompt, prior, decided), recorder,
                               prior.attempt)
        except ClaudeError as exc:
            if not _refused(exc, recorder):
                _watchdog_event(exc, recorder)
                return exc
            _starting_over(task, f"the CLI refused session {prior.session_id} ({exc})",
                           recorder)
            recorder.resumed_attempt = None
        except Exception as exc:
            return exc
    try:
        return await start(None, prompt, recorder, None)
    except ClaudeError as exc:
        _watchdog_event(exc, recorder)
        return exc
    except Exception as exc:
        return exc


def _starting_over(task: Task, why: str, recorder: RunRecorder) -> None:
    line = f"task {task.task_id} attempt {task.attempt}: cannot resume, {why}; starting over"
    log.warning("%s", line)
    recorder.add(RunEvent("resume", line[:500]))


def _watchdog_event(exc: ClaudeError, recorder: RunRecorder) -> None:
    outcome = getattr(exc.run, "outcome", None)
    if outcome in ("hung", "loop"):
        recorder.add(RunEvent("watchdog", str(exc)[:500]))
