"""The shape every provider client has: create a sub-order, fetch its state, ask it to cancel; errors
become domain errors."""

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ..status import PROVIDER_CANCELLED

logger = logging.getLogger(__name__)


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


class HTTPResponse(Protocol):
    status_code: int

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


class HTTPSession(Protocol):
    """What the clients call: an ``httpx.AsyncClient``, or the poller's lean ``ProviderTransport``.

    Either raises httpx's exception classes, so errors are mapped the same way.
    """

    async def request(
        self, method: str, url: str, *, json: Any = ..., headers: Any = ..., timeout: Any = ...
    ) -> HTTPResponse: ...


class ProviderClient:
    """Base of the HTTP clients. Subclasses say where to send what and how to read the answer."""

    name: str = ""

    def __init__(self, *, url: str, api_key: str = "", timeout: float = 5.0, **options: Any) -> None:
        self.base_url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.options = options

    # -- what a subclass provides ---------------------------------------------------------------
    def create_request(self, request: KitchenRequest | DeliveryRequest) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of a create call."""
        raise NotImplementedError

    def fetch_path(self, external_id: str) -> str:
        raise NotImplementedError

    def cancel_path(self, external_id: str) -> str:
        raise NotImplementedError

    def parse_order(self, payload: dict[str, Any]) -> ProviderOrder:
        return ProviderOrder(external_id=_text(payload, "id"), status=_text(payload, "status"))

    # -- the calls --------------------------------------------------------------------------------
    async def create(self, http: HTTPSession, request: KitchenRequest | DeliveryRequest) -> ProviderOrder:
        path, body = self.create_request(request)
        payload = await self._call(http, "POST", path, json=body, idempotency_key=request.idempotency_key)
        return self.parse_order(payload)

    async def fetch(self, http: HTTPSession, external_id: str) -> ProviderOrder:
        payload = await self._call(http, "GET", self.fetch_path(external_id))
        order = self.parse_order(payload)
        if order.external_id != external_id:
            raise ProviderBadResponse(f"{self.name} answered for {order.external_id!r}, not {external_id!r}")
        return order

    async def cancel(self, http: HTTPSession, external_id: str) -> ProviderOrder:
        """Ask the provider to cancel a sub-order; the answer is the sub-order, now `cancelled`.

        Idempotent at the provider (cancelling a cancelled sub-order answers it again), so a retried
        cancel is safe. A refusal (409) raises ProviderCancelRefused; other failures the usual errors.
        """
        path = self.cancel_path(external_id)
        payload = await self._call(http, "POST", path, json={}, refusal=True)
        order = self.parse_order(payload)
        if order.external_id != external_id:
            raise ProviderBadResponse(f"{self.name} answered for {order.external_id!r}, not {external_id!r}")
        if order.status != PROVIDER_CANCELLED:
            raise ProviderBadResponse(f"{self.name} answered a cancel with status {order.status!r}")
        return order

    async def _call(
        self,
        http: HTTPSession,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotency_key: str = "",
        refusal: bool = False,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        url = f"{self.base_url}{path}"
        try:
            response = await http.request(method, url, json=json, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException as error:
            raise ProviderUnavailable(
                f"{self.name} timed out after {self.timeout:g}s ({method} {path})"
            ) from error
        except httpx.HTTPError as error:
            raise ProviderUnavailable(f"{self.name} unreachable: {type(error).__name__}: {error}") from error
        return self._read(response, method, path, refusal=refusal)

    def _read(
        self, response: HTTPResponse, method: str, path: str, *, refusal: bool = False
    ) -> dict[str, Any]:
        status = response.status_code
        where = f"{method} {path}"
        if status >= 500 or status == 429:
            raise ProviderUnavailable(f"{self.name} answered {status} to {where}")
        if status == 409 and refusal:
            reason = _error_text(response)
            raise ProviderCancelRefused(f"{self.name} refused {where}: {reason}", reason=reason)
        if status == 404:
            raise ProviderNotFound(f"{self.name} does not know {where} (404)")
        if status >= 400:
            raise ProviderRejected(f"{self.name} rejected {where}: {status} {response.text[:200]}")
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ProviderBadResponse(
                f"{self.name} sent a body that is not JSON: {response.text[:80]!r}"
            ) from error
        if not isinstance(payload, dict):
            raise ProviderBadResponse(f"{self.name} sent JSON that is not an object: {str(payload)[:80]}")
        return payload


def _error_text(response: HTTPResponse) -> str:
    """The provider's `{"error": "..."}` message, or the start of whatever body it sent."""
    try:
        payload = response.json()
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"].strip():
        return payload["error"].strip()[:200]
    return response.text.strip()[:200] or "no reason given"


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise ProviderBadResponse(f"field {key!r} missing or not a string in {str(payload)[:120]}")
    return value
