"""Bueno, a kitchen that is polled (``POST /`` then ``GET /{id}``) and also pushes webhooks.

Every status change after creation, a cancellation (``POST /{id}/cancel``) included, is POSTed to
``BUENO_WEBHOOK_URL`` as ``{"id", "status", "at", "event_id"}``, signed in ``X-Bueno-Signature`` with
``BUENO_WEBHOOK_SECRET``.
"""

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from simulators.base import (
    CANCELLED,
    COMMON_SETTINGS,
    ConfigError,
    ProviderSimulator,
    Setting,
    Snapshot,
    iso_utc,
    parse_bool,
    parse_line_items,
    parse_rate,
    require_text,
    run,
)

WEBHOOK_SETTINGS = (
    Setting("webhook_duplicate_rate", "SIM_WEBHOOK_DUPLICATE_RATE", parse_rate, 0.0),
    Setting("webhook_out_of_order", "SIM_WEBHOOK_OUT_OF_ORDER", parse_bool, False),
    Setting("webhook_bad_signature_rate", "SIM_WEBHOOK_BAD_SIGNATURE_RATE", parse_rate, 0.0),
)
WEBHOOK_ATTEMPTS = 3
WEBHOOK_RETRY_DELAY_SECONDS = 0.2  # times the attempt number
WEBHOOK_TIMEOUT_SECONDS = 2.0
MAX_TICK_SECONDS = 0.25
MIN_TICK_SECONDS = 0.005


def sign(body: bytes, secret: str) -> str:
    """The ``X-Bueno-Signature`` value for a raw webhook body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WebhookEvent:
    order_id: str
    status: str
    at: str
    final: bool
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def body(self) -> bytes:
        payload = {"id": self.order_id, "status": self.status, "at": self.at, "event_id": self.event_id}
        return json.dumps(payload).encode("utf-8")


class Bueno(ProviderSimulator):
    name = "bueno"
    default_port = 8102
    statuses = ("accepted", "preparing", "ready", "handed_over")
    collection_path = "/"
    id_prefix = "bno_"
    cancel_refused_from = "ready"
    settings = COMMON_SETTINGS + WEBHOOK_SETTINGS

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(environ)
        self.webhook_url = environ.get("BUENO_WEBHOOK_URL", "").strip() or None
        if self.webhook_url and urlsplit(self.webhook_url).scheme not in {"http", "https"}:
            raise ConfigError(f"BUENO_WEBHOOK_URL={self.webhook_url!r}: must be an http(s) URL")
        self.webhook_secret = environ.get("BUENO_WEBHOOK_SECRET", "")
        self._notified: dict[str, int] = {}  # order id -> status index last turned into an event
        self._notified_cancel: dict[str, float] = {}  # order id -> the cancellation turned into an event
        self._held: dict[str, WebhookEvent] = {}  # order id -> event held back by webhook_out_of_order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._notified.clear()
            self._notified_cancel.clear()
            self._held.clear()

    # Webhook thread.

    def start_background(self) -> None:
        if not self.webhook_url:
            self.log.info("BUENO_WEBHOOK_URL is not set: no webhooks")
            return
        if not self.webhook_secret:
            self.log.warning("BUENO_WEBHOOK_SECRET is empty: webhooks are signed with an empty key")
        self._thread = threading.Thread(target=self._send_changes_forever, name="bueno-webhooks", daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WEBHOOK_TIMEOUT_SECONDS * 2)

    def _send_changes_forever(self) -> None:
        with httpx.Client(
            timeout=WEBHOOK_TIMEOUT_SECONDS, headers={"User-Agent": "bueno-simulator"}
        ) as client:
            while not self._stop.wait(self._tick_seconds()):
                try:
                    for event in self._collect_changes():
                        self._dispatch(client, event)
                except Exception:
                    self.log.exception("webhook tick failed; carrying on")

    def _tick_seconds(self) -> float:
        return max(min(self.config["step_seconds"] / 4, MAX_TICK_SECONDS), MIN_TICK_SECONDS)

    def _collect_changes(self) -> list[WebhookEvent]:
        """One event per status an order reached since the last tick (the new one if it was forced back),
        then one for its cancellation, if it was cancelled since."""
        now = time.monotonic()
        last = len(self.statuses) - 1
        events = []
        with self._lock:
            for order in self._orders.values():
                current = self._snapshot(order, now).index
                previous = self._notified.get(order.id, 0)
                if current != previous:
                    reached = range(previous + 1, current + 1) if current > previous else [current]
                    for index in reached:
                        at = iso_utc(self._reached_wall(order, index))
                        events.append(WebhookEvent(order.id, self.statuses[index], at, final=index == last))
                    self._notified[order.id] = current
                cancelled_at = order.cancelled_at
                if cancelled_at is not None and self._notified_cancel.get(order.id) != cancelled_at:
                    self._notified_cancel[order.id] = cancelled_at
                    events.append(WebhookEvent(order.id, CANCELLED, iso_utc(cancelled_at), final=True))
        return events

    def _dispatch(self, client: httpx.Client, event: WebhookEvent) -> None:
        """Sends ``event``; with webhook_out_of_order, holds a non-final one until the order's next."""
        config = self.config
        with self._lock:
            if event.order_id not in self._orders:  # forgotten by a reset since it was collected
                return
            held = self._held.pop(event.order_id, None)
            if held is None and config["webhook_out_of_order"] and not event.final:
                self._held[event.order_id] = event
                self._stats.faults["webhook_out_of_order"] += 1
                return
        self._deliver(client, event, config)
        if held is not None:
            self._deliver(client, held, config)

    def _deliver(self, client: httpx.Client, event: WebhookEvent, config: Mapping[str, Any]) -> None:
        body = event.body()
        secret = self.webhook_secret
        if self._fault("webhook_bad_signature", config["webhook_bad_signature_rate"]):
            secret += "-not-the-secret"
        headers = {"Content-Type": "application/json", "X-Bueno-Signature": sign(body, secret)}
        copies = 2 if self._fault("webhook_duplicate", config["webhook_duplicate_rate"]) else 1
        for _ in range(copies):
            self._post(client, event, body, headers)

    def _post(self, client: httpx.Client, event: WebhookEvent, body: bytes, headers: dict[str, str]) -> None:
        """POSTs one webhook, retrying network errors, 429 and 5xx a couple of times."""
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                response = client.post(self.webhook_url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem, retryable = f"{type(exc).__name__}: {exc}", True
            else:
                if response.is_success:
                    with self._lock:
                        self._stats.webhooks_sent += 1
                    self.log.info("webhook %s %s -> %d", event.order_id, event.status, response.status_code)
                    return
                problem = f"HTTP {response.status_code}"
                retryable = response.status_code == 429 or response.status_code >= 500
            self.log.warning(
                "webhook %s %s attempt %d/%d failed: %s",
                event.order_id,
                event.status,
                attempt,
                WEBHOOK_ATTEMPTS,
                problem,
            )
            if not retryable or attempt == WEBHOOK_ATTEMPTS:
                break
            if self._stop.wait(WEBHOOK_RETRY_DELAY_SECONDS * attempt):
                return
        with self._lock:
            self._stats.webhooks_failed += 1
        self.log.error("gave up on webhook %s for %s %s", event.event_id, event.order_id, event.status)


if __name__ == "__main__":
    raise SystemExit(run(Bueno))
