"""`manage.py check --deploy`: partners' endpoints that can reach inside the deployment."""

from typing import Any

from django.conf import settings
from django.core import checks


def check_private_endpoints(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.DEBUG or not settings.WEBHOOKS_ALLOW_PRIVATE:
        return []
    return [
        checks.Warning(
            "WEBHOOKS_ALLOW_PRIVATE=true in production: an operator can register a webhook endpoint on a "
            "loopback, private or cloud metadata address and make the workers POST to it.",
            hint="Set WEBHOOKS_ALLOW_PRIVATE=false unless your partners' receivers are on your own network.",
            id="webhooks.W001",
        )
    ]


def register() -> None:
    checks.register(check_private_endpoints, checks.Tags.security, deploy=True)
