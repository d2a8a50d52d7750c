"""Bueno, a kitchen that is polled (``POST /`` then ``GET /{id}``) and also pushes webhooks.

Every status change after creation, a cancellation (``POST /{id}/cancel``) included, is POSTed to
``BUENO_WEBHOOK_URL`` as ``{"id", "status", "at", "event_id"}``, signed in ``X-Bueno-Signature`` with
``BUENO_WEBHOOK_SECRET`` (delivery, retries and webhook faults: simulators.base).
"""

from typing import Any

from simulators.base import (
    ProviderSimulator,
    Snapshot,
    WebhookEvent,
    hmac_sha256_hex,
    parse_line_items,
    require_text,
    run,
)


def sign(body: bytes, secret: str) -> str:
    """The ``X-Bueno-Signature`` value for a raw webhook body."""
    return "sha256=" + hmac_sha256_hex(secret, body)


class Bueno(ProviderSimulator):
    name = "bueno"
    default_port = 8102
    statuses = ("accepted", "preparing", "ready", "handed_over")
    collection_path = "/"
    id_prefix = "bno_"
    cancel_refused_from = "ready"
    pushes_webhooks = True

    def parse_create(self, payload: dict[str, Any]) -> dict[str, Any]:
        reference = payload.get("reference")
        return {
            "items": parse_line_items(payload, "items", "name", "qty"),
            "reference": None if reference is None else require_text(reference, "reference"),
        }

    def describe(self, snapshot: Snapshot) -> dict[str, Any]:
        return {
            "id": snapshot.id,
            "status": snapshot.status,
            "items": snapshot.data["items"],
            "reference": snapshot.data["reference"],
            "updated_at": snapshot.updated_at,
        }

    def webhook_payload(self, event: WebhookEvent) -> dict[str, Any]:
        snapshot = event.snapshot
        return {
            "id": snapshot.id,
            "status": snapshot.status,
            "at": snapshot.updated_at,
            "event_id": event.event_id,
        }

    def webhook_headers(self, body: bytes, secret: str) -> dict[str, str]:
        return {"X-Bueno-Signature": sign(body, secret)}


if __name__ == "__main__":
    raise SystemExit(run(Bueno))
