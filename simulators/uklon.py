"""Uklon, a courier service that is polled: ``POST /drivers/orders`` then ``GET /drivers/orders/{id}``;
``POST /drivers/orders/{id}/cancel`` until it is delivered.

A driver is assigned when the order reaches ``delivery``; during ``delivery`` the location moves along
the route from the pickup addresses to the dropoff (the last address), and rests there once delivered.
The create body may give each address's ``points`` entry ([lat, lng] or null); an address without one
is placed by the simulated geocoder (simulators.geo).
"""

from typing import Any

from simulators.base import (
    ApiError,
    ProviderSimulator,
    Snapshot,
    optional_point,
    require_list,
    require_text,
    run,
    stable_index,
)
from simulators.geo import Point, geocode, point_along

NOT_STARTED, DELIVERY, DELIVERED = "not started", "delivery", "delivered"
WAYPOINTS_PER_STEP = 10  # the location changes this many times while in ``delivery``
# The fleet. The first three are the demo couriers that `seed_demo` creates (courier1..courier3),
# so their apps receive the orders Uklon gives them.
DRIVER_NAMES = (
    "Ostap Kovalenko",
    "Iryna Melnyk",
    "Taras Bondar",
    "Olena Kovalenko",
    "Dmytro Tkachenko",
    "Nataliia Kravchenko",
    "Andrii Boiko",
    "Yuliia Moroz",
)


def driver_at(index: int) -> dict[str, str]:
    """Driver number ``index`` (from 0) of the fleet."""
    return {"id": f"drv_{index + 1}", "name": DRIVER_NAMES[index], "phone": f"+3806700000{index + 1:02d}"}


def driver_for(order_id: str) -> dict[str, str]:
    """The driver of an order: always the same one for the same id."""
    return driver_at(stable_index(order_id, len(DRIVER_NAMES)))


def route_of(addresses: list[str], points: list[Point | None]) -> list[Point]:
    """The stops' points: as the client sent them, else where the simulated geocoder puts the address."""
    return [point or geocode(address) for address, point in zip(addresses, points, strict=True)]


def position_on_route(route: list[Point], progress: float) -> Point:
    """Where a courier ``progress`` (0..1) of the way from the first stop to the last is, in whole
    waypoints, so that a map that polls sees it jump from one to the next."""
    return point_along(route, int(progress * WAYPOINTS_PER_STEP) / WAYPOINTS_PER_STEP)


def location_for(route: list[Point], status: str, progress: float) -> Point | None:
    """Where the driver is: nowhere yet, on the way, or at the dropoff (the last stop)."""
    if status == DELIVERY:
        return position_on_route(route, progress)
    if status == DELIVERED:
        return route[-1]
    return None


class Uklon(ProviderSimulator):
    name = "uklon"
    default_port = 8103
    statuses = (NOT_STARTED, DELIVERY, DELIVERED)
    collection_path = "/drivers/orders"
    id_prefix = "ukl_"
    cancel_refused_from = DELIVERED

    def parse_create(self, payload: dict[str, Any]) -> dict[str, Any]:
        addresses = require_list(payload.get("addresses"), "addresses", min_length=2)
        comments = require_list(payload.get("comments", []), "comments", min_length=0)
        if not all(isinstance(comment, str) for comment in comments):
            raise ApiError(400, "comments must be a list of strings")
        points = payload.get("points")
        if points is None:
            points = [None] * len(addresses)
        elif not isinstance(points, list) or len(points) != len(addresses):
            raise ApiError(400, "points must be a list as long as addresses ([lat, lng] or null each)")
        route = []
        for i, point in enumerate(points):
            if point is not None and not (isinstance(point, list) and len(point) == 2):
                raise ApiError(400, f"points[{i}] must be [lat, lng] or null")
            route.append(optional_point(*(point or (None, None)), f"points[{i}]"))
        return {
            "addresses": [require_text(address, f"addresses[{i}]") for i, address in enumerate(addresses)],
            "points": route,
            "comments": comments,
        }

    def describe(self, snapshot: Snapshot) -> dict[str, Any]:
        # The index, not the status text, decides: an unknown-status fault changes only the text.
        status = self.statuses[snapshot.index]
        route = route_of(snapshot.data["addresses"], snapshot.data["points"])
        location = location_for(route, status, snapshot.progress)
        return {
            "id": snapshot.id,
            "status": snapshot.status,
            "location": list(location) if location else None,
            "driver": None if status == NOT_STARTED else driver_for(snapshot.id),
            "addresses": snapshot.data["addresses"],
            "comments": snapshot.data["comments"],
            "updated_at": snapshot.updated_at,
        }

    def describe_created(self, snapshot: Snapshot) -> dict[str, Any]:
        described = self.describe(snapshot)
        return {key: described[key] for key in ("id", "status", "location", "driver")}


if __name__ == "__main__":
    raise SystemExit(run(Uklon))
