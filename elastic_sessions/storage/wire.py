"""Several commands in one round trip, with the least client-side work.

redis-py's ``Pipeline`` builds a command stack, per-command response callbacks
and bookkeeping that a session load does not need; on a small session that costs
as much as the round trip itself.  These helpers borrow one pooled connection,
write every command in one packet and read the raw replies.  An error reply
comes back as an exception object in its slot (never raised half-way, so the
connection stays in step); a broken connection is retried the way the client's
own ``Retry`` policy retries a single command.

Only standalone clients have one ``connection_pool``; Redis Cluster will route
per node and is handled where it is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ResponseError

Command = Sequence[Any]


def execute(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """The raw replies of ``commands``, sent in one round trip."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        packed = conn.pack_commands(commands)  # type: ignore[no-untyped-call]

        def send_and_read() -> list[Any]:
            conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as err:
                    replies.append(err)
            return replies

        def drop(_error: Exception) -> None:
            conn.disconnect()  # type: ignore[no-untyped-call]

        result: list[Any] = conn.retry.call_with_retry(send_and_read, drop)
        return result
    finally:
        pool.release(conn)


async def aexecute(client: redis.asyncio.Redis, commands: Sequence[Command]) -> list[Any]:
    """The async twin of :func:`execute`."""
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        packed = conn.pack_commands(commands)

        async def send_and_read() -> list[Any]:
            await conn.send_packed_command(packed)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as err:
                    replies.append(err)
            return replies

        async def drop(_error: Exception) -> None:
            await conn.disconnect()

        result: list[Any] = await conn.retry.call_with_retry(send_and_read, drop)
        return result
    finally:
        await pool.release(conn)


def first_error(replies: list[Any]) -> list[Any]:
    """``replies``, unless one is an error: then that error is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
