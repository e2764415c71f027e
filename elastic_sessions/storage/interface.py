"""What an engine asks of its storage (the Redis layout, or the hybrid's two stores)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..client import RequestClient
from ..keys import StorageId
from .redis import DeleteResult, StoredSession, WritePlan, WriteResult


class SessionStorage(Protocol):
    """Sync and async twins; outages raise ``SessionStoreUnavailable``."""

    def load(
        self, sid: StorageId, touch_interval_ms: int, client: RequestClient | None = None
    ) -> StoredSession | None: ...

    async def aload(
        self, sid: StorageId, touch_interval_ms: int, client: RequestClient | None = None
    ) -> StoredSession | None: ...

    def write(self, sid: StorageId, plan: WritePlan) -> WriteResult: ...

    async def awrite(self, sid: StorageId, plan: WritePlan) -> WriteResult: ...

    def delete(self, sid: StorageId, expected_owner: str | None = None) -> DeleteResult: ...

    async def adelete(self, sid: StorageId, expected_owner: str | None = None) -> DeleteResult: ...

    def exists(self, sid: StorageId) -> bool: ...

    async def aexists(self, sid: StorageId) -> bool: ...

    def update_index(
        self, user_id: str, add: StorageId | None, deadline: int, remove: Sequence[StorageId] = ()
    ) -> int: ...

    async def aupdate_index(
        self, user_id: str, add: StorageId | None, deadline: int, remove: Sequence[StorageId] = ()
    ) -> int: ...
