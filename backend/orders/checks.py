"""Start-up checks of the provider configuration (`manage.py check`, and every command that runs it)."""

from typing import Any

from django.conf import settings
from django.core import checks

from .providers import get_provider


def check_providers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every PROVIDERS entry loads, the delivery provider delivers, every webhook sender has a secret."""
    problems: list[checks.CheckMessage] = []
    for name in settings.PROVIDERS:
        try:
            provider = get_provider(name)
        except (ImportError, LookupError) as error:
            problems.append(checks.Error(f"provider {name!r}: {error}", id="orders.E001"))
            continue
        if provider.accepts_webhooks and not provider.webhook_secret:
            problems.append(
                checks.Error(
                    f"provider {name!r} pushes webhooks but {name.upper()}_WEBHOOK_SECRET is empty",
                    id="orders.E002",
                )
            )
    name = settings.DELIVERY_PROVIDER
    if name in settings.PROVIDERS and not problems and (kind := get_provider(name).kind) != "delivery":
        problems.append(checks.Error(f"DELIVERY_PROVIDER {name!r} is a {kind} provider", id="orders.E003"))
    return problems


def register() -> None:
    checks.register(check_providers)
