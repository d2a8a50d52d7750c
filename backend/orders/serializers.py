"""Request validation and response shapes of the orders API. No business rules here."""

from typing import Any

from django.utils import timezone
from rest_framework import serializers

from .geo import geocode
from .models import MAX_QUANTITY, Courier, Dish, Leg, Order, OrderEvent, OrderItem, Restaurant
from .status import OrderStatus

MAX_ITEMS = 100


class DishSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dish
        fields = ["id", "name", "price"]


class RestaurantSerializer(serializers.ModelSerializer):
    dishes = DishSerializer(many=True, read_only=True)
    location = serializers.SerializerMethodField(help_text="[lat, lng] of the address, for maps")

    class Meta:
        model = Restaurant
        fields = ["id", "name", "address", "location", "dishes"]

    def get_location(self, restaurant: Restaurant) -> list[float]:
        return list(geocode(restaurant.address))


class OrderItemInputSerializer(serializers.Serializer):
    dish = serializers.PrimaryKeyRelatedField(
        queryset=Dish.objects.filter(is_active=True, restaurant__is_active=True).select_related("restaurant")
    )
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)


class OrderCreateSerializer(serializers.Serializer):
    items = OrderItemInputSerializer(many=True, allow_empty=False, max_length=MAX_ITEMS)
    delivery_address = serializers.CharField(max_length=300, trim_whitespace=True)
    eta = serializers.DateTimeField(required=False, allow_null=True)

    def validate_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        dish_ids = [item["dish"].pk for item in items]
        if len(dish_ids) != len(set(dish_ids)):
            raise serializers.ValidationError("Each dish may appear once; use its quantity instead.")
        return items

    def validate_eta(self, eta: Any) -> Any:
        if eta is not None and eta <= timezone.now():
            raise serializers.ValidationError("The ETA must be in the future.")
        return eta


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class OverrideSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=OrderStatus.choices)
    reason = serializers.CharField(max_length=500)


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
        ]


class CourierSerializer(serializers.ModelSerializer):
    class Meta:
        model = Courier
        fields = ["id", "name", "phone", "lat", "lng", "location_at"]


class OrderSerializer(serializers.ModelSerializer):
    items = OrderItemSerializer(many=True, read_only=True)
    legs = LegSerializer(many=True, read_only=True)
    courier = CourierSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "total",
            "delivery_address",
            "eta",
            "courier",
            "failure_reason",
            "created_at",
            "updated_at",
            "items",
            "legs",
        ]


class OrderEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", read_only=True, default=None)

    class Meta:
        model = OrderEvent
        fields = ["seq", "type", "leg", "provider_status", "source", "actor", "reason", "at"]

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


class ThroughputQuerySerializer(serializers.Serializer):
    minutes = serializers.IntegerField(min_value=1, max_value=240, default=60)


class ThroughputSerializer(serializers.Serializer):
    minute = serializers.DateTimeField()
    created = serializers.IntegerField()
    delivered = serializers.IntegerField()
