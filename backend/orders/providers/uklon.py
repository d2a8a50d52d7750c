"""Uklon (delivery): POST /drivers/orders {addresses, comments}; GET /drivers/orders/{id};
POST /drivers/orders/{id}/cancel."""

from typing import Any

from .base import DeliveryRequest, Driver, ProviderBadResponse, ProviderClient, ProviderOrder


class UklonClient(ProviderClient):
    name = "uklon"

    def create_request(self, request: DeliveryRequest) -> tuple[str, dict[str, Any]]:
        return "/drivers/orders", {"addresses": request.addresses, "comments": request.comments}

    def fetch_path(self, external_id: str) -> str:
        return f"/drivers/orders/{external_id}"

    def cancel_path(self, external_id: str) -> str:
        return f"/drivers/orders/{external_id}/cancel"

    def parse_order(self, payload: dict[str, Any]) -> ProviderOrder:
        order = super().parse_order(payload)
        return ProviderOrder(
            external_id=order.external_id,
            status=order.status,
            location=_location(payload.get("location")),
            driver=_driver(payload.get("driver")),
        )


def _location(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    valid = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(part, int | float) and not isinstance(part, bool) for part in value)
        and -90 <= value[0] <= 90
        and -180 <= value[1] <= 180
    )
    if not valid:
        raise ProviderBadResponse(f"uklon location is not [lat, lng]: {str(value)[:80]}")
    return float(value[0]), float(value[1])


def _driver(value: Any) -> Driver | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("id"), str)
        or not isinstance(value.get("name"), str)
    ):
        raise ProviderBadResponse(f"uklon driver is not {{id, name, phone}}: {str(value)[:80]}")
    phone = value.get("phone")
    return Driver(
        external_id=value["id"], name=value["name"][:120], phone=phone[:40] if isinstance(phone, str) else ""
    )
