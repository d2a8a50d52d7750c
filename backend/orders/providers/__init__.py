"""Provider integrations: one module per provider (a `Provider` subclass with its status table, its
HTTP calls and optionally its webhooks), the registry built from settings.PROVIDERS, and the one HTTP
client they share (`http`)."""

from .base import (
    PROVIDER_CANCELLED,
    BadWebhook,
    DeliveryRequest,
    Driver,
    KitchenRequest,
    Provider,
    ProviderBadResponse,
    ProviderCancelRefused,
    ProviderError,
    ProviderNotFound,
    ProviderOrder,
    ProviderRejected,
    ProviderUnavailable,
    UnknownProviderStatus,
)
from .registry import get_provider, provider_names

__all__ = [
    "PROVIDER_CANCELLED",
    "BadWebhook",
    "DeliveryRequest",
    "Driver",
    "KitchenRequest",
    "Provider",
    "ProviderBadResponse",
    "ProviderCancelRefused",
    "ProviderError",
    "ProviderNotFound",
    "ProviderOrder",
    "ProviderRejected",
    "ProviderUnavailable",
    "UnknownProviderStatus",
    "get_provider",
    "provider_names",
]
