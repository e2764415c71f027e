"""A million sessions: the admin list's Redis work per page does not grow with the store.

Each read is counted server-side (``CONFIG RESETSTAT``, then ``INFO
commandstats``), so commands a Lua script runs count too.  Timings are the
benchmark's (``python -m benchmarks.listing``), never asserted here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import pytest
from django.test import Client

from benchmarks.fill import IP, SESSIONS_PER_USER, fill, storage_id
from benchmarks.listing import CHANGELIST, admin_settings
from elastic_sessions import listing
from elastic_sessions.listing import ListQuery

pytestmark = pytest.mark.slow

SMALL, LARGE = 1_000, 1_000_000
PER_PAGE = 50
DAY = 86400
# User 1 owns sessions 0 .. SESSIONS_PER_USER - 1 at both sizes.
USER = "1"

# The most commands listing_redis.page() can send for a page, read from its code:
#   prune (_prune): ZRANGEBYSCORE, and ZREM on both sets if entries expired  3
#   ranks (_range_page): EVALSHA of RANGE_PAGE, inside it ZCOUNT, one more
#     ZCOUNT for a bounded range and ZRANGE or ZREVRANGE; a second call when
#     the page asked for is past the end                                    2 x 4
#   rows (_rows): HMGET, PTTL and MEMORY USAGE per row, and ZREM on both
#     sets for sessions found gone                                     3 x page + 2
PAGE_BOUND = 13 + 3 * PER_PAGE
# counts(): the same prune, then three ZCOUNTs.
COUNTS_BOUND = 3 + 3
# A user filter skips the sets: ZRANGEBYSCORE of the user's index, the rows of
# the user's live sessions (at most MAX_USER_SESSIONS), ZREM of gone ones.
USER_BOUND = 1 + 3 * SESSIONS_PER_USER + 2
# detail(): HGETALL, PTTL, MEMORY USAGE.
DETAIL_BOUND = 3
# An admin page is counts() and one page, plus the staff member's own session:
# its load (HGETALL, PTTL) and, when due, its touch (EVAL of TOUCH, which runs
# HGET, HSET, PTTL and PEXPIRE) and the ZADDs of both listing sets.
ADMIN_SESSION_BOUND = 2 + 5 + 2
ADMIN_BOUND = COUNTS_BOUND + PAGE_BOUND + ADMIN_SESSION_BOUND


def counted(admin, read):
    """What ``read()`` returns, and the commands Redis ran for it, by name."""
    admin.config_resetstat()
    result = read()
    stats = admin.info("commandstats")
    calls = Counter(
        {
            name.removeprefix("cmdstat_"): entry["calls"]
            for name, entry in stats.items()
            # The counting's own commands.
            if not name.startswith(("cmdstat_config", "cmdstat_info"))
        }
    )
    return result, calls


def reads(size):
    """The reads compared at both sizes: pages at the start, middle and end of
    both orders, both range filters, the counts, a user's sessions, a detail."""
    last = size // PER_PAGE
    pages = {
        f"{order} page {name}": (ListQuery(order=order), number)
        for order in ("-last_seen", "expires")
        for name, number in (("first", 1), ("middle", last // 2), ("last", last))
    }
    pages["idle for a day, page 2"] = (ListQuery(idle_for=DAY), 2)
    pages["expiring within a week, page 2"] = (ListQuery(expiring_within=7 * DAY), 2)
    pages["user 1"] = (ListQuery(user_ids=(USER,)), 1)
    found: dict[str, Callable[[], object]] = {
        name: partial(listing.list_page, query, number, PER_PAGE)
        for name, (query, number) in pages.items()
    }
    found["counts"] = listing.counts
    found["detail"] = partial(listing.detail, storage_id(SESSIONS_PER_USER))
    return found


def admin_reads(size):
    """Admin list pages compared at both sizes (the staff member's session makes size + 1)."""
    last = size // PER_PAGE + 1
    return {
        "admin first page": CHANGELIST,
        "admin middle page": f"{CHANGELIST}?p={last // 2}",
        "admin last page": f"{CHANGELIST}?p={last}",
        "admin expires order, last page": f"{CHANGELIST}?o=expires&p={last}",
        "admin idle for a day": f"{CHANGELIST}?idle={DAY}&p=2",
        "admin user 1": f"{CHANGELIST}?user={USER}",
    }


@pytest.fixture
def admin_pages(settings):
    """The admin installed, with what its templates need (tests/settings.py has none of it)."""
    for name, value in admin_settings(list(settings.INSTALLED_APPS)).items():
        setattr(settings, name, value)


def measure(admin, size, staff):
    """Fill ``size`` sessions, then count each read's commands (after one warm-up
    call, which loads the scripts and opens the connection)."""
    admin.flushall()
    population = fill(admin, size, now=int(time.time()))
    found = {}
    for name, read in reads(size).items():
        read()
        found[name] = counted(admin, read)
    # Signed in only now (not pytest-django's admin_client): the session must be
    # on this server, and survive the FLUSHALL of the other size.
    browser = Client()
    browser.force_login(staff)
    for name, url in admin_reads(size).items():
        # The first request records the browser on its session (a write):
        # count a steady-state request.
        browser.get(url)
        found[name] = counted(admin, partial(browser.get, url))
    return population, found


def expected_order(population):
    """Session numbers by last seen, latest first (and so by expiry, latest first)."""
    return sorted(range(population.size), key=population.last_seen, reverse=True)


def numbers(page):
    return [int(row.storage_id) for row in page.rows]


def test_redis_commands_per_page_are_bounded_and_the_same_at_a_million(
    redis_factory, use_server, admin_pages, admin_user
):
    """Every list read sends the same commands with 1,000 sessions as with 1,000,000,
    at most a constant plus three per row; the pages hold the right sessions in order."""
    server = redis_factory()
    use_server(server)
    with server.client() as admin:
        _, small = measure(admin, SMALL, admin_user)
        population, large = measure(admin, LARGE, admin_user)

    for name, (_, calls) in large.items():
        print(f"{name}: {calls.total()} commands {dict(sorted(calls.items()))}")
    assert {name: calls for name, (_, calls) in large.items()} == {
        name: calls for name, (_, calls) in small.items()
    }
    for name, (result, calls) in large.items():
        if name.startswith("admin"):
            assert result.status_code == 200, name
            bound = ADMIN_BOUND
        elif name == "counts":
            bound = COUNTS_BOUND
        elif name == "detail":
            bound = DETAIL_BOUND
        elif name == "user 1":
            bound = USER_BOUND
        else:
            bound = PAGE_BOUND
            # Only the page's own sessions were read.
            assert calls["hmget"] == calls["pttl"] == len(result.rows) == PER_PAGE, name
        assert calls.total() <= bound, (name, calls)

    latest_first = expected_order(population)
    last = LARGE // PER_PAGE
    for order, expected in (("-last_seen", latest_first), ("expires", latest_first[::-1])):
        for label, number in (("first", 1), ("middle", last // 2), ("last", last)):
            page, _ = large[f"{order} page {label}"]
            assert (page.total, page.number) == (LARGE, number)
            start = (number - 1) * PER_PAGE
            assert numbers(page) == expected[start : start + PER_PAGE], (order, label)
    for row in large["-last_seen page middle"][0].rows:
        n = int(row.storage_id)
        assert row.last_seen == datetime.fromtimestamp(population.last_seen(n), UTC)
        assert row.expires is not None
        assert abs(row.expires.timestamp() - population.expires(n)) <= 2
        assert (row.user_id, row.ip, row.device) == (
            population.owner(n),
            IP,
            "Firefox 128 on Windows",
        )

    idle, _ = large["idle for a day, page 2"]
    seen = [population.last_seen(n) for n in numbers(idle)]
    assert seen == sorted(seen, reverse=True)
    assert max(seen) <= time.time() - DAY
    assert LARGE * 0.9 < idle.total < LARGE
    expiring, _ = large["expiring within a week, page 2"]
    ends = [population.expires(n) for n in numbers(expiring)]
    assert ends == sorted(ends)
    assert max(ends) <= time.time() + 7 * DAY
    assert LARGE * 0.45 < expiring.total < LARGE * 0.55

    counts, _ = large["counts"]
    assert counts.active == LARGE
    owned, _ = large["user 1"]
    assert sorted(numbers(owned)) == population.sessions_of(USER)
    first_admin_page, _ = large["admin first page"]
    assert first_admin_page.context["page"].total == LARGE + 1  # the staff member's own
    assert len(first_admin_page.context["rows"]) == PER_PAGE
