"""The demo site in testproject/, run as a real server and used in headless Chromium.

One ``runserver`` process (with its own redis-server and SQLite file) serves the
whole module; each test empties Redis and opens fresh browser contexts, one per
"device".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from .browser import chromium
from .redis_server import RedisServer, claim_free_port, release_port

TESTPROJECT = Path(__file__).resolve().parent.parent / "testproject"
STARTUP_TIMEOUT = 30.0


@dataclass
class DemoSite:
    url: str
    redis: RedisServer
    env: dict[str, str]
    users_created: str  # what the first create_demo_users printed


def demo_env(redis_url: str, database: Path) -> dict[str, str]:
    # pytest-django exported tests.settings; the demo must use its own.
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "ELASTIC_SESSIONS_REDIS_URL": redis_url,
        "DEMO_DATABASE_PATH": str(database),
        "DEMO_FAST_PASSWORD_HASHER": "1",
    }


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=TESTPROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    )
    return result


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runserver exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"runserver did not answer {url} in time:\n{log.read_text()}")


@contextmanager
def running_demo(tmp: Path, engine: str = "redis") -> Iterator[DemoSite]:
    """The demo on a free port with a private redis-server and database (in ``tmp``)."""
    (tmp / "redis").mkdir()
    with ExitStack() as cleanup:
        redis = RedisServer(datadir=tmp / "redis", port=claim_free_port())
        cleanup.callback(release_port, redis.port)
        cleanup.callback(redis.stop)
        redis.start()
        port = claim_free_port()
        cleanup.callback(release_port, port)
        env = {**demo_env(redis.url, tmp / "db.sqlite3"), "DEMO_SESSION_ENGINE": engine}
        manage(env, "migrate", "--noinput")
        users_created = manage(env, "create_demo_users").stdout
        log = tmp / "runserver.log"
        log_file = cleanup.enter_context(log.open("wb"))
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=TESTPROJECT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        cleanup.callback(stop_process, process)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url + "/", process, log)
        yield DemoSite(url=url, redis=redis, env=env, users_created=users_created)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    """The demo site on a free port, with a private redis-server and database."""
    with running_demo(tmp_path_factory.mktemp("demo")) as site:
        yield site


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def new_device(browser: Browser, demo: DemoSite) -> Iterator[Callable[[], Page]]:
    """Open browser contexts (separate cookie jars) on the demo, Redis emptied first."""
    demo.redis.client().flushall()
    contexts: list[BrowserContext] = []

    def open_device() -> Page:
        context = browser.new_context(base_url=demo.url)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield open_device
    for context in contexts:
        context.close()


def submit(page: Page, button: Locator) -> None:
    """Click a form's button and wait for the page it leads to (after redirects)."""
    with page.expect_navigation() as navigation:
        button.click()
    response = navigation.value
    assert response is not None
    # With DEBUG on, the title of an error page names the exception.
    assert response.ok, f"{response.status} from {response.url}: {page.title()}"


def sign_in(page: Page, username: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", username)  # the demo users' passwords are their names
    submit(page, page.get_by_role("button", name="Sign in"))
    expect(page.locator("#who")).to_have_text(f"Signed in as {username}")


def expect_signed_out(page: Page) -> None:
    expect(page.locator("#who")).to_have_text("Not signed in")


def add_to_cart(page: Page, product_id: int) -> None:
    submit(page, page.locator(f"#products tr[data-product='{product_id}'] button"))
    expect(page.locator(".messages")).to_contain_text("to your cart")


def listed_sessions(page: Page) -> tuple[str, list[str]]:
    """Open "Your sessions": (the storage id marked this device, the others)."""
    page.goto("/sessions/")
    expect(page.locator("h1")).to_have_text("Your sessions")
    current = page.locator("tr.session[data-current]")
    expect(current).to_have_count(1)
    expect(current).to_contain_text("this device")
    current_id = current.get_attribute("data-storage-id")
    assert current_id
    others = page.locator("tr.session:not([data-current])").all()
    return current_id, [row.get_attribute("data-storage-id") or "" for row in others]


def test_manage_py_check_is_clean(redis_server: RedisServer, tmp_path: Path) -> None:
    """`manage.py check` reports no errors and no warnings for the demo settings."""
    env = demo_env(redis_server.url, tmp_path / "db.sqlite3")
    result = manage(env, "check", "--fail-level", "WARNING")
    assert "System check identified no issues" in result.stdout


def test_demo_runs_on_the_hybrid_engine(redis_server: RedisServer, tmp_path: Path) -> None:
    """DEMO_SESSION_ENGINE=hybrid: the checks pass, the migrations make the durable
    tables, and the engine the demo loads is the hybrid one."""
    env = {**demo_env(redis_server.url, tmp_path / "db.sqlite3"), "DEMO_SESSION_ENGINE": "hybrid"}
    manage(env, "check", "--fail-level", "WARNING")
    manage(env, "migrate", "--noinput")
    script = (
        "from django.conf import settings; from django.db import connection; "
        "print(settings.SESSION_ENGINE); "
        "print('elastic_sessions_session' in connection.introspection.table_names())"
    )
    result = manage(env, "shell", "-c", script)
    # (Django 5.2's shell may first say how many objects it imported.)
    assert result.stdout.split()[-2:] == ["elastic_sessions.backends.hybrid", "True"]


def test_create_demo_users_is_idempotent(demo: DemoSite) -> None:
    """create_demo_users creates the three users once and leaves them alone after."""
    assert "Created user 'alice'" in demo.users_created
    assert "Created user 'bob'" in demo.users_created
    assert "Created superuser 'admin'" in demo.users_created
    again = manage(demo.env, "create_demo_users").stdout
    assert again.count("left unchanged") == 3


def test_cart_is_kept_in_the_session(new_device: Callable[[], Page]) -> None:
    """The cart survives reloads and sign-in, and can be changed and emptied."""
    page = new_device()
    page.goto("/products/")
    add_to_cart(page, 1)
    sign_in(page, "alice")  # an anonymous cart comes along
    page.goto("/products/")
    add_to_cart(page, 1)
    add_to_cart(page, 3)

    page.goto("/")
    page.reload()
    expect(page.locator("#cart tr[data-product='1'] .quantity")).to_have_text("2")
    expect(page.locator("#cart tr[data-product='3'] .quantity")).to_have_text("1")
    expect(page.locator("#total")).to_have_text("€54.90")

    submit(page, page.locator("#cart tr[data-product='3'] button"))
    expect(page.locator("#cart tr[data-product='3']")).to_have_count(0)
    page.reload()
    expect(page.locator("#cart tr[data-product='1'] .quantity")).to_have_text("2")

    submit(page, page.get_by_role("button", name="Clear cart"))
    page.reload()
    expect(page.locator("#cart-empty")).to_be_visible()


def test_sessions_page_lists_each_device(new_device: Callable[[], Page]) -> None:
    """Two browsers signed in as alice each see both sessions, their own marked."""
    laptop, phone = new_device(), new_device()
    sign_in(laptop, "alice")
    laptop.goto("/products/")
    add_to_cart(laptop, 2)
    sign_in(phone, "alice")

    laptop_id, laptop_others = listed_sessions(laptop)
    phone_id, phone_others = listed_sessions(phone)
    assert laptop_others == [phone_id]
    assert phone_others == [laptop_id]
    # Same user, separate sessions: the laptop's cart is not on the phone.
    phone.goto("/")
    expect(phone.locator("#cart-empty")).to_be_visible()


def test_revoked_device_is_signed_out(new_device: Callable[[], Page]) -> None:
    """Revoking another session signs that browser out on its next request."""
    laptop, phone = new_device(), new_device()
    sign_in(laptop, "alice")
    sign_in(phone, "alice")
    laptop_id, (phone_id,) = listed_sessions(laptop)

    submit(laptop, laptop.locator(f"tr[data-storage-id='{phone_id}'] button"))
    expect(laptop.locator(".messages")).to_contain_text("Signed that session out")
    expect(laptop.locator("tr.session")).to_have_count(1)

    phone.reload()
    expect_signed_out(phone)
    phone.goto("/sessions/")
    expect(phone).to_have_url("/accounts/login/?next=/sessions/")
    assert listed_sessions(laptop) == (laptop_id, [])


def test_sign_out_everywhere_else(new_device: Callable[[], Page]) -> None:
    """Signing out everywhere else ends every other session and keeps this one."""
    laptop, phone, tablet = new_device(), new_device(), new_device()
    for page in (laptop, phone, tablet):
        sign_in(page, "alice")
    laptop_id, others = listed_sessions(laptop)
    assert len(others) == 2

    submit(laptop, laptop.get_by_role("button", name="Sign out everywhere else"))
    expect(laptop.locator(".messages")).to_contain_text("Signed out 2 other sessions")
    for page in (phone, tablet):
        page.reload()
        expect_signed_out(page)
    assert listed_sessions(laptop) == (laptop_id, [])


def test_sign_out_ends_only_this_session(new_device: Callable[[], Page]) -> None:
    """Signing out ends this browser's session and leaves the user's others alone."""
    laptop, phone = new_device(), new_device()
    sign_in(laptop, "alice")
    sign_in(phone, "alice")
    phone_id, _ = listed_sessions(phone)

    submit(laptop, laptop.get_by_role("button", name="Sign out", exact=True))
    expect_signed_out(laptop)
    laptop.goto("/sessions/")
    expect(laptop).to_have_url("/accounts/login/?next=/sessions/")
    assert listed_sessions(phone) == (phone_id, [])


def test_other_users_sessions_are_out_of_reach(new_device: Callable[[], Page]) -> None:
    """Bob never sees alice's sessions and cannot revoke one by posting its id."""
    laptop, phone, bobs = new_device(), new_device(), new_device()
    sign_in(laptop, "alice")
    sign_in(phone, "alice")
    sign_in(bobs, "bob")
    laptop_id, (phone_id,) = listed_sessions(laptop)

    bob_id, bob_others = listed_sessions(bobs)
    assert bob_others == []
    page_text = bobs.content()
    assert laptop_id not in page_text
    assert phone_id not in page_text

    # Bob forges the revoke form with alice's storage id (and his own CSRF token).
    token = bobs.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    response = bobs.request.post(
        "/sessions/revoke/", form={"csrfmiddlewaretoken": token, "storage_id": phone_id}
    )
    assert response.ok
    assert "No such session of yours" in response.text()

    phone.reload()
    expect(phone.locator("#who")).to_have_text("Signed in as alice")
    assert listed_sessions(laptop) == (laptop_id, [phone_id])
    assert listed_sessions(bobs) == (bob_id, [])


def test_admin_signs_in(new_device: Callable[[], Page]) -> None:
    """The staff demo user signs in to the Django admin, on these sessions too."""
    page = new_device()
    page.goto("/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin")
    submit(page, page.get_by_role("button", name="Log in"))
    expect(page.locator("#site-name")).to_contain_text("Django administration")
    expect(page.get_by_role("link", name="Users")).to_be_visible()
