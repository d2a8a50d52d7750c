"""Provider name → configured client, from settings.PROVIDERS (each entry names its client class)."""

from functools import cache

from django.conf import settings
from django.dispatch import receiver
from django.test.signals import setting_changed
from django.utils.module_loading import import_string

from .base import ProviderClient


@cache
def get_client(name: str) -> ProviderClient:
    try:
        config = dict(settings.PROVIDERS[name])
    except KeyError:
        raise LookupError(f"no provider {name!r} in settings.PROVIDERS") from None
    client_class = import_string(config.pop("client"))
    return client_class(timeout=settings.PROVIDER_TIMEOUT_SECONDS, **config)


@receiver(setting_changed)
def _forget_clients(*, setting: str, **kwargs: object) -> None:
    if setting in {"PROVIDERS", "PROVIDER_TIMEOUT_SECONDS"}:
        get_client.cache_clear()
