"""A Nominatim-compatible geocoder: ``GET /search?q=<address>&format=jsonv2[&limit=N][&countrycodes=ua]``.

Answers like Nominatim's /search (https://nominatim.org/release-docs/develop/api/Search/): a JSON list of
places, ``lat`` and ``lon`` as strings, best first; an empty list when the address is unknown. Places come
from simulators.geo, the same hash the courier simulators use for an address sent without coordinates.
An address with "nowhere" in it is unknown, so the not-found path can be shown and tested; a
``countrycodes`` filter without ``ua`` finds nothing (every simulated place is in Kyiv).

The shared machinery gives it the fault injection (``down``, ``error_rate``, ``latency_ms``,
``timeout_rate``, ``garbage_rate``), ``/_sim/config``, ``/_sim/stats`` (``gets`` counts searches) and
``/_sim/reset``. It needs no API key, as Nominatim.
"""

from typing import Any

from aiohttp import web

from simulators.base import ApiError, ProviderSimulator, json_response, run, stable_index
from simulators.geo import geocode

UNKNOWN_MARK = "nowhere"
COUNTRY = "ua"
MAX_QUERY_LENGTH = 500
MAX_LIMIT = 40
FORMATS = ("json", "jsonv2")


def places(query: str, limit: int, country_codes: list[str]) -> list[dict[str, Any]]:
    """Nominatim's answer for ``query``: at most one place here (a simulated address is unambiguous)."""
    text = " ".join(query.split())
    if not text or UNKNOWN_MARK in text.casefold() or limit < 1:
        return []
    if country_codes and COUNTRY not in country_codes:
        return []
    lat, lng = geocode(text)
    place_id = 100_000 + stable_index(text.casefold(), 900_000)
    return [
        {
            "place_id": place_id,
            "licence": "Data © OpenStreetMap contributors, ODbL 1.0. http://osm.org/copyright (simulated)",
            "osm_type": "node",
            "osm_id": place_id,
            "lat": f"{lat:.7f}",
            "lon": f"{lng:.7f}",
            "category": "place",
            "type": "house",
            "place_rank": 30,
            "importance": 0.5,
            "addresstype": "place",
            "name": "",
            "display_name": f"{text}, Kyiv, Ukraine",
            "boundingbox": [
                f"{lat - 0.0005:.7f}",
                f"{lat + 0.0005:.7f}",
                f"{lng - 0.0005:.7f}",
                f"{lng + 0.0005:.7f}",
            ],
        }
    ]


class Nominatim(ProviderSimulator):
    name = "nominatim"
    default_port = 8105
    statuses = ()
    collection_path = "/search"
    id_prefix = "geo_"
    cancel_refused_from = ""

    def make_app(self) -> web.Application:
        """Only /search and /status, behind the shared middleware, plus the /_sim/ admin endpoints."""
        app = web.Application(middlewares=[self._middleware()])
        routes = app.router
        self.add_admin_routes(routes)
        routes.add_route("GET", "/search", self._search)
        routes.add_route("GET", "/status", self._status)
        return app

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("q")
        if query is None or not query.strip():
            raise ApiError(400, "Nominatim API: parameter 'q' is required")
        if len(query) > MAX_QUERY_LENGTH:
            raise ApiError(400, f"Nominatim API: 'q' is longer than {MAX_QUERY_LENGTH} characters")
        answer_format = request.query.get("format", "json")
        if answer_format not in FORMATS:
            raise ApiError(400, f"Nominatim API: format must be one of {', '.join(FORMATS)} here")
        try:
            limit = min(int(request.query.get("limit", "10")), MAX_LIMIT)
        except ValueError:
            raise ApiError(400, "Nominatim API: limit must be an integer") from None
        country_codes = [code.strip().casefold() for code in request.query.get("countrycodes", "").split(",")]
        self._stats.gets += 1
        self._stats.gets_by_id[query] += 1
        return json_response(200, places(query, limit, [code for code in country_codes if code]))

    async def _status(self, request: web.Request) -> web.Response:
        return json_response(200, {"status": 0, "message": "OK", "software_version": "simulated"})


if __name__ == "__main__":
    raise SystemExit(run(Nominatim))
