"""Node names: one running `echoctl up` per name in an organisation.

Several machines (or state directories) run `up` against one database; each is a
node, named with `--node` (default: the host name). A name is a seat in
`echo_nodes`, renewed by its `up` every `lease_renew_interval`; a second `up` under
a name whose seat is fresh is refused in one line (exit 2), while a seat left by a
dead `up` on the same host is taken at once.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from echo import db
from echo.config import Settings
from echo.errors import StoreUnavailable, UsageError

log = logging.getLogger(__name__)

_Q = db.load_queries("nodes")


@dataclass(frozen=True)
class NodeSeat:
    """A node name held by one running `echoctl up`."""

    name: str
    host: str
    pid: int


async def claim_node(settings: Settings, is_alive: Callable[[int], bool]) -> NodeSeat:
    """Register this `echoctl up` as node `settings.node`; refuse a name in use.

    A name is in use while another `up` renews it (within `lease_seconds`). A seat
    left by a dead `up` on this same host is taken at once (`is_alive` checks its pid).
    """
    seat = NodeSeat(settings.node, socket.gethostname(), os.getpid())
    async with db.connection(settings.database) as conn:
        row = await conn.fetchrow(_Q["node"], seat.name, settings.lease_seconds)
        if row is not None and row["fresh"] and not (
            row["host"] == seat.host and (row["pid"] == seat.pid or not is_alive(row["pid"]))
        ):
            raise UsageError(
                f"node {seat.name!r} is already up (host {row['host']}, pid {row['pid']}, "
                f"state dir {row['state_dir']}); give this one another name with --node NAME"
            )
        seen = row["heartbeat_at"] if row is not None else None
        won = await conn.fetchval(_Q["claim_node"], seat.name, seat.host, seat.pid,
                                  str(settings.state_dir), seen)
    if won is None:
        raise UsageError(f"node {seat.name!r} was just taken by another `echoctl up`; "
                         "give this one another name with --node NAME")
    return seat


async def keep_node(settings: Settings, seat: NodeSeat) -> None:
    """Renew the node's seat until cancelled, then leave it."""
    try:
        while True:
            await anyio.sleep(settings.lease_renew_interval)
            try:
                async with db.connection(settings.database) as conn:
                    await conn.execute(_Q["node_beat"], seat.name, seat.host, seat.pid)
            except StoreUnavailable as exc:
                log.warning("cannot renew node %s: %s", seat.name, exc)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                async with db.connection(settings.database) as conn:
                    await conn.execute(_Q["node_leave"], seat.name, seat.host, seat.pid)
            except StoreUnavailable:
                pass
