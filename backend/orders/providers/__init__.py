"""Provider clients. Adding a provider: one module here with a ProviderClient subclass (create, fetch and
cancel paths), one entry in settings.PROVIDERS (url, api_key, module), and its status table in
orders/status.py (ending with `cancelled`)."""

from .base import (
    DeliveryRequest,
    Driver,
    KitchenRequest,
    ProviderBadResponse,
    ProviderCancelRefused,
    ProviderClient,
    ProviderError,
    ProviderNotFound,
    ProviderOrder,
    ProviderRejected,
    ProviderUnavailable,
)
from .registry import get_client

__all__ = [
    "DeliveryRequest",
    "Driver",
    "KitchenRequest",
    "ProviderBadResponse",
    "ProviderCancelRefused",
    "ProviderClient",
    "ProviderError",
    "ProviderNotFound",
    "ProviderOrder",
    "ProviderRejected",
    "ProviderUnavailable",
    "get_client",
]
