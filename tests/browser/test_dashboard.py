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

from echo.org.state import read_org
from tests.console_org import Console
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
