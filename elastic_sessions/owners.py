"""The users behind sessions: who owns a session, and whose sessions a search means."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Model, Q

from . import listing
from .api import user_id_of


def users_by_id(user_ids: Iterable[str | None]) -> dict[str, Model]:
    """The users behind these session owner ids, in one query (unknown ids left out)."""
    User = get_user_model()
    pk_field = User._meta.pk
    assert pk_field is not None
    pks = []
    for user_id in {uid for uid in user_ids if uid}:
        try:
            pks.append(pk_field.clean(user_id, None))
        except ValidationError:
            continue  # not the shape of this project's user ids: nobody
    return {user_id_of(user): user for user in User._default_manager.filter(pk__in=pks)}


def search_users(q: str) -> tuple[tuple[str, ...], bool]:
    """Ids of users whose username or email contains ``q``, and whether there were
    more than MAX_SEARCHED_USERS (the rest are left out)."""
    User = get_user_model()
    condition = Q()
    for name in {User.USERNAME_FIELD, User.get_email_field_name()}:
        if any(field.name == name for field in User._meta.get_fields()):
            condition |= Q(**{f"{name}__icontains": q})
    if not condition:
        return (), False
    found = list(
        User._default_manager.filter(condition).order_by("pk")[: listing.MAX_SEARCHED_USERS + 1]
    )
    ids = tuple(user_id_of(user) for user in found[: listing.MAX_SEARCHED_USERS])
    return ids, len(found) > listing.MAX_SEARCHED_USERS


def owner_name(user_id: str | None, users: Mapping[str, Model]) -> str:
    if user_id is None:
        return "anonymous"
    user = users.get(user_id)
    return str(user) if user is not None else f"user #{user_id}"
