"""The dashboard in a real Chromium, against a real organisation (six agent
processes, Postgres, Redis, the console as the organisation's child).

What a person does: open the address with the token, see six healthy agents,
kill an agent and watch it come back, start a workflow from the page and watch its
decision arrive, retry a failed task from the page, and read it all on a phone.
The last test saves the screenshot the README shows (docs/console.png).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from echo.org.node.state import read_org
from tests.console_org import Console
from tests.e2e import test_claude_executor as executor_tests
from tests.fakes.anthropic import FakeAnthropic, held, text, tool_use
from tests.helpers import ROLES, all_in, wait_until

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"


async def open_dashboard(browser: Any, org: Console, width: int = 1280, height: int = 800) -> Any:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(f"{org.url}?token={org.token}")
    await page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page


async def healthy_cards(page: Any) -> int:
    return int(await page.locator(".agent[data-state='healthy']").count())


async def test_without_the_token_the_dashboard_says_how_to_get_in(browser: Any, org: Console) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    answer = await page.goto(org.url)
    assert answer.status == 401
    assert "console.token" in await page.content()
    await context.close()


async def test_six_healthy_agents_then_a_killed_agent_restarts_on_the_page(
    browser: Any, org: Console
) -> None:
    page = await open_dashboard(browser, org)
    assert "token=" not in page.url  # the token left the address bar for a cookie
    cookie = next(c for c in await page.context.cookies() if c["name"] == "echo_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    await page.wait_for_function("document.querySelectorAll(\".agent[data-state='healthy']\").length === 6",
                                 timeout=30_000)
    shown = await page.locator(".agent").evaluate_all("els => els.map(e => e.dataset.role)")
    assert sorted(shown) == sorted(ROLES)
    assert await page.locator("#live").text_content() == "live"

    record = read_org(org.settings)
    assert record is not None
    victim = record.agents["cto"].pid
    assert victim and await page.locator("[data-role='cto'] .pid").text_content() == str(victim)
    os.kill(victim, signal.SIGKILL)
    await page.wait_for_function(
        """(old) => {
            const card = document.querySelector("[data-role='cto']");
            return card && card.querySelector('.restarts').textContent === '1'
                && card.dataset.state === 'healthy' && card.querySelector('.pid').textContent !== old;
        }""", arg=str(victim), timeout=60_000)
    assert page.errors == []
    await page.context.close()


async def test_start_a_workflow_from_the_page_and_watch_its_decision(browser: Any, org: Console) -> None:
    page = await open_dashboard(browser, org)
    form = page.locator("#workflow-form")
    await form.locator("[name=subject]").fill("Move the API database to the new cloud platform")
    await form.locator("[name=body]").fill("The budget impact is to be discussed")
    await form.locator("[name=rounds]").fill("1")
    await form.locator("button").click()
    await page.wait_for_selector("#workflows li.selected", timeout=30_000)
    decision = page.locator("#decision")
    await decision.wait_for(timeout=150_000)  # arrives over the event stream, no reload
    assert await decision.get_attribute("data-outcome") in ("approved", "rejected")
    timeline = await page.locator("#timeline").text_content() or ""
    assert "who took part" in timeline and "votes" in timeline
    assert "cto: joins" in timeline
    assert page.errors == []
    await page.context.close()


async def test_retry_a_failed_task_from_the_page(browser: Any, org: Console) -> None:
    page = await open_dashboard(browser, org)
    async with org.client() as c:
        made = await c.post("/api/v1/tasks", json={
            "description": "run a program that is not installed", "role": "cto", "type": "command",
            "payload": {"argv": ["/nonexistent/echo-browser-test"]}, "max_retries": 0})
        task_id = made.json()["task_id"]
        row = page.locator(f"#tasks tr[data-id='{task_id}']")
        await page.wait_for_selector(f"#tasks tr[data-id='{task_id}'][data-status='failed']", timeout=60_000)
        await row.locator("button[data-action='retry']").click()

        async def retried_and_failed_again() -> bool:
            history = [h["action"] for h in (await c.get(f"/api/v1/tasks/{task_id}")).json()["history"]]
            return "task.requeued" in history and history.count("task.failed") == 2

        await wait_until(retried_and_failed_again, timeout=60, interval=0.2)
        await page.wait_for_selector(f"#tasks tr[data-id='{task_id}'][data-status='failed']", timeout=30_000)
        # the filters narrow the list: only failed ones, only the CTO's
        await page.select_option("#task-filters [name=status]", "failed")
        await page.wait_for_function(
            "[...document.querySelectorAll('#tasks tbody tr')].every(r => r.dataset.status === 'failed')")
        assert await row.count() == 1
        await page.select_option("#task-filters [name=status]", "")
    assert page.errors == []
    await page.context.close()


async def test_readable_at_a_phone_width_and_the_screenshot(browser: Any, org: Console) -> None:
    phone = await open_dashboard(browser, org, width=390, height=844)
    await phone.wait_for_function("document.querySelectorAll('.agent').length === 6")
    overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than a phone"
    for panel in ("#agents-panel", "#messages-panel", "#workflows-panel", "#tasks-panel"):
        box = await phone.locator(panel).bounding_box()
        assert box is not None and box["width"] <= 390, panel
    await phone.context.close()

    page = await open_dashboard(browser, org)
    await page.wait_for_function("document.querySelectorAll(\".agent[data-state='healthy']\").length === 6",
                                 timeout=30_000)
    await page.locator("#decision").wait_for(timeout=30_000)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    await page.context.close()


#: Samples the age a card shows (in seconds) until `span` seconds of the page's own
#: clock have passed; returns the samples, or false while still watching.
WATCH_AGE = """([role, span]) => {
    const key = `__watch_${role}`;
    const watch = window[key] ??= { start: performance.now(), ages: [] };
    const text = document.querySelector(`.agent[data-role='${role}'] .heartbeat`).textContent;
    watch.ages.push(parseFloat(text));
    return performance.now() - watch.start >= span * 1000 ? watch.ages : false;
}"""


def shown_age(text: str) -> float:
    """`12s ago` or `3m ago`, in seconds."""
    number, unit = float(text.split()[0][:-1]), text.split()[0][-1]
    return number * 60 if unit == "m" else number


async def test_heartbeat_ages_stay_live_and_grow_when_the_beats_stop(browser: Any, org: Console) -> None:
    from echo.org.status import STALE_AFTER

    page = await open_dashboard(browser, org)
    await page.wait_for_function("document.querySelectorAll(\".agent[data-state='healthy']\").length === 6",
                                 timeout=30_000)
    # A healthy agent beats every second: over 10 s on the page its age stays under the
    # age at which the organisation would call it unresponsive.
    ages = await (await page.wait_for_function(WATCH_AGE, arg=["cto", 10], polling=250,
                                               timeout=60_000)).json_value()
    assert len(ages) >= 10 and max(ages) < STALE_AFTER, ages

    record = read_org(org.settings)
    assert record is not None
    frozen = record.agents["chro"].pid
    assert frozen
    os.kill(frozen, signal.SIGSTOP)  # alive, but its heartbeats stop
    try:
        await page.wait_for_function(
            "parseFloat(document.querySelector(\".agent[data-role='chro'] .heartbeat\").textContent) >= 8",
            timeout=60_000)
        async with org.client() as c:
            agents = (await c.get("/api/v1/agents")).json()["agents"]
        told = next(a for a in agents if a["role"] == "chro")["heartbeat_age"]
        shown = shown_age(await page.locator(".agent[data-role='chro'] .heartbeat").text_content() or "")
        assert abs(shown - told) <= 3, (shown, told)  # the server's age, not the browser's clock
        assert shown_age(await page.locator(".agent[data-role='cto'] .heartbeat").text_content() or "") \
            < STALE_AFTER  # the others still beat
    finally:
        os.kill(frozen, signal.SIGCONT)
    await page.wait_for_function(
        "parseFloat(document.querySelector(\".agent[data-role='chro'] .heartbeat\").textContent) < 5",
        timeout=60_000)
    await wait_until(all_in(org.settings, "healthy", ROLES), timeout=60, interval=0.2)
    assert page.errors == []
    await page.context.close()


# ---------------------------------------------------------------- runs and charts
async def test_a_runs_doing_now_line_feed_and_timeline_are_live(browser: Any, org: Console) -> None:
    """A Claude task of the CTO, run by this test as a worker runs one (claimed with its
    attempt's lease; its session, events and ledger row written through the same
    stores): the page shows what the CTO is doing, changing as the events land, the
    feed announces the run's start and end, and the task's timeline lists its events
    and its branch."""
    from echo.db import Database
    from echo.org.governance import governor_for
    from echo.work import Completion, TaskQueue
    from echo.work.governor.ledger import RunRecord
    from echo.work.runs import PgRunStore, RunEvent

    page = await open_dashboard(browser, org)
    db = await Database.open(org.settings.database, max_size=2)
    governor = governor_for(org.settings, db)
    before = {b["key"]: b["daily_usd"] for b in await governor.budgets() if b["scope"] == "role"}
    try:
        # The CTO's own workers must not take it: a budget of 0 holds its Claude work back.
        await governor.set_budget("role", "cto", 0.0, known_roles=ROLES)
        q, store = TaskQueue(db), PgRunStore(db)
        made = await q.enqueue("Move the API to the new cluster", task_type="claude", role="cto")
        [task] = await q.claim(["browser-test:1:0"], task_types=["claude"], roles=["cto"],
                               lease_seconds=600)
        assert task.task_id == made.task_id
        await governor.set_budget("role", "cto", before.get("cto") or 5.0, known_roles=ROLES)

        assert await store.record_session(task, "s-browser", "/work/app", None)
        started = page.locator(f"#messages li.run[data-run='run.started'][data-task='{task.task_id}']")
        await started.wait_for(timeout=30_000)
        assert f"run started: cto, task #{task.task_id}, attempt 1, fresh" in (
            await started.text_content() or "")

        line = page.locator(f"#doing li[data-task='{task.task_id}'] .line")
        await store.append_events(task, 1, [RunEvent("init", "session s-browser", 0, 0.0),
                                            RunEvent("tool_use", "Read src/api.py", 1, 0.01)])
        await page.wait_for_function(
            "([id, want]) => document.querySelector(`#doing li[data-task='${id}'] .line`)"
            "?.textContent === want", arg=[task.task_id, "cto: Read src/api.py, turn 1, $0.01"],
            timeout=30_000)
        await store.append_events(task, 3, [RunEvent("tool_result", "ok", 1, 0.01),
                                            RunEvent("tool_use", "Edit src/api.py", 2, 0.03)])
        await page.wait_for_function(  # the same element, changed live: no reload
            "([id, want]) => document.querySelector(`#doing li[data-task='${id}'] .line`)"
            "?.textContent === want", arg=[task.task_id, "cto: Edit src/api.py, turn 2, $0.03"],
            timeout=30_000)
        assert await page.locator("#doing li[data-agent='cto']").count() == 1

        await line.click()  # its timeline: attempt 1, running, the events so far
        await page.wait_for_selector(f"#task-timeline[data-task='{task.task_id}'] .attempt[data-attempt='1']",
                                     timeout=30_000)
        assert "attempt 1 · fresh · running" in (await page.locator("#task-timeline").text_content() or "")

        await store.append_events(task, 5, [RunEvent("result", "moved the API", 2, 0.05)])
        workspace = {"repo": "app", "branch": f"echo/cto/task-{task.task_id}", "base_branch": "main",
                     "base_commit": "a" * 40, "head": "b" * 40, "changed": True, "committed": True,
                     "files": ["src/api.py"], "diffstat": " src/api.py | 2 +-\n 1 file changed",
                     "path": "/work/app"}
        ran = RunRecord(kind="task", outcome="ok", role="cto", task_id=task.task_id,
                        attempt=task.attempt, cost_usd=0.05, turns=2, session_id="s-browser")
        await q.complete([Completion(task, {"result": "moved the API", "workspace": workspace}, 0.05,
                                     "s-browser", run=ran)])

        ended = page.locator(f"#messages li.run[data-run='run.ended'][data-task='{task.task_id}']")
        await ended.wait_for(timeout=30_000)
        assert f"run ended: cto, task #{task.task_id}, attempt 1: ok, $0.0500, 2 turns" in (
            await ended.text_content() or "")
        await page.wait_for_function(
            "(id) => !document.querySelector(`#doing li[data-task='${id}']`)", arg=task.task_id,
            timeout=30_000)
        timeline = page.locator(f"#task-timeline[data-status='completed'][data-task='{task.task_id}']")
        await timeline.wait_for(timeout=30_000)
        kinds = await timeline.locator(".attempt[data-attempt='1'] li").evaluate_all(
            "els => els.map(e => e.dataset.kind)")
        assert kinds == ["init", "tool_use", "tool_result", "tool_use", "result"]  # in order
        text = await timeline.text_content() or ""
        assert "attempt 1 · fresh · ok · $0.0500 · 2 turns" in text
        assert "Read src/api.py" in text and "Edit src/api.py" in text
        assert f"branch echo/cto/task-{task.task_id}" in text and "base main at aaaaaaaaaaaa" in text
        assert "head bbbbbbbbbbbb · 1 file changed" in text and "src/api.py | 2 +-" in text
    finally:
        await db.close()
    assert page.errors == []
    await page.context.close()


async def test_the_charts_draw_the_spend_and_the_finished_tasks_the_test_made(
        browser: Any, org: Console) -> None:
    from echo.db import Database
    from echo.org.governance import governor_for
    from echo.work import Completion, Failure, TaskQueue
    from echo.work.governor.ledger import RunRecord

    page = await open_dashboard(browser, org)
    await page.wait_for_selector("#spend-chart svg", timeout=30_000)
    db = await Database.open(org.settings.database, max_size=2)
    try:
        governor = governor_for(org.settings, db)
        await governor.set_budget("role", "cto", 4.0, known_roles=ROLES)
        await governor.set_budget("role", "ceo", 3.0, known_roles=ROLES)
        async with org.client() as c:
            spent_before = {r["role"]: r["spent_usd"]
                            for r in (await c.get("/api/v1/charts/spend")).json()["roles"]}
            done_before = (await c.get("/api/v1/charts/finished")).json()["total"]
        await governor.record([  # two roles' workflow questions, as the deciders record them
            RunRecord(kind="question", outcome="ok", role="cto", workflow_id="wf-1", cost_usd=0.40),
            RunRecord(kind="question", outcome="ok", role="ceo", workflow_id="wf-1", cost_usd=0.25)])
        q = TaskQueue(db)  # three tasks of no role (no agent takes those): two done, one failed
        for n in range(3):
            await q.enqueue(f"chart task {n}", task_type="noop")
        mine = await q.claim(["browser-test:2:0", "browser-test:2:1", "browser-test:2:2"],
                             task_types=["noop"], roles=None)
        assert len(mine) == 3 and all(t.role is None for t in mine)
        untouched = {"repo": "app", "branch": f"echo/task-{mine[1].task_id}", "base_branch": "main",
                     "base_commit": "c" * 40, "head": "c" * 40, "changed": False, "committed": False,
                     "files": [], "diffstat": "", "path": "/work/app"}
        await q.complete([Completion(mine[0], "ok"), Completion(mine[1], {"workspace": untouched})])
        await q.fail([Failure(mine[2], "boom", False)])

        want_cto = round(spent_before.get("cto", 0.0) + 0.40, 2)
        want_ceo = round(spent_before.get("ceo", 0.0) + 0.25, 2)
        want_done = done_before.get("completed", 0) + 2
        want_failed = done_before.get("failed", 0) + 1
        # The task events redraw the charts live (no reload).
        await page.wait_for_function(
            """([cto, done]) => {
                const spent = document.querySelector("#spend-chart li[data-role='cto']");
                const completed = document.querySelector("#finished-chart li[data-outcome='completed']");
                return spent && Math.abs(Number(spent.dataset.spent) - cto) < 0.005
                    && completed && Number(completed.dataset.n) === done;
            }""", arg=[want_cto, want_done], timeout=30_000)
        spend = page.locator("#spend-chart")
        assert await spend.locator("polyline.spend[data-role='cto']").count() == 1
        assert await spend.locator("polyline.spend[data-role='ceo']").count() == 1
        assert await spend.locator("line.budget[data-role='cto']").get_attribute("data-budget") == "4"
        assert await spend.locator("line.budget[data-role='ceo']").get_attribute("data-budget") == "3"
        assert (await spend.locator("li[data-role='cto']").text_content() or "").strip() == \
            f"cto ${want_cto:.2f} of $4.00"
        assert (await spend.locator("li[data-role='ceo']").text_content() or "").strip() == \
            f"ceo ${want_ceo:.2f} of $3.00"
        finished = page.locator("#finished-chart")
        assert await finished.locator("li[data-outcome='failed']").get_attribute("data-n") == str(want_failed)
        now_done = await finished.locator(
            "rect[data-minute='0'][data-outcome='completed']").get_attribute("data-n")
        assert now_done is not None and int(now_done) >= 2  # this minute's bar holds them
        assert await finished.locator("svg rect.bar").count() >= 2

        # A repository task whose run edited nothing says so in its timeline.
        await page.locator(f"#tasks tr[data-id='{mine[1].task_id}'] td.desc").click()
        timeline = page.locator(f"#task-timeline[data-task='{mine[1].task_id}']")
        await timeline.wait_for(timeout=30_000)
        shown = await timeline.text_content() or ""
        assert f"branch echo/task-{mine[1].task_id}" in shown and "base main at cccccccccccc" in shown
        assert "changed nothing" in shown and "no Claude run" in shown
    finally:
        await db.close()
    assert page.errors == []
    await page.context.close()


claude_bin = executor_tests.claude_bin
api = executor_tests.api


@pytest.mark.timeout(300)
async def test_a_real_claude_run_is_watched_live_from_the_page(
        browser: Any, org: Console, claude_bin: str, api: FakeAnthropic, tmp_path: Path) -> None:
    """The real `claude` CLI against the fake API, run by a pool for the CTO's tasks:
    its second and third turns wait until the test lets them go, so the page is seen
    showing each step as it happens."""
    from echo.db import Database
    from echo.org.governance import governor_for
    from echo.runtime import Backoff
    from echo.work import ClaudeRunOptions, ExecutorPool, TaskQueue
    from echo.work.queue import UNGOVERNED

    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("the notes say 42\n")
    (work / "plan.txt").write_text("the plan is to move\n")
    api.conversation(tool_use("Read", {"file_path": str(work / "notes.txt")}),
                     held("second", tool_use("Read", {"file_path": str(work / "plan.txt")})),
                     held("answer", text("The notes say 42 and the plan is to move.")))
    executor = executor_tests.make_executor(
        org.settings, claude_bin, api, tmp_path, options=ClaudeRunOptions(model="sonnet",
                                                                          allowed_tools=("Read",)))
    executor.cwd = work

    page = await open_dashboard(browser, org)
    db = await Database.open(org.settings.database, max_size=4)
    governor = governor_for(org.settings, db)
    before = {b["key"]: b["daily_usd"] for b in await governor.budgets() if b["scope"] == "role"}
    q = TaskQueue(db)
    try:
        await governor.set_budget("role", "cto", 0.0, known_roles=ROLES)  # the CTO agent waits
        made = await q.enqueue("read the notes and the plan", task_type="claude", role="cto")
        pool = ExecutorPool(org.settings.work, db, {"claude": executor}, concurrency=1, roles=["cto"],
                            gate=UNGOVERNED, backoff=Backoff(initial=0.05, max=0.1),
                            lease_seconds=60)
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)

            async def running() -> bool:
                return (await q.get(made.task_id))["status"] == "running"

            await wait_until(running, timeout=60, interval=0.05)
            await governor.set_budget("role", "cto", before.get("cto") or 5.0, known_roles=ROLES)

            started = page.locator(f"#messages li.run[data-run='run.started'][data-task='{made.task_id}']")
            await started.wait_for(timeout=60_000)
            assert f"run started: cto, task #{made.task_id}, attempt 1, fresh" in (
                await started.text_content() or "")
            doing = f"#doing li[data-task='{made.task_id}'] .line"
            await page.wait_for_function(
                "([sel, want]) => document.querySelector(sel)?.textContent.startsWith(want)",
                arg=[doing, f"cto: Read {work / 'notes.txt'}, turn 1"], timeout=60_000)
            api.release("second")
            await page.wait_for_function(
                "([sel, want]) => document.querySelector(sel)?.textContent.startsWith(want)",
                arg=[doing, f"cto: Read {work / 'plan.txt'}, turn 2"], timeout=60_000)
            shown = await page.locator(doing).text_content() or ""
            async with org.client() as c:  # the page says what the API says
                now = [r for r in (await c.get("/api/v1/runs/now")).json() if r["task_id"] == made.task_id]
            assert [r["line"] for r in now] == [shown]
            api.release("answer")

            async def final() -> bool:
                return (await q.get(made.task_id))["status"] in ("completed", "failed", "dead")

            await wait_until(final, timeout=120, interval=0.05)
            pool.stop()
        row = await q.get(made.task_id)
        assert row["status"] == "completed", row["error"]

        ended = page.locator(f"#messages li.run[data-run='run.ended'][data-task='{made.task_id}']")
        await ended.wait_for(timeout=30_000)
        assert f"attempt 1: ok, ${float(row['cost_usd']):.4f}" in (await ended.text_content() or "")
        await page.locator(f"#tasks tr[data-id='{made.task_id}'] td.desc").click()
        timeline = page.locator(f"#task-timeline[data-status='completed'][data-task='{made.task_id}']")
        await timeline.wait_for(timeout=30_000)
        async with org.client() as c:
            events = (await c.get(f"/api/v1/tasks/{made.task_id}")).json()["events"]
        listed = await timeline.locator(".attempt[data-attempt='1'] li").evaluate_all(
            "els => els.map(e => e.dataset.kind)")
        assert listed == [e["kind"] for e in events] and listed[0] == "init" and listed[-1] == "result"
        text_shown = await timeline.text_content() or ""
        assert f"Read {work / 'notes.txt'}" in text_shown and f"Read {work / 'plan.txt'}" in text_shown
        assert "attempt 1 · fresh · ok" in text_shown and "The notes say 42 and the plan" in text_shown
        await page.wait_for_function(  # finished: its line goes at the next poll
            "(id) => !document.querySelector(`#doing li[data-task='${id}']`)", arg=made.task_id,
            timeout=30_000)
    finally:
        await db.close()
    assert page.errors == []
    await page.context.close()
