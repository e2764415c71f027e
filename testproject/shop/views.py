from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from elastic_sessions.api import list_sessions, revoke_session, revoke_user_sessions

from . import cart
from .catalogue import BY_ID, PRODUCTS, Product


def home(request: HttpRequest) -> HttpResponse:
    lines = cart.lines(request.session)
    return render(request, "shop/home.html", {"lines": lines, "total": cart.total(lines)})


def products(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/products.html", {"products": PRODUCTS})


def _posted_product(request: HttpRequest) -> Product:
    try:
        return BY_ID[int(request.POST.get("product", ""))]
    except (KeyError, ValueError):
        raise Http404("No such product.") from None


@require_POST
def cart_add(request: HttpRequest) -> HttpResponse:
    product = _posted_product(request)
    cart.add(request.session, product)
    messages.success(request, f"Added {product.name} to your cart.")
    return redirect("products")


@require_POST
def cart_remove(request: HttpRequest) -> HttpResponse:
    product = _posted_product(request)
    cart.remove(request.session, product)
    messages.success(request, f"Removed {product.name} from your cart.")
    return redirect("home")


@require_POST
def cart_clear(request: HttpRequest) -> HttpResponse:
    cart.clear(request.session)
    messages.success(request, "Your cart is empty now.")
    return redirect("home")


@login_required
def sessions(request: HttpRequest) -> HttpResponse:
    current = request.session.session_key
    return render(
        request,
        "shop/sessions.html",
        {"sessions": list_sessions(request.user, current_session_key=current)},
    )


@login_required
@require_POST
def session_revoke(request: HttpRequest) -> HttpResponse:
    sid = request.POST.get("storage_id", "")
    if sid == getattr(request.session, "storage_id", None):
        # Deleting the session this request runs in would leave the request on
        # a session that is gone; signing out ends it and rotates the CSRF token.
        messages.error(request, "That is this device: use Sign out to end it.")
    elif revoke_session(request.user, sid):
        messages.success(request, "Signed that session out.")
    else:
        # Also the answer for another user's session: never confirm it exists.
        messages.error(request, "No such session of yours; it may have ended already.")
    return redirect("sessions")


@login_required
@require_POST
def session_revoke_others(request: HttpRequest) -> HttpResponse:
    ended = revoke_user_sessions(request.user, keep_session_key=request.session.session_key)
    messages.success(request, f"Signed out {ended} other session{'' if ended == 1 else 's'}.")
    return redirect("sessions")
