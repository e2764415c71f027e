"""The cart, kept in the session as ``{"<product id>": quantity}``.

Keys are strings because the session is JSON.  Every change assigns a new dict
to ``session["cart"]``, so the session notices it without ``modified = True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.sessions.backends.base import SessionBase

from .catalogue import BY_ID, Product

CART_KEY = "cart"


@dataclass(frozen=True, slots=True)
class Line:
    product: Product
    quantity: int

    @property
    def subtotal(self) -> Decimal:
        return self.product.price * self.quantity


def _items(session: SessionBase) -> dict[str, int]:
    raw = session.get(CART_KEY)
    return dict(raw) if isinstance(raw, dict) else {}


def add(session: SessionBase, product: Product) -> None:
    items = _items(session)
    key = str(product.id)
    items[key] = items.get(key, 0) + 1
    session[CART_KEY] = items


def remove(session: SessionBase, product: Product) -> None:
    items = _items(session)
    items.pop(str(product.id), None)
    session[CART_KEY] = items


def clear(session: SessionBase) -> None:
    if CART_KEY in session:
        del session[CART_KEY]


def lines(session: SessionBase) -> list[Line]:
    """The cart's lines in catalogue order; unknown product ids are skipped."""
    items = _items(session)
    return [
        Line(product, items[str(product.id)])
        for product in BY_ID.values()
        if str(product.id) in items
    ]


def total(cart_lines: list[Line]) -> Decimal:
    return sum((line.subtotal for line in cart_lines), Decimal(0))
