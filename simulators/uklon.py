"""Uklon, a courier service that is polled: ``POST /drivers/orders`` then ``GET /drivers/orders/{id}``;
``POST /drivers/orders/{id}/cancel`` until it is delivered.

A driver is assigned when the order reaches ``delivery``; during ``delivery`` the location moves along
the route from the pickup addresses to the dropoff (the last address), and rests there once delivered.
"""

import hashlib
from typing import Any

from simulators.base import ApiError, ProviderSimulator, Snapshot, require_list, require_text, run
from simulators.geo import Point, address_to_point, point_along

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


def driver_for(order_id: str) -> dict[str, str]:
    """The driver of an order: always the same one for the same id."""
    number = int.from_bytes(hashlib.sha256(order_id.encode("utf-8")).digest()[:8], "big")
    index = number % len(DRIVER_NAMES)
    return {"id": f"drv_{index + 1}", "name": DRIVER_NAMES[index], "phone": f"+3806700000{index + 1:02d}"}


def location_for(addresses: list[str], status: str, progress: float) -> Point | None:
    """Where the courier is: nowhere yet, on the way (in whole waypoints), or at the dropoff."""
    route = [address_to_point(address) for address in addresses]
    if status == DELIVERY:
        waypoint = int(progress * WAYPOINTS_PER_STEP) / WAYPOINTS_PER_STEP
        return point_along(route, waypoint)
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
        return {
            "addresses": [require_text(address, f"addresses[{i}]") for i, address in enumerate(addresses)],
            "comments": comments,
        }

    def describe(self, snapshot: Snapshot) -> dict[str, Any]:
        # The index, not the status text, decides: an unknown-status fault changes only the text.
        status = self.statuses[snapshot.index]
        location = location_for(snapshot.data["addresses"], status, snapshot.progress)
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
