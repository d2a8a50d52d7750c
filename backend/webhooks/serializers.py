"""What the webhook endpoints API accepts and answers."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.fields import JSONBooleanField, JSONCharField
from orders.models import OrderEvent

from . import services
from .models import ALL_EVENTS, TEST_EVENT, WebhookAttempt, WebhookDelivery, WebhookEndpoint

EVENT_CHOICES = [ALL_EVENTS, *OrderEvent.Type.values]


@extend_schema_field({"type": "string", "pattern": services.URL_PATTERN.pattern, "maxLength": 500})
class EndpointURLField(JSONCharField):
    """An endpoint's URL: http(s), a host name or IPv4 address, an optional port and path."""


class WebhookEndpointSerializer(serializers.ModelSerializer):
    """An endpoint. `events`: OrderEvent types, or `["*"]` for all of them. A disabled endpoint says
    when and why; PATCH `{"active": true}` turns it on again."""

    url = EndpointURLField(max_length=500)
    description = JSONCharField(max_length=200, required=False, allow_blank=True, default="")
    active = JSONBooleanField(required=False, default=True)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_CHOICES),
        allow_empty=False,
        min_length=1,
        max_length=len(EVENT_CHOICES),
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "events",
            "active",
            "failing_since",
            "disabled_at",
            "disabled_reason",
            "created_at",
        ]
        read_only_fields = ["failing_since", "disabled_at", "disabled_reason", "created_at"]

    def validate_url(self, value: str) -> str:
        try:
            services.validate_url(value)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        return [ALL_EVENTS] if ALL_EVENTS in value else sorted(set(value))


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    """The answer to a creation: the endpoint and its signing secret, shown this once."""

    secret = serializers.CharField(read_only=True)

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["at", "status_code", "duration_ms", "error", "next_retry_at"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    """One event sent to the endpoint: `id` is the body's delivery id, the same on every attempt."""

    order = serializers.IntegerField(source="order_id", allow_null=True, read_only=True)
    next_retry_at = serializers.SerializerMethodField()
    attempts = WebhookAttemptSerializer(source="tries", many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "type",
            "seq",
            "order",
            "status",
            "created_at",
            "delivered_at",
            "next_retry_at",
            "last_status_code",
            "last_error",
            "attempts",
        ]

    def get_next_retry_at(self, delivery: WebhookDelivery) -> str | None:
        if delivery.status != WebhookDelivery.Status.PENDING:
            return None
        return serializers.DateTimeField().to_representation(delivery.next_attempt_at)


class DeliveryQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices, required=False)
    type = serializers.ChoiceField(choices=[*OrderEvent.Type.values, TEST_EVENT], required=False)

    def filters(self) -> dict[str, Any]:
        return {name: value for name, value in self.validated_data.items() if value}
