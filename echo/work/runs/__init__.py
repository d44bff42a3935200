"""Claude runs that are watched, resumable and visible (issue 21).

    stream     stream-json lines -> `RunEvent`s and the run's state (session, turn, cost)
    watch      the CLI run read as it streams, and the watchdog (idle, result grace, loop)
    store      sessions, events and transcripts in Postgres (018, 019), and in memory
    recorder   writes a run's events and transcript as it goes, under the attempt's guard
    sessions   transcript paths, the mirror, restore before a resume, the resume prompt
    attempt    one recorded attempt: resume the earlier session, else start fresh
    kept       one CLI process kept for a conversation (a workflow's questions)
    traces     OpenTelemetry GenAI spans: invoke_workflow, invoke_agent, execute_tool
"""

from echo.work.runs.recorder import RunRecorder
from echo.work.runs.sessions import restore, resume_prompt, transcript_path
from echo.work.runs.store import MemoryRunStore, PgRunStore, PriorSession, RunStore
from echo.work.runs.stream import RunEvent, StreamState
from echo.work.runs.watch import Streamed, Watch, run_streaming

__all__ = [
    "MemoryRunStore",
    "PgRunStore",
    "PriorSession",
    "RunEvent",
    "RunRecorder",
    "RunStore",
    "StreamState",
    "Streamed",
    "Watch",
    "restore",
    "resume_prompt",
    "run_streaming",
    "transcript_path",
]
