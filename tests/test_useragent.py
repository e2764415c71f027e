"""User agents are named by browser, OS and kind of device, and no header makes that fail."""

from __future__ import annotations

import random
import time

import pytest

from elastic_sessions import useragent
from elastic_sessions.useragent import Device, describe_user_agent, short_description

# (user agent, browser, os, kind): real headers, most of them from 2024.
REAL_WORLD = [
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Chrome 131",
        "macOS",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Chrome 131",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        "Chrome 126",
        "Linux",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
        "Edge 131",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/70.0.3538.102 Safari/537.36 Edge/18.19582",
        "Edge 18",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.0.0 Safari/537.36 OPR/114.0.0.0",
        "Opera 114",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Firefox 128",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.7; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Firefox 133",
        "macOS",
        "desktop",
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "Firefox 132",
        "Linux",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Safari/605.1.15",
        "Safari 17",
        "macOS",
        "desktop",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Safari 17",
        "iOS",
        "mobile",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.6 Mobile/15E148 Safari/604.1",
        "Safari 16",
        "iPadOS",
        "tablet",
    ),
    # An iPad asking for desktop sites is indistinguishable from a Mac.
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Safari/605.1.15",
        "Safari 18",
        "macOS",
        "desktop",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        "Chrome 131",
        "iOS",
        "mobile",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) FxiOS/132.0 Mobile/15E148 Safari/605.1.15",
        "Firefox 132",
        "iOS",
        "mobile",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) EdgiOS/131.2903.68 Version/17.0 Mobile/15E148 Safari/604.1",
        "Edge 131",
        "iOS",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        "Chrome 131",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Chrome 131",
        "Android",
        "tablet",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        "Samsung Internet 26",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
        "Firefox 133",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Android 14; Tablet; rv:133.0) Gecko/133.0 Firefox/133.0",
        "Firefox 133",
        "Android",
        "tablet",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0.6723.107 Mobile Safari/537.36 OPR/85.0.4341.79833",
        "Opera 85",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36",
        "Android WebView 116",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Chrome 131",
        "ChromeOS",
        "desktop",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Ubuntu Chromium/120.0.6099.224 Chrome/120.0.6099.224 Safari/537.36",
        "Chromium 120",
        "Linux",
        "desktop",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.6099.109 Safari/537.36",
        "Headless Chrome 120",
        "Linux",
        "bot",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
        "Internet Explorer 11",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Googlebot 2",
        "Unknown OS",
        "bot",
    ),
    (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Googlebot 2",
        "Android",
        "bot",
    ),
    (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
        "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
        "bingbot 2",
        "Unknown OS",
        "bot",
    ),
    (
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "facebookexternalhit 1",
        "Unknown OS",
        "bot",
    ),
    ("curl/8.5.0", "curl 8", "Unknown OS", "bot"),
    ("python-requests/2.32.3", "python-requests 2", "Unknown OS", "bot"),
    ("Wget/1.21.4", "Wget 1", "Unknown OS", "bot"),
    # A phone whose model name ends in "bot" is still a phone.
    (
        "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.6099.230 Mobile Safari/537.36",
        "Chrome 120",
        "Android",
        "mobile",
    ),
]

HOSTILE = [
    "",
    " ",
    "\x00" * 10,
    "x" * 100_000,
    "Chrome/" + "9" * 100_000,
    "Mozilla/5.0 (" * 20_000,
    "\U0001f600" * 1000,
    "Chrome/\u0661\u0662\u0663 \U0001f600 Firefox/",
    "\ud800 lone surrogate Safari/",
    "Version/1 Safari/ Android " * 200,
    "Opera Version/1 " * 200,
    "; wv) Chrome/" * 200,
    "a" + "bot" * 300,
    "Trident/ rv:" * 300,
]


@pytest.mark.parametrize(("user_agent", "browser", "os", "kind"), REAL_WORLD)
def test_real_world_user_agents(user_agent, browser, os, kind):
    """Common browsers, systems and bots are named, despite the tokens they borrow."""
    assert describe_user_agent(user_agent) == Device(browser, os, kind)


def test_str_names_browser_and_os():
    """A device reads as "<browser> on <os>"."""
    assert str(Device("Chrome 131", "macOS", "desktop")) == "Chrome 131 on macOS"


@pytest.mark.parametrize("user_agent", ["", "   ", "\x00" * 10, "garbage", "Mozilla/5.0"])
def test_unrecognised_is_unknown(user_agent):
    """An empty or meaningless header gives the unknown device."""
    assert describe_user_agent(user_agent) == Device("Unknown browser", "Unknown OS", "unknown")


@pytest.mark.parametrize("user_agent", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_never_raises_and_stays_ascii(user_agent):
    """Huge, binary, non-ASCII and pathological headers give a plain ASCII device, fast."""
    useragent._parse.cache_clear()
    started = time.perf_counter()
    device = describe_user_agent(user_agent)
    assert time.perf_counter() - started < 0.5
    assert str(device).isascii()


def test_random_bytes_never_raise():
    """Random bytes decoded with replacement characters always give a device."""
    rng = random.Random(1234)
    for _ in range(2000):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(600)))
        assert isinstance(describe_user_agent(raw.decode("utf-8", errors="replace")), Device)


def test_only_the_first_512_characters_count():
    """A browser token past MAX_LENGTH characters is not read."""
    padding = "x" * useragent.MAX_LENGTH
    assert describe_user_agent(padding + " Firefox/128.0").browser == "Unknown browser"
    assert describe_user_agent("Firefox/128.0 " + padding).browser == "Firefox 128"


def test_versions_are_ascii_major_only():
    """Leading zeros go and non-ASCII digits are not a version."""
    assert describe_user_agent("Mozilla/5.0 (X11; Linux) Firefox/0128.5").browser == "Firefox 128"
    assert describe_user_agent("Firefox/\u0661\u0662\u0663").browser == "Unknown browser"


def test_parse_is_cached():
    """A repeated header is parsed once."""
    useragent._parse.cache_clear()
    describe_user_agent("curl/8.5.0")
    describe_user_agent("curl/8.5.0")
    assert useragent._parse.cache_info().hits == 1


def test_short_description_fits_the_byte_limit():
    """The description is cut to the byte limit, or is whole when it fits."""
    ua = REAL_WORLD[0][0]
    assert short_description(ua, 100) == "Chrome 131 on macOS"
    assert short_description(ua, 10) == "Chrome 131"
    assert short_description(ua, 0) == ""
    assert short_description(ua, -5) == ""


def test_short_description_never_splits_a_character(monkeypatch):
    """A multibyte character that does not fit whole is left out."""
    monkeypatch.setattr(
        useragent,
        "describe_user_agent",
        lambda ua: Device("Navigateur \u00e9\u20ac\U0001f600", "Syst\u00e8me", "desktop"),
    )
    full = "Navigateur \u00e9\u20ac\U0001f600 on Syst\u00e8me"
    for limit in range(len(full.encode()) + 2):
        text = short_description("ua", limit)
        encoded = text.encode()
        assert len(encoded) <= limit
        assert full.encode().startswith(encoded)
        # Only a character that would not fit whole is dropped.
        assert len(encoded) > limit - 4 or text == full
