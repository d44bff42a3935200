"""The CEO's driving of a workflow on the in-memory adapters: each phase waits for its
parts or its deadline (on the test's clock), the vote decides by its quorum, and a
database outage or a refused statement stops at most the step or the workflow it hit.

    selecting -> discussing (1..rounds) -> voting -> deciding -> executing -> done
"""

from __future__ import annotations

import pytest

from echo.bus import Kind
from echo.errors import StoreRejected, StoreUnavailable
from echo.org.workflow import Phase
from tests.unit.org.workflow.harness import PHASE_TIMEOUT, Org, agent_on, organisation


async def phase_posts(org: Org, wf_id: str) -> list[tuple[str, int]]:
    """The driver's phase announcements on the workflow's thread, in order."""
    return [(m.body["phase"], m.body["round"]) for m in await org.store.thread(wf_id)
            if m.kind == Kind.STATUS and "phase" in m.body]


async def test_each_discussion_round_waits_for_every_taker_or_its_own_deadline() -> None:
    org = organisation(["ceo", "cto"])
    wf = await org.start(["ceo", "cto"], rounds=2)
    await org.tick()
    assert await org.at(wf) == (Phase.DISCUSSING, 1)
    org.down("cto")  # it joined, then its agent stopped: its positions never come
    await org.tick()
    assert await org.at(wf) == (Phase.DISCUSSING, 1)
    org.clock.advance(PHASE_TIMEOUT)
    await org.tick()
    assert await org.at(wf) == (Phase.DISCUSSING, 2)
    org.clock.advance(PHASE_TIMEOUT / 2)  # the new round has a deadline of its own
    await org.tick()
    assert await org.at(wf) == (Phase.DISCUSSING, 2)
    org.clock.advance(PHASE_TIMEOUT / 2)
    await org.tick()
    assert await org.at(wf) == (Phase.VOTING, 0)
    assert await phase_posts(org, wf) == [("discussing", 1), ("discussing", 2), ("voting", 0)]


async def test_a_vote_missing_at_the_deadline_escalates_and_the_decision_follows_the_tally() -> None:
    org = organisation(["ceo", "cto"])
    wf = await org.start(["ceo", "cto"])
    await org.run_until(wf, Phase.VOTING)
    org.down("cto")
    await org.tick()
    assert await org.at(wf) == (Phase.VOTING, 0)  # waits for the CTO's vote
    org.clock.advance(PHASE_TIMEOUT)
    await org.tick()
    after = await org.workflow(wf)
    assert (after.phase, after.consensus) == (Phase.DECIDING, "escalated")  # 1 of 2: no majority
    await org.tick()
    decision = await org.store.decision_of(wf)
    assert decision is not None
    assert (decision.consensus, decision.outcome) == ("escalated", "approved")  # 1 yes, 0 no
    assert (await org.workflow(wf)).phase == Phase.EXECUTING


async def test_a_split_vote_under_unanimity_is_rejected_and_ends_without_tasks() -> None:
    org = organisation(["ceo", "cto"])
    wf = await org.start(["ceo", "cto"], quorum="unanimous")
    await org.run_until(wf, Phase.VOTING)
    org.down("cto")
    await org.vote(wf, "cto", "reject")
    await org.tick()  # the CEO approves: every vote is in, and they differ
    after = await org.workflow(wf)
    assert (after.phase, after.consensus) == (Phase.DECIDING, "escalated")
    await org.tick()
    decision = await org.store.decision_of(wf)
    assert decision is not None and (decision.outcome, decision.tasks) == ("rejected", [])
    assert (await org.workflow(wf)).phase == Phase.DONE  # straight on: nothing to execute
    assert org.store.task_rows == {}
    assert [m.body["outcome"] for m in await org.store.thread(wf) if m.kind == Kind.DECISION] \
        == ["rejected"]


async def test_the_executing_deadline_does_not_take_the_tasks_of_roles_that_are_up() -> None:
    org = organisation(["ceo", "cto"])
    wf = await org.start(["ceo", "cto"])
    await org.run_until(wf, Phase.EXECUTING)
    org.clock.advance(PHASE_TIMEOUT * 10)
    await org.tick()
    assert await org.at(wf) == (Phase.EXECUTING, 0)
    assert {row.status for row in org.store.task_rows.values()} == {"pending"}
    for task_id in org.store.task_rows:
        org.tasks.finish(task_id, "completed", result={"result": "done"})
    await org.tick()
    assert await org.at(wf) == (Phase.DONE, 0)


async def test_an_outage_leaves_the_workflow_where_it_was_and_a_later_tick_moves_it() -> None:
    org = organisation(["ceo", "cto"])
    ceo = agent_on(org, "ceo")
    wf = await org.start(["ceo", "cto"])
    await org.parts[0].my_part(await org.workflow(wf))  # the CTO has selected
    org.store.fail_on["advance"] = StoreUnavailable("Postgres is unavailable")
    with pytest.raises(StoreUnavailable):  # the agent's loop defers the whole tick
        await ceo.step()
    assert await org.at(wf) == (Phase.SELECTING, 0)
    assert await phase_posts(org, wf) == []
    await ceo.step()  # Postgres is back
    assert await org.at(wf) == (Phase.DISCUSSING, 1)
    assert await phase_posts(org, wf) == [("discussing", 1)]


async def test_a_phase_announcement_lost_to_an_outage_is_made_at_the_next_tick_once() -> None:
    """The phase moved (committed) but its announcement, which wakes every agent, met an
    outage: the next tick announces it, once, before anything else."""
    org = organisation(["ceo", "cto"])
    ceo = agent_on(org, "ceo")
    wf = await org.start(["ceo", "cto"])
    await org.parts[0].my_part(await org.workflow(wf))  # the CTO has selected
    org.store.fail_on["publish"] = StoreUnavailable("Postgres is unavailable")
    with pytest.raises(StoreUnavailable):
        await ceo.step()
    assert await org.at(wf) == (Phase.DISCUSSING, 1)  # the move was committed
    assert await phase_posts(org, wf) == []
    await ceo.step()
    assert await phase_posts(org, wf) == [("discussing", 1)]
    await ceo.step()
    assert await phase_posts(org, wf) == [("discussing", 1)]  # once


@pytest.mark.parametrize("fails", ["decide", "enqueue_many", "set_decision_tasks", "publish"])
async def test_an_outage_while_deciding_is_finished_by_the_next_tick_once(fails: str) -> None:
    """Down before the decision, before its tasks, before their ids are recorded or
    before it is announced: the next tick does the rest, and nothing twice."""
    org = organisation(["ceo", "cto"])
    wf = await org.start(["ceo", "cto"])
    await org.run_until(wf, Phase.DECIDING)
    org.store.fail_on[fails] = StoreUnavailable("Postgres is unavailable")
    with pytest.raises(StoreUnavailable):
        await org.tick()
    assert await org.at(wf) == (Phase.DECIDING, 0)
    await org.tick()
    assert await org.at(wf) == (Phase.EXECUTING, 0)
    decision = await org.store.decision_of(wf)
    assert decision is not None
    assert sorted(t["task_id"] for t in decision.tasks) == sorted(org.store.task_rows) \
        and len(org.store.task_rows) == 2
    assert len([m for m in await org.store.thread(wf) if m.kind == Kind.DECISION]) == 1


async def test_a_refused_transition_fails_only_that_workflow() -> None:
    org = organisation(["ceo"])
    ceo = agent_on(org, "ceo")
    broken = await org.start(["ceo"])
    fine = await org.start(["ceo"])
    org.store.fail_on["advance"] = StoreRejected("value too long", sqlstate="22001")
    await ceo.step()
    failed = await org.workflow(broken)
    assert failed.phase == Phase.ERROR
    assert (failed.error or "").startswith("ceo could not do its part of selecting: "
                                           "the database refused it: value too long")
    assert await org.at(fine) == (Phase.DISCUSSING, 1)  # in the same pass
    await ceo.step()
    assert (await org.workflow(broken)).phase == Phase.ERROR  # not retried
    assert [w.id for w in await org.store.open()] == [fine]
