"""The session data every engine stores: three sizes, realistic shapes, fixed seed.

Every shape carries Django's auth keys and a small ``visits`` counter (the key the
"load+change+save" cycle changes); larger shapes add what shops and forms keep
in sessions.  The data is built once, deterministically, and shared by all
engines.
"""

from __future__ import annotations

import json
import random
from typing import Any

SIZES = ("200B", "4KB", "64KB")
CHANGED_KEY = "visits"
READ_KEY = "_auth_user_id"

_WORDS = (
    "linen", "oak", "brass", "walnut", "wool", "merino", "canvas", "leather", "ceramic",
    "copper", "maple", "slate", "cotton", "velvet", "bamboo", "pine", "marble", "steel",
    "glass", "jute", "suede", "birch", "cedar",
)  # fmt: skip


def _auth(rng: random.Random) -> dict[str, Any]:
    return {
        "_auth_user_id": "42",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": f"{rng.getrandbits(256):064x}",
    }


def _token(rng: random.Random, length: int = 64) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(rng.choice(alphabet) for _ in range(length))


def _name(rng: random.Random, words: int = 3) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize()


def _cart(rng: random.Random, items: int) -> dict[str, Any]:
    return {
        "items": [
            {
                "sku": f"SKU-{rng.randrange(10000, 99999)}",
                "name": _name(rng),
                "qty": rng.randrange(1, 5),
                "unit_price": f"{rng.randrange(100, 20000) / 100:.2f}",
            }
            for _ in range(items)
        ],
        "currency": "EUR",
        "coupon": None,
    }


def _flags() -> dict[str, bool]:
    return {
        "beta_checkout": True,
        "seen_tour": False,
        "newsletter_prompt_dismissed": True,
        "prefers_metric": True,
    }


def _recently_viewed(rng: random.Random, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": rng.randrange(1, 500000),
            "slug": "-".join(rng.choice(_WORDS) for _ in range(3)),
            "viewed_at": 1_750_000_000 + rng.randrange(0, 86400 * 30),
        }
        for _ in range(count)
    ]


def _address(rng: random.Random) -> dict[str, str]:
    return {
        "name": _name(rng, 2),
        "street": f"{rng.randrange(1, 300)} {_name(rng, 2)} Street",
        "city": _name(rng, 1),
        "postcode": f"{rng.randrange(10000, 99999)}",
        "country": "NL",
        "phone": f"+31 6 {rng.randrange(10000000, 99999999)}",
    }


def _wizard(rng: random.Random, steps: int, note_words: int) -> dict[str, Any]:
    data: dict[str, Any] = {
        f"step_{n}": {
            "address": _address(rng),
            "notes": " ".join(rng.choice(_WORDS) for _ in range(note_words)),
            "accepted_terms": True,
        }
        for n in range(steps)
    }
    return {"current_step": f"step_{steps - 1}", "step_data": data, "step_files": {}}


def build(size: str) -> dict[str, Any]:
    """The session data of one size (``200B``, ``4KB`` or ``64KB``), always the same."""
    rng = random.Random(f"elastic-sessions-bench-{size}")
    data: dict[str, Any] = {**_auth(rng), CHANGED_KEY: 7, "theme": "dark"}
    if size == "200B":
        return data
    counts = {"4KB": (10, 25, 2, 40, 10), "64KB": (60, 560, 8, 400, 120)}[size]
    cart_items, viewed, steps, note_words, searches = counts
    data.update(
        {
            "_csrftoken": _token(rng),
            "_language": "en",
            "flags": _flags(),
            "cart": _cart(rng, cart_items),
            "recently_viewed": _recently_viewed(rng, viewed),
            "wizard": _wizard(rng, steps, note_words),
            "search_history": [_name(rng, 2).lower() for _ in range(searches)],
        }
    )
    return data


def json_size(data: dict[str, Any]) -> int:
    """Bytes of the whole session as compact JSON (what a one-blob store writes)."""
    return len(json.dumps(data, separators=(",", ":")))


def describe(size: str) -> str:
    """The keys, with list lengths, dict widths and the JSON size of big values."""
    parts = []
    for key, value in build(size).items():
        shape = key
        if isinstance(value, list):
            shape = f"{key}[{len(value)}]"
        elif isinstance(value, dict):
            shape = f"{key}{{{len(value)}}}"
        encoded = len(json.dumps(value, separators=(",", ":")))
        parts.append(f"{shape} {encoded} B" if encoded > 70 else shape)
    return ", ".join(parts)
