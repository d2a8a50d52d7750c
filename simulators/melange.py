"""Melange, a kitchen that is polled: ``POST /api/orders`` then ``GET /api/orders/{id}``;
``POST /api/orders/{id}/cancel`` until the order is cooked."""

from typing import Any

from simulators.base import ProviderSimulator, Snapshot, parse_line_items, run


class Melange(ProviderSimulator):
    name = "melange"
    default_port = 8101
    statuses = ("not started", "cooking", "cooked", "finished")
    collection_path = "/api/orders"
    id_prefix = "mel_"
    cancel_refused_from = "cooked"

    def parse_create(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"order": parse_line_items(payload, "order", "dish", "quantity")}

    def describe(self, snapshot: Snapshot) -> dict[str, Any]:
        return {
            "id": snapshot.id,
            "status": snapshot.status,
            "order": snapshot.data["order"],
            "updated_at": snapshot.updated_at,
        }


if __name__ == "__main__":
    raise SystemExit(run(Melange))
