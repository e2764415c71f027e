"""The admin's URLs, for ``benchmarks.listing`` and ``tests/test_listing_scale.py``.

Imported by Django's URL resolver, so only once ``admin_settings`` installed
the admin (its models refuse to load before).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
