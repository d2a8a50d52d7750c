"""What a provider is: its status table, its HTTP calls and, when it pushes them, its webhooks.

A provider module holds one `Provider` subclass. Adding a provider is that module plus an entry in the
PROVIDERS setting (see the README's "Adding a provider"): the status machine, the poller and the
realtime code never name a provider.
"""

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from core import metrics

from ..status import OrderStatus
from . import http

logger = logging.getLogger(__name__)

# Every provider's status of a sub-order it cancelled, last in its table: nothing follows it.
PROVIDER_CANCELLED = "cancelled"


class ProviderError(Exception):
    """A provider call that did not give a usable answer. Retried with backoff until the leg's deadline."""


class ProviderUnavailable(ProviderError):
    """Timeout, refused connection, 5xx or 429: the provider is down or overloaded."""


class ProviderBadResponse(ProviderError):
    """The provider answered, but not with the JSON its contract promises."""


class ProviderNotFound(ProviderError):
    """The provider does not know the sub-order."""


class ProviderRejected(ProviderError):
    """The provider refused our request (4xx other than 404/429)."""


class ProviderCancelRefused(ProviderError):
    """The provider will not cancel the sub-order (409 to a cancel: already cooked, already delivered).

    Final, unlike the other errors: asking again changes nothing. `reason` is the provider's own words.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnknownProviderStatus(ValueError):
    """A status the provider's table does not list: recorded on the leg as a failure, never applied."""


class BadWebhook(ValueError):
    """A webhook body that is not what the provider's contract promises (answered 400)."""


@dataclass(frozen=True)
class Driver:
    external_id: str
    name: str
    phone: str = ""


@dataclass(frozen=True)
class ProviderOrder:
    external_id: str
    status: str
    location: tuple[float, float] | None = None
    driver: Driver | None = None


@dataclass(frozen=True)
class KitchenRequest:
    idempotency_key: str
    items: list[tuple[str, int]]  # (dish name, quantity)
    reference: str


@dataclass(frozen=True)
class DeliveryRequest:
    idempotency_key: str
    addresses: list[str]  # pickups first, the customer's address last
    comments: list[str] = field(default_factory=list)
    points: list[tuple[float, float] | None] = field(default_factory=list)  # each address's, when known

    def stops(self) -> list[tuple[str, tuple[float, float] | None]]:
        """(address, point or None) of every stop, pickups first."""
        points = self.points or [None] * len(self.addresses)
        return list(zip(self.addresses, points, strict=True))


class Provider:
    """One provider's API. A subclass sets the class attributes and the paths; the rest is shared.

    `statuses` maps the provider's status strings to ours, in the order they come (a status earlier in
    the table than the leg's current one is a backwards move and ignored), ending with `cancelled`.
    A provider that pushes webhooks sets `signature_header` and may override `verify_signature` and
    `parse_webhook`; the generic view at /webhooks/<name>/ calls them.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["kitchen", "delivery"]]
    statuses: ClassVar[dict[str, OrderStatus]]
    signature_header: ClassVar[str] = ""  # empty: this provider pushes no webhooks

    def __init__(
        self, *, url: str, api_key: str = "", webhook_secret: str = "", timeout: float = 5.0
    ) -> None:
        self.base_url = url.rstrip("/")
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.timeout = timeout
        self._ranks = {status: rank for rank, status in enumerate(self.statuses)}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} at {self.base_url}>"

    # -- the status table ----------------------------------------------------------------------------
    def status_of(self, provider_status: object) -> OrderStatus:
        """Our status for one of the provider's; UnknownProviderStatus when its table has none."""
        if not isinstance(provider_status, str) or provider_status not in self.statuses:
            raise UnknownProviderStatus(f"{self.name} reported unknown status {str(provider_status)[:80]!r}")
        return self.statuses[provider_status]

    def is_backwards(self, current: str, reported: str) -> bool:
        """Whether `reported` comes before `current` in the table (both known)."""
        return self._ranks[reported] < self._ranks[current]

    # -- what a subclass provides: where to send what, how to read the answer -----------------------
    def create_request(self, request: KitchenRequest | DeliveryRequest) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of a create call."""
        raise NotImplementedError

    def fetch_path(self, external_id: str) -> str:
        raise NotImplementedError

    def cancel_path(self, external_id: str) -> str:
        raise NotImplementedError

    def parse_order(self, payload: dict[str, Any]) -> ProviderOrder:
        """A sub-order from the provider's JSON; ProviderBadResponse when it is not the promised shape."""
        return ProviderOrder(external_id=text_field(payload, "id"), status=text_field(payload, "status"))

    # -- webhooks ------------------------------------------------------------------------------------
    @property
    def accepts_webhooks(self) -> bool:
        return bool(self.signature_header)

    def verify_signature(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Default scheme: `<signature_header>: sha256=<hex HMAC-SHA256 of the body>`. Without a secret,
        nothing is genuine."""
        if not self.webhook_secret:
            return False
        expected = "sha256=" + hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(headers.get(self.signature_header, "").encode(), expected.encode())

    def parse_webhook(self, payload: Any) -> ProviderOrder:
        """The sub-order a webhook body reports; BadWebhook when the body is not the promised shape."""
        try:
            if not isinstance(payload, dict):
                raise ProviderBadResponse("not a JSON object")
            return self.parse_order(payload)
        except ProviderBadResponse as error:
            raise BadWebhook(str(error)) from error

    # -- the calls -----------------------------------------------------------------------------------
    async def create(self, request: KitchenRequest | DeliveryRequest) -> ProviderOrder:
        path, body = self.create_request(request)
        payload = await self._call(
            "POST", path, operation="create", json=body, idempotency_key=request.idempotency_key
        )
        return self.parse_order(payload)

    async def fetch(self, external_id: str) -> ProviderOrder:
        order = self.parse_order(await self._call("GET", self.fetch_path(external_id), operation="get"))
        if order.external_id != external_id:
            raise ProviderBadResponse(f"{self.name} answered for {order.external_id!r}, not {external_id!r}")
        return order

    async def cancel(self, external_id: str) -> ProviderOrder:
        """Ask the provider to cancel a sub-order; the answer is the sub-order, now `cancelled`.

        Idempotent at the provider (cancelling a cancelled sub-order answers it again), so a retried
        cancel is safe. A refusal (409) raises ProviderCancelRefused; other failures the usual errors.
        """
        path = self.cancel_path(external_id)
        order = self.parse_order(await self._call("POST", path, operation="cancel", json={}, refusal=True))
        if order.external_id != external_id:
            raise ProviderBadResponse(f"{self.name} answered for {order.external_id!r}, not {external_id!r}")
        if order.status != PROVIDER_CANCELLED:
            raise ProviderBadResponse(f"{self.name} answered a cancel with status {order.status!r}")
        return order

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        json: Any = None,
        idempotency_key: str = "",
        refusal: bool = False,
    ) -> dict[str, Any]:
        """One call and its reading, counted as `operation` (create, get, cancel) by its outcome."""
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        started, outcome = time.perf_counter(), "error"
        try:
            answer = await http.call(method, f"{self.base_url}{path}", json=json, headers=headers)
            payload = self._read(answer, f"{method} {path}", refusal=refusal)
            outcome = "ok"
            return payload
        except http.TransportTimeout as error:
            outcome = "timeout"
            raise ProviderUnavailable(f"{self.name} timed out ({method} {path}): {error}") from error
        except http.TransportError as error:
            raise ProviderUnavailable(f"{self.name} unreachable ({method} {path}): {error}") from error
        except ProviderCancelRefused:
            outcome = "refused"
            raise
        except ProviderError:
            outcome = metrics.http_outcome(answer.status)
            raise
        finally:
            seconds = time.perf_counter() - started
            metrics.observe_provider_request(
                provider=self.name, operation=operation, outcome=outcome, seconds=seconds
            )

    def _read(self, answer: http.Answer, where: str, *, refusal: bool) -> dict[str, Any]:
        status = answer.status
        if status >= 500 or status == 429:
            raise ProviderUnavailable(f"{self.name} answered {status} to {where}")
        if status == 409 and refusal:
            reason = _error_text(answer)
            raise ProviderCancelRefused(f"{self.name} refused {where}: {reason}", reason=reason)
        if status == 404:
            raise ProviderNotFound(f"{self.name} does not know {where} (404)")
        if status >= 400:
            raise ProviderRejected(f"{self.name} rejected {where}: {status} {answer.text[:200]}")
        try:
            payload = answer.json()
        except ValueError as error:
            raise ProviderBadResponse(
                f"{self.name} sent a body that is not JSON: {answer.text[:80]!r}"
            ) from error
        if not isinstance(payload, dict):
            raise ProviderBadResponse(f"{self.name} sent JSON that is not an object: {str(payload)[:80]}")
        return payload


def _error_text(answer: http.Answer) -> str:
    """The provider's `{"error": "..."}` message, or the start of whatever body it sent."""
    try:
        payload = answer.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"].strip():
        return payload["error"].strip()[:200]
    return answer.text.strip()[:200] or "no reason given"


def text_field(payload: dict[str, Any], key: str) -> str:
    """A non-empty string field of a provider's JSON, or ProviderBadResponse."""
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise ProviderBadResponse(f"field {key!r} missing or not a string in {str(payload)[:120]}")
    return value


def location_field(value: Any, name: str) -> tuple[float, float] | None:
    """A `[lat, lng]` pair (or None), checked to be on the globe."""
    if value is None:
        return None
    valid = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(part, int | float) and not isinstance(part, bool) for part in value)
        and -90 <= value[0] <= 90
        and -180 <= value[1] <= 180
    )
    if not valid:
        raise ProviderBadResponse(f"{name} location is not [lat, lng]: {str(value)[:80]}")
    return float(value[0]), float(value[1])


def driver_field(value: Any, name: str) -> Driver | None:
    """A `{id, name, phone}` courier (or None)."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("id"), str)
        or not value["id"]
        or not isinstance(value.get("name"), str)
    ):
        raise ProviderBadResponse(f"{name} driver is not {{id, name, phone}}: {str(value)[:80]}")
    phone = value.get("phone")
    return Driver(
        external_id=value["id"][:100],
        name=value["name"][:120],
        phone=phone[:40] if isinstance(phone, str) else "",
    )
