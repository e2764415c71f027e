"""Count network round trips of the package's Redis clients.

Every request redis-py writes (one command, or a whole pipeline) goes through
``send_packed_command`` once; counting those calls counts round trips.  Nothing
is replaced: the real method still runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio.connection
import redis.connection


class RoundTrips:
    def __init__(self) -> None:
        self.count = 0


@contextmanager
def count_round_trips() -> Iterator[RoundTrips]:
    counter = RoundTrips()
    sync_original = redis.connection.AbstractConnection.send_packed_command
    async_original = redis.asyncio.connection.AbstractConnection.send_packed_command

    def sync_send(self: Any, command: Any, check_health: bool = True) -> None:
        counter.count += 1
        sync_original(self, command, check_health)

    async def async_send(self: Any, command: Any, check_health: bool = True) -> None:
        counter.count += 1
        await async_original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = sync_send  # type: ignore[method-assign]
    redis.asyncio.connection.AbstractConnection.send_packed_command = async_send  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        redis.connection.AbstractConnection.send_packed_command = sync_original  # type: ignore[method-assign]
        redis.asyncio.connection.AbstractConnection.send_packed_command = async_original  # type: ignore[method-assign]
