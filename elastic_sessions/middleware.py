"""Django's ``SessionMiddleware``, plus what the elastic engines need of it.

* An outage of the session store answers ``503`` with ``Retry-After`` and one log
  line, and keeps the session cookie: a user is never logged out by a Redis blip.
* When a load slid the idle expiry but nothing was saved, the cookie is sent again
  with the new ``Max-Age``, so browser and store expire together.
* Each request's IP address and user agent are handed to its session, which
  records them (with "last seen") on its next save or due touch.
* After the view, a signed-in user whose privileges changed since login gets a
  new session key (see ``policies.check_privileges``).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

from .backends.base import ElasticSessionBase
from .client import request_client
from .conf import elastic_settings
from .exceptions import SessionStoreUnavailable
from .policies import check_privileges
from .signals import store_degraded, store_recovered

logger = logging.getLogger(__name__)

UNAVAILABLE_BODY = (
    "<!doctype html><title>Service temporarily unavailable</title>"
    "<h1>Service temporarily unavailable</h1>"
    "<p>We cannot reach your session right now. You are still signed in; "
    "please try again in a few seconds.</p>"
)


def unavailable_response(error: SessionStoreUnavailable) -> HttpResponse:
    """The 503 sent while the store is down: retryable, uncached, cookie untouched."""
    response = HttpResponse(UNAVAILABLE_BODY, status=503)
    response["Retry-After"] = str(elastic_settings.RETRY_AFTER)
    response["Cache-Control"] = "no-store"
    return response


class _Outage:
    """When this process last answered 503 for the store (None: it is serving)."""

    # Monotonic time of the first 503 of the current outage.
    since: float | None = None


class SessionMiddleware(DjangoSessionMiddleware):
    """Drop-in replacement for ``django.contrib.sessions.middleware.SessionMiddleware``."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        if isinstance(request.session, ElasticSessionBase):
            # Recorded with the session when it is next saved or touched.
            request.session.client = request_client(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, SessionStoreUnavailable):
            return self._unavailable(request, exception)
        return None

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        error = getattr(session, "store_unavailable", None)
        if error is not None:
            if response.status_code == 503 and response.has_header("Retry-After"):
                return response  # already ours, from process_exception
            if response.status_code >= 500:
                # The outage surfaced outside the view (another middleware, a
                # template): still a 503, never a save attempt or cookie change.
                return self._unavailable(request, error)
        try:
            if response.status_code < 500:
                # Before the save, so a rotated key is saved and sent at once.
                check_privileges(request)
            response = super().process_response(request, response)
        except SessionStoreUnavailable as err:
            return self._unavailable(request, err)
        self._refresh_touched_cookie(request, response)
        _flag_deleted_cookie(response)
        if _Outage.since is not None and getattr(session, "accessed", False):
            self._recovered()
        return response

    def _recovered(self) -> None:
        # The first request since an outage that used its session without one:
        # announced once per process, as the hybrid engine's breaker does.
        since, _Outage.since = _Outage.since, None
        if since is None:
            return  # another thread announced it
        downtime = time.monotonic() - since
        logger.info("Session store recovered after %.1f s.", downtime)
        store_recovered.send(type(self), downtime=downtime)

    def _unavailable(self, request: HttpRequest, error: SessionStoreUnavailable) -> HttpResponse:
        logger.error(
            "Session store unavailable, answering 503 to %s %s: %s",
            request.method,
            request.path,
            error,
        )
        if _Outage.since is None:
            _Outage.since = time.monotonic()
        store_degraded.send(type(self), error=error)
        response = unavailable_response(error)
        patch_vary_headers(response, ("Cookie",))
        return response

    def _refresh_touched_cookie(self, request: HttpRequest, response: HttpResponse) -> None:
        session = request.session
        age = getattr(session, "touched_expiry_age", None)
        name = settings.SESSION_COOKIE_NAME
        if (
            age is None
            or name in response.cookies  # saved this request: cookie already fresh
            or response.status_code >= 500
            or session.session_key is None
            or session.get_expire_at_browser_close()
        ):
            return
        response.set_cookie(
            name,
            session.session_key,
            max_age=age,
            expires=http_date(time.time() + age),
            domain=settings.SESSION_COOKIE_DOMAIN,
            path=settings.SESSION_COOKIE_PATH,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=settings.SESSION_COOKIE_HTTPONLY,
            samesite=settings.SESSION_COOKIE_SAMESITE,
        )
        patch_vary_headers(response, ("Cookie",))


def _flag_deleted_cookie(response: HttpResponse) -> None:
    # Django's delete_cookie() sets Secure only for __Secure-/__Host- names or
    # SameSite=None, and never HttpOnly: the logout's deletion would be the one
    # session cookie without the site's flags (scanners flag it; proxies strip
    # Set-Cookie without Secure on some setups).
    morsel = response.cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is None or morsel.value != "" or str(morsel["max-age"]) != "0":
        return
    if settings.SESSION_COOKIE_SECURE:
        morsel["secure"] = True
    if settings.SESSION_COOKIE_HTTPONLY:
        morsel["httponly"] = True
