"""`echoctl broadcast` and `echoctl messages`, run as a user would: a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from echo import db as dbmod
from echo.config import Settings
from echo.embedded import free_port
from tests.helpers import run_cli
from tests.integration.bus.conftest import RawRedis


async def count_messages(db: dbmod.Database) -> int:
    async with db.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM messages"))


async def test_broadcast_reports_db_id_and_redis_receivers(
    settings: Settings, db: dbmod.Database, raw_redis: RawRedis
) -> None:
    out = await run_cli(settings, "broadcast", "Quarterly plan", "--body", "details",
                        "--from", "ceo", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["receivers"] == 1 and result["published"] and result["channel"] == "messages:all"
    _, payload = await raw_redis.next()
    assert payload["db_id"] == result["db_id"] and payload["from_role"] == "ceo"

    direct = await run_cli(settings, "broadcast", "Just you", "--to", "cto")
    assert direct.returncode == 0 and "messages:cto" in direct.stdout
    assert "Redis reached 1 subscriber(s)" in direct.stdout  # the raw pattern subscriber

    listed = await run_cli(settings, "messages", "--role", "cto", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["subject"] for r in rows] == ["Quarterly plan", "Just you"]
    assert rows[0]["body"] == {"text": "details"}
    since = await run_cli(settings, "messages", "--since", str(result["db_id"]))
    assert "Just you" in since.stdout and "Quarterly" not in since.stdout


async def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    settings: Settings, db: dbmod.Database, tmp_path: Path
) -> None:
    big = tmp_path / "big.txt"
    big.write_text("x" * (settings.max_body_bytes + 1))
    nul = tmp_path / "nul.txt"
    nul.write_text("a\x00b")  # argv cannot carry NUL; a file can
    cases = [
        (["broadcast", "hi", "--to", "janitor"], "unknown role"),
        (["broadcast", "hi", "--from", "Nobody"], "unknown role"),
        (["broadcast", "   "], "subject is empty"),
        (["broadcast", "hi", "--body-file", str(big)], "max_body_bytes"),
        (["broadcast", "hi", "--body-file", str(nul)], "NUL"),
        (["broadcast", "hi", "--body", "x", "--body-file", str(nul)], "not both"),
        (["messages", "--role", "janitor"], "unknown role"),
    ]
    for args, fragment in cases:
        out = await run_cli(settings, *args)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, out.stderr)
    assert await count_messages(db) == 0


async def test_unreachable_database_and_redis(settings: Settings, db: dbmod.Database) -> None:
    down = await run_cli(
        settings, "broadcast", "hi",
        ECHO_DATABASE_URL="postgresql://u:sekret@127.0.0.1:1/x", ECHO_CONNECT_TIMEOUT="1",
    )
    assert down.returncode == 1
    assert len(down.stderr.strip().splitlines()) == 1 and "unavailable" in down.stderr
    assert "sekret" not in down.stderr

    no_redis = await run_cli(settings, "broadcast", "stored anyway",
                             ECHO_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert no_redis.returncode == 0, no_redis.stderr
    assert "Redis is unavailable" in no_redis.stdout and "relay" in no_redis.stdout
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT published_at IS NULL FROM messages") is True
