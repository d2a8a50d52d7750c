"""Raketa, a courier company that is polled and also pushes webhooks.

``POST /v1/deliveries`` then ``GET /v1/deliveries/{id}``; ``POST /v1/deliveries/{id}/cancel`` until the
parcel is picked up. A courier is assigned at ``courier_assigned``; during ``picked_up`` the position
moves along the route from the pickups to the dropoff, and rests there once delivered.

Every state change after creation, a cancellation included, is POSTed to ``RAKETA_WEBHOOK_URL`` as
``{"event_id", "delivery_id", "state", "courier", "position", "at"}``, signed Stripe-style in
``X-Raketa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` with
``RAKETA_WEBHOOK_SECRET`` (delivery, retries and webhook faults: simulators.base).
"""

import time
from collections.abc import Mapping
from typing import Any

from simulators.base import (
    ApiError,
    ProviderSimulator,
    Snapshot,
    WebhookEvent,
    hmac_sha256_hex,
    optional_point,
    require_list,
    require_object,
    require_text,
    run,
    stable_index,
)
from simulators.uklon import driver_at, position_on_route, route_of

SEARCHING, COURIER_ASSIGNED, PICKED_UP, DELIVERED = "searching", "courier_assigned", "picked_up", "delivered"
# The fleet. The first three are Uklon's first three drivers, who work for both services: they are the
# demo couriers `seed_demo` creates (courier1..courier3, known by Uklon's driver ids), so their apps
# receive the deliveries Raketa gives them too.
SHARED_WITH_UKLON = 3
OWN_COURIER_NAMES = (
    "Mykola Savchuk",
    "Sofiia Hnatiuk",
    "Bohdan Lysenko",
    "Oksana Polishchuk",
    "Vasyl Romaniuk",
)
FLEET_SIZE = SHARED_WITH_UKLON + len(OWN_COURIER_NAMES)


def courier_for(delivery_id: str) -> dict[str, str]:
    """The courier of a delivery: always the same one for the same id."""
    index = stable_index(delivery_id, FLEET_SIZE)
    if index < SHARED_WITH_UKLON:
        return driver_at(index)
    number = index - SHARED_WITH_UKLON + 1
    return {
        "id": f"rkt_courier_{number}",
        "name": OWN_COURIER_NAMES[number - 1],
        "phone": f"+3806300000{number:02d}",
    }


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-Raketa-Signature`` value for a raw webhook body sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={hmac_sha256_hex(secret, f'{timestamp}.'.encode() + body)}"


class Raketa(ProviderSimulator):
    name = "raketa"
    default_port = 8104
    statuses = (SEARCHING, COURIER_ASSIGNED, PICKED_UP, DELIVERED)
    collection_path = "/v1/deliveries"
    id_prefix = "rkt_"
    cancel_refused_from = PICKED_UP
    pushes_webhooks = True

    def parse_create(self, payload: dict[str, Any]) -> dict[str, Any]:
        pickups = []
        for position, entry in enumerate(require_list(payload.get("pickups"), "pickups")):
            where = f"pickups[{position}]"
            pickup = require_object(entry, where)
            note = pickup.get("note")
            if note is not None and not isinstance(note, str):
                raise ApiError(400, f"{where}.note must be a string")
            pickups.append(
                {
                    "address": require_text(pickup.get("address"), f"{where}.address"),
                    "note": note,
                    "point": optional_point(pickup.get("lat"), pickup.get("lng"), where),
                }
            )
        dropoff = require_object(payload.get("dropoff"), "dropoff")
        return {
            "pickups": pickups,
            "dropoff": {
                "address": require_text(dropoff.get("address"), "dropoff.address"),
                "point": optional_point(dropoff.get("lat"), dropoff.get("lng"), "dropoff"),
            },
        }

    def describe(self, snapshot: Snapshot) -> dict[str, Any]:
        # The index, not the state text, decides: an unknown-status fault changes only the text.
        state = self.statuses[snapshot.index]
        return {
            "delivery_id": snapshot.id,
            "state": snapshot.status,
            "courier": None if state == SEARCHING else courier_for(snapshot.id),
            "position": self._position(snapshot.data, state, snapshot.progress),
        }

    def describe_created(self, snapshot: Snapshot) -> dict[str, Any]:
        return self.describe(snapshot)

    def webhook_payload(self, event: WebhookEvent) -> dict[str, Any]:
        return {"event_id": event.event_id, **self.describe(event.snapshot), "at": event.snapshot.updated_at}

    def webhook_headers(self, body: bytes, secret: str) -> dict[str, str]:
        return {"X-Raketa-Signature": sign(body, secret, int(time.time()))}

    @staticmethod
    def _position(data: Mapping[str, Any], state: str, progress: float) -> dict[str, float] | None:
        """Nowhere before pickup, on the way from the pickups to the dropoff, then at the dropoff."""
        if state not in {PICKED_UP, DELIVERED}:
            return None
        stops = [*data["pickups"], data["dropoff"]]
        route = route_of([stop["address"] for stop in stops], [stop["point"] for stop in stops])
        lat, lng = position_on_route(route, progress if state == PICKED_UP else 1.0)
        return {"lat": lat, "lng": lng}


if __name__ == "__main__":
    raise SystemExit(run(Raketa))
