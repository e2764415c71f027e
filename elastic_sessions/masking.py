"""Session data as the admin shows it: sensitive values masked, values pretty-printed."""

from __future__ import annotations

import json
import pprint
import re
from collections.abc import Mapping
from typing import Any

from .conf import elastic_settings

MASK = "********"


def masked(value: object, pattern: re.Pattern[str]) -> object:
    """``value`` with the values of mapping keys that match ``pattern`` replaced by MASK,
    at any depth (inside lists and tuples too)."""
    if isinstance(value, Mapping):
        return {
            key: MASK if pattern.search(str(key)) else masked(item, pattern)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [masked(item, pattern) for item in value]
    return value


def _pretty(value: object) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):  # keys JSON cannot hold, or a cycle
        return pprint.pformat(value)


def masked_items(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A session's items, sorted by key, values masked per MASKED_KEYS and pretty-printed."""
    pattern = re.compile(elastic_settings.MASKED_KEYS, re.IGNORECASE)
    shown = masked(data, pattern)
    assert isinstance(shown, dict)
    return [(key, _pretty(shown[key])) for key in sorted(shown, key=str)]
