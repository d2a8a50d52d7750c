from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from orders import relay

        from . import broadcast

        relay.subscribe(broadcast.publish_released)  # orders announces released events; it never imports us
