"""Several commands in one round trip, with the least client-side work.

redis-py's ``Pipeline`` builds a command stack, per-command response callbacks
and bookkeeping that a session load does not need; on a small session that costs
as much as the round trip itself.  These helpers borrow one pooled connection,
write every command in one packet and read the raw replies.  An error reply
comes back as an exception object in its slot (never raised half-way, so the
connection stays in step); a broken connection is retried the way the client's
own ``Retry`` policy retries a single command.  Sync connections come from a
per-pool lane (below) that skips the pool's per-call bookkeeping.

Only standalone clients have one ``connection_pool``; Redis Cluster will route
per node and is handled where it is added.
"""

from __future__ import annotations

import os
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ResponseError

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # the hiredis extra is optional
    _hiredis_pack = None

Command = Sequence[Any]


class _Lane:
    """Connections this process borrowed from one pool and keeps for the engine.

    ``ConnectionPool.get_connection`` and ``release`` take a lock, poll the
    socket and record metrics on every call: about a fifth of a small session's
    load.  A lane borrows connections through them once and then hands them out
    again from a deque (atomic under the GIL).  They stay in the pool's in-use
    set, so ``MAX_CONNECTIONS`` still bounds them and closing the client still
    closes them.
    """

    __slots__ = ("idle", "pid", "pool")

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self.pid = os.getpid()
        self.idle: deque[redis.connection.ConnectionInterface] = deque()

    def take(self) -> redis.connection.ConnectionInterface:
        if self.pid != os.getpid():
            # A forked child must never write to its parent's sockets.
            self.idle.clear()
            self.pid = os.getpid()
        try:
            return self.idle.pop()
        except IndexError:
            connection: redis.connection.ConnectionInterface = self.pool.get_connection()
            return connection

    def give_back(self, connection: redis.connection.ConnectionInterface) -> None:
        self.idle.append(connection)


_lanes: weakref.WeakKeyDictionary[redis.ConnectionPool, _Lane] = weakref.WeakKeyDictionary()


def _pack(conn: Any, commands: Sequence[Command]) -> list[bytes]:
    if _hiredis_pack is not None:
        # hiredis packs a whole command in C; redis-py's wrapper around it
        # costs several times more per command.
        try:
            return [b"".join([_hiredis_pack(tuple(command)) for command in commands])]
        except TypeError:
            pass  # an argument hiredis does not take: let redis-py encode it
    packed: list[bytes] = conn.pack_commands(commands)
    return packed


def _lane(pool: redis.ConnectionPool) -> _Lane:
    lane = _lanes.get(pool)
    if lane is None:
        lane = _lanes.setdefault(pool, _Lane(pool))
    return lane


def execute(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """The raw replies of ``commands``, sent in one round trip."""
    lane = _lane(client.connection_pool)
    conn: Any = lane.take()
    packed = _pack(conn, commands)

    def send_and_read() -> list[Any]:
        conn.send_packed_command(packed)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as err:
                replies.append(err)
        return replies

    def drop(_error: Exception) -> None:
        conn.disconnect()

    try:
        result: list[Any] = conn.retry.call_with_retry(send_and_read, drop)
    except BaseException:
        # Whatever was cut short (a timeout, an interrupt) may have left a
        # reply unread: never hand out a connection that is out of step.
        conn.disconnect()
        lane.give_back(conn)
        raise
    lane.give_back(conn)
    return result


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
