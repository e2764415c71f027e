"""What every elastic engine shares: change tracking, expiry policy, the contract.

The engine keeps, per instance, the fields exactly as they were stored.  A save
encodes again every value that was read or set (a value never read cannot have
changed) and sends only the fields whose bytes differ, plus deletes for keys that
are gone; so two requests that change different keys of one session both keep
their change, and an in-place mutation is caught as soon as the session is saved.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from django.apps import apps
from django.conf import settings
from django.contrib.auth import SESSION_KEY as USER_ID_KEY
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from ..binding import BINDING_KEY, binding_mismatch
from ..client import RequestClient
from ..codec import Encoded, SessionMeta, codec_for, field_variants, key_of_field
from ..conf import elastic_settings
from ..encryption import open_fields, seal_fields
from ..exceptions import CorruptSessionData, SessionStoreUnavailable
from ..keys import SESSION_KEY_LENGTH, StorageId, is_valid_session_key, storage_id
from ..session_data import SessionData, session_data_from_fields
from ..signals import session_created, session_rotated
from ..storage.interface import SessionStorage
from ..storage.redis import (
    IndexChange,
    StoredSession,
    WritePlan,
    WriteResult,
    estimated_deadline,
)

logger = logging.getLogger(__name__)
_binding_logger = logging.getLogger("django.security.SessionBindingMismatch")

# A 32-character key from 36 symbols collides about never; the bound only stops
# a broken store from looping forever.
_CREATE_ATTEMPTS = 100

_UNSET: Any = object()
# Where Django's login() value (the user id) can be stored.
_OWNER_FIELDS = field_variants(USER_ID_KEY)
# Reserved session key: the latest absolute deadline (epoch seconds) a write may
# leave.  Set at a staff login (policies.py); it lowers the deadline, never raises it.
DEADLINE_CAP_KEY = "_elastic_deadline_cap"

# Random bytes to key characters: 252 = 7 * 36, so bytes below it map uniformly
# and the four above are dropped (Django's get_random_string costs 40x more).
_BYTE_TO_KEY_CHAR = bytes(ord(VALID_KEY_CHARS[byte % 36]) for byte in range(256))
_UNEVEN_BYTES = bytes(range(252, 256))
assert len(VALID_KEY_CHARS) == 36


def new_session_key() -> str:
    """32 characters from ``[a-z0-9]``, from the OS's secure random source."""
    while True:
        chars = secrets.token_bytes(SESSION_KEY_LENGTH + 8).translate(
            _BYTE_TO_KEY_CHAR, _UNEVEN_BYTES
        )
        if len(chars) >= SESSION_KEY_LENGTH:
            return chars[:SESSION_KEY_LENGTH].decode("ascii")


def require_app_installed() -> None:
    """Engines import this check: without the app there are no checks or commands."""
    if not apps.is_installed("elastic_sessions"):
        raise ImproperlyConfigured(
            f"SESSION_ENGINE is {settings.SESSION_ENGINE!r} but 'elastic_sessions' "
            "is not in INSTALLED_APPS. Add it, so its system checks, admin views "
            "and management commands are available."
        )


def expiry_policy(expiry: object, default_idle: int) -> tuple[int, int]:
    """``(idle seconds, fixed expiry epoch)`` for a ``_session_expiry`` value.

    Follows ``set_expiry``: None or 0 use the global age (0 also means a
    browser-session cookie), an int is a sliding idle timeout, a datetime or ISO
    string is a fixed moment.  A non-positive result means "already expired".
    """
    if isinstance(expiry, str):
        expiry = datetime.fromisoformat(expiry)
    if isinstance(expiry, datetime):
        return 0, int(expiry.timestamp())
    if not expiry:
        return default_idle, 0
    if isinstance(expiry, int):
        return expiry, 0
    raise TypeError(f"Unsupported _session_expiry value: {expiry!r}")


def is_expired(idle: int, fixed_expiry: int, now: float) -> bool:
    """True when a save under this policy must delete instead (age <= 0)."""
    return fixed_expiry <= now if fixed_expiry else idle <= 0


def deadline_cap(data: dict[str, Any] | None) -> int:
    """The deadline cap ``data`` holds (epoch seconds; see ``DEADLINE_CAP_KEY``), or 0."""
    value = data.get(DEADLINE_CAP_KEY) if data else None
    return value if type(value) is int and value > 0 else 0


def sealed(sid: StorageId, plan: WritePlan) -> WritePlan:
    """``plan`` as stored: values encrypted when ENCRYPTION_KEYS is set, and the
    clear fields they replace deleted in the same write."""
    sets, replaced = seal_fields(sid, plan.sets)
    if not replaced:
        return plan
    deletes = [name for name in plan.deletes if name not in sets]
    deletes += [name for name in replaced if name not in sets]
    return replace(plan, sets=sets, deletes=deletes)


class ElasticSessionBase(SessionBase):
    """Django's ``SessionBase`` over a storage (see ``storage.interface.SessionStorage``)."""

    storage: ClassVar[SessionStorage]

    if TYPE_CHECKING:  # Django's private helpers, which django-stubs does not declare
        _session: dict[str, Any]
        _session_cache: dict[str, Any]

        def _get_session(self, no_load: bool = False) -> dict[str, Any]: ...

        async def _aget_session(self, no_load: bool = False) -> dict[str, Any]: ...

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._codec = codec_for(self.serializer)
        self._sid_cache: tuple[str, StorageId] | None = None
        self._stored_fields: dict[bytes, bytes] = {}
        self._meta: SessionMeta | None = None
        self._touched_ttl: int | None = None
        self._store_error: SessionStoreUnavailable | None = None
        # Set only by import_session(): the fixed end of a session moved here.
        self._import_expiry: int | None = None
        # Stored fields to encrypt again on the next write (encryption.py).
        self._stale_fields: frozenset[bytes] = frozenset()
        # The key the request came with, to tell whether a login rotated it.
        self.initial_key: str | None = self.session_key
        # The request's IP address and user agent, set by the middleware; stored
        # with the session for the admin and the "your sessions" page.
        self.client: RequestClient | None = None

    # -- keys ---------------------------------------------------------------
    def _validate_session_key(self, key: object) -> bool:
        # Stricter than Django's "8 characters or more": only keys of the shape
        # we issue may reach the store; anything else starts a fresh session.
        return is_valid_session_key(key)

    def _get_new_session_key(self) -> str:
        # No EXISTS round trip: creation is atomic and retries on a collision.
        return new_session_key()

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    @property
    def storage_id(self) -> StorageId | None:
        """The id this session is stored under, or None before it has a key."""
        key = self.session_key
        if not key:
            return None
        cached = self._sid_cache
        if cached is None or cached[0] != key:
            cached = self._sid_cache = (key, storage_id(key))
        return cached[1]

    @property
    def store_unavailable(self) -> SessionStoreUnavailable | None:
        """The outage this instance ran into, if any (read by the middleware)."""
        return self._store_error

    @property
    def touched_expiry_age(self) -> int | None:
        """Seconds left after the load slid the expiry, or None if it did not."""
        return self._touched_ttl

    def _touch_interval_ms(self) -> int:
        return elastic_settings.TOUCH_INTERVAL * 1000

    def _unavailable(self, err: SessionStoreUnavailable) -> SessionStoreUnavailable:
        self._store_error = err
        return err

    # -- load ---------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        if self._store_error is not None:
            raise self._store_error
        sid = self.storage_id
        if sid is None:  # no key, or a malformed one: no session, as Django's engines
            return {}
        try:
            stored = self.storage.load(sid, self._touch_interval_ms(), self.client)
        except SessionStoreUnavailable as err:
            raise self._unavailable(err) from err.__cause__
        except CorruptSessionData as err:
            return self._discard_corrupt(err)
        data = self._accept_loaded(stored)
        reason = self._binding_mismatch(data)
        if reason is None:
            return data
        self._delete_sid(sid)
        return self._unbind(sid, reason)

    async def aload(self) -> dict[str, Any]:
        if self._store_error is not None:
            raise self._store_error
        sid = self.storage_id
        if sid is None:
            return {}
        try:
            stored = await self.storage.aload(sid, self._touch_interval_ms(), self.client)
        except SessionStoreUnavailable as err:
            raise self._unavailable(err) from err.__cause__
        except CorruptSessionData as err:
            return self._discard_corrupt(err)
        data = self._accept_loaded(stored)
        reason = self._binding_mismatch(data)
        if reason is None:
            return data
        await self._adelete_sid(sid)
        return self._unbind(sid, reason)

    def _accept_loaded(self, stored: StoredSession | None) -> dict[str, Any]:
        if stored is None:
            # Unknown or expired: never adopt the client's key (fixation).
            self._session_key = None
            return {}
        label = str(self.storage_id)
        # Encrypted values are opened here, once: everything after works in the clear.
        opened = open_fields(label, stored.fields)
        try:
            data = session_data_from_fields(opened.fields, self._codec, label)
        except CorruptSessionData as err:
            return self._discard_corrupt(err)
        self._stored_fields = opened.fields
        self._stale_fields = opened.stale
        self._meta = stored.meta
        self._touched_ttl = stored.touched_ttl_ms // 1000 if stored.touched_ttl_ms >= 0 else None
        return data

    def _discard_corrupt(self, err: CorruptSessionData) -> dict[str, Any]:
        logger.warning(
            "Discarded unreadable session %s (%s); the request continues with a new, "
            "empty session.",
            self.storage_id,
            err,
        )
        self._session_key = None
        self._stored_fields = {}
        self._stale_fields = frozenset()
        self._meta = None
        return {}

    # -- binding (BIND_USER_AGENT, BIND_IPV4/6_PREFIX; see binding.py) ---------
    def _binding_mismatch(self, data: dict[str, Any]) -> str | None:
        """What of this request's client differs from the session's binding, if
        anything (no client known, as outside the middleware: nothing checked)."""
        if self.client is None or self.session_key is None or BINDING_KEY not in data:
            return None
        return binding_mismatch(data.get(BINDING_KEY), self.client)

    def _unbind(self, sid: StorageId, reason: str) -> dict[str, Any]:
        # The session was deleted (index entry included): a replayed cookie is
        # dead for its rightful owner too, who signs in again.
        _binding_logger.warning(
            "Ended session %s: used from another %s than it signed in from; the request "
            "continues with a new, empty session.",
            sid,
            reason,
        )
        self._session_key = None
        self._touched_ttl = None
        return {}

    # -- items ----------------------------------------------------------------
    # Django's setdefault tests `key in` and then reads the key; a large value
    # found undecodable between the two would raise KeyError out of a view.
    def setdefault(self, key: str, value: Any) -> Any:  # type: ignore[override]
        data = self._session
        current = data.get(key, _UNSET)
        if current is not _UNSET:
            return current
        self.modified = True
        data[key] = value
        return value

    async def asetdefault(self, key: str, value: Any) -> Any:
        data = await self._aget_session()
        current = data.get(key, _UNSET)
        if current is not _UNSET:
            return current
        self.modified = True
        data[key] = value
        return value

    # -- expiry -------------------------------------------------------------
    def _deadline_left(self) -> int | None:
        # A cap set this request is not written yet when Django's middleware
        # computes the cookie's Max-Age (before the save): apply it here too.
        cap = deadline_cap(getattr(self, "_session_cache", None))
        deadline = self._meta.deadline if self._meta is not None else 0
        if cap and (not deadline or cap < deadline):
            deadline = cap
        return deadline - int(time.time()) if deadline else None

    def get_expiry_age(self, **kwargs: Any) -> int:
        """Django's age, never past the absolute deadline of this session."""
        age: int = super().get_expiry_age(**kwargs)
        left = self._deadline_left()
        return age if left is None else min(age, left)

    async def aget_expiry_age(self, **kwargs: Any) -> int:
        age: int = await super().aget_expiry_age(**kwargs)
        left = self._deadline_left()
        return age if left is None else min(age, left)

    def get_expiry_date(self, **kwargs: Any) -> datetime:
        """Django's date, never past the absolute deadline of this session."""
        return self._cap_date(super().get_expiry_date(**kwargs))

    async def aget_expiry_date(self, **kwargs: Any) -> datetime:
        return self._cap_date(await super().aget_expiry_date(**kwargs))

    def _cap_date(self, date: datetime) -> datetime:
        left = self._deadline_left()
        return date if left is None else min(date, timezone.now() + timedelta(seconds=left))

    # -- save ---------------------------------------------------------------
    def _owner(self, fields: dict[bytes, bytes]) -> str | None:
        for name in _OWNER_FIELDS:
            if name in fields:
                _, value = self._codec.decode_item(name, fields[name])
                return str(value)
        return None

    def _changed_fields(
        self, data: dict[str, Any], before: dict[bytes, bytes]
    ) -> dict[bytes, bytes]:
        encode = self._codec.encode_item
        # An immutable value that is still the object the load produced is
        # stored as it was (unless this write creates the hash from scratch).
        same = data.loaded_immutables if before and isinstance(data, SessionData) else {}
        sets: dict[bytes, bytes] = {}
        for key, value in dict.items(data):
            if type(value) is Encoded:  # never read, so unchanged: reuse the bytes
                name, raw = value.field, value.raw
            elif same.get(key, _UNSET) is value:
                continue
            else:
                name, raw = encode(key, value)
            if before.get(name) != raw:
                sets[name] = raw
        return sets

    def _plan(
        self, data: dict[str, Any], must_create: bool, idle: int, fixed: int
    ) -> WritePlan | None:
        """The write that brings the store to ``data``; None when nothing changed."""
        before = {} if must_create else self._stored_fields
        sets = self._changed_fields(data, before)
        gone = {key for key in map(key_of_field, before) if key not in data}
        deletes = [variant for key in sorted(gone) for variant in field_variants(key)]
        for name in sets if before else ():
            # A key is stored under one field name at a time: drop its others.
            deletes += [other for other in field_variants(key_of_field(name)) if other != name]
        if not (must_create or sets or deletes):
            return None
        for name in self._stale_fields & before.keys():
            # Written anyway: re-encrypt, with the first key, what was stored
            # in the clear or under an older key (lazy rotation).
            if name not in sets and key_of_field(name) in data:
                sets[name] = before[name]
                deletes += [other for other in field_variants(key_of_field(name)) if other != name]
        old_owner = self._owner(before)
        new_user = data.get(USER_ID_KEY)
        new_owner = None if new_user is None else str(new_user)
        index = None
        cap = deadline_cap(data)
        if old_owner != new_owner:
            deadline = (
                self._meta.deadline
                if self._meta is not None
                else estimated_deadline(elastic_settings.ABSOLUTE_TIMEOUT)
            )
            deadline = min(deadline, cap) if cap else deadline
            index = IndexChange(add_user=new_owner, remove_user=old_owner, deadline=deadline)
        now = int(time.time())
        return WritePlan(
            create=must_create,
            idle=idle,
            absolute=elastic_settings.ABSOLUTE_TIMEOUT,
            fixed_expiry=fixed,
            sets=sets,
            deletes=deletes,
            index=index,
            # cycle_key creates from a loaded session: keep its created/deadline.
            inherited_meta=self._meta if must_create else None,
            client=self.client.stamp(now) if self.client is not None else None,
            expires_hint=self._expires_hint(must_create, idle, fixed, now, cap),
            deadline_cap=cap,
        )

    def _expires_hint(self, must_create: bool, idle: int, fixed: int, now: int, cap: int) -> int:
        """When the session ends after this save, as the store will compute it."""
        meta = self._meta  # on create: the session cycle_key replaces, if any
        end = meta.deadline if meta is not None else now + elastic_settings.ABSOLUTE_TIMEOUT
        if cap:
            end = min(end, cap)
        if fixed:
            end = min(end, fixed)
        if idle > 0:
            end = min(end, now + idle)
        return end

    def _apply_write(self, plan: WritePlan, result: WriteResult) -> None:
        if result.status == 0:
            raise CreateError
        if result.status == -1:
            raise UpdateError
        if result.status == -2:
            # The fixed expiry passed between planning and writing.
            self._stored_fields, self._meta = {}, None
            return
        stored = {} if plan.create else self._stored_fields
        for name in plan.deletes:
            stored.pop(name, None)
        stored.update(plan.sets)
        self._stored_fields = stored
        self._stale_fields -= plan.sets.keys()
        self._meta = result.meta

    def _expiry(self, data: dict[str, Any]) -> tuple[int, int]:
        if self._import_expiry is not None:
            return 0, self._import_expiry
        return expiry_policy(data.get("_session_expiry"), self.get_session_cookie_age())

    # -- moving sessions in from another engine ------------------------------
    @classmethod
    def import_session(cls, session_key: str, data: dict[str, Any], expires_at: int) -> bool:
        """Create ``session_key`` holding ``data``, ending at ``expires_at`` (epoch
        seconds, fixed), unless the key exists already; True if created.

        For moving sessions from another engine under their existing cookie
        (``migrate_sessions_elastic``): a load would refuse a key this store does
        not know (session fixation protection), so the data is set directly.
        The first save on this engine applies the site's usual expiry policy.
        """
        store = cls(session_key)
        if store.session_key != session_key:
            raise ValueError("Not a session key this engine accepts.")
        store._session_cache = dict(data)
        store._import_expiry = expires_at
        try:
            store.save(must_create=True)
        except CreateError:
            return False
        return True

    def _drop_if_corrupt(self, must_create: bool) -> None:
        # A large value found undecodable after the load emptied the session:
        # like a failed load, the data goes on under a new key.  (Nothing to do
        # when the session was never loaded, or when this save creates a key.)
        data = getattr(self, "_session_cache", None)
        if isinstance(data, SessionData) and data.corruption is not None:
            data.corruption = None
            self._stored_fields, self._meta = {}, None
            if not must_create:
                self._session_key = None

    def save(self, must_create: bool = False) -> None:
        self._drop_if_corrupt(must_create)
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        sid = self.storage_id
        assert sid is not None
        idle, fixed = self._expiry(data)
        if is_expired(idle, fixed, time.time()):
            # Django's contract: a non-positive expiry age ends the session.
            return None if must_create else self._delete_sid(sid)
        plan = self._plan(data, must_create, idle, fixed)
        if plan is None:
            return None
        try:
            result = self.storage.write(sid, sealed(sid, plan))
        except SessionStoreUnavailable as err:
            raise self._unavailable(err) from err.__cause__
        self._apply_write(plan, result)
        if isinstance(data, SessionData):
            # What is stored now is what was written: "as loaded" no longer says
            # anything about it (a key may be set back to its loaded object).
            data.loaded_immutables = {}
        return None

    async def asave(self, must_create: bool = False) -> None:
        self._drop_if_corrupt(must_create)
        if self.session_key is None:
            return await self.acreate()
        data = await self._aget_session(no_load=must_create)
        sid = self.storage_id
        assert sid is not None
        idle, fixed = self._expiry(data)
        if is_expired(idle, fixed, time.time()):
            return None if must_create else await self._adelete_sid(sid)
        plan = self._plan(data, must_create, idle, fixed)
        if plan is None:
            return None
        try:
            result = await self.storage.awrite(sid, sealed(sid, plan))
        except SessionStoreUnavailable as err:
            raise self._unavailable(err) from err.__cause__
        self._apply_write(plan, result)
        if isinstance(data, SessionData):
            # What is stored now is what was written: "as loaded" no longer says
            # anything about it (a key may be set back to its loaded object).
            data.loaded_immutables = {}
        return None

    # -- create -------------------------------------------------------------
    def create(self) -> None:
        for _ in range(_CREATE_ATTEMPTS):
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            session_created.send(type(self), storage_id=self.storage_id)
            return
        raise RuntimeError("Could not create a session with a unique key.")

    async def acreate(self) -> None:
        for _ in range(_CREATE_ATTEMPTS):
            self._session_key = await self._aget_new_session_key()
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            await session_created.asend(type(self), storage_id=self.storage_id)
            return
        raise RuntimeError("Could not create a session with a unique key.")

    # -- exists / delete ----------------------------------------------------
    def exists(self, session_key: str | None) -> bool:
        if not is_valid_session_key(session_key):
            return False
        assert session_key is not None
        return self.storage.exists(storage_id(session_key))

    async def aexists(self, session_key: str | None) -> bool:
        if not is_valid_session_key(session_key):
            return False
        assert session_key is not None
        return await self.storage.aexists(storage_id(session_key))

    def _key_to_delete(self, session_key: str | None) -> StorageId | None:
        key = self.session_key if session_key is None else session_key
        return storage_id(key) if is_valid_session_key(key) else None  # type: ignore[arg-type]

    def delete(self, session_key: str | None = None) -> None:
        sid = self._key_to_delete(session_key)
        if sid is not None:
            self._delete_sid(sid)

    async def adelete(self, session_key: str | None = None) -> None:
        sid = self._key_to_delete(session_key)
        if sid is not None:
            await self._adelete_sid(sid)

    def _forget_if_own(self, sid: StorageId) -> None:
        # After deleting its own session (flush, logout) the next save creates a
        # new one: it must not inherit the old creation time and deadline.
        if sid == self.storage_id:
            self._stored_fields, self._meta = {}, None

    def _known_owner(self, sid: StorageId) -> str | None:
        """The owner of ``sid`` as this instance loaded it (None: not known)."""
        return self._owner(self._stored_fields) if sid == self.storage_id else None

    # The index entry is removed in the delete's round trip when the owner is
    # known; when the store names another owner (a user switch elsewhere), that
    # user's index is fixed in one more.
    def _delete_sid(self, sid: StorageId, expected_owner: str | None = None) -> None:
        expected_owner = expected_owner or self._known_owner(sid)
        self._forget_if_own(sid)
        try:
            result = self.storage.delete(sid, expected_owner)
            owner = self._owner_of(result.owner_field, result.owner_value)
            if owner is not None and owner != expected_owner:
                self.storage.update_index(owner, None, 0, [sid])
        except SessionStoreUnavailable as err:
            raise self._unavailable(err) from err.__cause__

    async def _adelete_sid(self, sid: StorageId, expected_owner: str | None = None) -> None:
        expected_owner = expected_owner or self._known_owner(sid)
        self._forget_if_own(sid)
        try:
            result = await self.storage.adelete(sid, expected_owner)
            owner = self._owner_of(result.owner_field, result.owner_value)
            if owner is not None and owner != expected_owner:
                await self.storage.aupdate_index(owner, None, 0, [sid])
        except SessionStoreUnavailable as err:
            raise self._unavailable(err) from err.__cause__

    def _owner_of(self, field_name: bytes | None, value: bytes | None) -> str | None:
        if field_name is None or value is None:
            return None
        try:
            return str(self._codec.decode_item(field_name, value)[1])
        except CorruptSessionData:
            return None

    # -- cycle_key ----------------------------------------------------------
    def cycle_key(self) -> None:
        """Move the data to a new key: create it, then delete the old (no RENAME)."""
        data = self._session
        old_sid = self.storage_id
        old_owner = self._owner(self._stored_fields)
        self.create()
        self._session_cache = data
        if old_sid is not None:
            self._delete_sid(old_sid, old_owner)
            session_rotated.send(type(self), old_storage_id=old_sid, storage_id=self.storage_id)

    async def acycle_key(self) -> None:
        data = await self._aget_session()
        old_sid = self.storage_id
        old_owner = self._owner(self._stored_fields)
        await self.acreate()
        self._session_cache = data
        if old_sid is not None:
            await self._adelete_sid(old_sid, old_owner)
            await session_rotated.asend(
                type(self), old_storage_id=old_sid, storage_id=self.storage_id
            )

    # -- maintenance --------------------------------------------------------
    @classmethod
    def clear_expired(cls) -> None:
        # Redis expires sessions itself; index upkeep is clearsessions_elastic's.
        return None

    @classmethod
    async def aclear_expired(cls) -> None:
        return None
