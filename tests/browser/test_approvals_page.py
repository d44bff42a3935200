"""The approvals panel in a real Chromium, against a real organisation: a pending
request shows what was asked (the tool's input), and clicking Approve decides it as
"console", which the page then shows."""

from __future__ import annotations

from typing import Any

from echo.db import Database
from echo.work import TaskQueue
from echo.work.approvals import ApprovalStore
from tests.browser.test_dashboard import open_dashboard
from tests.console_org import Console


async def test_approve_a_waiting_tool_call_from_the_page(browser: Any, org: Console) -> None:
    database = await Database.open(org.settings.database, max_size=1)
    try:
        task = await TaskQueue(database).enqueue("push the release", task_type="noop", delay=3600)
        made = await ApprovalStore(database).check_call(
            task_id=task.task_id, role="cto", tool="Bash",
            tool_input={"command": "git push origin release"}, session_id="s-1",
            tool_use_id="toolu_browser", expires_in=600)
        page = await open_dashboard(browser, org)
        item = page.locator(f"#approvals li[data-id='{made.approval.id}'][data-state='pending']")
        await item.wait_for(timeout=30_000)
        assert "git push origin release" in await item.locator(".approval-input").inner_text()
        await item.locator("button[data-action='approve']").click()
        await page.wait_for_selector(
            f"#approvals li[data-id='{made.approval.id}'][data-state='approved']", timeout=30_000)
        decided = await ApprovalStore(database).get(made.approval.id)
        assert (decided.state, decided.decided_by) == ("approved", "console")
        assert "approved by console" in await page.locator(
            f"#approvals li[data-id='{made.approval.id}']").inner_text()
        assert page.errors == []
        await page.context.close()
    finally:
        await database.close()
