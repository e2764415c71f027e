"""The demo's products: a fixed list, so the demo needs no product table."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    name: str
    price: Decimal


PRODUCTS = (
    Product(1, "Espresso beans, 250 g", Decimal("7.50")),
    Product(2, "Ceramic mug", Decimal("12.00")),
    Product(3, "Pour-over kettle", Decimal("39.90")),
    Product(4, "Paper filters, 100", Decimal("4.20")),
)

BY_ID = {product.id: product for product in PRODUCTS}
