from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The library's own "your sessions" page, in the shop's layout (see
    # shop/templates/elastic_sessions/base.html).
    path("account/sessions/", include("elastic_sessions.urls")),
    path("", include("shop.urls")),
]
