from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from orders import relay, signals

        from . import broadcast

        # orders announces; it never imports us
        relay.subscribe(broadcast.publish_released)
        signals.courier_moved.connect(broadcast.location_moved, dispatch_uid="realtime.location_moved")
        signals.tracking_revoked.connect(broadcast.tracking_revoked, dispatch_uid="realtime.tracking_revoked")
