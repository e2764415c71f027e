from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("products/", views.products, name="products"),
    path("cart/add/", views.cart_add, name="cart-add"),
    path("cart/remove/", views.cart_remove, name="cart-remove"),
    path("cart/clear/", views.cart_clear, name="cart-clear"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    # LogoutView accepts POST only, so a link or an <img> cannot sign anyone out.
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/revoke/", views.session_revoke, name="session-revoke"),
    path(
        "sessions/revoke-others/",
        views.session_revoke_others,
        name="session-revoke-others",
    ),
]
