"""A small, dependency-free reading of ``User-Agent`` headers for the sessions page.

It names the browser (major version only), the operating system and the kind of
device well enough for a person to recognise their own sessions; it is not a
device database.  The header is client-controlled, so every path is total: any
string gives a :class:`Device`, and only its first :data:`MAX_LENGTH` characters
are looked at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["MAX_LENGTH", "Device", "describe_user_agent", "short_description"]

# Real user agents stay well under this; the rest of a longer header is ignored.
MAX_LENGTH = 512

UNKNOWN_BROWSER = "Unknown browser"
UNKNOWN_OS = "Unknown OS"

# re.ASCII: a "version" of Arabic-Indic digits, or a bot name in any script,
# must not reach the stored description, which is ASCII by construction.
_FLAGS = re.ASCII | re.IGNORECASE


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, _FLAGS)


# Command-line tools and HTTP libraries name themselves first: "curl/8.5.0".
_HTTP_CLIENT = _rx(
    r"^(curl|wget|python-requests|python-urllib|python-httpx|aiohttp|go-http-client|"
    r"libwww-perl|okhttp|java|postmanruntime|axios|node-fetch|undici|httpie)/(\d+)"
)
# okhttp is what Android apps send: an app, not a script.
_APP_CLIENTS = frozenset({"okhttp"})
# "Googlebot/2.1", "bingbot/2.0", "Baiduspider/2.0", "Slackbot-LinkExpanding".
# The name must end at "/", "-", ";", ")" or the end, so that a phone called
# "CUBOT X19" is not a bot.
_BOT = _rx(r"\b([a-z][a-z0-9_.-]*?(?:bot|spider|crawler))(?:/(\d+)|(?=[-;)]|$))")
_OTHER_BOTS = _rx(r"(facebookexternalhit|mediapartners-google|yahoo! slurp)(?:/(\d+))?")

# (pattern, browser name), first match wins.  The order is the point: Edge,
# Opera, Samsung Internet and most others also say "Chrome/", Chrome says
# "Safari/", and the iOS browsers are all Safari underneath.
_BROWSERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (_rx(r"\bEdg(?:e|A|iOS)?/(\d+)"), "Edge"),
    (_rx(r"\b(?:OPR|OPiOS|OPT)/(\d+)"), "Opera"),
    (_rx(r"\bOpera\b.*\bVersion/(\d+)"), "Opera"),
    (_rx(r"\bOpera[/ ](\d+)"), "Opera"),
    (_rx(r"\bSamsungBrowser/(\d+)"), "Samsung Internet"),
    (_rx(r"\bYaBrowser/(\d+)"), "Yandex Browser"),
    (_rx(r"\bVivaldi/(\d+)"), "Vivaldi"),
    (_rx(r"\bUCBrowser/(\d+)"), "UC Browser"),
    (_rx(r"\bFxiOS/(\d+)"), "Firefox"),
    (_rx(r"\bCriOS/(\d+)"), "Chrome"),
    (_rx(r"\bHeadlessChrome/(\d+)"), "Headless Chrome"),
    # An Android app's embedded browser: "; wv)" and "Version/4.0 Chrome/…".
    (_rx(r"; wv\).*\bChrome/(\d+)"), "Android WebView"),
    (_rx(r"\bChromium/(\d+)"), "Chromium"),
    (_rx(r"\bChrome/(\d+)"), "Chrome"),
    (_rx(r"\bFirefox/(\d+)"), "Firefox"),
    (_rx(r"\bMSIE (\d+)"), "Internet Explorer"),
    (_rx(r"\bTrident/.*\brv:(\d+)"), "Internet Explorer"),
    # Before Chrome, Android's own browser said "Version/4.0 … Safari/".
    (_rx(r"\bAndroid\b.*\bVersion/(\d+).*\bSafari/"), "Android Browser"),
    (_rx(r"\bVersion/(\d+).*\bSafari/"), "Safari"),
)

# (pattern, OS name), first match wins: iOS says "like Mac OS X", Android and
# ChromeOS say "Linux" or "X11".  An iPad asking for desktop sites sends a
# Macintosh user agent and is reported as macOS: nothing in the header tells.
_SYSTEMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (_rx(r"\bWindows Phone\b"), "Windows Phone"),
    (_rx(r"\bWindows\b|\bWin(?:32|64)\b"), "Windows"),
    (_rx(r"\biPad\b"), "iPadOS"),
    (_rx(r"\biP(?:hone|od)\b"), "iOS"),
    (_rx(r"\bCrOS\b"), "ChromeOS"),
    (_rx(r"\bAndroid\b"), "Android"),
    (_rx(r"\bMacintosh\b|\bMac OS X\b"), "macOS"),
    (_rx(r"\bLinux\b|\bX11\b|\bUbuntu\b|\bFedora\b"), "Linux"),
)

# Android tablets leave out "Mobile"; Firefox writes "Tablet" instead.
_TABLET = _rx(r"\bTablet\b|\bKindle\b|\bSilk/")
_MOBILE = _rx(r"\bMobile\b")
_DESKTOP_SYSTEMS = frozenset({"Windows", "macOS", "Linux", "ChromeOS"})


@dataclass(frozen=True, slots=True)
class Device:
    """What a user agent says about itself.

    ``kind`` is one of ``"desktop"``, ``"mobile"``, ``"tablet"``, ``"bot"``
    (crawlers, scripts and headless browsers) or ``"unknown"``.
    """

    browser: str
    os: str
    kind: str

    def __str__(self) -> str:
        return f"{self.browser} on {self.os}"


UNKNOWN_DEVICE = Device(UNKNOWN_BROWSER, UNKNOWN_OS, "unknown")


def describe_user_agent(user_agent: str) -> Device:
    """Return the browser, OS and kind of device named by ``user_agent``.

    Never raises: an empty or unrecognised header gives "Unknown browser",
    "Unknown OS" and kind "unknown".  Only the first :data:`MAX_LENGTH`
    characters are read.
    """
    # Truncate before the cache, so that its keys stay small however long the header.
    return _parse(user_agent[:MAX_LENGTH])


def short_description(user_agent: str, max_bytes: int) -> str:
    """Return ``str(describe_user_agent(user_agent))`` in at most ``max_bytes`` of UTF-8.

    The cut never splits a character; ``max_bytes <= 0`` gives ``""``.
    """
    if max_bytes <= 0:
        return ""
    encoded = str(describe_user_agent(user_agent)).encode()
    # The text was valid UTF-8, so "ignore" can only drop a character cut in half.
    return encoded[:max_bytes].decode("utf-8", "ignore")


@lru_cache(maxsize=1024)
def _parse(user_agent: str) -> Device:
    user_agent = user_agent.strip()
    if not user_agent:
        return UNKNOWN_DEVICE
    os = _first_match(_SYSTEMS, user_agent) or UNKNOWN_OS

    client = _HTTP_CLIENT.search(user_agent)
    if client is not None and client[1].lower() not in _APP_CLIENTS:
        return Device(f"{client[1]} {_major(client[2])}", os, "bot")
    bot = _BOT.search(user_agent) or _OTHER_BOTS.search(user_agent)
    if bot is not None:
        name = bot[1] if bot[2] is None else f"{bot[1]} {_major(bot[2])}"
        return Device(name, os, "bot")

    browser = UNKNOWN_BROWSER
    for pattern, name in _BROWSERS:
        match = pattern.search(user_agent)
        if match is not None:
            browser = f"{name} {_major(match[1])}"
            break
    if browser.startswith("Headless "):
        return Device(browser, os, "bot")
    return Device(browser, os, _kind(user_agent, os))


def _first_match(table: tuple[tuple[re.Pattern[str], str], ...], user_agent: str) -> str | None:
    for pattern, name in table:
        if pattern.search(user_agent):
            return name
    return None


def _major(digits: str) -> str:
    # Kept as text: int() of a few thousand digits raises ValueError.
    return digits.lstrip("0") or "0"


def _kind(user_agent: str, os: str) -> str:
    if os == "iPadOS" or _TABLET.search(user_agent):
        return "tablet"
    if os == "Android":
        return "mobile" if _MOBILE.search(user_agent) else "tablet"
    if os in {"iOS", "Windows Phone"} or _MOBILE.search(user_agent):
        return "mobile"
    if os in _DESKTOP_SYSTEMS:
        return "desktop"
    return "unknown"
