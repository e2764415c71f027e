"""Take the screenshots in docs/screenshots/ from the demo site, in headless Chromium.

Run ``.venv/bin/python -m tests.screenshots`` from the repository root: it starts
the demo (its own redis-server and database in a temporary directory), signs in
a few "devices" with different browsers, and photographs the admin list, one
session's detail page and alice's "Your sessions" page.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page

from .browser import chromium
from .test_admin_browser import PHONE, SESSIONS_ADMIN, USER_PAGE, admin_sign_in
from .test_testproject import add_to_cart, running_demo, sign_in, submit

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
VIEWPORT = {"width": 1440, "height": 760}
FIREFOX_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
)
CHROME_ON_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_demo(Path(tmp)) as site,
        chromium() as browser,
    ):

        def device(user_agent: str) -> Page:
            context = browser.new_context(
                base_url=site.url, user_agent=user_agent, viewport=VIEWPORT
            )
            return context.new_page()

        laptop, phone, bobs = device(CHROME_ON_MAC), device(PHONE), device(FIREFOX_ON_WINDOWS)
        for page, username in ((laptop, "alice"), (phone, "alice"), (bobs, "bob")):
            sign_in(page, username)
        laptop.goto("/products/")
        add_to_cart(laptop, 2)

        staff = device(CHROME_ON_MAC)
        admin_sign_in(staff)
        staff.goto(SESSIONS_ADMIN)
        # Room for every column: fold the admin's navigation sidebar (it stays folded).
        staff.locator("#toggle-nav-sidebar").click()
        staff.screenshot(path=OUT / "admin-list.png", full_page=True)

        staff.goto(SESSIONS_ADMIN + "?q=alice&o=-last_seen")
        submit(staff, staff.locator("tr.session th a").first)
        staff.screenshot(path=OUT / "admin-detail.png", full_page=True)

        laptop.goto(USER_PAGE)
        laptop.screenshot(path=OUT / "user-sessions.png", full_page=True)
    for name in ("admin-list.png", "admin-detail.png", "user-sessions.png"):
        sys.stdout.write(f"wrote {OUT / name}\n")


if __name__ == "__main__":
    main()
