from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = _("Partner webhooks")

    def ready(self) -> None:
        from orders import relay

        from . import checks, services

        # orders announces released events; it never imports us
        relay.subscribe(services.deliveries_for_released)
        checks.register()
