"""``include("elastic_sessions.urls")`` adds the "your sessions" page under any prefix."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "elastic_sessions"

urlpatterns = [
    path("", views.sessions, name="sessions"),
    path("revoke/<str:sid>/", views.revoke, name="revoke"),
    path("revoke-others/", views.revoke_others, name="revoke_others"),
]
