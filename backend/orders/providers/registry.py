"""The configured providers, built once from settings.PROVIDERS: name → Provider instance."""

import importlib
import inspect
from functools import cache

from django.conf import settings
from django.dispatch import receiver
from django.test.signals import setting_changed

from .base import Provider


@cache
def get_provider(name: str) -> Provider:
    """The provider called `name`; LookupError when settings.PROVIDERS has no such entry."""
    try:
        config = settings.PROVIDERS[name]
    except KeyError:
        raise LookupError(f"no provider {name!r} in settings.PROVIDERS") from None
    provider_class = provider_class_in(config["module"])
    if provider_class.name != name:
        raise LookupError(f"{config['module']} declares provider {provider_class.name!r}, not {name!r}")
    return provider_class(
        url=config["url"],
        api_key=config["api_key"],
        webhook_secret=config["webhook_secret"],
        timeout=settings.PROVIDER_TIMEOUT_SECONDS,
    )


def provider_names() -> list[str]:
    return list(settings.PROVIDERS)


def provider_class_in(module_path: str) -> type[Provider]:
    """The one Provider subclass a provider module defines."""
    module = importlib.import_module(module_path)
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, Provider) and value.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise LookupError(f"{module_path} must define exactly one Provider subclass, found {len(found)}")
    return found[0]


@receiver(setting_changed)
def _forget_providers(*, setting: str, **kwargs: object) -> None:
    if setting in {"PROVIDERS", "PROVIDER_TIMEOUT_SECONDS"}:
        get_provider.cache_clear()
