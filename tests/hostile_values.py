"""Hostile session keys: hypothesis strategies for the engine API, a seeded
generator of raw cookie values for HTTP, and the deterministic hypothesis profile
both fuzz suites run under.

Every value is one the package never issues (``is_valid_session_key`` is False):
the shapes an attacker tries first (Redis key syntax, hash tags, glob characters,
CR/LF, NUL, percent-encoding, look-alike characters, wrong lengths, 10,000-character
strings) and arbitrary text and bytes.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.core.handlers.wsgi import get_str_from_wsgi
from django.http.cookie import parse_cookie
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from elastic_sessions.keys import SESSION_KEY_LENGTH, is_valid_session_key

# Derandomized, so CI runs the same examples every time; no example database and
# no deadline (a request through Django varies with the machine's load).  The
# fixtures are per test, not per example: each example resets Redis itself.
settings.register_profile(
    "elastic-sessions-ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
CI = settings.get_profile("elastic-sessions-ci")
# Hypothesis caches unicode tables and this checkout's constants in ./.hypothesis,
# while pytest collects (before any fixture runs): keep them in /tmp instead.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "elastic-sessions-hypothesis")


# Characters an attacker reaches for: Redis key syntax and hash tags, glob
# patterns, protocol and header separators, path tricks, encodings of the same.
INJECTIONS = [
    "{", "}", "{tag}", "{}", "es:", "es:{", "es:{x}", "es:u:{", "es:ix:seen", "es:ix:exp",
    "*", "?", "[", "]", "[a-z]", "[^a]", "\\", "\r\n", "\r", "\n", "\x00", "\t", " ", "\x0b",
    "\x7f", "\xff", ";", ",", "=", '"', "'", "`", "$", "%00", "%0d%0a", "%7B", "%2A", "../",
    "/", ":", "\u2028", "\ufeff", "\u202e",
    # Look-alikes: ligature ff, full-width s, Cyrillic a, Kelvin K, dotless i, dotted I.
    "\ufb00", "\uff53", "\u0430", "\u212a", "\u0131", "\u0130",
]  # fmt: skip
KEY_CHARS = VALID_KEY_CHARS


def _not_issued(value: str) -> bool:
    return not is_valid_session_key(value)


# -- hypothesis strategies (engine API) --------------------------------------
_valid_chars = st.sampled_from(KEY_CHARS)
_key_like = st.text(_valid_chars, min_size=SESSION_KEY_LENGTH, max_size=SESSION_KEY_LENGTH)
_any_char = st.characters(exclude_categories=())  # surrogates included
_bad_char = st.one_of(st.sampled_from(INJECTIONS), _any_char).filter(
    lambda text: any(char not in KEY_CHARS for char in text)
)


def _replace_one(key: str, position: int, text: str) -> str:
    return key[:position] + text + key[position + 1 :]


def _insert(key: str, position: int, text: str) -> str:
    return key[:position] + text + key[position:]


def _percent_encoded(key: str) -> str:
    return "".join(f"%{ord(char):02X}" for char in key)


def _repeated(unit: str, length: int) -> str:
    return (unit * (length // max(len(unit), 1) + 1))[:length] if unit else "a" * length


hostile_keys: st.SearchStrategy[str] = st.one_of(
    # Any text at all, surrogates, NUL and control characters included.
    st.text(_any_char, max_size=80),
    # Bytes off the wire, decoded as a server would (and as a careless one would).
    st.binary(max_size=80).map(lambda raw: raw.decode("latin-1")),
    st.binary(max_size=80).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    # Long: up to 10,000 characters (a short unit repeated, cheap to generate).
    st.builds(_repeated, st.text(_any_char, max_size=6), st.integers(0, 10_000)),
    # A key of ours with one character swapped for a bad one, or one inserted.
    st.builds(_replace_one, _key_like, st.integers(0, SESSION_KEY_LENGTH - 1), _bad_char),
    st.builds(_insert, _key_like, st.integers(0, SESSION_KEY_LENGTH), _bad_char),
    # Upper case, and the right alphabet at the wrong length.
    _key_like.map(str.upper),
    st.text(_valid_chars, min_size=SESSION_KEY_LENGTH - 1, max_size=SESSION_KEY_LENGTH - 1),
    st.text(_valid_chars, min_size=SESSION_KEY_LENGTH + 1, max_size=SESSION_KEY_LENGTH + 1),
    st.text(_valid_chars, max_size=200),
    # Redis syntax around a key of ours: es:{...}, hash tags, globs.
    st.builds(lambda key, inj: f"es:{{{key}}}{inj}", _key_like, st.sampled_from(INJECTIONS)),
    st.builds(lambda key: "{" + key + "}", _key_like),
    st.builds(lambda key, inj: inj + key, _key_like, st.sampled_from(INJECTIONS)),
    st.builds(lambda key, inj: key + inj, _key_like, st.sampled_from(INJECTIONS)),
    # Percent-encoded keys, and 32 characters that are not ASCII.
    _key_like.map(_percent_encoded),
    st.text(st.characters(min_codepoint=128, exclude_categories=()), min_size=32, max_size=32),
).filter(_not_issued)


# -- seeded cookie values (HTTP) ---------------------------------------------
def _latin1(text: str) -> str:
    """``text`` as a WSGI server hands it to Django: UTF-8 bytes read as latin-1."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def _random_key(rng: random.Random, length: int = SESSION_KEY_LENGTH) -> str:
    return "".join(rng.choices(KEY_CHARS, k=length))


def _random_text(rng: random.Random, length: int) -> str:
    # Mostly Latin-1, sometimes anything up to the astral planes (as UTF-8 bytes).
    top = rng.choice([0x7F, 0xFF, 0x7FF, 0xFFFF, 0x10FFFF])
    return "".join(chr(rng.randint(0, top)) for _ in range(length))


def _bad(rng: random.Random) -> str:
    return rng.choice([*INJECTIONS, chr(rng.randint(0, 0x10FFFF))])


_SHAPES: list[Callable[[random.Random], str]] = [
    lambda rng: _random_text(rng, rng.randint(0, 40)),
    lambda rng: rng.randbytes(rng.randint(1, 64)).decode("latin-1"),
    lambda rng: _repeated(_random_text(rng, rng.randint(1, 5)), rng.randint(100, 10_000)),
    lambda rng: _replace_one(_random_key(rng), rng.randrange(32), _bad(rng)),
    lambda rng: _insert(_random_key(rng), rng.randint(0, 32), _bad(rng)),
    lambda rng: _random_key(rng).upper(),
    lambda rng: _random_key(rng, rng.choice([31, 33])),
    lambda rng: _random_key(rng, rng.randint(0, 64)),
    lambda rng: f"es:{{{_random_key(rng)}}}{rng.choice(INJECTIONS)}",
    lambda rng: "{" + _random_key(rng) + "}",
    lambda rng: rng.choice(INJECTIONS) + _random_key(rng),
    lambda rng: _random_key(rng) + rng.choice(INJECTIONS),
    lambda rng: "".join(rng.choices(INJECTIONS, k=rng.randint(1, 12))),
    lambda rng: _percent_encoded(_random_key(rng)),
    lambda rng: _random_text(rng, 32),
]


def cookie_seen_by_django(cookie_name: str, raw_value: str) -> str | None:
    """The session cookie Django reads from the WSGI header ``Cookie: name=raw_value``.

    Django decodes the header as UTF-8 and strips each value of Unicode white space, so
    a key of ours between two U+2028 is that key (sent as such, it is no fuzz value).
    """
    header = get_str_from_wsgi({"HTTP_COOKIE": f"{cookie_name}={raw_value}"}, "HTTP_COOKIE", "")
    return parse_cookie(header).get(cookie_name)


def hostile_cookies(cookie_name: str) -> st.SearchStrategy[str]:
    """``hostile_keys`` as raw cookie values (latin-1 text, as in a WSGI environ) that
    Django parses into a session cookie we never issue."""

    def hostile_as_parsed(raw: str) -> bool:
        parsed = cookie_seen_by_django(cookie_name, raw)
        return parsed is not None and not is_valid_session_key(parsed)

    return hostile_keys.map(_latin1).filter(hostile_as_parsed)


def hostile_cookie_values(count: int, cookie_name: str, seed: int = 6) -> Iterator[str]:
    """``count`` raw cookie values (latin-1 text, as in a WSGI environ), each
    parsed by Django into a distinct session cookie that is not a key we issue."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < count:
        raw = _latin1(rng.choice(_SHAPES)(rng))
        parsed = cookie_seen_by_django(cookie_name, raw)
        # Not a fuzz value if Django drops it, or a ";", quotes or white space
        # around it turn it into a well-formed key (the fixation tests cover those).
        if parsed is None or parsed in seen or is_valid_session_key(parsed):
            continue
        seen.add(parsed)
        yield raw
