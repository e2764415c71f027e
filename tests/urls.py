from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("set/<str:key>/<str:value>/", views.set_value),
    path("get/<str:key>/", views.get_value),
    path("read-set/<str:read>/<str:key>/<str:value>/", views.read_then_set),
    path("async/read-set/<str:read>/<str:key>/<str:value>/", views.aread_then_set),
    path("login/<str:username>/", views.login_view),
    path("logout/", views.logout_view),
    path("plain/", views.plain),
    path("async/set/<str:key>/<str:value>/", views.aset_value),
    path("async/get/<str:key>/", views.aget_value),
    path("keys/<str:keys>/", views.session_keys),
    path("swap/<str:key>/<str:value>/", views.swap_value),
]
