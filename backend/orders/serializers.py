"""Request validation and response shapes of the orders API. No business rules here."""

import threading
from typing import Any

from django.core.validators import RegexValidator
from django.utils import timezone
from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from core.fields import JSONCharField, JSONIntegerField

from . import selectors
from .alerts import order_promised_at
from .disclosure import PUBLIC_EVENT_TYPES, public_reason
from .models import MAX_QUANTITY, Alert, Courier, Dish, Leg, Order, OrderEvent, OrderItem, Restaurant
from .status import OrderStatus

MAX_ITEMS = 100
MAX_ID = 2**63 - 1  # a bigint primary key: a larger number names no row (and PostgreSQL would refuse it)
# [lat, lng] or null: the shape of every point in the API
POINT_SCHEMA = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": 2,
    "maxItems": 2,
    "nullable": True,
    "example": [50.4501, 30.5234],
}
PHONE_PATTERN = r"^\+?[0-9][0-9 ()-]{5,18}[0-9]$"


class DishSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dish
        fields = ["id", "name", "price"]


class RestaurantSerializer(serializers.ModelSerializer):
    dishes = DishSerializer(many=True, read_only=True)
    location = serializers.SerializerMethodField(
        help_text="[lat, lng] where couriers pick up; null when not set"
    )

    class Meta:
        model = Restaurant
        fields = ["id", "name", "address", "location", "dishes"]

    @extend_schema_field(POINT_SCHEMA)
    def get_location(self, restaurant: Restaurant) -> list[float] | None:
        point = restaurant.point
        return list(point) if point else None


class BoundedListSerializer(serializers.ListSerializer):
    """A nested list whose `allow_empty` / `max_length` also reach the schema (see the extension below)."""


class BoundedListSchema(OpenApiSerializerFieldExtension):
    """drf-spectacular leaves `minItems` / `maxItems` out for nested lists: clients (and the schema fuzz
    test) would take `"items": []` for valid."""

    target_class = BoundedListSerializer

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        field = self.target
        schema = {"type": "array", "items": auto_schema.resolve_serializer(field.child, direction).ref}
        min_items = max(field.min_length or 0, 0 if field.allow_empty else 1)
        if min_items:
            schema["minItems"] = min_items
        if field.max_length is not None:
            schema["maxItems"] = field.max_length
        return schema


class DishIdField(serializers.IntegerField):
    """A dish id: a JSON integer (`1.5`, `true` or `"1"` are 400s, not dish 1). Whether the dish can be
    ordered is checked for the whole order at once (`OrderCreateSerializer.validate_items`), in one query
    rather than one per item."""

    default_error_messages = {
        "incorrect_type": "Expected an integer id, received {data_type}.",
        "does_not_exist": 'Invalid pk "{pk_value}" - object does not exist.',
    }

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return data


class OrderItemInputSerializer(serializers.Serializer):
    dish = DishIdField()
    quantity = JSONIntegerField(min_value=1, max_value=MAX_QUANTITY)

    class Meta:
        list_serializer_class = BoundedListSerializer


class OrderCreateSerializer(serializers.Serializer):
    items = OrderItemInputSerializer(many=True, allow_empty=False, max_length=MAX_ITEMS)
    delivery_address = JSONCharField(max_length=300, trim_whitespace=True)
    eta = serializers.DateTimeField(required=False, allow_null=True)
    phone = JSONCharField(
        max_length=20,
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=True,
        validators=[
            RegexValidator(
                PHONE_PATTERN, "Enter a phone number: digits, spaces and + ( ) - only, 7 to 20 characters."
            )
        ],
        help_text="The customer's phone for the courier (digits, spaces, + ( ) -); optional.",
    )

    def validate_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The dishes of every item, read in one query: each must be on an active restaurant's menu."""
        dish_ids = [item["dish"] for item in items]
        dishes = selectors.orderable_dishes(pk for pk in dish_ids if 0 < pk <= MAX_ID)
        unknown = self.fields["items"].child.fields["dish"].error_messages["does_not_exist"]
        missing = [
            {}
            if pk in dishes
            else {"dish": [ErrorDetail(unknown.format(pk_value=pk), code="does_not_exist")]}
            for pk in dish_ids
        ]
        if any(missing):
            raise serializers.ValidationError(missing)
        if len(dish_ids) != len(set(dish_ids)):
            raise serializers.ValidationError("Each dish may appear once; use its quantity instead.")
        return [{**item, "dish": dishes[item["dish"]]} for item in items]

    def validate_eta(self, eta: Any) -> Any:
        if eta is not None and eta <= timezone.now():
            raise serializers.ValidationError("The ETA must be in the future.")
        return eta


class ReasonSerializer(serializers.Serializer):
    reason = JSONCharField(max_length=500, required=False, allow_blank=True, default="")


class OverrideSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=OrderStatus.choices)
    reason = JSONCharField(max_length=500)


class OrderItemSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="dish.name", read_only=True)
    restaurant = serializers.CharField(source="dish.restaurant.name", read_only=True)

    class Meta:
        model = OrderItem
        fields = ["dish", "name", "restaurant", "quantity", "price"]


class LegSerializer(serializers.ModelSerializer):
    restaurant = serializers.CharField(source="restaurant.name", read_only=True, default=None)

    class Meta:
        model = Leg
        fields = [
            "id",
            "kind",
            "restaurant",
            "provider",
            "external_id",
            "provider_status",
            "status",
            "attempts",
            "next_poll_at",
            "deadline_at",
            "last_error",
            "cancel_status",
            "cancel_requested_at",
        ]


class CourierSerializer(serializers.ModelSerializer):
    class Meta:
        model = Courier
        fields = ["id", "name", "phone", "lat", "lng", "location_at"]


class AlertSerializer(serializers.ModelSerializer):
    order_status = serializers.CharField(source="order.status", read_only=True)
    open = serializers.BooleanField(source="is_open", read_only=True)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = Alert
        fields = [
            "id",
            "order",
            "order_status",
            "leg",
            "kind",
            "detail",
            "open",
            "raised_at",
            "cleared_at",
            "acknowledged_by",
            "acknowledged_at",
            "note",
        ]
        read_only_fields = fields


class OrderAlertSerializer(AlertSerializer):
    """An alert inside its order: the order is around it."""

    class Meta(AlertSerializer.Meta):
        fields = [name for name in AlertSerializer.Meta.fields if name not in ("order", "order_status")]
        read_only_fields = fields


class AlertQuerySerializer(serializers.Serializer):
    open = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: open alerts only; false: cleared only.",
    )
    kind = serializers.ChoiceField(choices=Alert.Kind.choices, required=False, help_text="Only this kind.")
    order = serializers.IntegerField(min_value=1, required=False, help_text="Only this order's alerts.")


class AcknowledgeSerializer(serializers.Serializer):
    note = JSONCharField(required=False, allow_blank=True, max_length=2000, default="")


class OrderQuerySerializer(serializers.Serializer):
    """The order list's filters (besides `status`)."""

    q = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Order number, or part of the address, the customer's username or a provider sub-order id.",
    )
    created_after = serializers.DateTimeField(required=False, help_text="Placed at or after this time.")
    created_before = serializers.DateTimeField(required=False, help_text="Placed before this time.")
    restaurant = serializers.IntegerField(min_value=1, required=False, help_text="Has a kitchen leg here.")
    provider = serializers.CharField(required=False, max_length=40, help_text="Has a leg at this provider.")
    courier = serializers.IntegerField(min_value=1, required=False, help_text="Carried by this courier.")


class PromisedAtMixin(serializers.Serializer):
    """An order's `promised_at` and its map point, in both of its shapes."""

    promised_at = serializers.SerializerMethodField(
        help_text="The ETA, or placed + the kitchens' (or the global) SLA: when the order is late after."
    )
    destination = serializers.SerializerMethodField(
        help_text="[lat, lng] of the delivery address, as the geocoder found it; null until found, or when "
        "it was not (destination_status says which)."
    )
    destination_status = serializers.CharField(
        source="geocode_status",
        read_only=True,
        help_text="pending (being looked up), found, not_found (the geocoder does not know the address), "
        "failed (the geocoder could not be reached) or off (no geocoder configured).",
    )

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_promised_at(self, order: Order) -> str:
        return order_promised_at(order).isoformat()

    @extend_schema_field(POINT_SCHEMA)
    def get_destination(self, order: Order) -> list[float] | None:
        point = order.point
        return list(point) if point else None


class OrderSerializer(PromisedAtMixin, serializers.ModelSerializer):
    items = OrderItemSerializer(many=True, read_only=True)
    legs = LegSerializer(many=True, read_only=True)
    courier = CourierSerializer(read_only=True, allow_null=True)
    alerts = OrderAlertSerializer(source="open_alerts", many=True, read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "total",
            "delivery_address",
            "destination",
            "destination_status",
            "phone",
            "eta",
            "promised_at",
            "courier",
            "failure_reason",
            "created_at",
            "updated_at",
            "items",
            "legs",
            "alerts",
        ]


class OrderEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", read_only=True, default=None, allow_null=True)
    alert_kind = serializers.CharField(source="alert.kind", read_only=True, default=None, allow_null=True)

    class Meta:
        model = OrderEvent
        fields = [
            "seq",
            "type",
            "leg",
            "alert",
            "alert_kind",
            "provider_status",
            "cancel_status",
            "source",
            "actor",
            "reason",
            "at",
        ]

    def get_fields(self) -> dict[str, serializers.Field]:
        # `from` is a Python keyword, so the two status fields are added here, after `type`.
        fields = super().get_fields()
        ordered = {"seq": fields.pop("seq"), "type": fields.pop("type")}
        ordered["from"] = serializers.CharField(source="from_status", read_only=True)
        ordered["to"] = serializers.CharField(source="to_status", read_only=True)
        return {**ordered, **fields}


class OrderDetailSerializer(OrderSerializer):
    events = OrderEventSerializer(many=True, read_only=True)

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "events"]


# --- the public shape: what customers and couriers get (orders.disclosure) -------------------------------


class PublicModelSerializer(serializers.ModelSerializer):
    """An allow-list of a model's fields for customers and couriers. New fields stay internal until
    listed here; the schema documents these objects as closed (`additionalProperties: false`)."""


class ClosedSchema(OpenApiSerializerExtension):
    """`additionalProperties: false` on public objects. The schema tells the shapes apart by it: a full
    order is no valid public order (it has more), and a public order is no valid full one (it lacks the
    internals, which are required there), so `oneOf: [Order, PublicOrder]` matches exactly one."""

    target_class = PublicModelSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        # As the base extension does (drf-spectacular's documented way to augment the default mapping).
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


class PublicCourierSerializer(PublicModelSerializer):
    """The courier's name, phone (the customer may call whoever brings their order) and position."""

    class Meta:
        model = Courier
        fields = ["id", "name", "phone", "lat", "lng", "location_at"]


class PublicOrderSerializer(PromisedAtMixin, PublicModelSerializer):
    """An order as its customer and its courier see it: no provider legs, failure text or alerts. A failed
    order's cause stays with operators; its status says that it failed."""

    items = OrderItemSerializer(many=True, read_only=True)
    courier = PublicCourierSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "total",
            "delivery_address",
            "destination",
            "destination_status",
            "eta",
            "promised_at",
            "courier",
            "created_at",
            "updated_at",
            "items",
        ]


class PublicOrderEventSerializer(PublicModelSerializer):
    """A step of an order's history as its customer sees it: status changes, without who, how or the
    provider's words."""

    type = serializers.ChoiceField(
        choices=[(value, label) for value, label in OrderEvent.Type.choices if value in PUBLIC_EVENT_TYPES],
        read_only=True,
    )
    reason = serializers.SerializerMethodField(
        help_text="The customer's own words when they cancelled; empty otherwise."
    )

    class Meta:
        model = OrderEvent
        fields = ["seq", "type", "reason", "at"]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()  # `from` and `to` after `type`, as in OrderEventSerializer
        ordered = {"seq": fields.pop("seq"), "type": fields.pop("type")}
        ordered["from"] = serializers.CharField(source="from_status", read_only=True)
        ordered["to"] = serializers.CharField(source="to_status", read_only=True)
        return {**ordered, **fields}

    def get_reason(self, event: OrderEvent) -> str:
        return public_reason(event)


class PublicOrderDetailSerializer(PublicOrderSerializer):
    """A public order with its public history (orders.disclosure.PUBLIC_EVENT_TYPES)."""

    events = PublicOrderEventSerializer(many=True, read_only=True)

    class Meta(PublicOrderSerializer.Meta):
        fields = [*PublicOrderSerializer.Meta.fields, "events"]


class ThroughputQuerySerializer(serializers.Serializer):
    minutes = serializers.IntegerField(
        min_value=1, max_value=240, default=60, help_text="The last this many minutes, 1 to 240."
    )


class ThroughputSerializer(serializers.Serializer):
    minute = serializers.DateTimeField()
    created = serializers.IntegerField()
    delivered = serializers.IntegerField()


# --- error answers, for the schema: what clients get instead of the success body -------------------


class ErrorSerializer(serializers.Serializer):
    """401, 403 and 404: DRF's `{"detail": "..."}`."""

    detail = serializers.CharField()


class ConflictSerializer(ErrorSerializer):
    """409 (and other domain errors, see `core.api.exception_handler`): a message and a stable code."""

    code = serializers.CharField()


class TrackingLinkSerializer(serializers.Serializer):
    """A new shareable tracking link: open `url` without signing in until `expires_at`."""

    url = serializers.CharField(help_text="Path of the tracking page, `/t/<token>/`; shown only once.")
    expires_at = serializers.DateTimeField()


_reused = threading.local()


def represent(serializer_class: type[serializers.Serializer], instance: Any) -> dict[str, Any]:
    """`serializer_class(instance).data`, by a serializer of that class this thread built once.

    A ModelSerializer builds its fields for every instance (the model's metadata read again, each field
    made anew with its validators), which cost more than rendering with them: ~14 % of the web process's
    CPU per order created (py-spy), all of it cyclic garbage. Fields only read the instance they are
    handed, and no serializer that renders orders reads its context, so each thread keeps one serializer
    per class (never shared between threads) and hands it each instance. Only for serializers that read
    nothing but the instance: tests compare this with `serializer_class(instance).data` for every order shape.
    """
    if not hasattr(_reused, "serializers"):
        _reused.serializers = {}
    serializer = _reused.serializers.get(serializer_class)
    if serializer is None:
        serializer = _reused.serializers[serializer_class] = serializer_class()
    return serializer.to_representation(instance)
