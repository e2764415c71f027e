"""IP addresses are located through the configured locator, and a failing one shows nothing."""

from __future__ import annotations

import logging

import pytest
from django.contrib.gis.geoip2 import GeoIP2Exception
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from elastic_sessions import geo
from elastic_sessions.geo import locate_ip

# A public address (203.0.113.0/24 and the other documentation ranges are not).
PUBLIC_IP = "81.2.69.142"

calls: list[str] = []


def fake_locator(ip):
    calls.append(ip)
    return "Testville, Testland" if ip == PUBLIC_IP else None


def broken_locator(ip):
    raise ConnectionError(f"lookup of {ip} timed out")


def empty_locator(ip):
    return ""


NOT_CALLABLE = "a string"

with_fake = override_settings(ELASTIC_SESSIONS={"IP_LOCATOR": "tests.test_geo.fake_locator"})
with_broken = override_settings(ELASTIC_SESSIONS={"IP_LOCATOR": "tests.test_geo.broken_locator"})


@pytest.fixture(autouse=True)
def _clear_calls():
    calls.clear()


@with_fake
def test_locator_names_the_place():
    """The configured locator's answer is returned for a public address."""
    assert locate_ip(PUBLIC_IP) == "Testville, Testland"
    assert calls == [PUBLIC_IP]


@with_fake
def test_locator_none_means_unknown():
    """A locator that does not know an address gives None."""
    assert locate_ip("8.8.8.8") is None
    assert calls == ["8.8.8.8"]


@with_fake
def test_ipv4_mapped_address_is_asked_as_ipv4():
    """An IPv4-mapped IPv6 address is located as the IPv4 address inside it."""
    assert locate_ip(f"::ffff:{PUBLIC_IP}") == "Testville, Testland"


@with_fake
@pytest.mark.parametrize(
    "ip",
    [
        "10.0.0.1",
        "192.168.1.20",
        "172.16.5.4",
        "127.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "240.0.0.1",
        "224.0.0.1",
        "203.0.113.7",
        "2001:db8::1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_skip_the_locator(ip):
    """Private, loopback, link-local, reserved and documentation addresses are not looked up."""
    assert locate_ip(ip) is None
    assert calls == []


@with_fake
@pytest.mark.parametrize(
    "ip", [None, "", "not an ip", "999.1.1.1", "81.2.69.142\x00", "1.2.3.4 ", "x" * 10_000]
)
def test_invalid_addresses_skip_the_locator(ip):
    """None and strings that are not an IP address give None without a lookup."""
    assert locate_ip(ip) is None
    assert calls == []


@with_broken
def test_raising_locator_logs_once_and_gives_none(caplog):
    """A raising locator is logged once per exception class, without the address."""
    with caplog.at_level(logging.WARNING, logger="elastic_sessions.geo"):
        assert locate_ip(PUBLIC_IP) is None
        assert locate_ip("8.8.8.8") is None
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "ConnectionError" in record.getMessage()
    assert "tests.test_geo.broken_locator" in record.getMessage()
    assert PUBLIC_IP not in record.getMessage()
    assert record.exc_info is None


@override_settings(ELASTIC_SESSIONS={"IP_LOCATOR": "tests.test_geo.empty_locator"})
def test_empty_answer_is_none():
    """A locator's empty string means no location."""
    assert locate_ip(PUBLIC_IP) is None


@pytest.mark.parametrize("path", ["tests.test_geo.missing", "tests.test_geo.NOT_CALLABLE"])
def test_unusable_locator_path_is_improperly_configured(path):
    """A locator path that does not import a callable names the setting."""
    with (
        override_settings(ELASTIC_SESSIONS={"IP_LOCATOR": path}),
        pytest.raises(ImproperlyConfigured, match=r"IP_LOCATOR"),
    ):
        locate_ip(PUBLIC_IP)


@override_settings(ELASTIC_SESSIONS={})
def test_no_locator_and_no_geoip_path_gives_none(settings):
    """Without IP_LOCATOR or GEOIP_PATH there is no location."""
    if hasattr(settings, "GEOIP_PATH"):
        del settings.GEOIP_PATH
    assert locate_ip(PUBLIC_IP) is None


@override_settings(ELASTIC_SESSIONS={}, GEOIP_PATH="/nonexistent/geoip")
def test_unusable_geoip_path_gives_none():
    """A GEOIP_PATH without a database (or without geoip2 installed) gives None."""
    assert locate_ip(PUBLIC_IP) is None


def test_setting_change_switches_locator():
    """A changed IP_LOCATOR takes effect without a restart."""
    with with_fake:
        assert locate_ip(PUBLIC_IP) == "Testville, Testland"
    with override_settings(ELASTIC_SESSIONS={"IP_LOCATOR": "tests.test_geo.empty_locator"}):
        assert locate_ip(PUBLIC_IP) is None


class FakeGeoIP2:
    """Stands in for Django's GeoIP2, whose geoip2 package and database are not installed."""

    is_city = True

    def __init__(self, path):
        self.path = path

    def city(self, ip):
        if ip != PUBLIC_IP:
            raise GeoIP2Exception("not in the database")
        return {
            "city": "Lisbon" if self.path == "/geoip/city" else None,
            "country_name": "Portugal",
        }

    def country(self, ip):
        return {"country_name": "Portugal"}


class FakeCountryGeoIP2(FakeGeoIP2):
    is_city = False


@pytest.fixture
def fake_geoip2(monkeypatch):
    monkeypatch.setattr(geo, "HAS_GEOIP2", True)
    monkeypatch.setattr(geo, "GeoIP2", FakeGeoIP2)
    geo._open_geoip2.cache_clear()
    yield
    geo._open_geoip2.cache_clear()


@override_settings(ELASTIC_SESSIONS={}, GEOIP_PATH="/geoip/city")
def test_geoip2_names_city_and_country(fake_geoip2):
    """Without IP_LOCATOR, GeoIP2 gives "City, Country"."""
    assert locate_ip(PUBLIC_IP) == "Lisbon, Portugal"


@override_settings(ELASTIC_SESSIONS={}, GEOIP_PATH="/geoip/nocity")
def test_geoip2_without_city_names_the_country(fake_geoip2):
    """An address GeoIP2 knows only the country of gives the country."""
    assert locate_ip(PUBLIC_IP) == "Portugal"


@override_settings(ELASTIC_SESSIONS={}, GEOIP_PATH="/geoip/country")
def test_geoip2_country_database_names_the_country(fake_geoip2, monkeypatch):
    """A country-only database gives the country."""
    monkeypatch.setattr(geo, "GeoIP2", FakeCountryGeoIP2)
    assert locate_ip(PUBLIC_IP) == "Portugal"


@override_settings(ELASTIC_SESSIONS={}, GEOIP_PATH="/geoip/city")
def test_geoip2_errors_give_none(fake_geoip2):
    """An address GeoIP2 cannot find gives None."""
    assert locate_ip("8.8.8.8") is None


@override_settings(ELASTIC_SESSIONS={}, GEOIP_PATH="/nonexistent/geoip")
def test_geoip2_missing_database_gives_none(monkeypatch):
    """Django's GeoIP2 refusing a path without a database gives None."""
    monkeypatch.setattr(geo, "HAS_GEOIP2", True)
    assert locate_ip(PUBLIC_IP) is None
