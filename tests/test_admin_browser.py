"""The admin's "Active sessions" and the user's sessions page in headless Chromium,
on the demo site run as a real server, once per engine (the hybrid one also with
its Redis killed).  Each "device" is a browser context with its own cookies."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from .browser import chromium
from .test_testproject import (
    DemoSite,
    expect_signed_out,
    manage,
    running_demo,
    sign_in,
    submit,
)

SESSIONS_ADMIN = "/admin/elastic_sessions/activesession/"
USER_PAGE = "/account/sessions/"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(scope="module", params=["redis", "hybrid"])
def site(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    """The demo, once per engine."""
    with running_demo(tmp_path_factory.mktemp(f"demo-{request.param}"), request.param) as site:
        yield site


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def new_device(browser: Browser, site: DemoSite) -> Iterator[Callable[..., Page]]:
    """Open browser contexts (separate cookie jars) on the demo, sessions emptied first."""
    site.redis.client().flushall()
    # The hybrid engine's sessions live in the database too.
    manage(site.env, "shell", "-c", CLEAR_DURABLE_SESSIONS)
    contexts: list[BrowserContext] = []

    def open_device(user_agent: str | None = None) -> Page:
        context = browser.new_context(base_url=site.url, user_agent=user_agent)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_device
    for context in contexts:
        context.close()


CLEAR_DURABLE_SESSIONS = (
    "from elastic_sessions.models import DurableSession, RedisInvalidation; "
    "DurableSession.objects.all().delete(); RedisInvalidation.objects.all().delete()"
)


def admin_sign_in(page: Page) -> None:
    page.goto("/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin")
    submit(page, page.get_by_role("button", name="Log in"))
    expect(page.locator("#site-name")).to_contain_text("Django administration")


def expect_signed_in(page: Page, username: str) -> None:
    page.reload()
    expect(page.locator("#who")).to_have_text(f"Signed in as {username}")


def storage_ids(page: Page) -> list[str]:
    return [row.get_attribute("data-storage-id") or "" for row in page.locator("tr.session").all()]


def test_staff_lists_searches_inspects_and_revokes(new_device: Callable[..., Page]) -> None:
    """Staff list every session, find alice's by search, open it (data masked), revoke it
    through the confirmation page, and alice's browser is signed out on its next request."""
    phone, bobs = new_device(PHONE), new_device()
    sign_in(phone, "alice")
    sign_in(bobs, "bob")
    staff = new_device()
    admin_sign_in(staff)

    staff.get_by_role("link", name="Active sessions").click()
    expect(staff.locator("h1")).to_have_text("Active sessions")
    expect(staff.locator("tr.session")).to_have_count(3)
    expect(staff.locator("#session-counts")).to_contain_text("3 active")

    staff.fill("#searchbar", "alic")
    submit(staff, staff.get_by_role("button", name="Search"))
    expect(staff.locator("tr.session")).to_have_count(1)
    row = staff.locator("tr.session")
    expect(row.locator("td.user")).to_contain_text("alice")
    (alice_sid,) = storage_ids(staff)

    submit(staff, row.locator("th a"))
    expect(staff.locator("h1")).to_have_text("Session of alice")
    expect(staff.locator("#session-meta")).to_contain_text(alice_sid)
    hash_row = staff.locator("#session-data tr[data-key='_auth_user_hash'] pre")
    expect(hash_row).to_have_text('"********"')

    submit(staff, staff.locator("#revoke-session"))
    expect(staff.locator("#revoke-targets")).to_contain_text(alice_sid)
    expect_signed_in(phone, "alice")  # only asked so far
    submit(staff, staff.locator("#confirm-revoke"))
    expect(staff.locator(".messagelist")).to_contain_text("Revoked 1 session.")

    phone.reload()
    expect_signed_out(phone)
    expect_signed_in(bobs, "bob")

    # The action on the list: select bob's session, revoke it.
    staff.goto(SESSIONS_ADMIN + "?q=bob")
    staff.locator("tr.session input.action-select").check()
    staff.select_option("select[name=action]", "revoke_selected")
    submit(staff, staff.get_by_role("button", name="Go"))
    submit(staff, staff.locator("#confirm-revoke"))
    bobs.reload()
    expect_signed_out(bobs)

    # Each revocation is in the admin's log.
    staff.goto("/admin/")
    expect(staff.locator("#recent-actions-module")).to_contain_text("of alice")
    expect(staff.locator("#recent-actions-module")).to_contain_text("of bob")


def test_user_page_revokes_one_and_everywhere_else(new_device: Callable[..., Page]) -> None:
    """Alice sees her devices, this one marked, revokes one, then signs out everywhere else."""
    laptop, phone, tablet = new_device(), new_device(PHONE), new_device()
    for page in (laptop, phone, tablet):
        sign_in(page, "alice")
    bobs = new_device()
    sign_in(bobs, "bob")

    laptop.get_by_role("link", name="Your sessions").click()
    expect(laptop.locator("h1")).to_have_text("Your sessions")
    expect(laptop.locator("tr.session")).to_have_count(3)
    current = laptop.locator("tr.session[data-current]")
    expect(current).to_contain_text("This device")
    phone.goto(USER_PAGE)
    phone_sid = phone.locator("tr.session[data-current]").get_attribute("data-storage-id")

    submit(laptop, laptop.locator(f"tr[data-storage-id='{phone_sid}'] button"))
    expect(laptop.locator(".messages")).to_contain_text("Signed that session out.")
    expect(laptop.locator("tr.session")).to_have_count(2)
    phone.reload()
    expect(phone).to_have_url(f"/accounts/login/?next={USER_PAGE}")

    submit(laptop, laptop.get_by_role("button", name="Sign out everywhere else"))
    expect(laptop.locator(".messages")).to_contain_text("Signed out 1 other session.")
    expect(laptop.locator("tr.session")).to_have_count(1)
    tablet.reload()
    expect_signed_out(tablet)
    expect_signed_in(bobs, "bob")
    expect_signed_in(laptop, "alice")


# (The redis engine answers 503 while Redis is down: tests/test_outage.py.)
@pytest.mark.parametrize("site", ["hybrid"], indirect=True)
def test_hybrid_admin_with_redis_down(site: DemoSite, new_device: Callable[..., Page]) -> None:
    """With its Redis killed, the hybrid demo's admin still lists and revokes sessions, and
    the revoked browser is signed out."""
    phone, staff = new_device(PHONE), new_device()
    sign_in(phone, "alice")
    admin_sign_in(staff)
    site.redis.kill()
    try:
        staff.goto(SESSIONS_ADMIN + "?q=alice")
        expect(staff.locator("tr.session")).to_have_count(1)
        expect(staff.locator("tr.session")).to_contain_text("database")
        staff.locator("tr.session input.action-select").check()
        staff.select_option("select[name=action]", "revoke_users")
        submit(staff, staff.get_by_role("button", name="Go"))
        expect(staff.locator("#revoke-targets")).to_contain_text("alice: 1 session")
        submit(staff, staff.locator("#confirm-revoke"))
        expect(staff.locator(".messagelist")).to_contain_text("Revoked 1 session.")
        phone.reload()
        expect_signed_out(phone)
    finally:
        site.redis.start()
