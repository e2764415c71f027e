"""The admin's session list at a thousand and a million sessions.

    python -m benchmarks.listing [--sizes 1000,1000000] [--repeats N]

Starts its own redis-server, fills it server-side (``benchmarks.fill``) and
times ``elastic_sessions.listing`` and the admin's list page through Django's
test client, each read warmed up once and then repeated; prints the median and
95th percentile per size and the ratio of the largest size to the smallest.
Also prints Redis memory per session (``used_memory`` delta / N), with and
without the two listing sets.  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis

from .cli import code_version
from .environment import configure_django, redis_server, scratch_database
from .fill import SESSIONS_PER_USER, fill, storage_id
from .measure import RunSamples

PER_PAGE = 50
DAY = 86400


def admin_settings(installed_apps: list[str]) -> dict[str, Any]:
    """The settings the admin list needs on top of minimal ones (the benchmark's, the tests').

    Apply them with ``override_settings``: installing the admin that way loads its models.
    """
    needed = ("django.contrib.admin", "django.contrib.messages")
    return {
        "INSTALLED_APPS": [*installed_apps, *(app for app in needed if app not in installed_apps)],
        "TEMPLATES": [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        "MIDDLEWARE": [
            "elastic_sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        "STATIC_URL": "/static/",
        "ROOT_URLCONF": "benchmarks.admin_urls",
        "ALLOWED_HOSTS": ["testserver"],
    }


CHANGELIST = "/admin/elastic_sessions/activesession/"


def _reads(size: int, browser: Any) -> dict[str, Callable[[], object]]:
    from elastic_sessions import listing
    from elastic_sessions.listing import ListQuery

    last = max(1, -(-size // PER_PAGE))
    found: dict[str, Callable[[], object]] = {}
    for order in ("-last_seen", "expires"):
        for label, number in (("first", 1), ("middle", max(1, last // 2)), ("last", last)):
            found[f"list_page {order} {label}"] = partial(
                listing.list_page, ListQuery(order=order), number, PER_PAGE
            )
    found["list_page idle for a day"] = partial(
        listing.list_page, ListQuery(idle_for=DAY), 2, PER_PAGE
    )
    found["list_page of one user"] = partial(
        listing.list_page, ListQuery(user_ids=("2",)), 1, PER_PAGE
    )
    found["counts()"] = listing.counts
    found["detail()"] = partial(listing.detail, storage_id(SESSIONS_PER_USER))
    # The staff member's own session is one more: its last page is the size's + 1.
    admin_last = size // PER_PAGE + 1
    for label, querystring in (
        ("first", ""),
        ("middle", f"?p={max(1, admin_last // 2)}"),
        ("last", f"?p={admin_last}"),
        ("last, by expiry", f"?o=expires&p={admin_last}"),
    ):
        found[f"admin list page, {label}"] = partial(_get, browser, CHANGELIST + querystring)
    return found


def _get(browser: Any, url: str) -> Any:
    response = browser.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"The admin list answered {response.status_code} at {url}.")
    return response


def _timed(read: Callable[[], object], repeats: int) -> RunSamples:
    read()  # warm-up: scripts loaded, connection open, templates compiled
    clock = time.perf_counter_ns
    latencies = []
    for _ in range(repeats):
        start = clock()
        read()
        latencies.append(clock() - start)
    return RunSamples([latencies])


def _used_memory(admin: redis.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


def _measure(size: int, admin: redis.Redis, staff: Any, repeats: int) -> dict[str, Any]:
    from django.test import Client

    from elastic_sessions.keys import listing_redis_keys

    admin.flushall()
    before = _used_memory(admin)
    started = time.perf_counter()
    fill(admin, size, now=int(time.time()))
    fill_seconds = time.perf_counter() - started
    filled = _used_memory(admin) - before
    browser = Client()
    browser.force_login(staff)
    timings = {name: _timed(read, repeats) for name, read in _reads(size, browser).items()}
    # What the two sets hold, measured by what dropping them frees.
    with_sets = _used_memory(admin)
    admin.delete(*listing_redis_keys())
    sets = with_sets - _used_memory(admin)
    return {"fill_seconds": fill_seconds, "filled": filled, "sets": sets, "timings": timings}


def _ms(samples: RunSamples, fraction: float) -> str:
    return f"{samples.percentile_us(fraction) / 1000:.2f}"


def _report(sizes: list[int], found: dict[int, dict[str, Any]], repeats: int) -> str:
    small, large = sizes[0], sizes[-1]
    names = list(found[small]["timings"])
    width = max(len(name) for name in names) + 2
    head = "".join(f"{f'{size:,}: median ms':>24}{'p95 ms':>9}" for size in sizes)
    lines = [f"{'read':<{width}}{head}{f'median {large:,}/{small:,}':>26}"]
    for name in names:
        cells = "".join(
            f"{_ms(found[size]['timings'][name], 0.5):>24}"
            f"{_ms(found[size]['timings'][name], 0.95):>9}"
            for size in sizes
        )
        ratio = found[large]["timings"][name].percentile_us(0.5) / max(
            found[small]["timings"][name].percentile_us(0.5), 1e-9
        )
        lines.append(f"{name:<{width}}{cells}{ratio:>26.2f}")
    lines.append(f"\n({repeats} timed calls per read and size, after one warm-up call.)")
    lines.append("\nRedis memory per session (INFO memory used_memory delta / N)\n")
    for size in sizes:
        figures = found[size]
        total, sets = figures["filled"] / size, figures["sets"] / size
        lines.append(
            f"{size:>10,} sessions: {total:7.1f} B with the listing sets, "
            f"{total - sets:7.1f} B without; the two sets {sets:6.1f} B "
            f"(filled in {figures['fill_seconds']:.1f} s)"
        )
    return "\n".join(lines)


def _sizes(value: str) -> list[int]:
    sizes = sorted({int(part) for part in value.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("give positive session counts, e.g. 1000,1000000")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.listing", description=__doc__)
    parser.add_argument("--sizes", type=_sizes, default=[1_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per read and size")
    args = parser.parse_args(argv)
    with redis_server() as server, scratch_database() as database:
        configure_django(server.url, database)
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test.utils import override_settings

        engine = "elastic_sessions.backends.redis"
        with override_settings(
            SESSION_ENGINE=engine, **admin_settings(list(settings.INSTALLED_APPS))
        ):
            call_command("migrate", verbosity=0, interactive=False)
            staff = get_user_model()._default_manager.create_user(
                "staff", password="staff", is_staff=True, is_superuser=True
            )
            admin = server.client()
            print(
                f"Admin session list, Redis engine: redis-server "
                f"{admin.info('server')['redis_version']} on loopback, "
                f"commit {code_version()}, {PER_PAGE} rows a page",
                flush=True,
            )
            found = {size: _measure(size, admin, staff, args.repeats) for size in args.sizes}
            admin.close()
    print(_report(args.sizes, found, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
