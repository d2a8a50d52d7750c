"""Where a delivery address is: a `Geocoder` turns address text into a point on the map.

`NominatimGeocoder` speaks the /search API of Nominatim (OpenStreetMap's geocoder; self-hosted, the public
nominatim.openstreetmap.org, or any compatible service such as the simulator `make run` starts), over
the provider HTTP session (orders.providers.http). `locate` is what the order pipeline calls: it asks
the configured geocoder through a cache (answers, found or not, are kept GEOCODER_CACHE_DAYS in Redis)
and a rate limit shared by every worker (GEOCODER_RATE; the public Nominatim allows one request a second).

A lookup never blocks an order: orders.tasks.locate_order runs it after the order is committed, tries an
unreachable geocoder again with backoff, and in the end leaves the order without a point, saying why.
"""

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache

from core import limits, metrics

from .providers import http

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
NOT_FOUND = "not-found"  # what the cache holds for an address the geocoder does not know


@dataclass(frozen=True, slots=True)
class Place:
    lat: float
    lng: float
    label: str  # the geocoder's name for it ("22, Khreshchatyk Street, Kyiv, ...")


class GeocoderError(Exception):
    """The geocoder could not answer now (unreachable, an error status, an answer that is not a place
    list): worth trying again later. An address it does not know is not an error: None."""


class RateLimited(GeocoderError):
    """Over GEOCODER_RATE: try again after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"over the geocoder's rate limit for {retry_after:g}s")
        self.retry_after = retry_after


class Geocoder(Protocol):
    def lookup(self, address: str) -> Place | None:
        """The address's place, or None when the geocoder knows no such address; GeocoderError when
        it cannot answer now."""
        ...


class NominatimGeocoder:
    """GET <url>/search?q=<address>&format=jsonv2&limit=1 (https://nominatim.org/release-docs/develop/api/Search/)."""

    def __init__(self, url: str, *, user_agent: str, country_codes: str = "", language: str = "") -> None:
        self.url = url.rstrip("/")
        self.user_agent = user_agent
        self.country_codes = country_codes
        self.language = language

    def search_url(self, address: str) -> str:
        query = {"q": address, "format": "jsonv2", "limit": "1"}
        if self.country_codes:
            query["countrycodes"] = self.country_codes
        return f"{self.url}/search?{urlencode(query)}"

    def lookup(self, address: str) -> Place | None:
        # Nominatim's usage policy asks every client to identify itself by its User-Agent.
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self.language:
            headers["Accept-Language"] = self.language
        call = http.call("GET", self.search_url(address), headers=headers)
        started, outcome = time.perf_counter(), "error"
        try:
            answer = http.run(asyncio.wait_for(call, settings.GEOCODER_TIMEOUT_SECONDS))
            outcome = "ok" if answer.status == 200 else metrics.http_outcome(answer.status)
        except TimeoutError:
            outcome = "timeout"
            raise GeocoderError(
                f"no answer from the geocoder within {settings.GEOCODER_TIMEOUT_SECONDS:g}s"
            ) from None
        except http.TransportError as error:
            raise GeocoderError(f"geocoder unreachable: {error}") from error
        finally:
            seconds = time.perf_counter() - started
            metrics.observe_provider_request(
                provider="geocoder", operation="geocode", outcome=outcome, seconds=seconds
            )
        if answer.status != 200:
            raise GeocoderError(f"geocoder answered HTTP {answer.status}: {answer.text[:120]}")
        try:
            results = answer.json()
        except ValueError:
            raise GeocoderError(f"geocoder answer is not JSON: {answer.text[:80]!r}") from None
        if not isinstance(results, list):
            raise GeocoderError(f"geocoder answer is not a list of places: {str(results)[:80]}")
        if not results:
            return None
        return _place(results[0])


def _place(result: object) -> Place:
    """A Nominatim result ({"lat": "50.45", "lon": "30.52", "display_name": ...}) as a Place."""
    if not isinstance(result, dict):
        raise GeocoderError(f"geocoder result is not an object: {str(result)[:80]}")
    try:
        lat, lng = float(result["lat"]), float(result["lon"])
    except (KeyError, TypeError, ValueError):
        raise GeocoderError(f"geocoder result has no usable lat/lon: {str(result)[:120]}") from None
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise GeocoderError(f"geocoder result is off the globe: {lat}, {lng}")
    label = result.get("display_name")
    return Place(lat=round(lat, 6), lng=round(lng, 6), label=label[:300] if isinstance(label, str) else "")


def configured_geocoder() -> Geocoder | None:
    """The geocoder of the settings, or None when GEOCODER_URL is empty."""
    if not settings.GEOCODER_URL:
        return None
    return NominatimGeocoder(
        settings.GEOCODER_URL,
        user_agent=settings.GEOCODER_USER_AGENT,
        country_codes=settings.GEOCODER_COUNTRY_CODES,
        language=settings.LANGUAGE_CODE,
    )


def normalized(address: str) -> str:
    """The address as the cache knows it: case and spacing ignored."""
    return " ".join(address.split()).casefold()


def _cache_key(address: str) -> str:
    digest = hashlib.sha256(f"{settings.GEOCODER_URL}\n{normalized(address)}".encode()).hexdigest()
    return f"geocode:{digest}"


def locate(address: str, geocoder: Geocoder) -> Place | None:
    """`geocoder.lookup` through the cache and the shared rate limit (RateLimited when over it)."""
    key = _cache_key(address)
    cached = cache.get(key, version=CACHE_VERSION)
    if cached == NOT_FOUND:
        return None
    if cached is not None:
        lat, lng, label = cached
        return Place(lat=lat, lng=lng, label=label)
    wait = limits.hit("geocoder", "lookups", limits.rate_setting("GEOCODER_RATE", settings.GEOCODER_RATE))
    if wait is not None:
        raise RateLimited(wait)
    place = geocoder.lookup(address)
    if settings.GEOCODER_CACHE_DAYS > 0:
        value = NOT_FOUND if place is None else (place.lat, place.lng, place.label)
        cache.set(key, value, timeout=settings.GEOCODER_CACHE_DAYS * 86400, version=CACHE_VERSION)
    logger.info("Geocoded %r: %s", address[:80], f"{place.lat}, {place.lng}" if place else "not found")
    return place
