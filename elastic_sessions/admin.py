"""The admin's "Active sessions": sessions wherever they live, with no table behind them.

``ActiveSession`` has no rows, so the ModelAdmin routes its URLs to views of its
own, built on :mod:`elastic_sessions.listing` (a page costs work in proportion
to the page).  Every view goes through ``AdminSite.admin_view`` (login, staff,
``never_cache``, CSRF); revoking goes through a confirmation page, as admin's
``delete_selected`` does, and writes one ``LogEntry`` per session ended.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    QueryDict,
)
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse

from . import listing
from .api import list_sessions, revoke_user_sessions
from .exceptions import SessionStoreUnavailable
from .keys import StorageId
from .masking import masked_items
from .models import ActiveSession
from .owners import owner_name, search_users, users_by_id

PER_PAGE = 50
# The filters' preset choices, in seconds; the URL takes any positive number.
EXPIRING_CHOICES = ((3600, "Within an hour"), (86400, "Within a day"), (7 * 86400, "Within a week"))
IDLE_CHOICES = ((3600, "An hour or more"), (86400, "A day or more"), (7 * 86400, "A week or more"))
# Beyond this a number of seconds or a page number is treated as absent: no
# datetime arithmetic on hostile values.
MAX_SECONDS = 100 * 365 * 86400
MAX_PAGE = 1_000_000
# A revocation acts on at most a page of sessions (what the list can select).
MAX_SELECTED = PER_PAGE
MAX_QUERY_LENGTH = 200
_NUMBER = re.compile(r"[0-9]{1,12}")


def _positive(raw: str | None, limit: int) -> int | None:
    if raw is None or not _NUMBER.fullmatch(raw):
        return None
    value = int(raw)
    return value if 0 < value <= limit else None


@dataclass(frozen=True)
class Filters:
    """The list's GET parameters, narrowed: anything malformed reads as absent."""

    q: str = ""
    user: str | None = None
    expiring: int | None = None
    idle: int | None = None
    order: listing.Order = listing.ORDERS[0]
    page: int = 1

    @classmethod
    def from_query(cls, get: QueryDict) -> Filters:
        order = get.get("o", "")
        user = get.get("user", "").strip()
        return cls(
            q=get.get("q", "").strip()[:MAX_QUERY_LENGTH],
            user=user[:255] or None,
            expiring=_positive(get.get("expiring"), MAX_SECONDS),
            idle=_positive(get.get("idle"), MAX_SECONDS),
            order=next((o for o in listing.ORDERS if o == order), listing.ORDERS[0]),
            page=_positive(get.get("p"), MAX_PAGE) or 1,
        )

    def querystring(self, **changes: Any) -> str:
        """``?...`` for these filters with ``changes`` (page 1 unless ``page`` is given)."""
        changed = replace(self, **{"page": 1, **changes})
        params = QueryDict(mutable=True)
        for name, value, default in (
            ("q", changed.q, ""),
            ("user", changed.user, None),
            ("expiring", changed.expiring, None),
            ("idle", changed.idle, None),
            ("o", changed.order, listing.ORDERS[0]),
            ("p", changed.page, 1),
        ):
            if value != default:
                params[name] = str(value)
        return f"?{params.urlencode()}"


def log_revocations(
    request: HttpRequest, ended: Iterable[tuple[StorageId, str | None]], how: str
) -> int:
    """One DELETION ``LogEntry`` per session ended; returns how many were written."""
    ended = list(ended)
    users = users_by_id(owner for _, owner in ended)
    content_type = ContentType.objects.get_for_model(ActiveSession, for_concrete_model=False)
    LogEntry.objects.bulk_create(
        LogEntry(
            user_id=request.user.pk,
            content_type_id=content_type.pk,
            object_id=sid,
            object_repr=f"Session {sid} of {owner_name(owner, users)}"[:200],
            action_flag=DELETION,
            change_message=how,
        )
        for sid, owner in ended
    )
    return len(ended)


# ModelAdmin is generic for type checkers only (django-stubs), not at runtime.
if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[ActiveSession]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(ActiveSession)
class ActiveSessionAdmin(_ModelAdmin):
    """Lists, inspects and revokes sessions; see docs/admin.md."""

    # Sessions are made by signing in and ended by revoking, never added or edited here.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ActiveSession | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ActiveSession | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("elastic_sessions.revoke_activesession")

    def has_view_data_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("elastic_sessions.view_session_data")

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("", wrap(self.changelist_view), name=f"{prefix}_changelist"),
            path("revoke/", wrap(self.revoke_view), name=f"{prefix}_revoke"),
            path("<path:object_id>/change/", wrap(self.change_view), name=f"{prefix}_change"),
        ]

    def _url(self, name: str, *args: str) -> str:
        view = f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{name}"
        return reverse(view, args=args, current_app=self.admin_site.name)

    def _user_admin_url(self, user: Model) -> str | None:
        if not self.admin_site.is_registered(type(user)):
            return None
        meta = user._meta
        try:
            return reverse(
                f"{self.admin_site.name}:{meta.app_label}_{meta.model_name}_change",
                args=(user.pk,),
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return None

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "has_revoke_permission": self.has_revoke_permission(request),
            "has_view_data_permission": self.has_view_data_permission(request),
            "changelist_url": self._url("changelist"),
            "revoke_url": self._url("revoke"),
            **extra,
        }

    def _present(self, row: listing.SessionRow, users: Mapping[str, Model]) -> dict[str, Any]:
        """What the templates show of one row (the user as a link where possible)."""
        user = users.get(row.user_id) if row.user_id else None
        return {
            "row": row,
            "user_name": owner_name(row.user_id, users),
            "user_url": self._user_admin_url(user) if user is not None else None,
            "detail_url": self._url("change", row.storage_id),
        }

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        filters = Filters.from_query(request.GET)
        user_ids: tuple[str, ...] | None = None
        too_many_users = False
        if filters.q:
            user_ids, too_many_users = search_users(filters.q)
        if filters.user is not None:
            user_ids = (filters.user,) if user_ids is None or filters.user in user_ids else ()
        query = listing.ListQuery(
            order=filters.order,
            user_ids=user_ids,
            expiring_within=filters.expiring,
            idle_for=filters.idle,
        )
        context = self._context(
            request,
            "Active sessions",
            filters=filters,
            too_many_users=too_many_users,
            max_searched_users=listing.MAX_SEARCHED_USERS,
            **self._filter_choices(filters),
            **(extra_context or {}),
        )
        try:
            counts = listing.counts()
            page = listing.list_page(query, filters.page, PER_PAGE)
        except SessionStoreUnavailable:
            context["store_unavailable"] = True
            return TemplateResponse(request, self._template("change_list"), context, status=503)
        users = users_by_id([*(row.user_id for row in page.rows), filters.user])
        filtered_user = None
        if filters.user is not None:
            filtered_user = {
                "id": filters.user,
                "name": owner_name(filters.user, users),
                "clear_url": filters.querystring(user=None),
            }
        context.update(
            counts=counts,
            page=page,
            rows=[
                {**self._present(row, users), "filter_url": filters.querystring(user=row.user_id)}
                for row in page.rows
            ],
            filtered_user=filtered_user,
            sort_links=self._sort_links(filters, page.order),
            previous_url=filters.querystring(page=page.number - 1) if page.has_previous else None,
            next_url=filters.querystring(page=page.number + 1) if page.has_next else None,
        )
        return TemplateResponse(request, self._template("change_list"), context)

    def _template(self, name: str) -> list[str]:
        folder = f"admin/{self.opts.app_label}/{self.opts.model_name}"
        return [f"{folder}/{name}.html"]

    @staticmethod
    def _filter_choices(filters: Filters) -> dict[str, Any]:
        def choices(name: str, current: int | None, presets: Iterable[tuple[int, str]]) -> Any:
            options = [("Any", None), *((label, seconds) for seconds, label in presets)]
            if current is not None and all(current != value for _, value in options):
                options.append((f"{current} seconds", current))
            return [
                {
                    "label": label,
                    "url": filters.querystring(**{name: value}),
                    "selected": value == current,
                }
                for label, value in options
            ]

        return {
            "expiring_choices": choices("expiring", filters.expiring, EXPIRING_CHOICES),
            "idle_choices": choices("idle", filters.idle, IDLE_CHOICES),
        }

    @staticmethod
    def _sort_links(filters: Filters, applied: listing.Order) -> dict[str, dict[str, Any]]:
        # A column starts in its useful direction (latest seen, soonest to
        # expire); a click on the sorted column flips it.
        first = {"last_seen": "-last_seen", "expires": "expires"}
        links = {}
        for column, start in first.items():
            sorted_here = applied.lstrip("-") == column
            flipped = column if applied.startswith("-") else f"-{column}"
            links[column] = {
                "url": filters.querystring(order=flipped if sorted_here else start),
                "sorted": sorted_here,
                "descending": applied.startswith("-"),
            }
        return links

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            found = listing.detail(object_id)
        except SessionStoreUnavailable:
            context = self._context(request, "Session", store_unavailable=True)
            return TemplateResponse(request, self._template("change_form"), context, status=503)
        if found is None:
            raise Http404("No such session: it may have ended already.")
        users = users_by_id([found.row.user_id])
        items = None
        if self.has_view_data_permission(request) and found.data is not None:
            items = masked_items(found.data)
        context = self._context(
            request,
            f"Session of {owner_name(found.row.user_id, users)}",
            session=self._present(found.row, users),
            undecodable=found.data is None,
            items=items,
            **(extra_context or {}),
        )
        return TemplateResponse(request, self._template("change_form"), context)

    def revoke_view(self, request: HttpRequest) -> HttpResponse:
        """Confirm, then end the selected sessions or every session of their users."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (self.has_view_permission(request) and self.has_revoke_permission(request)):
            raise PermissionDenied
        back = self._url("changelist") + _safe_querystring(request.POST.get("back", ""))
        action = request.POST.get("action", "")
        sids = list(dict.fromkeys(request.POST.getlist("_selected_action")))[:MAX_SELECTED]
        user_ids = list(dict.fromkeys(request.POST.getlist("user")))[: listing.MAX_SEARCHED_USERS]
        if action not in {"revoke_selected", "revoke_users"}:
            messages.warning(request, "No action selected.")
            return HttpResponseRedirect(back)
        if not sids and not user_ids:
            messages.warning(
                request, "Sessions must be selected to act on them. No session was revoked."
            )
            return HttpResponseRedirect(back)
        try:
            if request.POST.get("post") != "yes":
                return self._confirm(request, action, sids, user_ids)
            if action == "revoke_selected":
                ended = listing.revoke(sids)
                written = log_revocations(request, ended, "Revoked in the admin.")
            else:
                written = self._revoke_users(request, user_ids)
        except SessionStoreUnavailable:
            messages.error(request, "The session store cannot be reached: nothing was revoked.")
            return HttpResponseRedirect(back)
        messages.success(request, f"Revoked {written} session{'' if written == 1 else 's'}.")
        return HttpResponseRedirect(back)

    def _confirm(
        self, request: HttpRequest, action: str, sids: list[str], user_ids: list[str]
    ) -> HttpResponse:
        found = [detail.row for sid in sids if (detail := listing.detail(sid)) is not None]
        if action == "revoke_users":
            # The owners of the selected sessions (anonymous ones have none).
            owners = [row.user_id for row in found if row.user_id is not None]
            user_ids = list(dict.fromkeys([*user_ids, *owners]))[: listing.MAX_SEARCHED_USERS]
        users = users_by_id(user_ids if action == "revoke_users" else [r.user_id for r in found])
        context = self._context(
            request,
            "Are you sure?",
            action=action,
            back=_safe_querystring(request.POST.get("back", "")),
            sessions=[self._present(row, users) for row in found],
            targets=[
                {
                    "id": user_id,
                    "name": owner_name(user_id, users),
                    "count": len(list_sessions(user_id)),
                }
                for user_id in (user_ids if action == "revoke_users" else [])
            ],
        )
        return TemplateResponse(request, self._template("revoke_confirmation"), context)

    def _revoke_users(self, request: HttpRequest, user_ids: list[str]) -> int:
        written = 0
        for user_id in user_ids:
            sids = [info.storage_id for info in list_sessions(user_id)]
            message = "Revoked in the admin with every session of this user."
            written += log_revocations(request, listing.revoke(sids), message)
            # Sessions started since the listing above: ended too, logged together.
            if later := revoke_user_sessions(user_id):
                written += later
                _log_user_remainder(request, user_id, later)
        return written


def _log_user_remainder(request: HttpRequest, user_id: str, count: int) -> None:
    users = users_by_id([user_id])
    content_type = ContentType.objects.get_for_model(ActiveSession, for_concrete_model=False)
    LogEntry.objects.create(
        user_id=request.user.pk,
        content_type_id=content_type.pk,
        object_id=None,
        object_repr=f"{count} more sessions of {owner_name(user_id, users)}"[:200],
        action_flag=DELETION,
        change_message="Revoked in the admin with every session of this user.",
    )


def _safe_querystring(raw: str) -> str:
    """The list's filters to return to, rebuilt from their parsed form (never a URL)."""
    filters = Filters.from_query(QueryDict(raw.lstrip("?")))
    querystring = filters.querystring(page=filters.page)
    return "" if querystring == "?" else querystring
