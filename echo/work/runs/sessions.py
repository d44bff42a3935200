"""Sessions and their transcripts: what lets a retry continue instead of start over.

The CLI keeps each session's transcript as JSONL under its config dir:
`<CLAUDE_CONFIG_DIR or $HOME/.claude>/projects/<cwd>/<session_id>.jsonl`, where
`<cwd>` is the working directory with every character but letters and digits
written `-` (checked with 2.1.197: `/tmp/a/my_dir.v1` is `-tmp-a-my-dir-v1`).
`claude -p --resume <session_id>` in the same working directory continues it, and
keeps the same session id, appending to the same file.

`TranscriptMirror` copies the file's new whole lines to Postgres as the run goes
(019, under the attempt's guard); `restore` writes the mirrored transcript into
another config dir before a resume there. `resume_prompt` is what a resumed run is
told.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import anyio

from echo.work.runs.store import PriorSession, RunStore
from echo.work.tasks import Task

log = logging.getLogger(__name__)

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
#: The largest piece of a transcript written in one row.
CHUNK_BYTES = 1024 * 1024


def config_dir_of(env: Mapping[str, str]) -> Path:
    """The CLI's config dir for a child environment."""
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"])
    return Path(env.get("HOME") or Path.home()) / ".claude"


def project_name(cwd: str | Path) -> str:
    """The folder under projects/ that the CLI uses for a working directory."""
    return _NOT_ALNUM.sub("-", str(Path(cwd).resolve()))


def transcript_path(config_dir: Path, cwd: str | Path, session_id: str) -> Path:
    return config_dir / "projects" / project_name(cwd) / f"{session_id}.jsonl"


def resume_prompt(prompt: str, prior: PriorSession, decided: str | None = None) -> str:
    """What a resumed run is told: it was interrupted, and the task once more; after a
    tool call that waited for approval, the decision (`decided`) instead."""
    if prior.outcome == "deferred":
        return ((decided or "The operator's decision on your tool call has been made.")
                + " Continue the task where you stopped; do not redo work that is done.")
    how = {"hung": "it went silent and was stopped", "timeout": "it ran out of time",
           "max_budget": "it was stopped at its budget", "usage_limit": "it hit a usage limit",
           "crash": "it crashed"}.get(prior.outcome or "", "its worker stopped")
    return (f"Your previous run of this task was interrupted ({how}) before it finished. "
            "Continue where you stopped: do not redo work that is already done. The task "
            "was:\n\n" + prompt)


async def restore(store: RunStore, config_dir: Path, cwd: str | Path,
                  session_id: str) -> str | None:
    """Put the mirrored transcript of `session_id` where the CLI looks for it (unless
    the local file is already as long); None when the session can be resumed, else why
    not, in a few words."""
    path = anyio.Path(transcript_path(config_dir, cwd, session_id))
    local = (await path.stat()).st_size if await path.exists() else -1
    found = await store.transcript(session_id)
    if found is None:
        return None if local > 0 else "its transcript is gone"
    _project, data = found
    if len(data) > local:
        await path.parent.mkdir(parents=True, exist_ok=True)
        await path.write_bytes(data)
    return None


class TranscriptMirror:
    """Copies the new whole lines of a run's transcript to the store, guarded."""

    def __init__(self, store: RunStore, task: Task, config_dir: Path, cwd: str | Path) -> None:
        self.store, self.task = store, task
        self.config_dir, self.cwd = config_dir, cwd
        self.session_id: str | None = None
        self.sent: int | None = None  # bytes the store has, once asked

    async def sync(self) -> bool:
        """Mirror what is new; False when the task is no longer ours."""
        if self.session_id is None:
            return True
        path = anyio.Path(transcript_path(self.config_dir, self.cwd, self.session_id))
        if not await path.exists():
            return True
        if self.sent is None:
            self.sent = await self.store.transcript_end(self.session_id)
        size = (await path.stat()).st_size
        while size > self.sent:
            async with await anyio.open_file(path, "rb") as handle:
                await handle.seek(self.sent)
                data = await handle.read(min(size - self.sent, CHUNK_BYTES))
            whole = data[: data.rfind(b"\n") + 1]
            if not whole:
                return True  # a line still being written: the next sync takes it
            if not await self.store.append_transcript(self.task, self.session_id,
                                                      project_name(self.cwd), self.sent, whole):
                return False
            self.sent += len(whole)
        return True
