import hashlib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .status import OrderStatus

MAX_QUANTITY = 50


def point_valid(name: str) -> models.CheckConstraint:
    """Both coordinates or neither, on the globe (a point's `lat` and `lng` columns)."""
    return models.CheckConstraint(
        condition=Q(lat__isnull=True, lng__isnull=True)
        | Q(lat__gte=-90, lat__lte=90, lng__gte=-180, lng__lte=180),
        name=name,
    )


def point_of(lat: float | None, lng: float | None) -> tuple[float, float] | None:
    return (lat, lng) if lat is not None and lng is not None else None


class Restaurant(models.Model):
    name = models.CharField(max_length=120, unique=True)
    provider = models.CharField(
        max_length=40, help_text=_("Provider module that takes this kitchen's orders.")
    )
    address = models.CharField(max_length=300)
    sla_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text=_(
            "Promised delivery time of an order without an ETA; empty = the global ALERT_LATE_MINUTES."
        ),
    )
    lat = models.FloatField(
        _("latitude"),
        null=True,
        blank=True,
        validators=[MinValueValidator(-90), MaxValueValidator(90)],
        help_text=_("Where couriers pick up, in decimal degrees (50.4501); empty = not on the map."),
    )
    lng = models.FloatField(
        _("longitude"),
        null=True,
        blank=True,
        validators=[MinValueValidator(-180), MaxValueValidator(180)],
        help_text=_("Decimal degrees east (30.5234); set together with the latitude."),
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            point_valid("restaurant_point_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if (self.lat is None) != (self.lng is None):
            raise ValidationError(_("Give both the latitude and the longitude, or neither."))

    @property
    def point(self) -> tuple[float, float] | None:
        return point_of(self.lat, self.lng)


class Dish(models.Model):
    restaurant = models.ForeignKey(Restaurant, on_delete=models.PROTECT, related_name="dishes")
    name = models.CharField(max_length=120)
    price = models.PositiveIntegerField(help_text=_("Price in minor units (kopiykas, cents)."))
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["restaurant__name", "name"]
        verbose_name_plural = "dishes"
        constraints = [
            models.UniqueConstraint(fields=["restaurant", "name"], name="dish_unique_name_per_restaurant"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.restaurant})"


class Courier(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="courier")
    name = models.CharField(max_length=120)
    phone = models.CharField(max_length=40, blank=True)
    external_id = models.CharField(max_length=80, blank=True, db_index=True)
    lat = models.FloatField(null=True, blank=True)
    lng = models.FloatField(null=True, blank=True)
    location_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(lat__isnull=True) | Q(lat__gte=-90, lat__lte=90), name="courier_lat_range"
            ),
            models.CheckConstraint(
                condition=Q(lng__isnull=True) | Q(lng__gte=-180, lng__lte=180), name="courier_lng_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    class GeocodeStatus(models.TextChoices):
        PENDING = "pending", _("Being looked up")
        FOUND = "found", _("Found")
        NOT_FOUND = "not_found", _("Address not found")
        FAILED = "failed", _("Geocoder unavailable")
        OFF = "off", _("No geocoder configured")

    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    delivery_address = models.CharField(max_length=300)
    phone = models.CharField(
        max_length=20,
        blank=True,
        help_text=_("The customer's phone for the courier, as given with the order."),
    )
    lat = models.FloatField(null=True, blank=True, help_text=_("The delivery address's point (geocoded)."))
    lng = models.FloatField(null=True, blank=True)
    geocode_status = models.CharField(
        max_length=10, choices=GeocodeStatus.choices, default=GeocodeStatus.PENDING
    )
    eta = models.DateTimeField(null=True, blank=True, help_text=_("Requested delivery time; empty = ASAP."))
    status = models.CharField(max_length=20, choices=OrderStatus.choices, default=OrderStatus.SCHEDULED)
    total = models.PositiveIntegerField(help_text=_("Sum of items in minor units."))
    courier = models.ForeignKey(
        Courier, on_delete=models.SET_NULL, null=True, blank=True, related_name="orders"
    )
    failure_reason = models.TextField(blank=True)
    notified_status = models.CharField(
        max_length=20, blank=True, help_text=_("Final status the customer was emailed about (sent once).")
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=OrderStatus.values), name="order_status_valid"),
            point_valid("order_point_valid"),
        ]

    def __str__(self) -> str:
        return f"Order #{self.pk} ({self.status})"

    @property
    def point(self) -> tuple[float, float] | None:
        return point_of(self.lat, self.lng)


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    dish = models.ForeignKey(Dish, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveSmallIntegerField()
    price = models.PositiveIntegerField(help_text=_("Unit price at order time, minor units."))

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(quantity__gte=1, quantity__lte=MAX_QUANTITY), name="order_item_quantity_range"
            ),
            models.UniqueConstraint(fields=["order", "dish"], name="order_item_unique_dish"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.dish.name}"


class Leg(models.Model):
    """One external sub-order: a kitchen order at a restaurant's provider, or the delivery."""

    class Kind(models.TextChoices):
        KITCHEN = "kitchen", _("Kitchen")
        DELIVERY = "delivery", _("Delivery")

    class CancelStatus(models.TextChoices):
        """Where asking the provider to cancel this sub-order stands (orders.services.order_cancel)."""

        NONE = "", _("Not cancelled")
        REQUESTED = "requested", _("Cancel requested")
        CONFIRMED = "confirmed", _("Cancel confirmed")
        REFUSED = "refused", _("Cancel refused")

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="legs")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    restaurant = models.ForeignKey(
        Restaurant, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    provider = models.CharField(max_length=40)
    external_id = models.CharField(max_length=120, blank=True)
    provider_status = models.CharField(max_length=60, blank=True)
    status = models.CharField(max_length=20, choices=OrderStatus.choices, default=OrderStatus.SCHEDULED)
    attempts = models.PositiveIntegerField(default=0, help_text=_("Consecutive failed provider calls."))
    next_poll_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    cancel_status = models.CharField(
        max_length=10,
        choices=CancelStatus.choices,
        default=CancelStatus.NONE,
        blank=True,
        help_text=_(
            "Requested: the poller is asking the provider to cancel; confirmed: cancelled there (or never "
            "sent); refused: the provider would not, or could not be reached before the deadline."
        ),
    )
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["next_poll_at"], name="leg_due", condition=Q(next_poll_at__isnull=False)),
            models.Index(fields=["provider", "external_id"], name="leg_external"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["order", "restaurant"],
                condition=Q(kind="kitchen"),
                name="leg_one_kitchen_per_restaurant",
            ),
            models.UniqueConstraint(
                fields=["order"], condition=Q(kind="delivery"), name="leg_one_delivery_per_order"
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind="kitchen", restaurant__isnull=False) | Q(kind="delivery", restaurant__isnull=True)
                ),
                name="leg_restaurant_matches_kind",
            ),
            models.CheckConstraint(condition=Q(status__in=OrderStatus.values), name="leg_status_valid"),
            models.CheckConstraint(
                condition=Q(cancel_status__in=["", "requested", "confirmed", "refused"]),
                name="leg_cancel_status_valid",
            ),
        ]

    def __str__(self) -> str:
        target = self.restaurant or "delivery"
        return f"{self.provider} leg of order #{self.order_id} ({target})"


class OrderEvent(models.Model):
    """Append-only history. `seq` is the global sequence number every realtime message carries.

    A `leg.cancel` event records one step of a leg's cancellation: `cancel_status` is `requested`,
    `confirmed` or `refused`, `leg` is the leg, `reason` says why in words.
    """

    class Type(models.TextChoices):
        CREATED = "order.created", _("Order created")
        STATUS = "order.status", _("Order status changed")
        LEG = "leg.status", _("Leg status changed")
        OVERRIDE = "order.override", _("Status overridden")
        RETRY = "order.retry", _("Retried by an operator")
        COURIER = "order.courier", _("Courier assigned")
        LOCATED = "order.located", _("Delivery point looked up")
        LEG_CANCEL = "leg.cancel", _("Leg cancellation")
        ALERT_RAISED = "alert.raised", _("Alert raised")
        ALERT_CLEARED = "alert.cleared", _("Alert cleared")
        ALERT_ACKNOWLEDGED = "alert.acknowledged", _("Alert acknowledged")

    class Source(models.TextChoices):
        API = "api", _("API")
        POLL = "poll", _("Poll")
        WEBHOOK = "webhook", _("Webhook")
        OPERATOR = "operator", _("Operator")
        SYSTEM = "system", _("System")

    seq = models.BigAutoField(primary_key=True)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    leg = models.ForeignKey(Leg, on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    type = models.CharField(max_length=20, choices=Type.choices)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    provider_status = models.CharField(max_length=60, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.TextField(blank=True)
    cancel_status = models.CharField(
        max_length=10,
        choices=Leg.CancelStatus.choices,
        blank=True,
        default="",
        help_text=_("`leg.cancel` events: the leg's cancellation as it now stands."),
    )
    alert = models.ForeignKey(
        "Alert", on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["order", "seq"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type} order #{self.order_id}: {self.from_status} → {self.to_status}"


class Alert(models.Model):
    """Something about an order that needs an operator: raised by the services, cleared when the cause is
    gone, acknowledged by an operator. Each of the three appends an OrderEvent (orders.alerts)."""

    class Kind(models.TextChoices):
        PROVIDER_FAILING = "provider_failing", _("Provider failing")
        LATE = "late", _("Late")
        STUCK = "stuck", _("Stuck")
        FAILED = "failed", _("Failed")
        CANCEL_REFUSED = "cancel_refused", _("Cancel refused")

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="alerts")
    leg = models.ForeignKey(Leg, on_delete=models.CASCADE, null=True, blank=True, related_name="alerts")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    detail = models.TextField(blank=True, help_text=_("Why, in words an operator reads."))
    raised_at = models.DateTimeField(default=timezone.now)
    cleared_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        indexes = [
            models.Index(fields=["-raised_at"], name="alert_open", condition=Q(cleared_at__isnull=True)),
        ]
        constraints = [
            # Raised once: one open alert per order, kind and leg (an order-wide alert has no leg).
            models.UniqueConstraint(
                fields=["order", "kind", "leg"],
                condition=Q(cleared_at__isnull=True),
                nulls_distinct=False,
                name="alert_one_open_per_cause",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["provider_failing", "late", "stuck", "failed", "cancel_refused"]),
                name="alert_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on order #{self.order_id}"

    @property
    def is_open(self) -> bool:
        return self.cleared_at is None


class EventMark(models.Model):
    """How far committed OrderEvents have been released to subscribers (orders.relay): the high-water mark.

    Every event at or below `seq` is committed and released, or is known never to commit (rolled back).
    `previous` is the mark before the last advance: a relay taking over republishes what lies between,
    in case its predecessor stopped after moving the mark and before publishing.
    """

    name = models.CharField(primary_key=True, max_length=40)
    seq = models.BigIntegerField(default=0)
    previous = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} mark at #{self.seq}"


class TrackingLink(models.Model):
    """A link that lets anyone holding it follow one order, signed in or not (`/t/<token>/`).

    Only the token's SHA-256 is stored: a leaked database does not hand out working links. A link stops
    working when it expires or is revoked (orders.services.tracking_links_revoke).
    """

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="tracking_links")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"Tracking link of order #{self.order_id}"

    @staticmethod
    def hash_token(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()
