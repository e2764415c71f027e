"""Several commands in one round trip, with the least client-side work.

redis-py's ``Pipeline`` builds a command stack, per-command response callbacks
and bookkeeping that a session load does not need; on a small session that costs
as much as the round trip itself.  These helpers borrow one pooled connection,
write every command in one packet and read the raw replies.  An error reply
comes back as an exception object in its slot (never raised half-way, so the
connection stays in step); a broken connection is retried the way the client's
own ``Retry`` policy retries a single command.  Sync connections come from a
per-pool lane (below) that skips the pool's per-call bookkeeping.

Only standalone (and Sentinel) clients have one ``connection_pool``.  On Redis
Cluster the commands go through redis-py's cluster pipeline, which groups them
per node and follows MOVED and ASK redirections; a "later" send is then sent
and read at once.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ClusterDownError, ResponseError

from ..connection import is_cluster

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
    again from a deque (atomic under the GIL; an asyncio pool belongs to one
    loop).  They stay in the pool's in-use set, so ``MAX_CONNECTIONS`` still
    bounds them and closing the client still closes them.
    """

    __slots__ = ("__weakref__", "idle", "pid", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.pid = os.getpid()
        self.idle: deque[Any] = deque()

    def take_idle(self) -> Any:
        """An idle connection, or None when the caller must borrow a new one."""
        if self.pid != os.getpid():
            # A forked child must never write to its parent's sockets.
            self.idle.clear()
            self.pid = os.getpid()
        return self.idle.pop() if self.idle else None

    def take(self) -> Any:
        return self.take_idle() or self.pool.get_connection()

    async def atake(self) -> Any:
        return self.take_idle() or await self.pool.get_connection()

    def give_back(self, connection: Any) -> None:
        self.idle.append(connection)


_lanes: weakref.WeakKeyDictionary[Any, _Lane] = weakref.WeakKeyDictionary()


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


def _connect(conn: Any) -> None:
    # redis-py's send path reconnects a closed connection itself, bypassing a
    # subclass's connect(): a Sentinel-managed connection would dial the dead
    # primary again instead of asking the sentinels where the primary is now.
    if conn._sock is None:
        conn.connect()


async def _aconnect(conn: Any) -> None:
    if not conn.is_connected:
        await conn.connect()


def _lane(pool: Any) -> _Lane:
    lane = _lanes.get(pool)
    if lane is None:
        lane = _lanes.setdefault(pool, _Lane(pool))
    return lane


# On a lane connection: (replies not read yet, the socket they will arrive on).
_UNREAD = "_elastic_sessions_unread"


def _drain(conn: Any) -> None:
    """Read (and drop) the replies of commands sent by :func:`send_later`."""
    count, sock = getattr(conn, _UNREAD, (0, None))
    if not count:
        return
    setattr(conn, _UNREAD, (0, None))
    if sock is not conn._sock:
        return  # reconnected since: those replies went with the old socket
    for _ in range(count):
        # A refused touch changes nothing; the next due load sends another.
        with contextlib.suppress(ResponseError):
            conn.read_response()


def send_later(client: redis.Redis, commands: Sequence[Command]) -> None:
    """Send ``commands`` now and read their replies before the connection's next use.

    For writes whose outcome the request does not wait for (a throttled touch):
    they cost a send, not a round trip.  A connection error drops them.
    """
    if is_cluster(client):
        _cluster_execute(client, commands)  # errors stay in the replies, as _drain drops them
        return
    lane = _lane(client.connection_pool)
    conn: Any = lane.take()
    try:
        _connect(conn)
        _drain(conn)
        conn.send_packed_command(_pack(conn, commands), check_health=False)
        setattr(conn, _UNREAD, (len(commands), conn._sock))
    except redis.exceptions.RedisError:
        conn.disconnect()
    except BaseException:
        conn.disconnect()
        lane.give_back(conn)
        raise
    lane.give_back(conn)


def _script_key(command: Command) -> Any:
    # EVAL/EVALSHA script numkeys key ...: every script of ours names one key.
    name = command[0]
    if isinstance(name, str) and name.upper() in {"EVAL", "EVALSHA"} and int(command[2]):
        return command[3]
    return None


def _cluster_pipeline(client: Any, commands: Sequence[Command]) -> Any:
    """A (sync or async) cluster pipeline holding ``commands``, not sent yet."""
    pipe = client.pipeline()
    for command in commands:
        key = _script_key(command)
        if key is None:
            pipe.execute_command(*command)
        else:
            # Named, or redis-py asks a node COMMAND GETKEYS (with the whole
            # script) to find the key of each EVAL: one extra request per script.
            pipe.execute_command(*command, target_nodes=client.get_node_from_key(key))
    return pipe


def _cluster_execute(client: Any, commands: Sequence[Command]) -> list[Any]:
    replies = _cluster_pipeline(client, commands).execute(raise_on_error=False)
    for index in _refused_while_healing(replies):
        # The client's single-command path waits, reloads the slot map and
        # retries (RETRIES times), as it does for any command of its own.
        try:
            replies[index] = client.execute_command(*commands[index])
        except ResponseError as err:
            replies[index] = err
    return _raise_outages(replies)


async def _acluster_execute(client: Any, commands: Sequence[Command]) -> list[Any]:
    await client.initialize()  # loads the slot map once; then returns at once
    replies = await _cluster_pipeline(client, commands).execute(raise_on_error=False)
    for index in _refused_while_healing(replies):
        try:
            replies[index] = await client.execute_command(*commands[index])
        except ResponseError as err:
            replies[index] = err
    return _raise_outages(replies)


def _refused_while_healing(replies: list[Any]) -> list[int]:
    # A node answers CLUSTERDOWN for a moment while the cluster changes shape
    # (seen just after a CLUSTER FAILOVER).  The command was refused, not run,
    # so sending it again is safe; redis-py's cluster pipeline resends MOVED,
    # ASK and TRYAGAIN replies but leaves this one in its slot.
    return [index for index, reply in enumerate(replies) if isinstance(reply, ClusterDownError)]


def _raise_outages(replies: list[Any]) -> list[Any]:
    # The cluster pipeline leaves a command whose retries all failed (a timeout,
    # a lost connection) in its slot; like the lane path, raise those and leave
    # only error *replies* (ResponseError) to the caller.
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
            raise reply
    return replies


def execute(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """The raw replies of ``commands``, sent in one round trip (one per node on a Cluster)."""
    if is_cluster(client):
        return _cluster_execute(client, commands)
    lane = _lane(client.connection_pool)
    conn: Any = lane.take()
    packed = _pack(conn, commands)

    def send_and_read() -> list[Any]:
        _connect(conn)
        _drain(conn)
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


async def _adrain(conn: Any) -> None:
    count, reader = getattr(conn, _UNREAD, (0, None))
    if not count:
        return
    setattr(conn, _UNREAD, (0, None))
    if reader is not conn._reader:
        return
    for _ in range(count):
        with contextlib.suppress(ResponseError):
            await conn.read_response()


async def asend_later(client: redis.asyncio.Redis, commands: Sequence[Command]) -> None:
    """The async twin of :func:`send_later`."""
    if is_cluster(client):
        await _acluster_execute(client, commands)
        return
    lane = _lane(client.connection_pool)
    conn = await lane.atake()
    try:
        await _aconnect(conn)
        await _adrain(conn)
        await conn.send_packed_command(_pack(conn, commands), check_health=False)
        setattr(conn, _UNREAD, (len(commands), conn._reader))
    except redis.exceptions.RedisError:
        await conn.disconnect()
    except BaseException:
        await conn.disconnect()
        lane.give_back(conn)
        raise
    lane.give_back(conn)


async def aexecute(client: redis.asyncio.Redis, commands: Sequence[Command]) -> list[Any]:
    """The async twin of :func:`execute`."""
    if is_cluster(client):
        return await _acluster_execute(client, commands)
    lane = _lane(client.connection_pool)
    conn = await lane.atake()
    packed = _pack(conn, commands)

    async def send_and_read() -> list[Any]:
        await _aconnect(conn)
        await _adrain(conn)
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

    try:
        result: list[Any] = await conn.retry.call_with_retry(send_and_read, drop)
    except BaseException:
        await conn.disconnect()
        lane.give_back(conn)
        raise
    lane.give_back(conn)
    return result


def first_error(replies: list[Any]) -> list[Any]:
    """``replies``, unless one is an error: then that error is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
