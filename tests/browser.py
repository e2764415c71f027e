"""Headless Chromium for end-to-end tests: Debian's binary, driven by Playwright.

We use the system ``chromium`` (``./dev test`` installs it) rather than
``playwright install``, which downloads browsers from a CDN at test time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    # Containers and CI runners often lack the user namespaces the sandbox needs.
    "--no-sandbox",
    "--disable-gpu",
    # No update checks or field trials: tests stay offline and quiet.
    "--disable-background-networking",
    "--disable-component-update",
]


def require_chromium() -> None:
    """Skip the calling test when there is no Chromium to drive."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(`apt-get install chromium`; ./dev test does this) to run browser tests."
        )


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards; skips when it is not installed."""
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
