"""What every listing shares: text cut at a word, role names never cut."""

from __future__ import annotations

from rich.console import Console

from echo.commands._common import clip, plain_table, role_column


def test_clip_cuts_at_a_word_and_keeps_one_line() -> None:
    assert clip("short", 10) == "short"
    assert clip("one two\nthree", 50) == "one two three"
    cut = clip("the budget impact is to be discussed next week", 24)
    assert cut == "the budget impact is to…" and len(cut) <= 24
    assert clip("x" * 30, 10) == "x" * 9 + "…"


def test_a_role_column_is_never_cut_at_80_columns() -> None:
    console = Console(width=80, record=True)
    table = plain_table()
    role_column(table, "role", ["senior_architect", "product_manager"])
    table.add_column("said")
    table.add_row("senior_architect", "word " * 40)
    table.add_row("product_manager", "word " * 40)
    console.print(table)
    text = console.export_text()
    assert "senior_architect" in text and "product_manager" in text
    assert max(len(line) for line in text.splitlines()) <= 80
