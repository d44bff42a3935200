"""`ask`: a question put to one role, answered by its agent, returned to the asker.

A Claude run of the CTO may need the architect's view while it works; an operator
may want one role's answer without starting a workflow. `ask(role, question,
timeout)` (the client, `echoctl ask`, the MCP tool) is two messages on one thread:

- the **question**: a direct message of kind `question` to the role, on a new thread
  `ask-<uuid>`, its body carrying the text and how long the asker waits;
- the **answer**: kind `answer`, from the role to the asker, on the same thread, its
  body the text, `source` (`llm` or `fallback`, as for every decider answer) and the
  question's id. Its uuid is derived from the question's, so an answer posted twice
  (an agent killed between its post and the next scan) is one row.

The answering role's `Answerer` (a child of its agent tree) answers every question
still open for it: at start (what arrived while it was down, if its asker still
waits), and whenever its participant records a question (a kick). An answer is the
role's Claude (its model and system prompt, one short JSON turn, under the asker's
remaining time) or, when Claude cannot answer, the templated fallback that says so.
The answer is written as the role, through the agent's fenced connection: an agent
that lost its lease answers nothing.

The asker polls the thread for the answer until its timeout (`Client.ask`), as
`wait_workflow` polls a workflow; no process is held on the answering side while
the question waits.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import anyio
from anyio.abc import TaskStatus
from pydantic import BaseModel

from echo import db
from echo.bus import Kind, Message, MessageStore, Publisher, StoredMessage
from echo.config import Settings
from echo.degradation import Condition, Reporter
from echo.errors import StoreRejected, StoreUnavailable, UsageError
from echo.logs import fields
from echo.org.agent import answers, deciders
from echo.org.roles import Role

log = logging.getLogger(__name__)

#: The longest an asker may wait for an answer (and how far back an answerer looks).
MAX_ASK_SECONDS = 600.0
#: Questions answered at once by one role (each may be a Claude run).
CONCURRENT_ANSWERS = 2
#: The longest an answer's Claude run may take, whatever the asker's timeout.
ANSWER_TIME_LIMIT = 120.0


class Answered(BaseModel):
    """What `ask` returns: the other role's answer, and how it was made."""

    question_id: int
    answer_id: int
    role: str
    answer: str
    source: str  # "llm" or "fallback"
    fallback_reason: str | None = None


def check_timeout(timeout: float) -> float:
    if not 1.0 <= timeout <= MAX_ASK_SECONDS:
        raise UsageError(f"the timeout is {timeout:g}s; give between 1 and {MAX_ASK_SECONDS:g} seconds")
    return float(timeout)


def question(sender: str, role: str, text: str, timeout: float, *,
             max_body_bytes: int) -> Message:
    """The question message (validated: `InvalidMessage`/`UsageError` name the problem)."""
    if not text.strip():
        raise UsageError("the question is empty; say what you want to know")
    if role == sender:
        raise UsageError(f"{sender} cannot ask itself; ask another role")
    check_timeout(timeout)
    asked = uuid.uuid4()
    first_line = text.strip().splitlines()[0]
    return Message.build(
        uuid=asked, kind=Kind.QUESTION, from_role=sender, to_role=role,
        thread_id=f"ask-{asked.hex}", subject=f"Question from {sender}: {first_line}"[:200],
        body={"text": text, "timeout": timeout}, max_body_bytes=max_body_bytes)


def answer_uuid(question_uuid: uuid.UUID) -> uuid.UUID:
    """The answer's uuid: one answer row per question, however often it is posted."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"echo-ask-answer:{question_uuid}")


def answer_message(asked: StoredMessage, role: str, said: answers.Answer) -> Message:
    body: dict[str, Any] = {"text": said.data["answer"], "source": said.source,
                            "reply_to": asked.id}
    if said.fallback_reason:
        body["fallback_reason"] = said.fallback_reason
    return Message.build(uuid=answer_uuid(asked.uuid), kind=Kind.ANSWER, from_role=role,
                         to_role=asked.from_role, thread_id=asked.thread_id,
                         subject=f"Re: {asked.subject}"[:200], body=body)


def answered(question_id: int, reply: StoredMessage) -> Answered:
    body = reply.body if isinstance(reply.body, dict) else {}
    return Answered(question_id=question_id, answer_id=reply.id, role=reply.from_role,
                    answer=str(body.get("text", "")), source=str(body.get("source", "llm")),
                    fallback_reason=body.get("fallback_reason"))


def check_answer(data: dict[str, Any]) -> dict[str, Any]:
    return {"answer": answers.checked_text(data, "answer", 4000)}


def template_answer(role: Role, asker: str) -> dict[str, Any]:
    duties = "; ".join(role.responsibilities)
    return {"answer": f"{answers.FALLBACK_MARK} The {role.title} cannot answer {asker} with "
                      f"a model right now. This role is responsible for: {duties}. Ask again "
                      "later, or start a workflow if it needs a decision."}


class Answerer:
    """Answers the questions put to one role (see the module docstring)."""

    def __init__(self, settings: Settings, database: db.Database, role: Role, *,
                 decider: deciders.ClaudeDecider | None = None, listener: Any = None,
                 reporter: Reporter | None = None) -> None:
        self.settings = settings
        self.db = database
        self.role = role
        self.decider = decider
        self.listener = listener
        self.store = MessageStore(database)
        self.condition = Condition("answers", reporter, log)
        self.answered = 0
        self._wake = anyio.Event()
        self._busy: set[int] = set()

    def kick(self) -> None:
        """Look for open questions now (the participant recorded one)."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        limiter = anyio.CapacityLimiter(CONCURRENT_ANSWERS)
        async with Publisher(self.settings.bus, self.db, listener=self.listener) as pub, \
                anyio.create_task_group() as tg:
            task_status.started()
            while True:
                self._wake = anyio.Event()
                retry_after = math.inf  # idle: only a kick (a new question) wakes it
                try:
                    for asked, left in await self.store.open_questions(
                            self.role.name, within=MAX_ASK_SECONDS):
                        if asked.id not in self._busy:
                            self._busy.add(asked.id)
                            tg.start_soon(self._answer, pub, limiter, asked, left)
                    self.condition.ok()
                except StoreUnavailable as exc:
                    self.condition.trouble(str(exc))
                    retry_after = self.retry_interval
                with anyio.move_on_after(retry_after):
                    await self._wake.wait()

    @property
    def retry_interval(self) -> float:
        """How soon a scan or an answer that met an outage is tried again."""
        return self.settings.poll_interval * 10

    async def _answer(self, pub: Publisher, limiter: anyio.CapacityLimiter,
                      asked: StoredMessage, left: float) -> None:
        try:
            async with limiter:
                body = asked.body if isinstance(asked.body, dict) else {}
                prompt = answers.render(
                    "answer", title=self.role.title, asker=asked.from_role,
                    question=str(body.get("text", "")),
                    responsibilities="\n".join(f"- {r}" for r in self.role.responsibilities))
                said = await deciders.answer(
                    self.decider, prompt, max(1.0, min(left - 1.0, ANSWER_TIME_LIMIT)),
                    check_answer, lambda: template_answer(self.role, asked.from_role),
                    step="answer")
                await pub.publish(answer_message(asked, self.role.name, said))
                self.answered += 1
                log.info("%s answered question %s from %s (%s)", self.role.name, asked.id,
                         asked.from_role, said.source,
                         extra=fields(role=self.role.name, question=asked.id))
        except (StoreUnavailable, StoreRejected) as exc:
            # A scan a moment later tries again while the asker still waits.
            log.warning("%s could not answer question %s: %s", self.role.name, asked.id, exc)
            self._busy.discard(asked.id)
            await anyio.sleep(self.retry_interval)
            self.kick()
        finally:
            self._busy.discard(asked.id)
